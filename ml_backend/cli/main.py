"""``labeljudge``: serve the backend, and run the no-key quickstart against a real Label Studio."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path

from .credentials import diagnose

COMMANDS = {"import": "import_", "review-queue": "review_queue", "next": "next_review"}  # command -> its function in commands


def _positive(kind: type):
    """An argparse type: a number above zero (0 concurrency or 0 requests a minute can never finish)."""
    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a {kind.__name__}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be above 0, got {raw}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _share(raw: str) -> float:
    """An argparse type: a share from 0 to 1."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {raw}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Every command and option (the CLI reference in the docs is generated from this parser)."""
    parser = argparse.ArgumentParser(prog="labeljudge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ML backend (gunicorn; --dev for Flask's server)")
    serve.add_argument("--host", default=os.environ.get("HOST_BIND", "0.0.0.0"), help="address to bind (HOST_BIND)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("LABELJUDGE_PORT", 9090)),
                       help="port to listen on (LABELJUDGE_PORT)")
    serve.add_argument("--threads", type=int, default=None,
                       help="request threads (default SERVE_THREADS, 8); /predict may hold all but two")
    serve.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")

    quick = sub.add_parser("quickstart", help="start Label Studio + backend, create a demo project, pre-label it")
    quick.add_argument("--config", default="halueval",
                       help="halueval (real data, the default) or a label config name in label_configs/")
    quick.add_argument("--ls-port", type=int, default=8080, help="Label Studio's port")
    quick.add_argument("--port", type=int, default=9090, help="backend port")
    quick.add_argument("--home", default=".labeljudge", help="where data, logs and models live")
    quick.add_argument("--stop", action="store_true", help="stop what a previous quickstart started")

    def project_cmd(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--project", type=_positive(int), required=True, help="Label Studio project id")
        p.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"), help="Label Studio URL")
        p.add_argument("--api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"), help="Label Studio token")
        return p

    label = project_cmd("label", "label every task without a prediction of the current judge version")
    label.add_argument("--sample", type=_positive(int), help="only a diverse sample of N tasks")
    label.add_argument("--concurrency", type=_positive(int), default=8, help="judge calls in flight at once")
    label.add_argument("--rpm", type=_positive(float), help="max requests per minute")
    label.add_argument("--tpm", type=_positive(float), help="max (estimated) tokens per minute")
    label.add_argument("--max-cost", type=_positive(float),
                       help="stop cleanly once the run has spent this many dollars (a re-run continues)")
    label.add_argument("--batch-size", type=_positive(int), default=500,
                       help="predictions written per API call (or what 2 s gathered)")
    label.add_argument("--batch-api", action="store_true",
                       help="send the requests as one OpenAI Batch API batch (half price, up to 24 h); "
                            "a re-run collects the same batch")
    label.add_argument("--poll-interval", type=_positive(float), default=30.0, help="seconds between batch status checks")
    label.add_argument("--prompt", help="file with a prompt template (overrides extra_params)")
    label.add_argument("--metric", help="built-in metric (overrides extra_params)")
    label.add_argument("--model", help="judge model (overrides extra_params)")
    label.add_argument("--json", action="store_true", help="print one JSON object at the end")

    align = project_cmd("align", "align the judge with the project's human labels; promote it only if it is "
                                 "better on held-out labels")
    align.add_argument("--holdout", type=_share, default=0.5,
                       help="share of the human labels held out of the search, to test the winner on (0..1)")
    align.add_argument("--seed", type=int, default=0, help="the split's and the search's seed (recorded)")
    align.add_argument("--max-calls", type=_positive(int), help="stop the search at this many LLM calls")
    align.add_argument("--max-cost", type=_positive(float), help="stop the search at this many dollars")
    align.add_argument("--min-gain", type=float, default=0.0,
                       help="promote only when the held-out gain's one-sided 95%% lower bound is above this (0.02: 2 points)")
    align.add_argument("--target-gain", type=_positive(float), default=0.05,
                       help="the gain the held-out part must be able to show (refuses with fewer labels than it needs)")
    align.add_argument("--concurrency", type=_positive(int), default=8, help="judge calls in flight at once")
    align.add_argument("--rpm", type=_positive(float), help="max requests per minute (judge and reflection calls)")
    align.add_argument("--dry-run", action="store_true", help="print the planned calls and cost, spend nothing")
    align.add_argument("--no-promote", action="store_true", help="keep the winner as a proposal to read")
    align.add_argument("--rollback", action="store_true", help="put back the judge the last promotion replaced")
    align.add_argument("--json", action="store_true", help="print one JSON object at the end")

    project_cmd("sync", "re-read all annotations of a project into the backend's store")

    nxt = project_cmd("next", "the tasks to review next: the judge's likely mistakes first, plus random audits")
    nxt.add_argument("--n", type=_positive(int), default=20, help="how many tasks")
    nxt.add_argument("--audit-share", type=_share, default=0.1,
                     help="share of random audits (0..1): they keep the label set's accuracy estimate unbiased")
    nxt.add_argument("--seed", type=int, help="the random audits' seed (default: the time)")
    nxt.add_argument("--json", action="store_true", help="print one JSON object at the end")

    project_cmd("review-queue", "add a Data Manager tab sorted by prediction score, least confident first")

    report = project_cmd("report", "accuracy of every model version against the human reference")
    report.add_argument("--json", action="store_true", help="print one JSON object at the end")
    report.add_argument("--out", help="write the HTML report to this file")

    prompt = project_cmd("prompt", "change the project's prompt (the connection's extra_params)")
    prompt.add_argument("action", choices=["set", "show"], help="set the project's prompt from a file, or show it")
    prompt.add_argument("--file", help="prompt template file (for set)")
    prompt.add_argument("--metric", help="a built-in metric instead of a prompt (for set)")

    prompts = project_cmd("prompts", "list the judge versions of a project with their scores")
    prompts.add_argument("--json", action="store_true", help="print one JSON object at the end")

    imp = sub.add_parser("import", help="import a CSV/JSONL/Parquet dataset (or Labelbox JSON) as tasks")
    imp.add_argument("file", help="the dataset: .csv, .jsonl, .parquet, or Labelbox JSON")
    imp.add_argument("--project", type=_positive(int), help="existing project id (else --config creates one)")
    imp.add_argument("--config", help="label config name in label_configs/ (or a path) for a new project")
    imp.add_argument("--title", help="title of the new project")
    imp.add_argument("--format", default="table", choices=["table", "labelbox"], help="a table, or a Labelbox export")
    imp.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"), help="Label Studio URL")
    imp.add_argument("--api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"), help="Label Studio token")

    exp = project_cmd("export", "export tasks with judge and human labels to CSV/JSONL/Parquet")
    exp.add_argument("--out", required=True, help="file.csv, file.jsonl or file.parquet")
    exp.add_argument("--preferences", action="store_true",
                     help="pairwise projects: chosen/rejected JSONL for RLHF/DPO (human labels)")
    exp.add_argument("--include-judge", action="store_true", help="with --preferences: judge labels too")
    exp.add_argument("--json", action="store_true", help="print one JSON object at the end")

    train = project_cmd("train", "fine-tune an evaluator now from the project's labels")
    train.add_argument("--json", action="store_true", help="print one JSON object at the end")

    evs = project_cmd("evaluators", "list a project's evaluator versions; promote or roll back")
    evs.add_argument("--rollback", action="store_true", help="serve the previously promoted evaluator again")
    evs.add_argument("--promote", help="serve this version")
    evs.add_argument("--json", action="store_true", help="print one JSON object at the end")

    ev = sub.add_parser("evaluate", help="score a CSV/JSONL/Parquet file with an evaluator (adds a score column)")
    ev.add_argument("data", help="a .csv, .jsonl or .parquet file to score")
    ev.add_argument("--model", required=True, help="evaluator version (with --project) or a model directory")
    ev.add_argument("--project", type=_positive(int), help="project whose registry holds --model")
    ev.add_argument("--out", help="write the scored table here (default: print CSV)")

    worker = sub.add_parser("worker", help="run an RQ worker for training jobs (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.explicit_labelstudio = any(a.split("=")[0] in ("--url", "--api-key") for a in given)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call drowns the progress bars
    # libraries' deprecation notices (transformers, torch) are for their callers' developers, not for users
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.command == "serve":
        return _serve(args)
    if args.command == "quickstart":
        from .quickstart import run_quickstart, stop_quickstart

        if args.stop:
            return stop_quickstart(Path(args.home), port=args.port, ls_port=args.ls_port)
        return run_quickstart(args.config, Path(args.home), ls_port=args.ls_port, port=args.port)
    from . import commands

    if os.environ.get("LOG_LEVEL", "INFO").upper() != "DEBUG":
        # libraries' warnings (torch's ONNX tracer, onnxruntime's quantizer logs through the root logger,
        # transformers' own "[transformers] ... deprecated") are for their callers' developers: a user sees
        # ours only, and of ours what a command prints plus warnings (the server's "project 1 now serves
        # evaluator-0001" is not a command's output); LOG_LEVEL=INFO or DEBUG shows more
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        level = logging.getLevelName(os.environ.get("LOG_LEVEL", "WARNING").upper())
        logging.getLogger().setLevel(logging.ERROR)
        logging.getLogger("ml_backend").setLevel(level if isinstance(level, int) else logging.INFO)
        warnings.filterwarnings("ignore")
    if getattr(args, "json", False):  # below WARNING is noise around a JSON document
        logging.getLogger("ml_backend").setLevel(max(logging.WARNING, logging.getLogger("ml_backend").level))
    try:
        if getattr(args, "json", False):
            with commands.quiet_stdout():
                return getattr(commands, COMMANDS.get(args.command, args.command))(args)
        return getattr(commands, COMMANDS.get(args.command, args.command))(args)
    except Exception as exc:
        message = commands.user_message(exc)
        if getattr(args, "labelstudio", None):  # the URL or the key may be the cause (of an odd answer too)
            message = diagnose(exc, *args.labelstudio) or message
        if message is None:  # ours, not the user's: one line, the traceback only when asked for
            logging.getLogger("labeljudge").debug("traceback", exc_info=True)
            print(f"labeljudge {args.command}: internal error: {type(exc).__name__}: "
                  f"{commands.redact(str(exc))[:300]} (LOG_LEVEL=DEBUG shows the traceback)", file=sys.stderr)
            return 1
        print(f"labeljudge {args.command}: {message}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from ..http import create_app
    from ..settings import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"labeljudge: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level)
    if args.threads is not None:
        settings = dataclasses.replace(settings, serve_threads=args.threads)
    from .preflight import PreflightError, check_model_dir, check_port

    try:
        check_model_dir(settings)
        check_port(args.host, args.port)
    except PreflightError as exc:
        print(f"labeljudge serve: {exc}", file=sys.stderr)
        return 2
    if args.dev:
        create_app(settings).run(host=args.host, port=args.port, threaded=True)
        return 0
    from gunicorn.app.base import BaseApplication

    class _App(BaseApplication):
        def load_config(self) -> None:
            # One worker: models load once per process; threads serve concurrent requests.
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", 1)
            self.cfg.set("threads", settings.serve_threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", "-")

        def load(self):  # noqa: ANN201
            return create_app(settings)

    _App().run()
    return 0
