"""Fetch a project's annotations and predictions from Label Studio and build its report (the edge
around quality/, which works on plain data)."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from ..evaluator.registry import Registry
from ..labelstudio import LabelStudioAPI
from ..quality.report import build_report
from ..services import Services
from ..store import Store
from .records import project_records, project_schema


def project_report(api: LabelStudioAPI, store: Store, project: int, *, public_url: str | None = None,
                   evaluators_dir: Path | None = None, services: Services | None = None) -> dict:
    """The project's report (plain data). With ``services``, the label set also states the relabel
    policy and how many final labels it changed (that needs the served evaluator)."""
    schema = project_schema(api, project)
    tasks, controls = project_records(api, project, schema)
    ledger = {row["version"]: row for row in store.ledger(str(project))}
    url = (public_url or api.url).rstrip("/") + f"/projects/{project}/data?task={{id}}"
    report = build_report(tasks, controls, ledger=ledger, task_url=url, project=project)
    report["training"] = training_runs(store, project, evaluators_dir)
    report["evaluators"] = evaluators_section(store, project, evaluators_dir, report["versions"])
    report["labeling_jobs"] = labeling_jobs(store, project)
    report["alignment"] = alignment_runs(store, project)
    if report.get("primary_control"):
        from .review import label_set_estimate

        report["label_set"] = label_set_estimate(store, project, tasks, report["primary_control"])
        if services is not None:
            from .review import relabel_policy

            policy = relabel_policy(services, project, tasks, schema)
            report["label_set"]["policy"] = {"evaluator_overrides_at": policy["evaluator_overrides_at"],
                                             "relabeled": len(policy["overrides"])}
    pair = schema.pair_fields()
    if pair:
        from ..quality.pairwise import pairwise_report

        report["pairwise"] = pairwise_report(tasks, pair[0], store.pair_judgments(str(project)))
    return report


def training_runs(store: Store, project: int, evaluators_dir: Path | None = None, limit: int = 10) -> list[dict]:
    """The project's latest training runs as a person reads them: when, status, data, metrics, the
    training curve, and whether the new evaluator was promoted and why (or why the run failed)."""
    out = []
    for job in store.jobs(str(project), "train")[:limit]:
        result = job.get("result") or {}
        curve = None
        if evaluators_dir is not None and result.get("version"):
            png = Path(evaluators_dir) / str(project) / result["version"] / "curve.png"
            curve = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() if png.is_file() else None
        out.append({"job": job["id"], "status": job["status"], "at": job["updated_at"],
                    "reason_started": (job.get("progress") or {}).get("reason"),
                    "progress": job.get("progress") if job["status"] in ("queued", "running") else None,
                    "version": result.get("version"), "promoted": result.get("promoted"),
                    "decision": result.get("reason") or job.get("error"), "accuracy": result.get("accuracy"),
                    "n_train": result.get("n_train"), "n_test": result.get("n_test"),
                    "n_human_train": result.get("n_human_train"), "n_judge_train": result.get("n_judge_train"),
                    "device": result.get("device"), "seconds": result.get("seconds"),
                    "holdout": result.get("holdout"), "n_served_train": result.get("n_served_train"),
                    "cascade": result.get("cascade"), "soup": result.get("soup"), "tracking": result.get("tracking"),
                    "curve": curve})
    return out


def evaluators_section(store: Store, project: int, evaluators_dir: Path | None, versions: list[dict]) -> dict:
    """What serves now and what the cascade saved: the promoted evaluator, its cascade band, the tasks it
    answered without the LLM against the judge calls made, and the measured accuracy of each cascade
    version (from the report's versions)."""
    serving = None
    if evaluators_dir is not None:
        if (Path(evaluators_dir) / str(project) / "current.json").is_file():  # (a Registry would create the folder)
            registry = Registry(Path(evaluators_dir), str(project))
            current = registry.current()
            metrics = registry.metrics(current)
            band = (metrics.get("cascade") or {}).get("band")
            serving = {"version": current, "accuracy": metrics.get("accuracy"), "band": band,
                       "device": metrics.get("device"), "band_note": band_note(band)}
    accuracy = {v["model_version"]: v for v in versions}
    cascade = []
    for row in store.ledger(str(project)):
        if not row.get("evaluator_answered") and "+" not in row["version"]:
            continue
        answered, calls = row.get("evaluator_answered", 0), row.get("calls", 0) + row.get("cache_hits", 0)
        measured = accuracy.get(row["version"], {})
        cascade.append({"version": row["version"], "evaluator_answered": answered, "judge_answered": calls,
                        "saved_share": round(answered / (answered + calls), 4) if answered + calls else None,
                        "accuracy": measured.get("accuracy"), "n": measured.get("n")})
    return {"serving": serving, "cascade": cascade}


def band_note(band: Any) -> str:
    """What the cascade band means for the user: a band over every score leaves the evaluator nothing."""
    try:
        low, high = float(band[0]), float(band[1])
    except (TypeError, ValueError, IndexError):
        return ""
    if low <= 0.0 and high >= 1.0:
        return ("every score falls inside the band, so the evaluator answers no task and the judge answers all: "
                "its training found no band that keeps the judge's accuracy (more labels may)")
    return "scores inside it go to the judge, the others are answered by the evaluator alone"


def labeling_jobs(store: Store, project: int, limit: int = 5) -> list[dict]:
    """The project's latest labeling jobs (`labeljudge label` on the command line or over HTTP, or what
    /predict handed over past its budget) with their progress: done of total, failures, cost, why they were started."""
    out = []
    for job in store.jobs(str(project), "label")[:limit]:
        progress, result = job.get("progress") or {}, job.get("result") or {}
        out.append({"job": job["id"], "status": job["status"], "reason": progress.get("reason"),
                    "waiting_for": progress.get("waiting_for") if job["status"] == "queued" else None,
                    "done": result.get("labeled", progress.get("done")), "total": result.get("total", progress.get("total")),
                    "failed": result.get("failed", progress.get("failed")), "cost": result.get("cost", progress.get("cost")),
                    "error": job.get("error")})
    return out


def alignment_runs(store: Store, project: int, limit: int = 5) -> list[dict]:
    """The project's latest alignment runs (``labeljudge align``, POST /jobs/align) with their candidates,
    decisions and spend."""
    return [{"job": j["id"], "status": j["status"], "at": j["updated_at"], "result": j.get("result"),
             "progress": j.get("progress") if j["status"] in ("queued", "running") else None, "error": j.get("error")}
            for j in store.jobs(str(project), "align")[:limit]]
