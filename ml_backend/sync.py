"""Annotation sync: Label Studio's annotations -> the backend's store, for a whole project at once.

Webhooks keep the store current one event at a time; this is the full re-read that START_TRAINING,
`labeljudge sync` and bulk labeling run, and that repairs whatever was missed while the backend was down.
"""
from __future__ import annotations

from typing import Any

from .labelstudio import LabelStudioAPI
from .schema import is_correction, parse_label_config
from .store import Store


def resync_project(api: LabelStudioAPI, store: Store, project: int, backend: Any = None) -> dict:
    pid = str(project)
    schema = parse_label_config(api.client.projects.get(id=project).label_config)
    seen: set[int] = set()
    for task in api.project_tasks(project, annotated_only=True, with_predictions=True):
        judge_preds = [p for p in task["predictions"] if p["model_version"].startswith("judge-")]
        for ann in task["annotations"]:
            if ann.get("was_cancelled"):
                continue
            correction = is_correction(schema, ann.get("result") or [], judge_preds[-1]["result"]) \
                if judge_preds else None
            store.upsert_annotation(pid, {**ann, "task": task["id"]}, task["data"], correction)
            seen.add(int(ann["id"]))
    removed = store.replace_annotations(pid, seen)
    return {"project": project, "annotations": len(seen), "removed": removed}
