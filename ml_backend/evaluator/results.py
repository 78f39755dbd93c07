"""What a training run decides and returns, as typed records (plain data; JSON at the edges via
``as_dict``), so callers read named fields rather than a 22-key dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """Whether a newly trained evaluator replaces the served one, why, and the served one's numbers it
    was compared with (None for a first evaluator, compared with the majority class)."""

    promoted: bool
    reason: str
    compared_with: dict | None = None


@dataclass
class TrainingResult:
    """One training run: the committed version, the gate's decision and the held-out numbers."""

    version: str
    kind: str  # "binary" or "reward"
    promoted: bool
    reason: str
    current: str | None  # the version served after the gate
    n_train: int
    n_test: int
    accuracy: float | None
    f1: float | None
    auc: float | None
    ece: float | None
    seconds: float
    device: str
    runtime: str
    compared_with: dict | None
    n_human_train: int
    n_judge_train: int
    holdout: Any
    n_served_train: int
    cascade: dict | None = None
    soup: dict | None = None
    tracking: dict | None = None  # per tracker: its run id / status, when tracking is on

    @classmethod
    def from_metrics(cls, version: str, kind: str, gate: GateDecision, current: str | None, metrics: dict,
                     holdout: Any) -> TrainingResult:
        return cls(version=version, kind=kind, promoted=gate.promoted, reason=gate.reason, current=current,
                   n_train=metrics["n_train"], n_test=metrics["n_test"], accuracy=metrics["accuracy"],
                   f1=metrics["f1"], auc=metrics["auc"], ece=metrics["ece"], seconds=metrics["seconds"],
                   device=metrics["device"], runtime=metrics["runtime"], compared_with=gate.compared_with,
                   n_human_train=metrics["n_human_train"], n_judge_train=metrics["n_judge_train"], holdout=holdout,
                   n_served_train=metrics.get("n_served_train", metrics["n_train"]), cascade=metrics.get("cascade"),
                   soup=metrics.get("soup"))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["tracking"] is None:
            del out["tracking"]
        return out
