"""The LLM judge: templates, built-in metrics, prompting, parsing and providers. No Flask, no SDK."""
from .judge import Judge, JudgeSpec
from .metrics import METRICS, resolve_template
from .templates import TemplateError, render, template_fields
from .types import Answer, Example, JudgeError, Question, Usage, Verdict

__all__ = ["Judge", "JudgeSpec", "METRICS", "resolve_template", "TemplateError", "render",
           "template_fields", "Answer", "Example", "JudgeError", "Question", "Usage", "Verdict"]
