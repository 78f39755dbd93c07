"""Aligning a project's judge with its reviewers, end to end: read the human labels from Label Studio,
split them (training part / held-out part, stratified, seeded), search on the training part
(``judge/align.py``), measure the best candidate against the current judge on the held-out part with
an exact paired test (``quality/paired.py``), and promote it only when the gain's one-sided 95% lower
bound is above ``min_gain``. A promotion is a new prompt in the connection's extra_params, so it is a
new judge version that Label Studio shows and re-predicts with; the previous one is one rollback away.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from ..judge.align import Aligner, Budget, BudgetSpent, Cancelled, Candidate, LabeledTask
from ..judge.templates import render
from ..judge.types import Example
from ..judges import build_judge
from ..labelstudio import LabelStudioAPI
from ..labelstudio.config import parse_label_config
from ..quality.paired import accuracy_ci, labels_needed, paired_gain, stratified_split
from ..services import Services
from ..settings import parse_extra_params
from .labeling import resolve_state
from .records import records_from_export

log = logging.getLogger(__name__)
MIN_PER_LABEL = 2  # each label needs a task on both sides of the split
SEARCH_PASSES = 4  # the default search budget: this many judge passes over the training part
MINIBATCH = 8  # tasks GEPA shows the reflection model per proposal


class AlignmentRefused(ValueError):
    """The labels cannot support an alignment (too few, one class, a label missing from a side)."""


def human_labels(tasks: list[dict], question: str) -> dict[int, Any]:
    """Each task's human label for ``question``: its ground-truth annotation, else its latest one."""
    out: dict[int, Any] = {}
    for t in tasks:
        anns = [a for a in t["annotations"] if question in a["answers"]]
        if not anns:
            continue
        best = max(anns, key=lambda a: (a["ground_truth"], a["id"]))
        value = best["answers"][question]
        out[t["id"]] = value if not isinstance(value, list) else sorted(value)
    return out


def _estimate(n_train: int, n_held: int, per_task: int, tokens_per_call: int, out_tokens: int,
              price: Callable[[int, int], float], max_calls: int | None) -> dict[str, Any]:
    """The calls and dollars a run plans to spend: the current judge on the training part, the search,
    two few-shot variants, the held-out test of two judges (and of three more, for reading), and the
    reflection calls."""
    fixed = (n_train * 3 + n_held * 2) * per_task
    search = SEARCH_PASSES * n_train * per_task
    if max_calls is not None:
        search = max(0, min(search, max_calls - fixed))
    reflections = max(1, search // (2 * MINIBATCH * per_task)) if search else 0
    reading = 3 * n_held * per_task  # up to three more candidates held out, for the report, while the budget allows
    judge_calls = fixed + search + reading
    cost = judge_calls * price(tokens_per_call, out_tokens) + reflections * price(3000, 600)
    return {"judge_calls": judge_calls, "reflection_calls": reflections, "calls": judge_calls + reflections,
            "search_calls": search, "reserved_calls": fixed, "cost": round(cost, 6),
            "tokens_per_call": tokens_per_call}


def align_project(services: Services, api: LabelStudioAPI, project: int, *, job_id: int | None = None,
                  holdout_share: float = 0.5, seed: int = 0, max_calls: int | None = None,
                  max_cost: float | None = None, min_gain: float = 0.0, target_gain: float = 0.05,
                  promote: bool = True, dry_run: bool = False, concurrency: int = 8, rpm: float | None = None,
                  progress: Callable[[dict], None] | None = None, stop: threading.Event | None = None) -> dict:
    """One alignment run (one per project at a time: a second raises Busy). Returns plain data: the
    split, every candidate with its training and held-out scores, the gate's decision and the spend."""
    with services.store.lease(f"align:{project}", f"aligning project {project}'s judge"):
        return _align(services, api, project, job_id=job_id, holdout_share=holdout_share, seed=seed,
                      max_calls=max_calls, max_cost=max_cost, min_gain=min_gain, target_gain=target_gain,
                      promote=promote, dry_run=dry_run, concurrency=concurrency, rpm=rpm,
                      progress=progress or (lambda _: None), stop=stop or threading.Event())


def _align(services: Services, api: LabelStudioAPI, project: int, *, job_id: int | None, holdout_share: float,
           seed: int, max_calls: int | None, max_cost: float | None, min_gain: float, target_gain: float,
           promote: bool, dry_run: bool, concurrency: int, rpm: float | None, progress: Callable[[dict], None],
           stop: threading.Event) -> dict:
    t0 = time.time()
    settings, pid = services.settings, str(project)
    label_config = api.label_config(project)  # before the first progress: a refused connection prints no bar
    progress({"stage": "reading the project's human labels from Label Studio"})
    schema = parse_label_config(label_config)
    params_before = _connected_params(api, project)
    state = resolve_state(services, api, project, None, label_config)
    spec = state.judge.spec
    question = spec.pair_question or (spec.questions[0].name if spec.questions else None)
    if question is None:
        raise AlignmentRefused("the label config asks the judge nothing it could be aligned on")
    tasks, _ = records_from_export(api.project_tasks(project, with_predictions=True), schema)
    data = {t["id"]: t["data"] for t in tasks}
    labels = human_labels(tasks, question)
    out: dict[str, Any] = {"project": project, "question": question, "current_version": state.judge.version,
                           "status": None, "message": None, "promoted": False}
    classes = sorted({repr(v) for v in labels.values()})
    if len(classes) < 2:
        raise AlignmentRefused(f"the human labels of {question!r} hold {len(classes)} class"
                               f"{'es' if len(classes) != 1 else ''} ({len(labels)} labeled tasks): alignment "
                               "needs at least two labels to tell apart; label tasks of the other class first")
    counts = {c: sum(1 for v in labels.values() if repr(v) == c) for c in classes}
    short = {c: n for c, n in counts.items() if n < MIN_PER_LABEL}
    if short:
        raise AlignmentRefused("each label needs a task on both sides of the split: "
                               + ", ".join(f"{c} has {n} (needs {MIN_PER_LABEL})" for c, n in short.items()))
    split = stratified_split(labels, holdout_share=holdout_share, seed=seed)
    held_labels = {repr(labels[t]) for t in split.held_out}
    missing = [c for c in classes if c not in held_labels]
    if missing:
        raise AlignmentRefused(f"label {missing[0]} is missing from the held-out part: label more tasks of it")
    needed = labels_needed(target_gain)
    out["split"] = {**split.as_dict(), "labels": counts, "held_out_ids": sorted(split.held_out)}
    out["held_out_needed"] = {"gain": target_gain, "labels": needed}
    if len(split.held_out) < needed:
        more = needed - len(split.held_out)
        out.update(status="too_few_labels", message=(
            f"{len(split.held_out)} held-out labels cannot show a {target_gain:.0%} gain (the gate needs about "
            f"{needed} for 80% power): label about {int(more / holdout_share) + 1} more tasks "
            f"({more} more held out), or set a larger --target-gain; nothing was spent or promoted"))
        return out
    price = functools.partial(settings.cost, state.config.model)
    per_task = 2 if spec.pair else 1
    tokens = _tokens_per_call(state.judge, [data[t] for t in split.train[:20]], spec)
    out["plan"] = _estimate(len(split.train), len(split.held_out), per_task, tokens, 80 if spec.rationale else 10,
                            price, max_calls)
    if max_calls is not None and max_calls < out["plan"]["reserved_calls"]:
        raise AlignmentRefused(f"--max-calls {max_calls} cannot pay for scoring the current judge and the held-out "
                               f"test ({out['plan']['reserved_calls']} calls at least)")
    if dry_run:
        out.update(status="dry_run", message=f"would make about {out['plan']['calls']} calls "
                   f"(${out['plan']['cost']:.4f} at {state.config.model}'s list price); nothing was spent")
        return out

    train = [LabeledTask(t, data[t], labels[t]) for t in split.train]
    held = [LabeledTask(t, data[t], labels[t]) for t in split.held_out]
    pool = tuple(Example(f"task-{t.key}", t.data, {question: t.label}) for t in train)  # training part only
    write, write_price = _reflection_model(services, state)
    budget = Budget(max_calls=max_calls, max_cost=max_cost, price=price)
    shown = {"at": 0.0}

    def report(update: dict) -> None:
        now = time.monotonic()
        if "stage" not in update and now - shown["at"] < 0.5:
            return
        shown["at"] = now
        progress({**update, "calls": budget.calls, "cost": round(budget.cost, 6)})

    aligner = Aligner(replace(spec, examples=()), functools.partial(_make_judge, services, state), budget=budget,
                      write=write, write_price=write_price, pool=pool,
                      labels=[str(o) for o in (spec.questions[0].options if spec.questions else ())],
                      cache=services.store, concurrency=concurrency, rpm=rpm, stop=stop, progress=report,
                      few_shot_k=state.config.few_shot_k or settings.few_shot_k)
    current = Candidate("current", "current", spec.template, "", few_shot=state.config.few_shot_k > 0)
    reserve = len(held) * 2 * per_task
    search_cap = out["plan"]["search_calls"] + len(train) * 3 * per_task
    budget.limit(search_cap if max_calls is None else max(0, max_calls - reserve),
                 None if max_cost is None else max(0.0, max_cost - reserve * price(tokens, 80)))
    report({"stage": f"scoring the current judge on the training part ({len(train)} tasks)"})
    key = hashlib.sha256(json.dumps([state.judge.version, seed, sorted(map(str, split.train))]).encode()).hexdigest()[:12]
    candidates: list[Candidate] = []
    try:
        candidates = aligner.search(train, current=current, seed=seed, max_search_calls=out["plan"]["search_calls"],
                                    run_dir=settings.model_dir / "align" / pid / key, minibatch=MINIBATCH)
    except (BudgetSpent, Cancelled) as exc:  # not even the current judge could be scored
        out.update(status="cancelled" if isinstance(exc, Cancelled) else "budget",
                   message=f"stopped before any candidate was scored: {exc}")
    budget.limit(max_calls, max_cost)
    out["candidates"] = []
    out["rejected"] = {"count": len(aligner.rejected), "reasons": sorted(set(aligner.rejected))[:10]}
    if candidates:
        held_out_gate(aligner, candidates, held, out, min_gain, report)
    out["budget"] = budget.as_dict()
    out["seconds"] = round(time.time() - t0, 2)
    if budget.calls:
        services.store.add_ledger(pid, f"align-{job_id or 'cli'}", state.config.model, calls=budget.calls,
                                  tokens_in=budget.tokens_in, tokens_out=budget.tokens_out, cost=budget.cost)
    if stop.is_set() and out["status"] in (None, "not_promoted"):
        out["status"] = "cancelled"
    selected = next((c for c in candidates if c.name == out.get("selected")), None)
    if out["status"] == "passed":
        if not promote:
            out.update(status="proposed", message=out["message"] + "; kept as a proposal (--no-promote)")
        else:
            _promote(services, api, project, job_id, selected, current, state, params_before, label_config, out)
    out["candidates"] = [_candidate_row(c, current) for c in candidates]
    return out


def held_out_gate(aligner: Aligner, candidates: list[Candidate], held: list[LabeledTask], out: dict, min_gain: float,
                  report: Callable[[dict], None], *, read_others: int = 3) -> None:
    """Pick the best candidate on the training part, then measure it against the current judge on the
    held-out part (the gate); the ``read_others`` best other candidates (by training accuracy) are
    measured held out too while the budget allows, for reading only (choosing among them by held-out
    scores would be choosing on the test)."""
    current = candidates[0]
    best = max(candidates, key=lambda c: (c.train or {}).get("accuracy") or -1.0)  # ties: the earliest, current first
    out["selected"] = best.name
    if best is current or (best.train or {}).get("accuracy", 0) <= (current.train or {}).get("accuracy", 0):
        out.update(status="not_promoted", message="no candidate beat the current judge on the training part")
        best = current
    others = sorted((c for c in candidates if c not in (current, best)),
                    key=lambda c: -((c.train or {}).get("accuracy") or 0))[:read_others]
    order = [current] + ([best] if best is not current else []) + others
    for i, cand in enumerate(order):
        report({"stage": f"held-out test: {cand.name} on {len(held)} tasks", "candidates": len(candidates)})
        try:
            scored = aligner.score(cand, held, held_out=True)
        except (BudgetSpent, Cancelled) as exc:
            if i < 2 and best is not current:
                out.update(status="budget" if isinstance(exc, BudgetSpent) else "cancelled",
                           message=f"the held-out test did not finish ({exc}); nothing promoted")
                return
            break
        cand.outcomes = [s.right for s in scored]
        right = sum(cand.outcomes)
        lo, hi = accuracy_ci(right, len(held))
        cand.held_out = {"accuracy": round(right / len(held), 6), "right": right, "n": len(held),
                         "ci_low": round(lo, 6), "ci_high": round(hi, 6)}
        if cand is not current and current.outcomes is not None:
            cand.gain = paired_gain(current.outcomes, cand.outcomes).as_dict()
    if best is current:
        return
    gain = best.gain or {}
    out["gain"] = gain
    if gain and gain["ci_low"] > min_gain:
        out.update(status="passed", message=(
            f"{best.name}: held-out accuracy {(best.held_out or {})['accuracy']:.3f} against "
            f"{(current.held_out or {})['accuracy']:.3f}"
            f", gain {gain['gain']:+.3f} (90% CI {gain['ci_low']:+.3f} to {gain['ci_high']:+.3f}): its one-sided 95% "
            f"lower bound is above {min_gain:+.3f}"))
    else:
        out.update(status="not_promoted", message=(
            f"{best.name} did not show a gain on the held-out labels: {gain.get('gain', 0):+.3f} "
            f"(90% CI {gain.get('ci_low', 0):+.3f} to {gain.get('ci_high', 0):+.3f}); the gate needs its lower end "
            "(the one-sided 95% bound) "
            f"above {min_gain:+.3f}"))


def _promote(services: Services, api: LabelStudioAPI, project: int, job_id: int | None, winner: Candidate | None,
             current: Candidate, state: Any, params_before: dict, label_config: str, out: dict) -> None:
    """The winner becomes the project's judge: its prompt (and few-shot choice) in the connection's
    extra_params, unless someone changed them while the job ran."""
    if winner is None:
        return
    backends = api.connected_backends(project)
    if not backends:
        out.update(status="proposed", message=out["message"] + "; no connected backend to promote it to")
        return
    ml = backends[0]
    now_params = parse_extra_params(ml.get("extra_params"))
    if now_params != params_before:
        out.update(status="proposed", message=out["message"] + "; not promoted: the project's extra_params changed "
                   "while the job ran (run it again)")
        return
    params = dict(params_before)
    params["prompt"] = winner.template
    params.pop("metric", None)
    if winner.few_shot != current.few_shot:
        params["few_shot_k"] = (state.config.few_shot_k or services.settings.few_shot_k) if winner.few_shot else 0
    new_state = services.projects.setup(project, label_config, params)  # validates before Label Studio changes
    api.set_extra_params(project, ml["id"], ml["url"], params)
    services.store.record_promotion(str(project), job_id, params_before, params, state.judge.version,
                                    new_state.judge.version)
    try:
        api.show_model_version(project, new_state.version)
    except Exception as exc:  # shown once it has predicted; the promotion itself stands
        log.warning("project %s: could not show model version %s yet: %s", project, new_state.version, exc)
    out.update(status="promoted", promoted=True, promoted_version=new_state.judge.version,
               message=out["message"] + f"; promoted as {new_state.judge.version} (rollback: labeljudge align "
                                        f"--project {project} --rollback)")


def rollback(services: Services, api: LabelStudioAPI, project: int) -> dict:
    """Put back the extra_params the latest alignment promotion replaced."""
    pid = str(project)
    live = [p for p in services.store.promotions(pid) if p["rolled_back_at"] is None]
    if not live:
        raise AlignmentRefused(f"project {project} has no alignment promotion to roll back")
    last = live[0]
    backends = api.connected_backends(project)
    if not backends:
        raise AlignmentRefused(f"project {project} has no connected backend")
    ml = backends[0]
    label_config = api.label_config(project)
    state = services.projects.setup(project, label_config, last["previous_params"])
    api.set_extra_params(project, ml["id"], ml["url"], last["previous_params"])
    services.store.mark_rolled_back(last["id"])
    try:
        api.show_model_version(project, state.version)
    except Exception as exc:
        log.warning("project %s: could not show model version %s: %s", project, state.version, exc)
    return {"project": project, "rolled_back": last["version"], "version": state.judge.version,
            "promotion": last["id"]}


def _connected_params(api: LabelStudioAPI, project: int) -> dict:
    for ml in api.connected_backends(project):
        if ml.get("extra_params"):
            return parse_extra_params(ml["extra_params"])
    return {}


def _make_judge(services: Services, state: Any, spec: Any) -> Any:
    return build_judge(spec, state.judge.provider, state.schema.data_fields, services.settings)


def _reflection_model(services: Services, state: Any) -> tuple[Any, Any]:
    """The reflection model's ``write`` and its price: ALIGN_MODEL on ALIGN_BASE_URL when set, else the
    project's own provider. None when that provider cannot write free text."""
    settings = services.settings
    if settings.align_model:
        from ..judge.providers import OpenAIProvider

        provider = OpenAIProvider(settings.align_model, api_key=settings.align_api_key or settings.openai_api_key,
                                  base_url=settings.align_base_url or settings.openai_base_url,
                                  timeout=settings.request_timeout, max_retries=settings.max_retries)
        model = settings.align_model
    else:
        provider, model = state.judge.provider, state.config.model
    write = getattr(provider, "write", None)
    if write is None:
        return None, None
    return (lambda messages: write(messages, max_tokens=1024)), functools.partial(settings.cost, model)


def _tokens_per_call(judge: Any, sample: list[dict], spec: Any) -> int:
    """Input tokens of one judge call, from the rendered prompts of a few training tasks (4 characters
    a token, the instructions and few-shot examples included)."""
    sizes = []
    for d in sample:
        try:
            sizes.append(len(render(spec.template, d, field_map=spec.field_map, input_keys=judge.input_keys,
                                    max_chars=judge.max_field_chars).text))
        except Exception:
            continue
    per_task = (sum(sizes) / len(sizes)) if sizes else 2000
    shots = min(spec.few_shot_k, 8) if spec.few_shot_k > 0 else 0
    return int(per_task * (1 + shots) / 4) + 150


def _candidate_row(c: Candidate, current: Candidate) -> dict:
    row = c.as_dict()
    row["diff"] = "".join(difflib.unified_diff((current.template + "\n").splitlines(keepends=True),
                                               (c.template + "\n").splitlines(keepends=True), "current", c.name)) \
        if c is not current else ""
    return row
