"""The CLI's commands: each builds the services from the settings (flags first) and runs a workflow."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from ..labelstudio import LabelStudioAPI
from ..redact import redact
from ..services import Services
from ..settings import ConfigError, Settings
from . import credentials
from .output import UserError, emit_json, quiet_stdout, user_message  # noqa: F401  (main uses them from here)


class LazyBar:
    """A tqdm bar drawn on its first update, so a command that fails before any progress (a 404, a refused
    connection) prints its error alone, not "labeling: 0task [00:00, ?task/s]" before it."""

    def __init__(self, **kwargs) -> None:
        self._kwargs, self._bar = kwargs, None

    def _get(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(total=0, **self._kwargs)
        return self._bar

    def __getattr__(self, name: str):
        return getattr(self._get(), name)

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._get(), name, value)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def stop_on_interrupt(stop: threading.Event, saying: str):
    """A SIGINT handler: the first Ctrl-C sets ``stop`` (the run ends cleanly, saying what it keeps), the
    second raises KeyboardInterrupt."""
    def interrupt(*_) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"\nstopping: {saying}", file=sys.stderr)

    return interrupt


def settings_for(args: argparse.Namespace) -> Settings:
    """The CLI's settings: the environment, then what a running quickstart knows (its Label Studio,
    token and store) for whatever the environment and flags leave unset, so the quickstart's printed
    commands work as printed. A store other than the running demo's is pointed out on stderr."""
    from .quickstart import find_demo

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    demo = find_demo() if not (getattr(args, "url", None) and getattr(args, "api_key", None)
                              and os.environ.get("MODEL_DIR")) else None
    args.demo = demo  # which Label Studio to use is _context's (credentials.resolve): it names each mistake
    if demo is not None:
        if not os.environ.get("MODEL_DIR"):
            settings = replace(settings, model_dir=Path(demo["model_dir"]))
        elif Path(os.environ["MODEL_DIR"]).resolve() != Path(demo["model_dir"]).resolve():
            print(f"note: the running demo backend keeps its store in {demo['model_dir']}; this command uses "
                  f"MODEL_DIR={os.environ['MODEL_DIR']} (its own cache, ledger and evaluators)", file=sys.stderr)
    return settings


def _context(args: argparse.Namespace) -> tuple[Settings, Services, LabelStudioAPI]:
    settings = settings_for(args)
    creds = credentials.resolve(args.url, args.api_key, args.demo)
    # --url / --api-key win over the environment everywhere, training's own client included
    settings = replace(settings, label_studio_url=creds.url, label_studio_api_key=creds.key)
    services = Services.build(settings)  # registers the secrets: no message below can show them
    api = services.require_labelstudio("this command")
    args.labelstudio = (api, creds)  # a failure talking to it is explained by credentials.diagnose
    return settings, services, api


def label(args: argparse.Namespace) -> int:
    from ..store import process_owner
    from ..workflows.labeling import label_project

    settings, services, api = _context(args)
    overrides = {"metric": args.metric, "model": args.model}
    if args.prompt:
        overrides["prompt"] = Path(args.prompt).read_text()
    stop = threading.Event()
    bar = LazyBar(unit="task", desc="labeling", disable=args.json and not sys.stderr.isatty())
    # the run is a store job too, so the report's "Labeling jobs" and GET /jobs list it beside the backend's
    store, reason = services.store, "labeljudge label (command line)"
    job_id = store.create_job(str(args.project), "label", owner=process_owner())
    shown = {"at": 0.0}

    def progress(summary, todo: int) -> None:
        bar.set_description(summary.stage or "labeling", refresh=False)
        bar.total = todo
        bar.n = summary.labeled + summary.failed
        bar.set_postfix(tok_in=summary.tokens_in, tok_out=summary.tokens_out, cost=f"${summary.cost:.4f}",
                        cached=summary.cached, failed=summary.failed, refresh=False)
        bar.refresh()
        if time.monotonic() - shown["at"] >= 0.5 or bar.n >= todo:  # a store write per task costs more than it
            shown["at"] = time.monotonic()
            store.update_job(job_id, status="running", progress={
                "reason": reason, "done": bar.n, "total": todo, "failed": summary.failed,
                "cost": round(summary.cost, 6), **({"stage": summary.stage} if summary.stage else {})})

    def batch_progress(status) -> None:
        bar.set_description(f"batch {status.batch_id} {status.status} {status.completed + status.failed}/{status.total}")
        bar.refresh()

    previous = signal.signal(signal.SIGINT, stop_on_interrupt(stop, "writing what is done; run the same command "
                                                                     "again to continue"))
    try:
        summary = label_project(services, api, args.project, overrides=overrides, sample=args.sample,
                                concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm,
                                batch_size=args.batch_size, progress=progress, stop=stop,
                                batch_api=args.batch_api, poll_interval=args.poll_interval,
                                batch_progress=batch_progress, max_cost=args.max_cost)
    except BaseException as exc:
        why = user_message(exc) if isinstance(exc, Exception) else None
        store.update_job(job_id, status="failed", error=(why or redact(f"{type(exc).__name__}: {exc}"))[:500])
        if isinstance(exc, Exception):
            raise UserError(why or f"{type(exc).__name__}: {redact(str(exc))}") from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    out = summary.as_dict()
    store.update_job(job_id, status="cancelled" if summary.stopped == "interrupted" else "finished",
                     progress={"reason": reason}, result=out)
    if args.json:
        emit_json(out)
    else:
        print(f"{out['model_version']}: labeled {out['labeled']}, skipped {out['skipped']} (already done), "
              f"failed {out['failed']}, cached {out['cached']}; tokens {out['tokens_in']}/{out['tokens_out']}, "
              f"cost ${out['cost']:.4f}, {out['seconds']} s")
        for f in out["failures"][:10]:
            print(f"  task {f['task']}: {f['reason']}")
        if summary.stopped == "budget":
            print(f"stopped: the budget of ${args.max_cost:.4f} was reached; run the same command again "
                  f"(with a larger --max-cost) to continue", file=sys.stderr)
    return 130 if summary.stopped == "interrupted" else 0


def align(args: argparse.Namespace) -> int:
    from ..store import Busy, process_owner
    from ..workflows.alignment import AlignmentRefused, align_project, rollback

    _, services, api = _context(args)
    if args.rollback:
        try:
            out = rollback(services, api, args.project)
        except AlignmentRefused as exc:
            raise UserError(str(exc)) from None
        if args.json:
            emit_json(out)
        else:
            print(f"project {args.project}: rolled back {out['rolled_back']}; the judge is {out['version']} again")
        return 0
    if not 0.0 < args.holdout < 1.0:
        raise UserError("--holdout must be above 0 and below 1")
    stop = threading.Event()
    bar = LazyBar(unit="call", desc="aligning", disable=args.json and not sys.stderr.isatty())
    store = services.store
    job_id = None if args.dry_run else store.create_job(str(args.project), "align", owner=process_owner())

    def progress(update: dict) -> None:
        if update.get("stage"):
            bar.set_description(update["stage"][:70], refresh=False)
        if "calls" in update:
            bar.n = update["calls"]
            bar.set_postfix(cost=f"${update.get('cost', 0):.4f}", refresh=False)
        bar.refresh()
        if job_id is not None:
            store.update_job(job_id, status="running", progress=update)

    previous = signal.signal(signal.SIGINT, stop_on_interrupt(stop, "keeping what was scored; nothing unfinished "
                                                                     "is promoted"))
    try:
        out = align_project(services, api, args.project, job_id=job_id, holdout_share=args.holdout, seed=args.seed,
                            max_calls=args.max_calls, max_cost=args.max_cost, min_gain=args.min_gain,
                            target_gain=args.target_gain, promote=not args.no_promote, dry_run=args.dry_run,
                            concurrency=args.concurrency, rpm=args.rpm, progress=progress, stop=stop)
    except (AlignmentRefused, Busy) as exc:
        if job_id is not None:
            store.update_job(job_id, status="failed", error=str(exc)[:500])
        raise UserError(str(exc)) from None
    except BaseException as exc:
        if job_id is not None:
            store.update_job(job_id, status="failed", error=redact(f"{type(exc).__name__}: {exc}")[:500])
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if job_id is not None:
        store.update_job(job_id, status="cancelled" if out["status"] == "cancelled" else "finished", result=out)
    if args.json:
        emit_json(out)
        return 0
    _print_alignment(out)
    return 130 if out["status"] == "cancelled" else 0


def _print_alignment(out: dict) -> None:
    split = out.get("split") or {}
    if split:
        print(f"human labels of {out['question']!r}: {split['n_train']} for the search, {split['n_held_out']} held out "
              f"(seed {split['seed']})")
    plan = out.get("plan")
    if plan:
        print(f"plan: about {plan['calls']} calls ({plan['judge_calls']} judge, {plan['reflection_calls']} reflection), "
              f"${plan['cost']:.4f}")
    if out.get("candidates"):
        print(f"{'candidate':<24} {'kind':<26} {'train':>7} {'held out':>9} {'gain (90% CI)':>26}")
        for c in out["candidates"]:
            g = c.get("gain")
            gain = f"{g['gain']:+.3f} ({g['ci_low']:+.3f}, {g['ci_high']:+.3f})" if g else ""
            print(f"{c['name']:<24} {c['kind']:<26} {_f((c.get('train') or {}).get('accuracy'))} "
                  f"{_f((c.get('held_out') or {}).get('accuracy')):>9} {gain:>26}")
    budget = out.get("budget")
    if budget:
        print(f"spent: {budget['calls']} calls, ${budget['cost']:.4f}")
    if out.get("rejected", {}).get("count"):
        print(f"reflection replies rejected: {out['rejected']['count']} ({'; '.join(out['rejected']['reasons'][:3])})")
    print(f"{out['status']}: {out['message']}")


def sync(args: argparse.Namespace) -> int:
    from ..workflows.learning import resync

    _, services, _ = _context(args)
    print(json.dumps(resync(services, args.project)))
    return 0


def review_queue(args: argparse.Namespace) -> int:
    _, _, api = _context(args)
    view = api.ensure_review_view(args.project)
    print(f"project {args.project}: Data Manager tab '{api.REVIEW_VIEW}' (view {view}) sorts tasks by prediction "
          f"score, lowest first: {api.url}/projects/{args.project}/data?tab={view}")
    return 0


def report(args: argparse.Namespace) -> int:
    from ..quality.html import render_html
    from ..workflows.reporting import project_report

    settings, services, api = _context(args)
    rep = project_report(api, services.store, args.project, evaluators_dir=settings.evaluators_dir, services=services)
    if args.out:
        Path(args.out).write_text(render_html(rep, title=f"LabelJudge report: project {args.project}"))
    if args.json:
        emit_json(rep)
        return 0
    print(f"project {args.project}: {rep['n_reference']} of {rep['n_tasks']} tasks have a human reference "
          f"({rep['reference']}); control {rep['primary_control']}")
    if not rep["versions"]:
        from ..quality.html import next_steps

        print(f"next: {next_steps(rep)}")
        return 0
    print(f"{'model version':<26}{'n':>5}{'acc':>7}{'95% CI':>15}{'F1':>7}{'kappa':>7}{'cover':>7}{'ECE':>7}{'cost $':>9}")
    for v in rep["versions"]:
        ci = f"{v['ci_low']:.2f}-{v['ci_high']:.2f}" if v["ci_low"] is not None else "-"
        print(f"{v['model_version']:<26}{v['n']:>5}{_f(v['accuracy'])}{ci:>15}{_f(v['macro_f1'])}{_f(v['kappa'])}"
              f"{_f(v['coverage'])}{_f(v['ece'])}{v.get('cost') or 0:>9.4f}")
    if rep["comparison"]:
        print(rep["comparison"]["message"])
    for run in rep.get("training", [])[:3]:
        print(training_line(run))
    evaluators = rep.get("evaluators") or {}
    if evaluators.get("serving"):
        s = evaluators["serving"]
        print(f"serving {s['version']} (held-out accuracy {_f(s['accuracy']).strip()}, cascade band {s['band']}"
              f"{': ' + s['band_note'] if s.get('band_note') else ''})")
    for c in evaluators.get("cascade") or []:
        print(f"cascade {c['version']}: {c['evaluator_answered']} answered without the LLM, {c['judge_answered']} by "
              f"the judge; accuracy {_f(c['accuracy']).strip()} (n={c['n'] or 0})")
    for src in (rep.get("label_set") or {}).get("sources") or []:
        if src["accuracy"] is None:
            print(f"{src['source']} labels: {src['n_labels']} not reviewed; accuracy unknown (run labeljudge next)")
            continue
        basis = "random audits" if src["unbiased"] else "non-random reviews, biased"
        print(f"{src['source']} labels: {src['n_labels']} not reviewed, estimated accuracy {src['accuracy']:.3f} "
              f"(95% CI {src['ci'][0]:.3f}-{src['ci'][1]:.3f}, {src['n_audits']} {basis}); about "
              f"{src['errors_expected']:.0f} errors left; " + (
                  f"reviewing all {src['n_labels']} would give it exactly" if src["audits_for_one_point"] >= src["n_labels"]
                  else f"{src['audits_for_one_point']} more audits for +-1 point"))
    if (rep.get("label_set") or {}).get("accuracy") is not None:
        ls = rep["label_set"]
        print(f"label set: estimated accuracy {ls['accuracy']:.3f} (95% CI {ls['ci'][0]:.3f}-{ls['ci'][1]:.3f})")
    policy = (rep.get("label_set") or {}).get("policy") or {}
    if policy.get("evaluator_overrides_at") is not None:
        print(f"relabel policy: the evaluator's label replaces the judge's where it gives the other label "
              f">= {policy['evaluator_overrides_at']}: {policy['relabeled']} tasks")
    if args.out:
        print(f"HTML report: {args.out}")
    return 0


def next_review(args: argparse.Namespace) -> int:
    """The tasks people should review next: the judge's likely mistakes first, with random audits."""
    from ..workflows.review import next_for_review

    _, services, api = _context(args)
    out = next_for_review(services, api, args.project, n=args.n, audit_share=args.audit_share, seed=args.seed)
    if args.json:
        emit_json(out)
        return 0
    if not out["queue"]:
        print(f"project {args.project}: no unreviewed task has a machine label (labeljudge label first)")
        return 0
    print(f"project {args.project}: {len(out['queue'])} of {out['unreviewed']} unreviewed tasks, likeliest judge "
          f"mistakes first; 'audit' rows are random (they estimate the label set's accuracy)")
    for item in out["queue"]:
        print(f"{item['rank']:>3}. task {item['task']:<8} {item['kind']:<7} P(wrong) {item['p_wrong']:.2f}  "
              f"{item['source']} says {item['label']!s:<10} {item['why']:<22} {item['url']}")
    print(f"In Label Studio: the tab '{api.QUEUE_VIEW}' holds these tasks (Label All Tasks there labels them): "
          f"{out['tab']}")
    return 0


def training_line(run: dict) -> str:
    """One training run as the report command prints it; a running one has no version nor decision yet
    (it printed "training job 2: - running: ")."""
    verdict = "promoted" if run["promoted"] else "not promoted" if run["promoted"] is not None else run["status"]
    parts = [p for p in (run.get("version"), verdict) if p]
    return f"training job {run['job']}: {' '.join(parts)}" + (f": {run['decision']}" if run.get("decision") else "")


def _f(x) -> str:
    return f"{x:>7.3f}" if isinstance(x, (int, float)) else f"{'-':>7}"


def prompt(args: argparse.Namespace) -> int:
    _, services, api = _context(args)
    backends = api.connected_backends(args.project)
    if not backends:
        raise UserError(f"project {args.project} has no connected backend: connect LabelJudge first")
    ml = backends[0]
    from ..settings import parse_extra_params

    params = parse_extra_params(ml.get("extra_params"))
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
    label_config = api.label_config(args.project)
    try:
        state = services.projects.setup(args.project, label_config, params)  # validate before changing Label Studio
    except Exception as exc:
        raise UserError(f"prompt rejected: {exc}") from None
    api.set_extra_params(args.project, ml["id"], ml["url"], params)
    print(f"project {args.project}: judge version is now {state.version}")
    return 0


def prompts(args: argparse.Namespace) -> int:
    from ..workflows.reporting import project_report

    _, services, api = _context(args)
    rep = project_report(api, services.store, args.project)
    scores = {v["model_version"]: v for v in rep["versions"]}
    rows = []
    for v in services.store.versions(str(args.project)):
        m = scores.get(v["version"], {})
        rows.append({"model_version": v["version"], "accuracy": m.get("accuracy"), "n": m.get("n", 0),
                     "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"), **v["spec"]})
    rows.sort(key=lambda r: (r["accuracy"] is not None, r["accuracy"] or 0), reverse=True)
    if args.json:
        emit_json(rows)
        return 0
    for r in rows:
        acc = f"{r['accuracy']:.3f} (n={r['n']})" if r["accuracy"] is not None else "not scored yet"
        first = (r["template"] or "").strip().splitlines()[0][:60] if r.get("template") else ""
        print(f"{r['model_version']:<20} {acc:<18} {r['model']:<16} shots={len(r['few_shot'])} {first}")
    return 0


def import_(args: argparse.Namespace) -> int:
    from ..io import read_table, rows_to_tasks

    _, _, api = _context(args)
    if args.format == "labelbox":
        from ..conversations import labelbox_to_tasks

        tasks = labelbox_to_tasks(json.loads(Path(args.file).read_text()))
    else:
        tasks = rows_to_tasks(read_table(args.file))
    project = args.project
    if project is None and not args.config:
        raise UserError("give --project to import into, or --config to create a project (a name in label_configs/, "
                        "e.g. pass_fail, or a path)")
    label_config = api.label_config(project) if project is not None else _config_text(args.config)
    _check_fields(label_config, tasks, args.file)
    created = project is None
    if project is None:
        project = api.create_project(args.title or Path(args.file).stem, label_config)
    ids = api.import_tasks(project, tasks)
    backend = (args.demo or {}).get("backend_url")
    if created and backend:  # the running demo's backend judges it, as it does the demo project
        api.connect_backend(project, backend, title="LabelJudge (local judge)")
    print(json.dumps({"project": project, "imported": len(ids) or len(tasks),
                      **({"connected": backend} if created and backend else {})}))
    if created and not backend:
        print(f"project {project} has no model connected: in Label Studio, Settings > Model > Connect Model with "
              "the backend's URL (`labeljudge serve`)", file=sys.stderr)
    return 0


def _config_text(name: str) -> str:
    path = Path(name)
    if not path.exists():
        path = Path(__file__).resolve().parents[2] / "label_configs" / f"{name}.xml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.xml"))
        raise UserError(f"no label config {name!r}: give a path, or one of {', '.join(known)}")
    return path.read_text()


def _check_fields(label_config: str, tasks: list[dict], source: str) -> None:
    """The fields the config shows ($input, $context, ...) must be in the file: say which are missing and
    which it has, before anything is created."""
    from ..labelstudio.config import SchemaError, parse_label_config

    try:
        needed = parse_label_config(label_config).data_fields
    except SchemaError as exc:
        raise UserError(str(exc)) from None
    if not tasks:
        raise UserError(f"{source} has no rows to import")
    have = set().union(*(t["data"] for t in tasks[:1000]))
    missing = [f for f in needed if f not in have]
    if missing:
        raise UserError(f"the label config shows {', '.join(needed)}; {source} lacks {', '.join(missing)} (it has: "
                        f"{', '.join(sorted(have)[:12]) or 'nothing'}): rename its columns or keys")


def export(args: argparse.Namespace) -> int:
    from ..io import records_to_frame, write_table
    from ..workflows.records import project_records, project_schema

    _, services, api = _context(args)
    schema = project_schema(api, args.project)
    tasks, controls = project_records(api, args.project, schema)
    if args.preferences:
        from ..conversations import preference_records

        pair = schema.pair_fields()
        if pair is None:
            raise UserError(f"project {args.project} is not a pairwise project")
        rows = preference_records(tasks, pair[0], use_judge=args.include_judge)
        with open(args.out, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        _export_done(args, {"project": args.project, "pairs": len(rows), "out": args.out}, f"{len(rows)} preference pairs")
        return 0
    df = records_to_frame(tasks, {t["id"]: t["data"] for t in tasks}, controls)
    if len(df):  # the final label of the primary control, where it came from and how accurate that source is
        from ..quality.review import final_labels
        from ..workflows.review import label_set_estimate, primary_control, relabel_policy

        control = primary_control(schema)
        estimate = label_set_estimate(services.store, args.project, tasks, control)
        final = final_labels(tasks, control, estimate, relabel_policy(services, args.project, tasks, schema)["overrides"])
        for column in ("label", "label_source", "label_estimated_accuracy"):
            df[column] = [final[t][column] for t in df["task_id"]]
    write_table(df, args.out)
    _export_done(args, {"project": args.project, "rows": len(df), "out": args.out}, f"{len(df)} rows")
    return 0


def _export_done(args: argparse.Namespace, out: dict, what: str) -> None:
    """What export says at the end: a sentence, or with --json one JSON object."""
    if args.json:
        emit_json(out)
    else:
        print(f"wrote {what} of project {args.project} to {args.out}")


def train(args: argparse.Namespace) -> int:
    from ..workflows.training import train_project

    settings, services, _ = _context(args)
    epochs = settings.train_epochs
    bar = tqdm(desc="reading the labels from Label Studio", total=epochs, unit="epoch",
               disable=args.json and not sys.stderr.isatty())
    stage: dict = {"key": None}

    def progress(row: dict) -> None:
        key = (row.get("phase"), row.get("member"))
        if key != stage["key"]:  # each fit (held-out, each seed, the refit) is its own bar of at most N epochs
            stage["key"] = key
            bar.reset(total=epochs)
            seed = f", seed {row['member']}" if row.get("member") else ""
            bar.set_description(f"training ({row.get('phase') or 'measured on held-out labels'}{seed})")
        bar.update(1)
        bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", val_acc=row["val_accuracy"])

    try:
        result = train_project(services, args.project, progress=progress)
    except (RuntimeError, ValueError) as exc:
        raise UserError(redact(str(exc))) from None
    finally:
        bar.close()
    if args.json:
        emit_json(result)
    else:
        print(f"{result['version']}: accuracy {result['accuracy']:.3f}, F1 {result['f1']:.3f}, AUC "
              f"{result['auc'] if result['auc'] is None else round(result['auc'], 3)}, {result['n_train']} train / "
              f"{result['n_test']} test, {result['seconds']} s on {result['device']}, serving {result['runtime']}")
        if result.get("soup"):
            alone = " / ".join(f"{a:.3f}" for a in result["soup"]["accuracy_by_seed"])
            print(f"the mean of seeds {', '.join(map(str, result['soup']['seeds']))}'s weights; each alone: {alone}")
        print(("promoted: " if result["promoted"] else "not promoted: ") + result["reason"])
        for name, status in (result.get("tracking") or {}).items():
            where = ", ".join(f"{k} {v}" for k, v in status.items() if k in ("experiment", "project", "run_id", "mode", "dir"))
            print(f"tracked in {name}: {where}" if "error" not in status else f"{name} tracking stopped: {status['error']}")
    return 0


def evaluators(args: argparse.Namespace) -> int:
    from ..evaluator.registry import Registry

    settings = settings_for(args)
    if getattr(args, "explicit_labelstudio", False):  # flags given are checked, never silently ignored
        api = _context(args)[2]
        credentials.check(api, args.labelstudio[1])
    registry = Registry(settings.evaluators_dir, str(args.project))
    try:
        if args.rollback:
            print(f"now serving {registry.rollback()}")
        if args.promote:
            registry.promote(args.promote, "promoted by hand")
            print(f"now serving {args.promote}")
    except KeyError as exc:
        raise UserError(str(exc).strip("'\"")) from None
    current = registry.current()
    rows = []
    for v in registry.versions():
        result_path = Path(v["path"]) / "result.json"
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        rows.append({**{k: v.get(k) for k in ("version", "accuracy", "f1", "auc", "n_train", "n_test", "device",
                                              "runtime", "seconds")},
                     "current": v["version"] == current, "promoted": result.get("promoted"),
                     "decision": result.get("reason")})
    if args.json:
        emit_json({"current": current, "versions": rows})
        return 0
    if not rows:
        print(f"project {args.project} has no evaluator yet: labeljudge train --project {args.project}, or Start "
              f"Training in Label Studio")
    for r in rows:
        mark = "*" if r["current"] else " "
        why = "serving" if r["current"] else ("not promoted: " + r["decision"]) if r["promoted"] is False and \
            r["decision"] else "not serving"
        print(f"{mark} {r['version']}  acc {_f(r['accuracy']).strip()}  f1 {_f(r['f1']).strip()}  n_train "
              f"{r['n_train']}  {r['runtime']}  {r['device']}  ({why})")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ..dataframe import score_dataframe
    from ..io import read_table, write_table

    df = read_table(args.data)
    try:
        out = score_dataframe(df, model=args.model, project=args.project, model_dir=settings_for(args).model_dir)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    if args.out:
        write_table(out, args.out)
        print(json.dumps({"rows": len(out), "out": args.out, "model": args.model}))
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def worker(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    if not settings.redis_url:
        raise UserError("set REDIS_URL to the Redis that the backend queues training jobs on")
    from redis import Redis
    from rq import Queue, Worker

    from ..store import Store
    from ..workflows.training import reap_dead_jobs

    reaped = reap_dead_jobs(Store(settings.store_path))
    if reaped:
        print(f"marked training jobs {reaped} failed: their worker died mid-run", file=sys.stderr)
    conn = Redis.from_url(settings.redis_url)
    Worker([Queue("labeljudge", connection=conn)], connection=conn).work(burst=args.burst)
    return 0
