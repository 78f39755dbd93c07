"""Annotation sync: Label Studio's annotations -> the backend's store, for a whole project at once.

Webhooks keep the store current one event at a time; this is the full re-read that START_TRAINING,
`labeljudge sync` and bulk labeling run, and that repairs whatever was missed while the backend was
down. ``sync_annotations`` works on an export already fetched, so a path that lists the project
anyway (labeling, training) syncs from the same listing instead of exporting twice.
"""
from __future__ import annotations

from typing import Sequence

from ..judge.types import is_judge_version
from ..store import Store
from .client import LabelStudioAPI
from .config import TaskSchema, is_correction, parse_label_config


def sync_annotations(store: Store, project: int, schema: TaskSchema, tasks: Sequence[dict]) -> dict:
    """Store every annotation of ``tasks`` (an export with predictions), flag where humans corrected the
    judge, and drop the stored annotations Label Studio no longer has."""
    pid = str(project)
    seen: set[int] = set()
    for task in tasks:
        judge_preds = [p for p in task.get("predictions", ()) if is_judge_version(p["model_version"])]
        for ann in task["annotations"]:
            if ann.get("was_cancelled"):
                continue
            correction = is_correction(schema, ann.get("result") or [], judge_preds[-1]["result"]) \
                if judge_preds else None
            store.upsert_annotation(pid, {**ann, "task": task["id"]}, task["data"], correction, authoritative=True)
            seen.add(int(ann["id"]))
    removed = store.replace_annotations(pid, seen)
    return {"project": project, "annotations": len(seen), "removed": removed}


def resync_project(api: LabelStudioAPI, store: Store, project: int) -> dict:
    """Re-read every annotation of a project from Label Studio into the store."""
    schema = parse_label_config(api.label_config(project))
    return sync_annotations(store, project, schema, api.project_tasks(project, annotated_only=True,
                                                                      with_predictions=True))
