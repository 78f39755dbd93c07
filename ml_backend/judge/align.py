"""Aligning the judge with its reviewers: candidate judges proposed and scored on the training part of
the human labels only. The held-out part, the paired test and the promotion live in the caller
(``workflows/alignment.py``); nothing here ever sees a held-out label.

The search is GEPA's (``gepa.optimize``): reflective mutation of two text components, the criterion
and the label definitions, with minibatch acceptance and a Pareto frontier over the training tasks.
GEPA never calls a model itself here: the adapter scores candidates through LabelJudge's own engine
(``run_judge``: the verdict cache, rate limits, retries, abstentions) and proposes texts through the
project's provider (``reflection.propose``), so every call is in the budget and the cost ledger.
Few-shot selection is one more candidate, scored the same way (leave-fold-out on the training part,
so a task never sees its own label as an example).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, cast

from .judge import Judge, JudgeSpec
from .reflection import CandidateRejected, Mistake, Writer, propose, with_definitions
from .runner import Outcome, RateLimiter, VerdictCache, run_judge
from .types import Example, Usage

log = logging.getLogger(__name__)


class BudgetSpent(RuntimeError):
    """The alignment's budget (calls or dollars) would be passed: stop and keep what was learned."""


class Cancelled(RuntimeError):
    """The job was asked to stop: stop and keep what was learned."""


@dataclass(frozen=True)
class LabeledTask:
    key: Any  # the Label Studio task id
    data: dict
    label: Any  # the human label of the primary question


@dataclass
class Candidate:
    """A judge that could replace the current one: its criterion, label definitions and whether it
    uses the training part's labels as few-shot examples; and what it scored."""

    name: str
    kind: str  # current | rewrite | definitions | rewrite+definitions | few-shot
    instruction: str
    definitions: str = ""
    few_shot: bool = False
    train: dict | None = None  # {"accuracy", "right", "n"}
    held_out: dict | None = None  # {"accuracy", "right", "n", "ci_low", "ci_high"}
    gain: dict | None = None  # PairedGain.as_dict() against the current judge, held out
    outcomes: list[bool] | None = field(default=None, repr=False)  # held-out, in the held-out order

    @property
    def template(self) -> str:
        return with_definitions(self.instruction, self.definitions)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("outcomes")
        out["template"] = self.template
        return out


class Budget:
    """Calls and dollars spent so far against the job's limits (thread-safe: judge calls finish on
    the runner's threads)."""

    def __init__(self, *, max_calls: int | None, max_cost: float | None, price: Callable[[int, int], float]) -> None:
        self.max_calls, self.max_cost, self.price = max_calls, max_cost, price
        self.calls, self.cost, self.tokens_in, self.tokens_out = 0, 0.0, 0, 0
        self.refused = False  # something was refused for want of budget: the search is over
        self._lock = threading.Lock()

    def limit(self, max_calls: int | None, max_cost: float | None) -> None:
        """New limits (the held-out test's, after the search's): what was refused may fit now."""
        self.max_calls, self.max_cost, self.refused = max_calls, max_cost, False

    def charge(self, usage: Usage, price: Callable[[int, int], float] | None = None) -> None:
        """Count ``usage`` (at ``price``: the reflection model's, when it is another model)."""
        with self._lock:
            self.calls += usage.calls
            self.tokens_in += usage.tokens_in
            self.tokens_out += usage.tokens_out
            self.cost += (price or self.price)(usage.tokens_in, usage.tokens_out)

    @property
    def exhausted(self) -> bool:
        return self.refused or (self.max_calls is not None and self.calls >= self.max_calls) or \
            (self.max_cost is not None and self.cost >= self.max_cost)

    def allows(self, calls: int, cost_per_call: float = 0.0) -> bool:
        """Whether ``calls`` more (at about ``cost_per_call`` each) stay within the limits; a refusal
        ends the search (``exhausted``), so GEPA stops instead of proposing what cannot be scored."""
        with self._lock:
            ok = (self.max_calls is None or self.calls + calls <= self.max_calls) and \
                (self.max_cost is None or self.cost + calls * cost_per_call <= self.max_cost)
            self.refused = self.refused or not ok
            return ok

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "cost": round(self.cost, 6), "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out, "max_calls": self.max_calls, "max_cost": self.max_cost}


def is_right(answer: Any, label: Any) -> bool:
    """Whether the judge's answer is the human label (a checklist: the same set)."""
    if answer is None:
        return False
    if isinstance(label, list) or isinstance(answer, list):
        return sorted(map(str, answer if isinstance(answer, list) else [answer])) == \
            sorted(map(str, label if isinstance(label, list) else [label]))
    return str(answer) == str(label)


@dataclass
class Scored:
    right: bool
    answer: Any = None
    rationale: str | None = None


class Aligner:
    """Scores candidate judges on labeled tasks and runs the search; one per alignment job.

    ``make_judge`` builds a Judge from a spec (the project's provider and limits); ``write`` is the
    reflection model (None: no rewrites, only few-shot selection). ``pool`` are the training part's
    labels as few-shot examples."""

    def __init__(self, base: JudgeSpec, make_judge: Callable[[JudgeSpec], Judge], *, budget: Budget,
                 write: Writer | None = None, write_price: Callable[[int, int], float] | None = None,
                 pool: Sequence[Example] = (), labels: Sequence[str] = (), cache: VerdictCache | None = None,
                 concurrency: int = 8, rpm: float | None = None, stop: threading.Event | None = None,
                 progress: Callable[[dict], None] | None = None, few_shot_k: int = 8) -> None:
        self.base, self.make_judge, self.budget, self.write = base, make_judge, budget, write
        self.write_price = write_price
        self.pool, self.labels, self.cache = tuple(pool), tuple(labels), cache
        self.concurrency, self.limiter = concurrency, RateLimiter(rpm)
        self.stop = stop or threading.Event()
        self.progress = progress or (lambda _: None)
        self.few_shot_k = base.few_shot_k if base.few_shot_k > 0 else few_shot_k
        self.question = base.pair_question or (base.questions[0].name if base.questions else "")
        self.rejected: list[str] = []  # why each unusable reflection reply was dropped
        self.calls_per_task = 2 if base.pair else 1
        self._cost_per_call = 0.0

    # -- scoring -----------------------------------------------------------------------------------
    def _spec(self, cand: Candidate, examples: Sequence[Example]) -> JudgeSpec:
        return dataclasses.replace(self.base, template=cand.template, examples=tuple(examples),
                                   few_shot_k=self.few_shot_k if examples else self.base.few_shot_k)

    def score(self, cand: Candidate, tasks: Sequence[LabeledTask], *, held_out: bool = False) -> list[Scored]:
        """Each task judged by ``cand`` (cached verdicts are free). Few-shot candidates draw examples
        from the training pool: on held-out tasks all of it, on training tasks the other fold only.
        Raises BudgetSpent before starting what the budget cannot finish, Cancelled when stopped."""
        if self.stop.is_set():
            raise Cancelled("stopped")
        if not self.budget.allows(len(tasks) * self.calls_per_task, self._cost_per_call):
            raise BudgetSpent(f"scoring {cand.name} on {len(tasks)} tasks would pass the budget")
        groups: list[tuple[JudgeSpec, list[int]]] = []
        if not cand.few_shot or not self.pool:
            groups.append((self._spec(cand, ()), list(range(len(tasks)))))
        elif held_out:
            groups.append((self._spec(cand, self.pool), list(range(len(tasks)))))
        else:
            for fold in (0, 1):
                mine = [i for i, t in enumerate(tasks) if _fold(t.key) == fold]
                others = [e for e in self.pool if _fold(e.id.removeprefix("task-")) != fold]
                groups.append((self._spec(cand, others), mine))
        out: list[Scored | None] = [None] * len(tasks)
        for spec, idx in groups:
            if idx:
                self._run(self.make_judge(spec), tasks, idx, out)
        if any(s is None for s in out):
            raise Cancelled("stopped") if self.stop.is_set() else BudgetSpent("the budget ran out mid-candidate")
        return [s for s in out if s is not None]

    def _run(self, judge: Judge, tasks: Sequence[LabeledTask], idx: list[int], out: list[Scored | None]) -> None:
        halt = threading.Event()
        lock = threading.Lock()

        def record(o: Outcome) -> None:
            i = o.key
            with lock:
                if not o.cached and o.verdict is not None:
                    self.budget.charge(o.verdict.usage)
                elif not o.cached:
                    self.budget.charge(Usage(calls=1))  # a provider error is a call that failed
                answer = o.verdict.answers.get(self.question) if o.verdict is not None else None
                value = answer.value if answer is not None else None
                out[i] = Scored(is_right(value, tasks[i].label), value,
                                o.verdict.rationale if o.verdict is not None else o.error)
                if self.budget.exhausted or self.stop.is_set():
                    halt.set()
            self.progress({"calls": self.budget.calls, "cost": round(self.budget.cost, 6)})

        run_judge(judge, ((i, tasks[i].data) for i in idx), record, concurrency=self.concurrency,
                  cache=self.cache, limiter=self.limiter, stop=_either(halt, self.stop))
        if self.budget.calls:
            self._cost_per_call = self.budget.cost / self.budget.calls

    def accuracy(self, scored: Sequence[Scored]) -> dict:
        right = sum(s.right for s in scored)
        return {"accuracy": round(right / len(scored), 6) if scored else None, "right": right, "n": len(scored)}

    # -- the search ----------------------------------------------------------------------------------
    def search(self, train: Sequence[LabeledTask], *, current: Candidate, seed: int, run_dir: Path | None,
               max_search_calls: int, minibatch: int = 8) -> list[Candidate]:
        """Candidates scored on the whole training part, the current judge first. GEPA proposes
        rewrites and definitions within ``max_search_calls`` judge calls; then few-shot selection on
        the current criterion and on GEPA's best. Stops at the budget or on cancel, keeping every
        candidate it finished scoring."""
        found: list[Candidate] = []
        scored_current = self.score(current, train)
        current.train = self.accuracy(scored_current)
        found.append(current)
        self.progress({"stage": "searching: rewrites and label definitions (GEPA)", "candidates": len(found)})
        if self.write is not None and max_search_calls > len(train) * self.calls_per_task:
            try:
                found.extend(self._gepa(train, current, seed, run_dir, max_search_calls, minibatch))
            except (BudgetSpent, Cancelled) as exc:
                log.info("alignment search stopped: %s", exc)
            except Exception as exc:  # the optimiser's own failure: its proposals are lost, the run goes on
                log.warning("the alignment search (GEPA) failed: %s: %s", type(exc).__name__, exc)
                self.rejected.append(f"the search failed: {type(exc).__name__}: {str(exc)[:160]}")
        self.progress({"stage": "scoring few-shot selection on the training part", "candidates": len(found)})
        best = max(found, key=lambda c: c.train["accuracy"] if c.train else -1)
        variants = [Candidate("few-shot", "few-shot", current.instruction, current.definitions, not current.few_shot)]
        if best is not current:
            variants.append(Candidate(f"{best.name}+few-shot", best.kind + "+few-shot", best.instruction,
                                      best.definitions, not best.few_shot))
        for cand in variants:
            if cand.few_shot and not self.pool:
                continue
            try:
                cand.train = self.accuracy(self.score(cand, train))
            except (BudgetSpent, Cancelled) as exc:
                log.info("alignment search stopped: %s", exc)
                break
            found.append(cand)
        return found

    def _gepa(self, train: Sequence[LabeledTask], current: Candidate, seed: int, run_dir: Path | None,
              max_search_calls: int, minibatch: int) -> list[Candidate]:
        import gepa

        adapter = _JudgeAdapter(self, current.few_shot)
        seed_candidate = {"instruction": current.instruction, "definitions": current.definitions or "(none)"}
        result: Any = gepa.optimize(
            seed_candidate=seed_candidate, trainset=list(train), valset=list(train), adapter=cast(Any, adapter),
            max_metric_calls=max(1, max_search_calls // self.calls_per_task), seed=seed,
            reflection_minibatch_size=min(minibatch, len(train)), candidate_selection_strategy="pareto",
            stop_callbacks=[lambda _state: self.budget.exhausted or self.stop.is_set()],
            logger=_GepaLog(), run_dir=str(run_dir) if run_dir is not None else None,
            raise_on_exception=False, display_progress_bar=False, track_best_outputs=False)
        out = []
        for i, (texts, score) in enumerate(zip(result.candidates, result.val_aggregate_scores)):
            if i == 0:
                continue  # the seed: the current judge, scored above
            instruction = texts.get("instruction", current.instruction)
            definitions = "" if texts.get("definitions") in (None, "(none)") else texts["definitions"]
            changed = [k for k, new, old in (("rewrite", instruction, current.instruction),
                                             ("definitions", definitions, current.definitions)) if new != old]
            cand = Candidate(f"gepa-{i}", "+".join(changed) or "rewrite", instruction, definitions, current.few_shot)
            right = round(score * len(train))
            cand.train = {"accuracy": round(right / len(train), 6), "right": right, "n": len(train)}
            out.append(cand)
        return out


def _fold(key: Any) -> int:
    """A task's fold for leave-fold-out few-shot scoring (stable across processes)."""
    return hashlib.sha256(str(key).encode()).digest()[0] % 2


class _Either(threading.Event):
    """Set when either event is: the runner's ``stop`` watches one Event."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        super().__init__()
        self._a, self._b = a, b

    def is_set(self) -> bool:
        return self._a.is_set() or self._b.is_set()


def _either(a: threading.Event, b: threading.Event) -> threading.Event:
    return _Either(a, b)


class _GepaLog:
    """GEPA's log lines go to ours, at debug level (it prints every iteration otherwise)."""

    def log(self, message: str) -> None:
        log.debug("gepa: %s", message)


class _JudgeAdapter:
    """GEPA's adapter over LabelJudge's judge: a candidate is {"instruction", "definitions"}; a task
    scores 1 when the judge's answer is the human label."""

    def __init__(self, aligner: Aligner, few_shot: bool) -> None:
        self.aligner, self.few_shot = aligner, few_shot

    def _candidate(self, texts: dict[str, str]) -> Candidate:
        definitions = texts.get("definitions", "")
        return Candidate("gepa", "rewrite", texts["instruction"], "" if definitions == "(none)" else definitions,
                         self.few_shot)

    def evaluate(self, batch: list[LabeledTask], candidate: dict[str, str], capture_traces: bool = False):
        from gepa.core.adapter import EvaluationBatch

        scored = self.aligner.score(self._candidate(candidate), batch)
        traces = [{"task": t, "scored": s} for t, s in zip(batch, scored)] if capture_traces else None
        return EvaluationBatch(outputs=[s.answer for s in scored], scores=[1.0 if s.right else 0.0 for s in scored],
                               trajectories=traces)

    def make_reflective_dataset(self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]):
        wrong = [Mistake(t["task"].data, t["scored"].answer, t["task"].label, t["scored"].rationale)
                 for t in eval_batch.trajectories or [] if not t["scored"].right]
        return {name: [{"mistake": m} for m in wrong] for name in components_to_update}

    def propose_new_texts(self, candidate: dict[str, str], reflective_dataset: Any,
                          components_to_update: list[str]) -> dict[str, str]:
        aligner = self.aligner
        new = dict(candidate)
        for name in components_to_update:
            mistakes = [r["mistake"] for r in reflective_dataset.get(name, [])]
            if not mistakes:
                continue
            if aligner.stop.is_set():
                raise Cancelled("stopped")
            if not aligner.budget.allows(1):
                raise BudgetSpent("no budget left for the reflection model")
            current = candidate[name] if name == "instruction" else candidate.get("definitions", "")
            aligner.limiter.acquire(3000)  # the reflection call counts against the same rate limits
            try:
                text, usage = propose("definitions" if name == "definitions" else "instruction",
                                      "" if current == "(none)" else current, mistakes, aligner.labels,
                                      aligner.write)  # type: ignore[arg-type]  # search() checks write
            except CandidateRejected as exc:
                aligner.budget.charge(getattr(exc, "usage", Usage(calls=1)), aligner.write_price)
                aligner.rejected.append(str(exc))
                raise
            except Exception as exc:  # a provider error: this proposal is lost, the search goes on
                aligner.budget.charge(Usage(calls=1))
                aligner.rejected.append(f"the reflection model failed: {type(exc).__name__}: {str(exc)[:160]}")
                raise
            aligner.budget.charge(usage, aligner.write_price)
            new[name] = text
        return new
