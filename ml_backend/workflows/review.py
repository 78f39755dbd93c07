"""The review loop over a project: which tasks people should label next (`labeljudge next`,
GET /review/<project>), and how accurate the project's label set is (the report's estimate).

A task's final label is its human annotation when it has one, else its latest prediction; the source
of a prediction is read from its model version (``judge-…``, ``evaluator-…``, ``evaluator-…+judge-…``
for the cascade). Random audits recorded by the queue are the unbiased sample of each source's accuracy.
"""
from __future__ import annotations

import time
from typing import Sequence

from ..labelstudio import LabelStudioAPI
from ..labelstudio.config import TaskSchema
from ..quality.report import norm
from ..quality.review import (
    Candidate,
    build_queue,
    human_answer,
    label_set_accuracy,
    machine_prediction,
    policy_overrides,
    source_of,
)
from ..services import Services
from ..store import Store
from .records import project_schema, records_from_export


def primary_control(schema: TaskSchema) -> str:
    """The control a queue and an estimate are about: a pairwise config's preference, else the first."""
    pair = schema.pair_fields()
    return pair[0] if pair else next(iter(schema.controls))


def candidates(services: Services, project: int, tasks: Sequence[dict], schema: TaskSchema) -> list[Candidate]:
    """Unreviewed tasks with a machine label, with the judge's confidence and, where an evaluator is
    promoted, its probability that the label is right."""
    control = primary_control(schema)
    todo = [(t, p) for t in tasks if human_answer(t, control) is None and (p := machine_prediction(t, control)) is not None]
    agrees: list[float | None] = [None] * len(todo)
    served = services.evaluators.for_project(str(project), schema)
    if served is not None and served.kind == "binary" and served.control == control and todo:
        scores = served.score([{"id": t["id"], "data": t["data"]} for t, _ in todo])
        agrees = [s if norm(p["answers"][control]) == norm(served.positive) else 1 - s
                  for s, (_, p) in zip(scores, todo)]
    out = []
    for (t, p), agree in zip(todo, agrees):
        score = p.get("score")
        text = " ".join(str(v) for v in (t["data"] or {}).values())[:500]
        out.append(Candidate(int(t["id"]), p["answers"][control],
                             judge_confidence=float(score) if isinstance(score, (int, float)) else None,
                             evaluator_agrees=agree, key=" ".join(text.lower().split())[:200]))
    return out


QUEUE_TAB_MAX = 200


def next_for_review(services: Services, api: LabelStudioAPI, project: int, *, n: int = 20,
                    audit_share: float = 0.1, seed: int | None = None) -> dict:
    """The next ``n`` tasks to review, recorded (so a human label on an audit counts as one), with links."""
    schema = project_schema(api, project)
    tasks, _ = records_from_export(api.project_tasks(project, with_predictions=True), schema)
    control = primary_control(schema)
    by_id = {t["id"]: t for t in tasks}
    pool = candidates(services, project, tasks, schema)
    queue = build_queue(pool, n, audit_share=audit_share, seed=int(time.time()) if seed is None else seed)
    items = []
    for q in queue:
        p = machine_prediction(by_id[q.task], control)
        items.append({"task": q.task, "rank": q.rank, "kind": q.kind, "p_wrong": q.p_wrong, "label": q.judge_label,
                      "source": source_of(p["model_version"]) if p else None, "why": q.why,
                      "url": f"{api.url}/projects/{project}/data?task={q.task}"})
    services.store.queue_for_review(str(project), items, pool=[c.task for c in pool])
    unreviewed = sum(1 for t in tasks if human_answer(t, control) is None)
    # the same queue in Label Studio's own UI (its first QUEUE_TAB_MAX: one filter condition per task)
    view = api.ensure_queue_view(project, [q["task"] for q in items][:QUEUE_TAB_MAX])
    return {"project": project, "control": control, "unreviewed": unreviewed, "queue": items,
            "tab": f"{api.url}/projects/{project}/data?tab={view}"}


def label_set_estimate(store: Store, project: int, tasks: Sequence[dict], control: str) -> dict:
    """The label set's estimated accuracy (the report's, the export's): the recorded audits, each with
    the pool of its round."""
    items = store.review_items(str(project))
    pools = store.review_pools(str(project), {i["round"] for i in items if i["kind"] == "audit" and i.get("round")})
    return label_set_accuracy(tasks, control, items, pools)


def relabel_policy(services: Services, project: int, tasks: Sequence[dict], schema: TaskSchema) -> dict:
    """The project's relabel policy (extra_params ``evaluator_overrides_at``) applied to its unreviewed
    tasks: ``{"evaluator_overrides_at": threshold or None, "overrides": {task: the evaluator's label}}``."""
    pid = str(project)
    config = services.projects.state(pid).config if services.store.project(pid) else None
    threshold = config.evaluator_overrides_at if config is not None else None
    if threshold is None:
        return {"evaluator_overrides_at": None, "overrides": {}}
    control = primary_control(schema)
    spec = schema.controls.get(control)
    options = list(spec.question.options) if spec is not None else []
    return {"evaluator_overrides_at": threshold,
            "overrides": policy_overrides(candidates(services, project, tasks, schema), threshold, options)}

