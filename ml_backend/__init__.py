"""LabelJudge: a Label Studio ML backend with an LLM judge and a distilled evaluator."""
__version__ = "0.1.0"
