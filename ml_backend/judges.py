"""Building judges: the one place a provider is constructed (and shared by the projects that use the
same model), and the one place a JudgeSpec is assembled from a project's configuration.

Why shared providers: the local model is loaded once per process, and an OpenAI-compatible server's
capability ladder and connection pool are kept, whichever project asks.
"""
from __future__ import annotations

import threading
from typing import Sequence

from .judge import Judge, JudgeSpec, resolve_template
from .judge.providers import LocalProvider, OpenAIProvider, Provider
from .judge.types import Example, Question
from .settings import ProjectConfig, Settings


def make_provider(config: ProjectConfig, settings: Settings) -> Provider:
    """A new provider for the project's provider and model, with the process's credentials and limits."""
    if config.provider == "local":
        return LocalProvider(config.model, cache_dir=settings.model_dir / "cache")
    return OpenAIProvider(config.model, api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                          timeout=settings.request_timeout, max_retries=settings.max_retries)


class ProviderPool:
    """One provider per (provider, model, base URL) for the life of the process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[tuple, Provider] = {}
        self._lock = threading.Lock()

    def _key(self, provider_name: str, model: str) -> tuple:
        return provider_name, model, self.settings.openai_base_url

    def register(self, provider_name: str, model: str, provider: Provider) -> None:
        """Use ``provider`` for (provider_name, model): a custom provider from Python, or a benchmark's."""
        with self._lock:
            self._providers[self._key(provider_name, model)] = provider

    def get(self, config: ProjectConfig) -> Provider:
        key = self._key(config.provider, config.model)
        with self._lock:
            if key not in self._providers:
                self._providers[key] = make_provider(config, self.settings)
            return self._providers[key]


def judge_spec(config: ProjectConfig, questions: Sequence[Question], *, metric: str | None = None,
               rationale: bool | None = None, examples: Sequence[Example] = (),
               pair: tuple[str, str] | None = None, pair_question: str | None = None) -> JudgeSpec:
    """The judge a project's configuration describes (its version hashes exactly these choices)."""
    return JudgeSpec(
        template=resolve_template(config.prompt, metric if metric is not None else config.metric),
        provider=config.provider, model=config.model, temperature=config.temperature,
        max_tokens=config.max_tokens, rationale=config.rationale if rationale is None else rationale,
        field_map=config.fields, questions=tuple(questions), examples=tuple(examples),
        few_shot_k=config.few_shot_k, pair=pair, pair_question=pair_question)


def build_judge(spec: JudgeSpec, provider: Provider, input_keys: Sequence[str], settings: Settings) -> Judge:
    """A judge with the process's limits on field and prompt size."""
    return Judge(spec, provider, input_keys=input_keys, max_field_chars=settings.max_field_chars,
                 max_prompt_chars=settings.max_prompt_chars)
