"""Experiment tracking of evaluator training: a real MLflow file store and a real offline W&B run,
read back from what each library wrote; a tracker that fails never costs the training run or leaks a
credential; a failed training run is marked failed."""
from __future__ import annotations

import glob
import socket
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from ml_backend.evaluator.pipeline import run_training
from ml_backend.evaluator.registry import Registry
from ml_backend.evaluator.tracking import Tracking, trackers_from_env
from ml_backend.evaluator.train import TrainConfig
from ml_backend.settings import Settings

from .test_evaluator import CONTROL, records

FAST = TrainConfig(epochs=2, max_length=48, batch_size=8, lr=1e-4, min_steps=0)


@pytest.mark.parametrize("env, expected", [
    ({}, ()),
    ({"MLFLOW_TRACKING_URI": "file:///tmp/x"}, ("mlflow",)),
    ({"WANDB_MODE": "offline"}, ("wandb",)),
    ({"WANDB_API_KEY": "k" * 40}, ("wandb",)),
    ({"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "disabled"}, ()),
    ({"MLFLOW_TRACKING_URI": "", "WANDB_MODE": ""}, ()),
    ({"MLFLOW_TRACKING_URI": "http://h:5000", "WANDB_MODE": "offline"}, ("mlflow", "wandb")),
])
def test_the_environment_picks_the_trackers(env, expected):
    assert trackers_from_env(env) == expected
    assert Settings.from_env(env).tracking == expected


def test_an_unknown_or_missing_tracker_is_reported_not_raised(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # what Python does when the package is not installed
    tracking = Tracking(["wandb", "neptune"])
    assert not tracking
    assert "not installed" in tracking.status["wandb"]["error"] and "labeljudge[tracking]" in tracking.status["wandb"]["error"]
    assert "unknown tracker" in tracking.status["neptune"]["error"]
    tracking.start("r", {"a": 1}, {})
    tracking.epoch({"train_loss": 0.5})
    assert tracking.finish({"accuracy": 0.5}) == tracking.status  # no tracker, nothing raised


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri


@pytest.mark.slow
def test_a_training_run_is_logged_to_a_real_mlflow_file_store(tmp_path, mlflow_store):
    from mlflow import MlflowClient

    registry = Registry(tmp_path / "evaluators", "7")
    result = run_training(records(80), CONTROL, registry, cfg=FAST, tracking=Tracking(["mlflow"]))
    status = result.tracking["mlflow"]
    assert "error" not in status and status["logged"] is True and status["experiment"] == "labeljudge"
    client = MlflowClient(mlflow_store)
    run = client.get_run(status["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "project-7-binary"
    assert run.data.tags["project"] == "7" and run.data.tags["kind"] == "binary"
    params = run.data.params
    assert params["train.lr"] == "0.0001" and params["n_train"] == str(result.n_train)
    assert params["n_test"] == str(result.n_test) and params["kind"] == "binary"
    # per-epoch numbers: the measured fit (held-out loss/accuracy each epoch) and the refit served
    heldout = client.get_metric_history(run.info.run_id, "heldout_accuracy")
    refit = client.get_metric_history(run.info.run_id, "refit_train_loss")
    assert len(heldout) == FAST.epochs and len(refit) == FAST.refit_epochs
    assert [m.step for m in heldout] == [1, 2] and [m.step for m in refit] == [3]
    assert run.data.metrics["accuracy"] == pytest.approx(result.accuracy)
    assert run.data.metrics["promoted"] == float(result.promoted)
    assert run.data.metrics["cascade_high"] == pytest.approx(result.cascade["band"][1])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curve.png", "metrics.json"} <= artifacts
    png = Path(client.download_artifacts(run.info.run_id, "curve.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the version's own result.json says where it was tracked
    saved = (registry.path(result.version) / "result.json").read_text()
    assert status["run_id"] in saved


def wandb_records(run_dir: Path) -> list:
    """The records of an offline W&B run file (the LevelDB-style log W&B syncs from): 7-byte header,
    then 32 KiB blocks of chunks, each ``crc32 u32 | length u16 | type u8`` (1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = Path(glob.glob(str(run_dir / "run-*.wandb"))[0]).read_bytes()
    assert raw[:4] == b":W&B"
    out, pos, chunk = [], 7, b""
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pos += 7
        if n == 0 and kind == 0:  # block padding
            pos += left - 7
            continue
        chunk += raw[pos:pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


@pytest.mark.slow
def test_a_training_run_is_logged_to_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "lj-test")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    registry = Registry(tmp_path / "evaluators", "3")
    result = run_training(records(80), CONTROL, registry, cfg=FAST, tracking=Tracking(["wandb"]))
    status = result.tracking["wandb"]
    assert "error" not in status and status["mode"] == "offline" and status["project"] == "lj-test"
    run_dir = Path(status["dir"])
    assert run_dir.is_dir() and status["run_id"] in run_dir.name
    recs = wandb_records(run_dir)
    kinds = [r.WhichOneof("record_type") for r in recs]
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.display_name == "project-3-binary" and run.project == "lj-test"
    text = "\n".join(str(r) for r in recs)  # every key and value the sync would upload
    for key in ("train.lr", "n_train", "heldout_accuracy", "refit_train_loss", "cascade_high", "curve"):
        assert key in text, key
    assert f'"{result.accuracy}"' in text or str(round(result.accuracy, 4)) in text
    assert kinds[-1] == "exit" or "exit" in kinds
    exit_rec = next(r.exit for r in recs if r.WhichOneof("record_type") == "exit")
    assert exit_rec.exit_code == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_tracking_server_costs_nothing_and_leaks_no_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ops:hunter2-secret@127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-that-is-secret")
    registry = Registry(tmp_path / "evaluators", "1")
    result = run_training(records(80), CONTROL, registry, cfg=FAST, tracking=Tracking(["mlflow"]))
    assert result.promoted in (True, False) and registry.path(result.version)  # trained and committed
    error = result.tracking["mlflow"]["error"]
    assert error.startswith("starting the run:")
    saved = (registry.path(result.version) / "result.json").read_text()
    for secret in ("hunter2-secret", "pw-that-is-secret"):
        assert secret not in error and secret not in saved


@pytest.mark.slow
def test_a_failed_training_run_is_marked_failed_in_mlflow(tmp_path, mlflow_store):
    from mlflow import MlflowClient

    registry = Registry(tmp_path / "evaluators", "5")
    tracking = Tracking(["mlflow"])
    with pytest.raises(OSError):
        run_training(records(80), CONTROL, registry, cfg=replace(FAST, base_model=str(tmp_path / "no-such-model")),
                     tracking=tracking)
    run = MlflowClient(mlflow_store).get_run(tracking.status["mlflow"]["run_id"])
    assert run.info.status == "FAILED"
    assert registry.versions() == [] and registry.current() is None


def test_the_report_says_where_a_run_was_tracked_and_escapes_it():
    from ml_backend.quality.html import _training_html

    run = {"job": 1, "status": "finished", "version": "evaluator-0001", "n_human_train": 10, "n_judge_train": 0,
           "n_test": 5, "n_served_train": 15, "accuracy": 0.8, "cascade": None, "device": "cpu", "seconds": 3.0,
           "promoted": True, "decision": "first evaluator", "holdout": None, "curve": None,
           "tracking": {"mlflow": {"run_id": "abc123", "experiment": "labeljudge"},
                        "wandb": {"error": "starting the run: <script>x</script>"}}}
    page = _training_html([run, {**run, "job": 2, "soup": {"seeds": [0, 1], "accuracy_by_seed": [0.75, 0.85]}}])
    assert page.count("seeds alone") == 1 and "seeds alone: 0.750 / 0.850" in page
    assert "tracked in mlflow run abc123; wandb: stopped (starting the run: &lt;script&gt;" in page
    assert "<script>" not in page
