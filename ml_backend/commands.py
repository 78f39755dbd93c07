"""The project commands of the CLI: label, sync, report, prompt, prompts."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from .backend import LabelJudgeBackend
from .judge.providers import scrub
from .labelstudio import LabelStudioAPI
from .settings import ConfigError, Settings


class UserError(Exception):
    """Something the user must fix; printed without a traceback."""


def _context(args: argparse.Namespace) -> tuple[Settings, LabelJudgeBackend, LabelStudioAPI]:
    if not args.url or not args.api_key:
        raise UserError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or --url / --api-key)")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return settings, LabelJudgeBackend(settings), LabelStudioAPI(args.url, args.api_key)


def label(args: argparse.Namespace) -> int:
    from .labeling import label_project

    settings, backend, api = _context(args)
    overrides = {"metric": args.metric, "model": args.model}
    if args.prompt:
        overrides["prompt"] = Path(args.prompt).read_text()
    stop = threading.Event()
    bar = tqdm(total=0, unit="task", desc="labeling", disable=args.json and not sys.stderr.isatty())

    def progress(summary, todo: int) -> None:
        bar.total = todo
        bar.n = summary.labeled + summary.failed
        bar.set_postfix(tok_in=summary.tokens_in, tok_out=summary.tokens_out, cost=f"${summary.cost:.4f}",
                        cached=summary.cached, failed=summary.failed, refresh=False)
        bar.refresh()

    def interrupt(*_):  # first Ctrl-C: finish what is in flight and write it; second: die
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping: writing what is done; run the same command again to continue", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        summary = label_project(backend, api, args.project, overrides=overrides, sample=args.sample,
                                concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm,
                                batch_size=args.batch_size, progress=progress, stop=stop)
    except Exception as exc:
        raise UserError(scrub(str(exc), (settings.openai_api_key, args.api_key))) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    out = summary.as_dict()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['model_version']}: labeled {out['labeled']}, skipped {out['skipped']} (already done), "
              f"failed {out['failed']}, cached {out['cached']}; tokens {out['tokens_in']}/{out['tokens_out']}, "
              f"cost ${out['cost']:.4f}, {out['seconds']} s")
        for f in out["failures"][:10]:
            print(f"  task {f['task']}: {f['reason']}")
    return 0 if not stop.is_set() else 130


def sync(args: argparse.Namespace) -> int:
    from .sync import resync_project

    _, backend, api = _context(args)
    print(json.dumps(resync_project(api, backend.store, args.project)))
    return 0


def report(args: argparse.Namespace) -> int:
    from .quality.html import render_html
    from .reporting import project_report

    _, backend, api = _context(args)
    rep = project_report(api, backend.store, args.project)
    if args.out:
        Path(args.out).write_text(render_html(rep, title=f"LabelJudge report: project {args.project}"))
    if args.json:
        print(json.dumps(rep, default=str))
        return 0
    print(f"project {args.project}: {rep['n_reference']} of {rep['n_tasks']} tasks have a human reference "
          f"({rep['reference']}); control {rep['primary_control']}")
    print(f"{'model version':<26}{'n':>5}{'acc':>7}{'95% CI':>15}{'F1':>7}{'kappa':>7}{'cover':>7}{'ECE':>7}{'cost $':>9}")
    for v in rep["versions"]:
        ci = f"{v['ci_low']:.2f}-{v['ci_high']:.2f}" if v["ci_low"] is not None else "-"
        print(f"{v['model_version']:<26}{v['n']:>5}{_f(v['accuracy'])}{ci:>15}{_f(v['macro_f1'])}{_f(v['kappa'])}"
              f"{_f(v['coverage'])}{_f(v['ece'])}{v.get('cost') or 0:>9.4f}")
    if rep["comparison"]:
        print(rep["comparison"]["message"])
    if args.out:
        print(f"HTML report: {args.out}")
    return 0


def _f(x) -> str:
    return f"{x:>7.3f}" if isinstance(x, (int, float)) else f"{'-':>7}"


def prompt(args: argparse.Namespace) -> int:
    _, backend, api = _context(args)
    backends = api.backends(args.project)
    if not backends:
        raise UserError(f"project {args.project} has no connected backend: connect LabelJudge first")
    ml = backends[0]
    from .settings import parse_extra_params

    params = parse_extra_params(ml.extra_params)
    if args.action == "show":
        print(json.dumps(params, indent=1))
        return 0
    if bool(args.file) == bool(args.metric):
        raise UserError("give exactly one of --file or --metric")
    if args.file:
        params["prompt"] = Path(args.file).read_text()
        params.pop("metric", None)
    else:
        params["metric"] = args.metric
        params.pop("prompt", None)
    label_config = api.client.projects.get(id=args.project).label_config
    try:
        state = backend.setup(args.project, label_config, params)  # validate before changing Label Studio
    except Exception as exc:
        raise UserError(f"prompt rejected: {exc}") from None
    api.set_extra_params(args.project, ml.id, ml.url, params)
    print(f"project {args.project}: judge version is now {state.version}")
    return 0


def prompts(args: argparse.Namespace) -> int:
    from .reporting import project_report

    _, backend, api = _context(args)
    rep = project_report(api, backend.store, args.project)
    scores = {v["model_version"]: v for v in rep["versions"]}
    rows = []
    for v in backend.store.versions(str(args.project)):
        m = scores.get(v["version"], {})
        rows.append({"model_version": v["version"], "accuracy": m.get("accuracy"), "n": m.get("n", 0),
                     "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), **v["spec"]})
    rows.sort(key=lambda r: (r["accuracy"] is not None, r["accuracy"] or 0), reverse=True)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    for r in rows:
        acc = f"{r['accuracy']:.3f} (n={r['n']})" if r["accuracy"] is not None else "not scored yet"
        first = (r["template"] or "").strip().splitlines()[0][:60] if r.get("template") else ""
        print(f"{r['model_version']:<20} {acc:<18} {r['model']:<16} shots={len(r['few_shot'])} {first}")
    return 0
