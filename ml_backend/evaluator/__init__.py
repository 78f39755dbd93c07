"""The evaluator: a small fine-tuned encoder distilled from judge + human labels. No Flask, no SDK."""
from .data import InputSpec, build_dataset, split
from .estimator import Evaluator
from .registry import Registry
from .scorer import Scorer
from .train import TrainConfig, train_evaluator

__all__ = ["Evaluator", "InputSpec", "build_dataset", "split", "Registry", "Scorer", "TrainConfig", "train_evaluator"]
