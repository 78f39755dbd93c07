"""Webhook payloads checked at the door: what a stored event may look like.

Why at ingestion: an event is stored before it is processed and read again on every restart; one
that cannot be understood (a bare string where Label Studio sends ``{"choices": [...]}``, an id that
is not a number) must never reach the store's annotations, where every later read would trip on it.
Such a payload is quarantined with its reason instead. Only the structure is checked here; whether a
value fits the project's label config is checked against its schema when the event is processed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
MAX_REGIONS = 1000  # regions in one annotation; Label Studio's own UI stays far below this
_ACTION = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


class BadEvent(ValueError):
    """A webhook payload that cannot be understood; the message says which field and why."""


@dataclass(frozen=True)
class EventHead:
    """What the store keys an event by."""

    action: str
    project_id: str | None


def project_id_of(value: Any, where: str = "project") -> str:
    """A Label Studio project id as the store's key: a positive integer, or "<id>.<created_ts>" as
    Label Studio's /setup and /predict send it. Anything else (objects, paths, lists) is refused."""
    if isinstance(value, bool):
        raise BadEvent(f"{where} must be a project id (a positive integer), got {value!r}")
    if isinstance(value, int):
        if 0 < value < 2**63:
            return str(value)
    elif isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isascii() and head.isdigit() and 0 < int(head) < 2**63 and len(value) <= 64:
            return str(int(head))
    shown = repr(value)
    raise BadEvent(f"{where} must be a project id (a positive integer), got {shown[:60]}")


def int_id(value: Any, where: str) -> int:
    """A positive integer id (or an object carrying one as ``id``), else BadEvent naming ``where``."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadEvent(f"{where} must be an integer id, got {type(value).__name__}")
    try:
        out = int(value)
    except ValueError:
        raise BadEvent(f"{where} must be an integer id, got {str(value)[:40]!r}") from None
    if not 0 < out < 2**63:
        raise BadEvent(f"{where} must be a positive integer id, got {out}")
    return out


def check_result(result: Any, where: str = "annotation.result") -> list[dict]:
    """A result list's structure: regions that are objects with a string from_name and an object value."""
    if result is None:
        return []
    if not isinstance(result, list):
        raise BadEvent(f"{where} must be a list of regions, got {type(result).__name__}")
    if len(result) > MAX_REGIONS:
        raise BadEvent(f"{where} has {len(result)} regions; at most {MAX_REGIONS} are accepted")
    for i, region in enumerate(result):
        if not isinstance(region, dict):
            raise BadEvent(f"{where}[{i}] must be an object, got {type(region).__name__}")
        if not isinstance(region.get("from_name"), str):
            raise BadEvent(f"{where}[{i}].from_name must be a string")
        if not isinstance(region.get("value"), dict):
            raise BadEvent(f"{where}[{i}].value must be an object like {{\"choices\": [...]}}, "
                           f"got {type(region.get('value')).__name__}")
    return result


def check_event(payload: Any) -> EventHead:
    """The event's action and project, or BadEvent naming what is wrong with it."""
    if not isinstance(payload, dict):
        raise BadEvent("a webhook body must be a JSON object")
    action = payload.get("action")
    if not isinstance(action, str) or not _ACTION.match(action):
        raise BadEvent("'action' must be a Label Studio webhook action such as ANNOTATION_CREATED")
    for key in ("project", "annotation", "task"):  # the API document's types, for every action
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise BadEvent(f"'{key}' must be an object, got {type(payload[key]).__name__}")
    if payload.get("annotations") is not None and not isinstance(payload["annotations"], list):
        raise BadEvent(f"'annotations' must be a list, got {type(payload['annotations']).__name__}")
    project = payload.get("project")
    pid = None
    if project is not None:
        if not isinstance(project, dict):
            raise BadEvent(f"'project' must be an object with an id, got {type(project).__name__}")
        if project.get("id") is not None:
            pid = project_id_of(project["id"], "project.id")
        if project.get("label_config") is not None and not isinstance(project["label_config"], str):
            raise BadEvent("project.label_config must be a string")
    if action in ANNOTATION_EVENTS:
        annotation = payload.get("annotation")
        if not isinstance(annotation, dict):
            raise BadEvent(f"{action} needs an 'annotation' object")
        int_id(annotation.get("id"), "annotation.id")
        int_id(annotation.get("task"), "annotation.task")
        check_result(annotation.get("result"))
        task = payload.get("task")
        if task is not None and (not isinstance(task, dict) or
                                 (task.get("data") is not None and not isinstance(task["data"], dict))):
            raise BadEvent("'task' must be an object whose 'data' is an object")
    elif action == "ANNOTATIONS_DELETED":
        annotations = payload.get("annotations")
        if not isinstance(annotations, list):
            raise BadEvent("ANNOTATIONS_DELETED needs an 'annotations' list")
        for i, a in enumerate(annotations):
            int_id(a, f"annotations[{i}].id")
    return EventHead(action, pid)


def deleted_ids(payload: dict) -> list[int]:
    """The annotation ids of a (checked) ANNOTATIONS_DELETED event."""
    return [int_id(a, "annotations[].id") for a in payload.get("annotations") or []]
