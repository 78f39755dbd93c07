"""Metrics and reports on plain data: no Flask, no Label Studio SDK."""
from .metrics import agreement, bootstrap_ci, calibration, label_metrics, paired_difference

__all__ = ["agreement", "bootstrap_ci", "calibration", "label_metrics", "paired_difference"]
