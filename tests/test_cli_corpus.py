"""The CLI's half of the adversarial corpus: every user error is one clear line on stderr and exit
status 2, never a traceback (files that are missing, empty, ragged or not what they say; numbers that
can never work; a Label Studio that refuses the connection)."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ml_backend.cli import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {
        "empty.csv": b"", "header.csv": b"input,output\n", "ragged.csv": b"a,b\n1,2\n3,4,5,6\n",
        "binary.csv": b"\xff\xfe\x00\x01garbage\x00", "bad.jsonl": b'{"a": 1}\n{not json\n',
        "empty.jsonl": b"", "notalist.json": b'{"a": 1}', "bad.json": b"[1, 2", "bad.parquet": b"not parquet",
        "good.csv": b"input,output\nq,a\n", "nocols.csv": b"foo,bar\n1,2\n", "data.txt": b"hello",
        "labelbox.json": b"{broken",
    }
    for name, content in made.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "folder.csv").mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"input": {"text_a": ["output"], "text_b": ["input"]}}))
    paths = {name: str(tmp_path / name) for name in [*made, "folder.csv", "model"]}
    paths["missing"] = str(tmp_path / "missing.csv")
    paths["tmp"] = str(tmp_path)
    return paths


LS = ["--url", "http://127.0.0.1:{port}", "--api-key", "tok"]

CASES: list[tuple[str, list[str], str]] = [
    # (id, argv, what the message must say); {port} is a closed port, {name} a file from the fixture
    ("label-no-url", ["label", "--project", "1"], "LABEL_STUDIO_URL"),
    ("label-concurrency-0", ["label", "--project", "1", "--concurrency", "0", *LS], "must be above 0"),
    ("label-concurrency-neg", ["label", "--project", "1", "--concurrency", "-4", *LS], "must be above 0"),
    ("label-concurrency-text", ["label", "--project", "1", "--concurrency", "many", *LS], "not a int"),
    ("label-rpm-0", ["label", "--project", "1", "--rpm", "0", *LS], "must be above 0"),
    ("label-tpm-nan", ["label", "--project", "1", "--tpm", "nan", *LS], "must be above 0"),
    ("label-batch-size-0", ["label", "--project", "1", "--batch-size", "0", *LS], "must be above 0"),
    ("label-sample-0", ["label", "--project", "1", "--sample", "0", *LS], "must be above 0"),
    ("label-max-cost-neg", ["label", "--project", "1", "--max-cost", "-1", *LS], "must be above 0"),
    ("label-max-cost-inf", ["label", "--project", "1", "--max-cost", "inf", *LS], "must be above 0"),
    ("label-poll-0", ["label", "--project", "1", "--poll-interval", "0", *LS], "must be above 0"),
    ("label-project-0", ["label", "--project", "0", *LS], "must be above 0"),
    ("label-project-text", ["label", "--project", "abc", *LS], "not a int"),
    ("label-no-project", ["label", *LS], "--project"),
    ("label-refused", ["label", "--project", "1", *LS], "nothing answers at"),
    ("label-prompt-missing", ["label", "--project", "1", "--prompt", "{missing}", *LS], "cannot read"),
    ("sync-refused", ["sync", "--project", "1", *LS], "nothing answers at"),
    ("report-refused", ["report", "--project", "1", *LS], "nothing answers at"),
    ("prompts-refused", ["prompts", "--project", "1", *LS], "nothing answers at"),
    ("prompt-refused", ["prompt", "--project", "1", "show", *LS], "nothing answers at"),
    ("prompt-bad-action", ["prompt", "--project", "1", "delete", *LS], "invalid choice"),
    ("export-refused", ["export", "--project", "1", "--out", "{tmp}/x.csv", *LS], "nothing answers at"),
    ("train-refused", ["train", "--project", "1", *LS], "nothing answers at"),
    ("import-missing", ["import", "{missing}", "--project", "1", *LS], "no such file"),
    ("import-empty", ["import", "{empty.csv}", "--project", "1", *LS], "empty"),
    ("import-header-only", ["import", "{header.csv}", "--project", "1", *LS], "no rows"),
    ("import-ragged", ["import", "{ragged.csv}", "--project", "1", *LS], "not a valid csv"),
    ("import-binary", ["import", "{binary.csv}", "--project", "1", *LS], "not a valid csv"),
    ("import-bad-jsonl", ["import", "{bad.jsonl}", "--project", "1", *LS], "not a valid jsonl"),
    ("import-empty-jsonl", ["import", "{empty.jsonl}", "--project", "1", *LS], "jsonl"),
    ("import-json-object", ["import", "{notalist.json}", "--project", "1", *LS], "json list"),
    ("import-bad-json", ["import", "{bad.json}", "--project", "1", *LS], "not a valid json"),
    ("import-bad-parquet", ["import", "{bad.parquet}", "--project", "1", *LS], "not a valid parquet"),
    ("import-directory", ["import", "{folder.csv}", "--project", "1", *LS], "no such file"),
    ("import-txt", ["import", "{data.txt}", "--project", "1", *LS], "unsupported file type"),
    ("import-refused", ["import", "{good.csv}", "--project", "1", *LS], "nothing answers at"),
    ("import-no-target", ["import", "{good.csv}", *LS], "--project"),
    ("import-labelbox-bad", ["import", "{labelbox.json}", "--format", "labelbox", "--project", "1", *LS],
     "not valid json"),
    ("import-labelbox-missing", ["import", "{missing}", "--format", "labelbox", "--project", "1", *LS],
     "cannot read"),
    ("evaluate-missing", ["evaluate", "{missing}", "--model", "{model}"], "no such file"),
    ("evaluate-empty", ["evaluate", "{empty.csv}", "--model", "{model}"], "empty"),
    ("evaluate-no-columns", ["evaluate", "{nocols.csv}", "--model", "{model}"], "none of output"),
    ("evaluate-no-model", ["evaluate", "{good.csv}", "--model", "{tmp}/nothing"], "not a model directory"),
    ("evaluate-version-no-project", ["evaluate", "{good.csv}", "--model", "evaluator-0001"], "not a model directory"),
    ("evaluate-unknown-version", ["evaluate", "{good.csv}", "--model", "evaluator-0009", "--project", "3"],
     "no evaluator version"),
    ("evaluators-promote-unknown", ["evaluators", "--project", "3", "--promote", "evaluator-0042"],
     "no evaluator version"),
    ("evaluators-rollback-none", ["evaluators", "--project", "3", "--rollback"], "roll back"),
    ("worker-no-redis", ["worker", "--burst"], "REDIS_URL"),
    # the real cause, never "set LABEL_STUDIO_URL" when it is set
    ("report-url-no-scheme", ["report", "--project", "1", "--url", "127.0.0.1:{port}", "--api-key", "tok"],
     "has no scheme: use http://127.0.0.1:"),
    ("report-refused-names-url", ["report", "--project", "1", *LS], "at http://127.0.0.1:"),
    ("evaluators-given-wrong-url", ["evaluators", "--project", "3", *LS], "nothing answers at http://127.0.0.1"),
    ("next-audit-share-2", ["next", "--project", "1", "--audit-share", "2", *LS], "must be from 0 to 1"),
    ("next-audit-share-text", ["next", "--project", "1", "--audit-share", "half", *LS], "is not a number"),
    ("next-n-0", ["next", "--project", "1", "--n", "0", *LS], "must be above 0"),
    ("next-refused", ["next", "--project", "1", *LS], "nothing answers at"),
    ("export-url-no-scheme", ["export", "--project", "1", "--out", "{tmp}/x.csv", "--url", "localhost:{port}",
                              "--api-key", "tok"], "has no scheme"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("align-refused", ["align", "--project", "1", *LS], "nothing answers at"),
    ("align-rollback-none", ["align", "--project", "1", "--rollback", *LS], "no alignment promotion to roll back"),
    ("align-holdout-2", ["align", "--project", "1", "--holdout", "2", *LS], "must be from 0 to 1"),
    ("align-holdout-1", ["align", "--project", "1", "--holdout", "1", *LS], "above 0 and below 1"),
    ("align-max-calls-0", ["align", "--project", "1", "--max-calls", "0", *LS], "must be above 0"),
    ("align-max-cost-text", ["align", "--project", "1", "--max-cost", "lots", *LS], "is not a float"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_user_errors(case, files, capsys, monkeypatch, tmp_path):
    _, argv, needle = case
    for var in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "REDIS_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("LABELJUDGE_HOME", str(tmp_path / "no-demo"))  # never a running quickstart's
    port = _closed_port()
    args = [a.replace("{port}", str(port)) for a in argv]
    args = [files[a[1:-1]] if a.startswith("{") and a.endswith("}") and a[1:-1] in files else a for a in args]
    args = [a.replace("{tmp}", files["tmp"]) for a in args]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert needle.lower() in err.lower(), err
    lines = [line for line in err.splitlines() if line.startswith("labeljudge")]
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), err  # one clear line (argparse adds its usage)
    assert "0task" not in err and "0call" not in err  # no empty progress bar before the error


def test_cli_corpus_size():
    assert len(CASES) >= 45


def test_a_quickstart_elsewhere_prints_commands_that_find_it(tmp_path, monkeypatch, capsys):
    # the CLI looks for the demo in ./.labeljudge (or $LABELJUDGE_HOME): a --home elsewhere is named in
    # every printed command, or they would not find it
    from types import SimpleNamespace

    from ml_backend.cli.quickstart import _summary

    monkeypatch.delenv("LABELJUDGE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    ls = SimpleNamespace(url="http://127.0.0.1:1", username="u", password="p")
    _summary(ls, 1, "http://127.0.0.1:2", tmp_path / "elsewhere", "x", 0)
    out = capsys.readouterr().out
    assert f"LABELJUDGE_HOME={tmp_path / 'elsewhere'} " in out and f"--stop --home {tmp_path / 'elsewhere'}" in out
    _summary(ls, 1, "http://127.0.0.1:2", tmp_path / ".labeljudge", "x", 0)
    assert "LABELJUDGE_HOME=" not in capsys.readouterr().out


def test_a_training_run_prints_one_whole_line_at_every_stage():
    from ml_backend.cli.commands import training_line

    assert training_line({"job": 2, "version": None, "promoted": None, "status": "running", "decision": None}) \
        == "training job 2: running"
    assert training_line({"job": 3, "version": "evaluator-0002", "promoted": False, "status": "finished",
                          "decision": "0.81 is below the served 0.84"}) \
        == "training job 3: evaluator-0002 not promoted: 0.81 is below the served 0.84"


def test_a_port_holders_command_line_is_cut_at_a_word():
    from ml_backend.cli.preflight import short_command

    argv = ["/usr/bin/python3", "-m", "label_studio.server", "start", "--data-dir", "/very/long/" + "x" * 90, "--port", "8080"]
    short = short_command(argv)
    assert short == "python3 -m label_studio.server start --data-dir ..."
    assert short_command(["/bin/sleep", "100"]) == "sleep 100" and short_command([]) == ""
