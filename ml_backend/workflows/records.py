"""A project read from Label Studio as plain records: its tasks' answers parsed against the label
config (what quality/, evaluator/ and the review queue read). Shared by reporting, training and review,
so none of them imports another."""
from __future__ import annotations

from typing import Sequence

from ..labelstudio import LabelStudioAPI
from ..labelstudio.config import TaskSchema, parse_label_config


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
