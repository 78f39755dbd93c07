"""Fetch a project's annotations and predictions from Label Studio and build its report (the edge
around quality/, which works on plain data)."""
from __future__ import annotations

from typing import Sequence

from ..labelstudio import LabelStudioAPI
from ..labelstudio.config import TaskSchema, parse_label_config
from ..quality.report import build_report
from ..store import Store


def project_schema(api: LabelStudioAPI, project: int) -> TaskSchema:
    return parse_label_config(api.label_config(project))


def project_records(api: LabelStudioAPI, project: int,
                    schema: TaskSchema | None = None) -> tuple[list[dict], list[dict]]:
    """The project's tasks as plain records (answers read against the config) and its controls."""
    schema = schema or project_schema(api, project)
    return records_from_export(api.project_tasks(project, with_predictions=True), schema, api.user_emails())


def records_from_export(export: Sequence[dict], schema: TaskSchema,
                        emails: dict[int, str] | None = None) -> tuple[list[dict], list[dict]]:
    """An export (tasks with annotations and predictions) as the records quality/ and evaluator/ read."""
    emails = emails or {}
    controls = [{"name": n, "kind": c.question.kind, "options": list(c.question.options),
                 "ordinal": c.tag == "Rating" or (c.tag == "Number" and c.question.kind == "single")}
                for n, c in schema.controls.items()]
    tasks = []
    for t in export:
        anns = []
        for a in t["annotations"]:
            if a.get("was_cancelled"):
                continue
            answers, _ = schema.answers_from_result(a.get("result") or [])
            who = a.get("completed_by")
            who = who.get("id") if isinstance(who, dict) else who
            anns.append({"id": a["id"], "annotator": emails.get(who, who) if isinstance(who, int) else who,
                         "ground_truth": bool(a.get("ground_truth")), "answers": answers})
        preds = []
        for p in t["predictions"]:  # oldest first
            answers, _ = schema.answers_from_result(p["result"])
            preds.append({"model_version": p["model_version"], "answers": answers, "score": p["score"]})
        tasks.append({"id": t["id"], "annotations": anns, "predictions": preds, "data": t["data"]})
    return tasks, controls


def project_report(api: LabelStudioAPI, store: Store, project: int, *, public_url: str | None = None) -> dict:
    schema = project_schema(api, project)
    tasks, controls = project_records(api, project, schema)
    ledger = {row["version"]: row for row in store.ledger(str(project))}
    url = (public_url or api.url).rstrip("/") + f"/projects/{project}/data?task={{id}}"
    report = build_report(tasks, controls, ledger=ledger, task_url=url, project=project)
    report["training"] = training_runs(store, project)
    report["labeling_jobs"] = labeling_jobs(store, project)
    pair = schema.pair_fields()
    if pair:
        from ..quality.pairwise import pairwise_report

        report["pairwise"] = pairwise_report(tasks, pair[0], store.pair_judgments(str(project)))
    return report


def training_runs(store: Store, project: int, limit: int = 10) -> list[dict]:
    """The project's latest training runs as a person reads them: when, status, data, metrics, and
    whether the new evaluator was promoted and why (or why the run failed)."""
    out = []
    for job in store.jobs(str(project), "train")[:limit]:
        result = job.get("result") or {}
        out.append({"job": job["id"], "status": job["status"], "at": job["updated_at"],
                    "reason_started": (job.get("progress") or {}).get("reason"),
                    "version": result.get("version"), "promoted": result.get("promoted"),
                    "decision": result.get("reason") or job.get("error"), "accuracy": result.get("accuracy"),
                    "n_train": result.get("n_train"), "n_test": result.get("n_test"),
                    "n_human_train": result.get("n_human_train"), "n_judge_train": result.get("n_judge_train"),
                    "device": result.get("device"), "seconds": result.get("seconds"),
                    "holdout": result.get("holdout")})
    return out


def labeling_jobs(store: Store, project: int, limit: int = 5) -> list[dict]:
    """The project's latest labeling jobs (`labeljudge label` over HTTP, or what /predict handed over
    past its budget) with their progress: done of total, failures, cost, why they were started."""
    out = []
    for job in store.jobs(str(project), "label")[:limit]:
        progress, result = job.get("progress") or {}, job.get("result") or {}
        out.append({"job": job["id"], "status": job["status"], "reason": progress.get("reason"),
                    "done": result.get("labeled", progress.get("done")), "total": result.get("total", progress.get("total")),
                    "failed": result.get("failed", progress.get("failed")), "cost": result.get("cost", progress.get("cost")),
                    "error": job.get("error")})
    return out
