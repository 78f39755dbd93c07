"""Alignment's pieces without Label Studio: the split, the exact paired gate, the reflection model's
checks, and the search against the deterministic chat-completions server (budget, cancel, garbage
and failing reflection replies)."""
from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml_backend.judge import Judge, JudgeSpec
from ml_backend.judge.align import Aligner, Budget, Cancelled, Candidate, LabeledTask, is_right
from ml_backend.judge.providers import OpenAIProvider
from ml_backend.judge.reflection import (
    CandidateRejected,
    Mistake,
    check_definitions,
    check_instruction,
    extract,
    reflection_messages,
)
from ml_backend.judge.types import Question
from ml_backend.quality.paired import accuracy_ci, labels_needed, paired_gain, stratified_split
from ml_backend.store import Store

from .fake_openai import FakeOpenAI
from .sim_align import RULE, TEMPLATE, SimulatedJudge, make_rows

# -- the split ------------------------------------------------------------------------------------


@given(st.dictionaries(st.integers(0, 10_000), st.sampled_from(["Pass", "Fail", "Maybe"]), min_size=1, max_size=300),
       st.floats(0.1, 0.9), st.integers(0, 2**31))
def test_split_is_a_stratified_partition_fixed_by_its_seed(labels, share, seed):
    split = stratified_split(labels, holdout_share=share, seed=seed)
    assert set(split.train).isdisjoint(split.held_out)
    assert set(split.train) | set(split.held_out) == set(labels)
    for label in set(labels.values()):
        ids = [t for t, v in labels.items() if v == label]
        held = [t for t in ids if t in split.held_out]
        if len(ids) >= 2:  # every label on both sides
            assert 0 < len(held) < len(ids)
    assert stratified_split(dict(reversed(list(labels.items()))), holdout_share=share, seed=seed) == split


def test_split_refuses_a_share_outside_0_1():
    with pytest.raises(ValueError):
        stratified_split({1: "a", 2: "b"}, holdout_share=1.0, seed=0)


# -- the gate -------------------------------------------------------------------------------------


def test_paired_gain_counts_discordant_tasks_and_is_exact():
    base = [True] * 70 + [False] * 30
    cand = [True] * 70 + [True] * 20 + [False] * 10  # fixed 20 mistakes, broke none
    g = paired_gain(base, cand)
    assert (g.only_candidate_right, g.only_baseline_right, g.gain) == (20, 0, 0.2)
    assert 0 < g.ci_low < 0.2 and g.ci_high == pytest.approx(0.2) and g.p_value < 1e-5
    assert paired_gain(base, base).gain == 0 and paired_gain(base, base).ci_low == 0
    with pytest.raises(ValueError):
        paired_gain([True], [True, False])
    with pytest.raises(ValueError):
        paired_gain([], [])


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=400))
def test_paired_gain_interval_holds_its_estimate_and_swaps_sign(pairs):
    base, cand = [a for a, _ in pairs], [b for _, b in pairs]
    g, back = paired_gain(base, cand), paired_gain(cand, base)
    assert -1 <= g.ci_low <= g.gain <= g.ci_high <= 1
    assert back.gain == pytest.approx(-g.gain) and back.ci_low == pytest.approx(-g.ci_high)


def test_the_gate_promotes_an_equal_judge_at_most_5_percent_of_the_time():
    """Two judges of the same accuracy with independent errors: the one-sided 95% lower bound is above
    zero in at most 5% of draws (exact McNemar), whatever the size."""
    rng = random.Random(7)
    for n in (50, 200):
        passed = 0
        for _ in range(2000):
            base = [rng.random() < 0.8 for _ in range(n)]
            cand = [rng.random() < 0.8 for _ in range(n)]
            passed += paired_gain(base, cand).ci_low > 0
        assert passed / 2000 <= 0.05, (n, passed)


def test_labels_needed_falls_with_the_gain_and_the_discordance():
    assert labels_needed(0.05) > labels_needed(0.10) > labels_needed(0.3)
    assert labels_needed(0.05, discordance=0.05) < labels_needed(0.05, discordance=0.2)
    with pytest.raises(ValueError):
        labels_needed(0)
    lo, hi = accuracy_ci(80, 100)
    assert lo < 0.8 < hi and accuracy_ci(0, 0) == (0.0, 1.0)


def test_is_right_compares_labels_and_checklists():
    assert is_right("Pass", "Pass") and not is_right("Fail", "Pass") and not is_right(None, "Pass")
    assert is_right(["b", "a"], ["a", "b"]) and not is_right(["a"], ["a", "b"])


# -- the reflection model's replies ---------------------------------------------------------------


def test_a_rewrite_must_keep_the_template_shape():
    current = "Is {output} supported by {context}?"
    assert check_instruction("Judge {output} strictly against {context}.", current).startswith("Judge")
    for bad, why in [("Is {output} fine?", "missing"), ("{output} {context} {secret}", "added"),
                     ("Is {output} {context", "not a valid template"), ("", "empty"), (current, "current"),
                     ("{output}{context}" + "x" * 20_000, "characters")]:
        with pytest.raises(CandidateRejected, match=why):
            check_instruction(bad, current)
    with pytest.raises(CandidateRejected, match="braces"):
        check_definitions("Pass: {x}")
    with pytest.raises(CandidateRejected, match="no <criterion>"):
        extract("instruction", "Sure! Here it is: Judge {output}.")
    assert extract("definitions", "<definitions>a</definitions> <definitions>b</definitions>") == "b"


@given(st.text(max_size=300))
def test_task_data_stays_quoted_inside_its_data_block(text):
    msgs = reflection_messages("instruction", "Is {output} ok?", [Mistake({"output": text}, "Pass", "Fail")],
                               ["Pass", "Fail"])
    user = msgs[-1]["content"]
    # whatever the task says, it cannot open or close a block of its own
    assert user.count("<data>") == 1 and user.count("</data>") == 1
    assert user.count("<criterion>") == 1 and user.count("<current>") == 1


# -- the search against a chat-completions server ------------------------------------------------


def _aligner(fake, tmp_path: Path, **kw) -> tuple[Aligner, list[LabeledTask], Budget]:
    provider = OpenAIProvider("fake", api_key="sk-test", base_url=fake.url, timeout=2, max_retries=0)
    spec = JudgeSpec(template=TEMPLATE, provider="openai", model="fake", rationale=False, few_shot_k=0,
                     questions=(Question("verdict", "single", ("Pass", "Fail")),))
    rows = make_rows(120, seed=11)
    tasks = [LabeledTask(r["id"], {"context": r["context"], "output": r["output"]}, r["truth"]) for r in rows]
    budget = Budget(max_calls=kw.pop("max_calls", None), max_cost=None, price=lambda i, o: (i + o) * 1e-6)
    aligner = Aligner(spec, lambda s: Judge(s, provider, input_keys=("context", "output")), budget=budget,
                      write=lambda m: provider.write(m), cache=Store(tmp_path / "s.db"), labels=["Pass", "Fail"],
                      concurrency=8, **kw)
    return aligner, tasks, budget


def test_search_finds_the_better_criterion_on_the_training_part(tmp_path):
    rows = make_rows(120, seed=11)
    sim = SimulatedJudge({r["id"]: r["truth"] for r in rows}, base=0.7, lift=0.2, mode="better")
    with FakeOpenAI(decide=sim.decide, write=sim.write) as fake:
        aligner, tasks, budget = _aligner(fake, tmp_path)
        found = aligner.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0,
                               run_dir=tmp_path / "gepa", max_search_calls=4 * len(tasks))
    best = max(found, key=lambda c: c.train["accuracy"])
    assert RULE in best.template and best.train["accuracy"] > found[0].train["accuracy"]
    assert sim.reflections >= 1 and budget.calls > len(tasks) and budget.cost > 0
    assert (tmp_path / "gepa").is_dir()  # GEPA's state, for a resumed run


def test_the_search_stops_at_its_budget_and_keeps_what_it_scored(tmp_path):
    rows = make_rows(120, seed=11)
    sim = SimulatedJudge({r["id"]: r["truth"] for r in rows}, mode="better")
    with FakeOpenAI(decide=sim.decide, write=sim.write) as fake:
        aligner, tasks, budget = _aligner(fake, tmp_path, max_calls=200)
        found = aligner.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0, run_dir=None,
                               max_search_calls=4 * len(tasks))
        calls = len([r for r in fake.requests if r["path"].endswith("/chat/completions")])
    assert found[0].name == "current" and found[0].train["n"] == 120
    assert budget.calls <= 200 and calls <= 200


@pytest.mark.parametrize("mode", ["garbage", "obey"])
def test_unusable_reflection_replies_are_rejected_and_counted(tmp_path, mode):
    rows = make_rows(120, seed=11)
    sim = SimulatedJudge({r["id"]: r["truth"] for r in rows}, mode=mode)
    with FakeOpenAI(decide=sim.decide, write=sim.write) as fake:
        aligner, tasks, _ = _aligner(fake, tmp_path)
        found = aligner.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0, run_dir=None,
                               max_search_calls=3 * len(tasks))
    assert aligner.rejected and all(c.kind in ("current", "definitions", "few-shot") for c in found)
    assert all("{secret_field}" not in c.template for c in found)


def test_a_failing_reflection_model_loses_its_proposals_not_the_search(tmp_path):
    rows = make_rows(120, seed=11)
    sim = SimulatedJudge({r["id"]: r["truth"] for r in rows}, mode="better")
    with FakeOpenAI(decide=sim.decide) as fake:
        aligner, tasks, _ = _aligner(fake, tmp_path)
        aligner.write = lambda m: (_ for _ in ()).throw(TimeoutError("the reflection model timed out"))
        found = aligner.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0, run_dir=None,
                               max_search_calls=3 * len(tasks))
    assert found[0].train is not None
    assert any("timed out" in r for r in aligner.rejected)


def test_a_cancelled_search_raises_before_spending(tmp_path):
    stop = threading.Event()
    stop.set()
    with FakeOpenAI() as fake:
        aligner, tasks, budget = _aligner(fake, tmp_path, stop=stop)
        with pytest.raises(Cancelled):
            aligner.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0, run_dir=None,
                           max_search_calls=100)
        assert budget.calls == 0 and not fake.requests


def test_a_stopped_search_resumes_from_the_cache_and_gepas_state(tmp_path):
    """A run stopped at its budget (as a killed one would be) and run again: every verdict it paid for
    comes from the verdict cache, and GEPA picks up its candidates from its run directory."""
    rows = make_rows(120, seed=11)
    sim = SimulatedJudge({r["id"]: r["truth"] for r in rows}, base=0.7, lift=0.2, mode="better")
    with FakeOpenAI(decide=sim.decide, write=sim.write) as fake:
        first, tasks, _ = _aligner(fake, tmp_path, max_calls=300)
        first.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0, run_dir=tmp_path / "gepa",
                     max_search_calls=4 * len(tasks))
        paid = len(fake.requests)
        again, _, budget = _aligner(fake, tmp_path)  # the same store (cache) and run directory
        found = again.search(tasks, current=Candidate("current", "current", TEMPLATE), seed=0,
                             run_dir=tmp_path / "gepa", max_search_calls=4 * len(tasks))
    assert budget.calls < 4 * len(tasks) + 2 * len(tasks)  # less than a run from scratch pays
    assert len(fake.requests) - paid == budget.calls  # only what was not paid before reached the server
    assert max(found, key=lambda c: c.train["accuracy"]).train["accuracy"] > found[0].train["accuracy"]
