"""Experiment tracking for evaluator training: MLflow and Weights & Biases, each optional.

Which trackers run is decided by the caller (``Settings.tracking``: MLflow when MLFLOW_TRACKING_URI is
set, W&B when WANDB_API_KEY or WANDB_MODE is); the libraries read their own environment (URI,
experiment, project, key, offline mode) as their documentation says. A tracker never costs a training
run: a tracker that is not installed, cannot reach its server or fails midway is switched off for the
run, and what went wrong is kept (redacted) in the run's ``tracking`` status. MLflow is driven through
an explicit ``MlflowClient`` and W&B through the ``Run`` object, never the libraries' global "active
run": the backend trains several projects in threads at once.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..redact import redact, register

log = logging.getLogger(__name__)
TRACKERS = ("mlflow", "wandb")
EXPERIMENT = "labeljudge"  # MLflow experiment / W&B project when MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT are unset


def trackers_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """The trackers the environment asks for: ``mlflow`` with MLFLOW_TRACKING_URI, ``wandb`` with
    WANDB_API_KEY or WANDB_MODE (``WANDB_MODE=disabled`` turns it off)."""
    out = []
    if env.get("MLFLOW_TRACKING_URI"):
        out.append("mlflow")
    if (env.get("WANDB_API_KEY") or env.get("WANDB_MODE")) and (env.get("WANDB_MODE") or "").lower() != "disabled":
        out.append("wandb")
    return tuple(out)


class Tracker(Protocol):
    name: str

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> dict: ...
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def finish(self, metrics: dict[str, float], artifacts: Sequence[Path], failed: bool) -> None: ...


class MLflowTracker:
    """One MLflow run per training run, through ``MlflowClient`` (no global active run)."""

    name = "mlflow"

    def __init__(self) -> None:
        from mlflow import MlflowClient

        self.mlflow = MlflowClient()  # MLFLOW_TRACKING_URI from the environment
        self.run_id: str = ""

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> dict:
        from mlflow.entities import Param

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        exp = self.mlflow.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.mlflow.create_experiment(name)
        run = self.mlflow.create_run(exp_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        # MLflow caps a param value at 6000 characters; ours are short, but a base-model path is the user's
        self.mlflow.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        return {"run_id": self.run_id, "experiment": name}

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.mlflow.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, metrics: dict[str, float], artifacts: Sequence[Path], failed: bool) -> None:
        if metrics:
            self.log(metrics, 0)
        for path in artifacts:
            self.mlflow.log_artifact(self.run_id, str(path))
        self.mlflow.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class WandbTracker:
    """One W&B run per training run (``WANDB_MODE=offline`` writes it under WANDB_DIR for a later sync)."""

    name = "wandb"

    def __init__(self) -> None:
        import wandb

        self.wandb = wandb
        self.run: Any = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> dict:
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT") or EXPERIMENT, name=run_name,
                                   config=params, tags=[f"{k}:{v}" for k, v in tags.items()][:20],
                                   reinit="create_new", settings=self.wandb.Settings(silent=True))
        return {"run_id": self.run.id, "project": self.run.project,
                "mode": os.environ.get("WANDB_MODE") or "online", "dir": str(Path(self.run.dir).parent)}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, metrics: dict[str, float], artifacts: Sequence[Path], failed: bool) -> None:
        images = {p.stem: self.wandb.Image(str(p)) for p in artifacts if p.suffix == ".png"}
        if images:
            self.run.log(images)
        self.run.summary.update(metrics)
        self.run.finish(exit_code=1 if failed else 0)


FACTORIES: dict[str, Callable[[], Tracker]] = {"mlflow": MLflowTracker, "wandb": WandbTracker}
INSTALL_HINT = {"mlflow": "pip install 'labeljudge[tracking]' (or mlflow-skinny)",
                "wandb": "pip install 'labeljudge[tracking]' (or wandb)"}


class Tracking:
    """The trackers of one training run, each switched off on its first failure (the run goes on).
    ``status`` says per tracker where the run went (run id, experiment/project) or why it stopped."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        # the libraries read their credentials from the environment: none may reach our logs or results
        register(*(os.environ.get(k) for k in ("WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")))
        self.active: list[Tracker] = []
        self.status: dict[str, dict] = {}
        self.step = 0
        for name in dict.fromkeys(names):
            if name not in FACTORIES:
                self.status[name] = {"error": f"unknown tracker {name!r} (known: {', '.join(TRACKERS)})"}
                continue
            try:
                self.active.append(FACTORIES[name]())
            except ImportError:
                self.status[name] = {"error": f"{name} is not installed: {INSTALL_HINT[name]}"}
                log.warning("experiment tracking: %s", self.status[name]["error"])
            except Exception as exc:  # a bad URI or setting: say so, train anyway
                self._failed(name, "setting up", exc)

    def __bool__(self) -> bool:
        return bool(self.active)

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        flat = {k: v for k, v in params.items() if v is not None}
        for tracker in list(self.active):
            self._call(tracker, "starting the run", partial(self._start_one, tracker, run_name, flat, tags))

    def _start_one(self, tracker: Tracker, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.status[tracker.name] = tracker.start(run_name, params, tags)

    def epoch(self, row: dict) -> None:
        """One epoch of the training history: phase-1 numbers as they are, the refit's as ``refit_*``."""
        prefix = "refit_" if row.get("phase") else ""
        metrics = {f"{prefix}{k}": float(row[k]) for k in ("train_loss", "val_loss", "val_accuracy")
                   if isinstance(row.get(k), (int, float)) and math.isfinite(row[k])}
        metrics = {k.replace("val_", "heldout_"): v for k, v in metrics.items()}
        if not metrics:
            return
        self.step += 1
        for tracker in list(self.active):
            self._call(tracker, "logging an epoch", partial(tracker.log, metrics, self.step))

    def finish(self, metrics: dict[str, Any], artifacts: Sequence[Path] = (), *, failed: bool = False) -> dict:
        numbers = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        numbers.update({k: float(v) for k, v in metrics.items() if isinstance(v, bool)})
        files = [Path(p) for p in artifacts if Path(p).exists()]
        for tracker in list(self.active):
            self._call(tracker, "finishing the run", partial(tracker.finish, numbers, files, failed))
            if tracker in self.active:
                self.status.setdefault(tracker.name, {})["logged"] = True
        return self.status

    def _call(self, tracker: Tracker, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:
            self.active.remove(tracker)
            self._failed(tracker.name, what, exc)
            if what != "starting the run" and what != "finishing the run":
                try:  # a run that was started is closed as failed rather than left "running" (best effort)
                    tracker.finish({}, [], True)
                except Exception:
                    pass

    def _failed(self, name: str, what: str, exc: Exception) -> None:
        # a tracking URI may carry credentials (https://user:pass@host): redact, and drop the URL's userinfo
        message = redact(f"{type(exc).__name__}: {exc}")
        message = _strip_userinfo(message)[:400]
        self.status[name] = {**self.status.get(name, {}), "error": f"{what}: {message}"}
        log.warning("experiment tracking with %s stopped for this run (%s): %s", name, what, message)


def _strip_userinfo(text: str) -> str:
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", r"\1***@", text)
