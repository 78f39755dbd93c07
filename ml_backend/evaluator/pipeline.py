"""One training run: dataset -> train (in a staging dir) -> ONNX (+ int8 if it keeps accuracy) ->
commit a version -> promote only if it beats the served one on the same held-out human labels.
Two kinds: the single-response evaluator (binary) and the pairwise one (reward model)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .cascade import CARRY_LIMIT, DEFAULT_TARGET, MIN_FRESH, MIN_JUDGED, carry_band, choose_band, judge_accuracy
from .data import PAIR_TEXT_B, InputSpec, build_dataset, split, unlabeled_inputs
from .registry import Registry
from .results import GateDecision, TrainingResult
from .scorer import Scorer, export_onnx
from .tracking import Tracking
from .train import TrainConfig, binary_metrics, train_evaluator

log = logging.getLogger(__name__)
INT8_MAX_DRIFT = 0.02  # int8 serves only if its scores stay this close to fp32's (and no label flips)
MIN_GATE_ROWS = 10  # held-out labels the served model never saw, below which its own recorded accuracy is compared


def training_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    nan = float("nan")
    first = [h for h in history if h.get("seed") == history[0].get("seed")]  # a soup's first seed
    measured = [h for h in first if not h.get("phase")]  # trained without the held-out labels
    refit = [h for h in first if h.get("phase")]  # the served model, trained on every label
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.plot([h["epoch"] for h in measured], [h["train_loss"] for h in measured], "o-", label="train loss")
    ax.plot([h["epoch"] for h in measured], [nan if h["val_loss"] is None else h["val_loss"] for h in measured], "o-",
            label="held-out loss")
    if refit:
        ax.plot([h["epoch"] for h in refit], [h["train_loss"] for h in refit], "x:", color="gray",
                label="train loss, refit on every label (served)")
    ax.set_xlabel("epoch")
    ax2 = ax.twinx()
    ax2.plot([h["epoch"] for h in measured], [nan if h["val_accuracy"] is None else h["val_accuracy"] for h in measured],
             "s--", color="green", label="held-out accuracy")
    ax2.set_ylim(0, 1)
    # below the axes, never over the lines: the curves fill the plot's whole width
    fig.legend(loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_training(tasks: Sequence[dict], control: dict, registry: Registry, *, spec: InputSpec | None = None,
                 cfg: TrainConfig | None = None, progress: Callable[[dict], None] | None = None,
                 cascade_target: float | None = None, tracking: Tracking | None = None) -> TrainingResult:
    """The single-response evaluator: P(the control's answer is the positive label). Its cascade band
    is chosen on the held-out labels: at least ``cascade_target`` accurate where it answers alone, or
    by default as accurate as the judge was on those labels. ``tracking``: MLflow / W&B runs to log to."""
    spec = spec or InputSpec()
    progress = _tracked(progress, tracking)
    data = build_dataset(tasks, control, spec)
    if data.label.nunique() < 2:
        raise ValueError("the labels hold a single class: the evaluator needs examples of both")
    train, test = split(data, seed=(cfg or TrainConfig()).seed)
    fresh, fresh_on = _carry_inputs(tasks, data, train, spec, (cfg or TrainConfig()).seed)

    def predict(model_dir: Path, runtime: str = "auto") -> np.ndarray:
        return Scorer(model_dir, runtime=runtime).score(list(test.text_a), list(test.text_b))

    manifest = {"kind": "binary", "control": control["name"], "positive": sorted(_positives(control, spec)),
                "input": {"text_a": list(spec.text_a), "text_b": list(spec.text_b)}}
    def fit(staging: Path) -> dict:
        metrics = train_evaluator(train, test, staging, cfg, progress, fresh)
        target, source = cascade_target, "cascade_target"
        if target is None:
            judged, n = judge_accuracy(tasks, control["name"], test.task_id.tolist())
            target, source = (judged, f"the judge's accuracy on {n} held-out labels") if judged is not None else \
                (DEFAULT_TARGET, f"the default (the judge answered {n} held-out labels, under {MIN_JUDGED})")
        chosen = choose_band(metrics["test_scores"], test.label.to_numpy(), target)
        served, both = metrics.pop("served_test_scores", None), metrics.pop("fresh_scores", None)
        if both and "served" in both:  # the served model differs: carry the band's share of unlabeled tasks over
            chosen = carry_band(chosen, both["served"], both["measured"], on=fresh_on)
        elif served is not None:  # too few unlabeled tasks: its share of the held-out inputs
            chosen = carry_band(chosen, served)
        metrics["cascade"] = {**chosen, "target_from": source}
        return metrics

    return _train_and_gate(registry, train, test, manifest, spec, predict, fit, cfg, tracking)


def _carry_inputs(tasks: Sequence[dict], data, train, spec: InputSpec, seed: int):
    """(inputs, what they are) to carry the cascade band over to the served model on: tasks neither model
    trained on, else the judge-labeled ones (both trained on them); (None, "") with fewer than MIN_FRESH
    of either (then the held-out inputs are used)."""
    fresh = unlabeled_inputs(tasks, data, spec, limit=CARRY_LIMIT, seed=seed)
    if len(fresh) >= MIN_FRESH:
        return fresh, "unlabeled tasks"
    judged = train[train.source == "judge"][["text_a", "text_b"]]
    if len(judged) >= MIN_FRESH:
        return judged.sample(n=min(len(judged), CARRY_LIMIT), random_state=seed), "judge-labeled tasks"
    return None, ""


def run_reward_training(tasks: Sequence[dict], control: str, sides: tuple[str, str], registry: Registry, *,
                        spec: InputSpec | None = None, cfg: TrainConfig | None = None,
                        progress: Callable[[dict], None] | None = None, tracking: Tracking | None = None) -> TrainingResult:
    """The pairwise evaluator of a preference control whose responses are the data keys ``sides``:
    P(response A is better), from human preferences (gold) and the judge's (weak); ties are left out."""
    from .data import build_pairs
    from .reward import RewardScorer, train_reward

    spec = spec or InputSpec(text_b=PAIR_TEXT_B)
    data = build_pairs(tasks, control, sides[0], sides[1], spec)
    if data.label.nunique() < 2:
        raise ValueError("the preferences all pick one side: the pairwise evaluator needs both A and B wins")
    train, test = split(data, seed=(cfg or TrainConfig()).seed)

    def predict(model_dir: Path, runtime: str = "auto") -> np.ndarray:
        return RewardScorer(model_dir, runtime=runtime).prefer(list(test.prompt), list(test.response_a),
                                                                list(test.response_b))

    manifest = {"kind": "reward", "control": control, "input": {"a": sides[0], "b": sides[1],
                                                                 "text_b": list(spec.text_b)}}
    progress = _tracked(progress, tracking)
    return _train_and_gate(registry, train, test, manifest, spec, predict,
                           lambda staging: train_reward(train, test, staging, cfg, progress), cfg, tracking)


def _tracked(progress: Callable[[dict], None] | None, tracking: Tracking | None) -> Callable[[dict], None] | None:
    """``progress`` that also logs each epoch to the run's trackers."""
    if not tracking:
        return progress

    def both(row: dict) -> None:
        tracking.epoch(row)
        if progress:
            progress(row)
    return both


def _train_and_gate(registry: Registry, train, test, manifest: dict, spec: InputSpec,
                    predict: Callable[..., np.ndarray], fit: Callable[[Path], dict],
                    cfg: TrainConfig | None = None, tracking: Tracking | None = None) -> TrainingResult:
    """Train in a staging dir, export ONNX, pick the runtime, commit a version, and promote it only if
    it beats the served one on the same held-out human labels (``predict(model_dir)`` scores them)."""
    registry.cleanup_staging()
    if tracking is not None:
        tracking.start(f"project-{registry.dir.name}-{manifest['kind']}", _run_params(train, test, manifest, spec, cfg),
                       {"project": registry.dir.name, "kind": manifest["kind"], "control": manifest["control"]})
    try:
        result = _commit_and_gate(registry, train, test, manifest, spec, predict, fit)
    except BaseException as exc:
        if tracking is not None:
            tracking.finish({}, failed=True)
            log.warning("training failed; its tracked run is marked FAILED: %s", type(exc).__name__)
        raise
    if tracking is not None:
        final = {k: getattr(result, k) for k in ("accuracy", "f1", "auc", "ece", "seconds", "promoted", "n_served_train")}
        band = result.cascade or {}
        if band.get("band"):
            final.update(cascade_low=band["band"][0], cascade_high=band["band"][1], cascade_coverage=band.get("coverage"))
        version_dir = registry.path(result.version)
        result.tracking = tracking.finish(final, [version_dir / "curve.png", version_dir / "metrics.json"])
        (version_dir / "result.json").write_text(json.dumps(result.as_dict(), indent=1))
    return result


def _run_params(train, test, manifest: dict, spec: InputSpec, cfg: TrainConfig | None) -> dict:
    """What a tracked run records as its parameters: the data, the split and the training recipe."""
    from dataclasses import asdict

    sources = train.source.value_counts().to_dict() if "source" in train else {}
    return {"kind": manifest["kind"], "control": manifest["control"], "n_train": len(train), "n_test": len(test),
            "n_human_train": sources.get("human", 0), "n_judge_train": sources.get("judge", 0),
            "holdout": test.attrs.get("holdout"), "judge_weight": spec.judge_weight,
            **{f"train.{k}": v for k, v in asdict(cfg or TrainConfig()).items()}}


def _commit_and_gate(registry: Registry, train, test, manifest: dict, spec: InputSpec,
                     predict: Callable[..., np.ndarray], fit: Callable[[Path], dict]) -> TrainingResult:
    staging = registry.staging()
    try:
        metrics = fit(staging)
        export_onnx(staging)
        runtime = _choose_runtime(staging, test, metrics, predict)
        metrics["runtime"] = runtime
        (staging / "serving.json").write_text(json.dumps({"runtime": runtime}))
        (staging / "manifest.json").write_text(json.dumps({
            **manifest, "judge_weight": spec.judge_weight,
            # what the served model saw: with a refit, the held-out rows too (the gate then compares
            # a later model only on rows this one never trained on)
            "train_tasks": train.task_id.tolist()
            + (test.task_id.tolist() if metrics.get("n_served_train", 0) > len(train) else []),
            "test_tasks": test.task_id.tolist(), "train_sources": train.source.value_counts().to_dict()}, indent=1))
        training_curve(metrics["history"], staging / "curve.png")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        version = registry.commit(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    gate = _gate(registry, version, test, metrics, manifest["kind"], predict)
    metrics.pop("test_scores", None)
    if gate.promoted:
        registry.promote(version, gate.reason)
    result = TrainingResult.from_metrics(version, manifest["kind"], gate, registry.current(), metrics,
                                         test.attrs.get("holdout"))
    path = registry.path(version) / "result.json"
    path.write_text(json.dumps(result.as_dict(), indent=1))
    return result


def _positives(control: dict, spec: InputSpec) -> set[str]:
    from .data import positive_labels

    return positive_labels(control, spec)


def _choose_runtime(model_dir: Path, test, metrics: dict, predict: Callable[..., np.ndarray]) -> str:
    """int8 serves only where it answers as fp32 does: no label flips on the held-out rows and a mean
    score drift of at most INT8_MAX_DRIFT. (Not accuracy: after the refit the served model trained on
    those rows, so both would look perfect there; quantization error shows in the scores whatever the labels.)"""
    y = test.label.to_numpy()
    p32, p8 = predict(model_dir, "onnx"), predict(model_dir, "onnx-int8")
    metrics["onnx_accuracy"], metrics["int8_accuracy"] = binary_metrics(p32, y)["accuracy"], binary_metrics(p8, y)["accuracy"]
    flips = int(np.sum((p32 >= 0.5) != (p8 >= 0.5))) if len(y) else 0
    drift = float(np.mean(np.abs(p32 - p8))) if len(y) else 0.0
    metrics["int8_flips"], metrics["int8_drift"] = flips, round(drift, 4)
    return "onnx-int8" if len(y) and flips == 0 and drift <= INT8_MAX_DRIFT else "onnx"


def _gate(registry: Registry, version: str, test, metrics: dict, kind: str,
          predict: Callable[..., np.ndarray]) -> GateDecision:
    """Promote only a model that beats the served one on the same held-out human labels; the first
    one must beat always answering the majority class (for pairs: always the same side). A served
    model of another kind (the config changed between binary and pairwise) is replaced."""
    y = test.label.to_numpy()
    new_acc = metrics["accuracy"] or 0.0
    current = registry.current()
    current_kind = None
    if current is not None:
        manifest = registry.path(current) / "manifest.json"
        current_kind = json.loads(manifest.read_text()).get("kind", "binary") if manifest.exists() else "binary"
    if current is None or current_kind != kind:
        majority = float(max(np.mean(y), 1 - np.mean(y)))
        first = "first evaluator" if current is None else f"first {kind} evaluator (replaces {current_kind} {current})"
        if new_acc > majority:
            return GateDecision(True, f"{first}: accuracy {new_acc:.3f} beats the majority class ({majority:.3f})")
        return GateDecision(False, f"accuracy {new_acc:.3f} does not beat the majority class ({majority:.3f})")
    # compare on held-out rows the served model never trained on (after a refit it saw its own holdout)
    old_manifest = json.loads((registry.path(current) / "manifest.json").read_text())
    fresh = ~test.task_id.isin(set(old_manifest.get("train_tasks", []))).to_numpy()
    if fresh.sum() < MIN_GATE_ROWS:
        old_acc = registry.metrics(current).get("accuracy") or 0.0
        old_m = {"version": current, "accuracy": old_acc, "measured_on": "its own held-out labels"}
        if new_acc > old_acc:
            return GateDecision(True, f"accuracy {new_acc:.3f} beats {current} ({old_acc:.3f}, on its own held-out "
                                      f"labels: it trained on all but {int(fresh.sum())} of these {len(y)})", old_m)
        return GateDecision(False, f"accuracy {new_acc:.3f} does not beat {current} ({old_acc:.3f}, on its own "
                                   f"held-out labels): the current evaluator keeps serving", old_m)
    new_p = np.asarray(metrics["test_scores"]) if "test_scores" in metrics else predict(registry.path(version))
    new_m = binary_metrics(new_p[fresh], y[fresh])
    old_m = binary_metrics(predict(registry.path(current))[fresh], y[fresh])
    old_m["version"] = current
    n = int(fresh.sum())
    new_acc = new_m["accuracy"] or 0.0
    if new_acc > (old_m["accuracy"] or 0) or (new_acc == old_m["accuracy"] and (new_m["auc"] or 0) > (old_m["auc"] or 0)):
        return GateDecision(True, f"accuracy {new_acc:.3f} beats {current} ({old_m['accuracy']:.3f}) on {n} "
                                  "held-out labels", old_m)
    return GateDecision(False, f"accuracy {new_acc:.3f} does not beat {current} ({old_m['accuracy']:.3f}) on {n} "
                               "held-out labels: the current evaluator keeps serving", old_m)
