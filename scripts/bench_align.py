"""Alignment's gate, measured: how often it promotes a judge that is not better (false promotion), and
how often it promotes one that truly is (power), over many simulated runs at 100, 200 and 400 held-out
labels. Optionally (``--real``) the whole search against the embedded SmolLM2 on HaluEval rows.

The simulated runs use the product's search (``judge/align.Aligner``: GEPA over LabelJudge's engine,
the verdict cache, the reflection model over the chat-completions protocol) and the product's gate
(``workflows/alignment.held_out_gate``); only Label Studio is left out. The judge and the reflection
model are the deterministic chat-completions server playing ``tests/sim_align.SimulatedJudge``: a
judge ``base`` accurate, ``base + lift`` when its prompt states the rule; two prompts of equal accuracy
share 60% of their per-item outcomes (hard items are hard for all) and draw the rest apiece.

- ``null``: the reflection model only rewords the criterion (every candidate is exactly as accurate
  as the current judge); any promotion is a false one.
- ``better``: the reflection model adds the rule (a candidate truly ``lift`` better exists).

Each run draws its labeled items from a universe of 3,000 with its own seed and splits them half and
half (training part / held-out part). Prints a table and writes JSON (bench_results/align.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.judge import Judge, JudgeSpec  # noqa: E402
from ml_backend.judge.align import Aligner, Budget, Candidate, LabeledTask  # noqa: E402
from ml_backend.judge.providers import OpenAIProvider  # noqa: E402
from ml_backend.judge.types import Question  # noqa: E402
from ml_backend.quality.paired import paired_gain, stratified_split  # noqa: E402
from ml_backend.store import Store  # noqa: E402
from ml_backend.workflows.alignment import MINIBATCH, SEARCH_PASSES, held_out_gate  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402
from tests.sim_align import RULE, TEMPLATE, SimulatedJudge, make_rows  # noqa: E402

QUESTION = Question("verdict", "single", ("Pass", "Fail"))
UNIVERSE = 3000


def one_run(fake: FakeOpenAI, store: Store, rows: list[dict], held_size: int, seed: int) -> dict:
    """The product's search and gate on one draw of 2 x ``held_size`` labeled items."""
    import random

    picked = random.Random(seed).sample(rows, 2 * held_size)
    labels = {r["id"]: r["truth"] for r in picked}
    data = {r["id"]: {"context": r["context"], "output": r["output"]} for r in picked}
    split = stratified_split(labels, holdout_share=0.5, seed=seed)
    train = [LabeledTask(t, data[t], labels[t]) for t in split.train]
    held = [LabeledTask(t, data[t], labels[t]) for t in split.held_out]
    provider = OpenAIProvider("sim", api_key="sk-bench", base_url=fake.url, timeout=10, max_retries=2)
    spec = JudgeSpec(template=TEMPLATE, provider="openai", model="sim", rationale=False, few_shot_k=0,
                     questions=(QUESTION,))
    budget = Budget(max_calls=None, max_cost=None, price=lambda i, o: 0.0)
    aligner = Aligner(spec, lambda s: Judge(s, provider, input_keys=("context", "output")), budget=budget,
                      write=lambda m: provider.write(m), cache=store, labels=["Pass", "Fail"], concurrency=16)
    current = Candidate("current", "current", TEMPLATE)
    candidates = aligner.search(train, current=current, seed=seed, run_dir=None,
                                max_search_calls=SEARCH_PASSES * len(train), minibatch=MINIBATCH)
    out: dict = {"status": None, "message": None}
    held_out_gate(aligner, candidates, held, out, 0.0, lambda _: None, read_others=0)
    chosen = next((c for c in candidates if c.name == out.get("selected")), None)
    # what the stricter gate would have decided: the two-sided 95% interval's lower end above zero (at most
    # 2.5% false promotion, less power), beside the product's one-sided 95% bound
    two_sided = bool(chosen is not None and chosen is not candidates[0] and chosen.outcomes is not None
                     and candidates[0].outcomes is not None
                     and paired_gain(candidates[0].outcomes, chosen.outcomes, confidence=0.95).ci_low > 0)
    return {"promoted": out["status"] == "passed", "truly_better": bool(chosen and RULE in chosen.template),
            "promoted_two_sided": two_sided,
            "gain": (out.get("gain") or {}).get("gain"), "ci_low": (out.get("gain") or {}).get("ci_low"),
            "candidates": len(candidates), "calls": budget.calls}


def simulate(scenario: str, sizes: list[int], runs: int, *, base: float, lift: float) -> list[dict]:
    rows = make_rows(UNIVERSE, seed=1)
    sim = SimulatedJudge({r["id"]: r["truth"] for r in rows}, base=base, lift=lift,
                         mode="better" if scenario == "better" else "paraphrase")
    table = []
    with FakeOpenAI(decide=sim.decide, write=sim.write) as fake, tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "cache.sqlite3")  # shared by the runs: a (prompt, item) is paid once
        for size in sizes:
            t0 = time.time()
            results = [one_run(fake, store, rows, size, seed) for seed in range(runs)]
            promoted = [r for r in results if r["promoted"]]
            row = {"scenario": scenario, "held_out": size, "runs": runs,
                   "promoted": len(promoted), "promoted_share": round(len(promoted) / runs, 4),
                   "promoted_truly_better": sum(r["truly_better"] for r in promoted),
                   "promoted_two_sided_95": sum(r["promoted_two_sided"] for r in results),
                   "chose_truly_better": sum(r["truly_better"] for r in results),
                   "median_gain_measured": statistics.median([r["gain"] for r in results if r["gain"] is not None] or [0]),
                   "median_calls": statistics.median(r["calls"] for r in results), "seconds": round(time.time() - t0, 1)}
            table.append(row)
            print(f"{scenario:<7} held-out {size:>4}: promoted {row['promoted']:>3}/{runs} ({row['promoted_share']:.1%}); "
                  f"chosen truly better {row['chose_truly_better']}/{runs}; median calls {row['median_calls']}; "
                  f"{row['seconds']} s", flush=True)
    return table


def real(n_labels: int, seed: int) -> dict:
    """The search and the gate with the embedded SmolLM2 as judge and reflection model, on HaluEval
    dialogue rows (their labels as the humans')."""
    from ml_backend.datasets import halueval_rows
    from ml_backend.judge.providers import LocalProvider
    from ml_backend.judge.templates import TASK_FIELD  # noqa: F401  (the template below names the fields)
    from ml_backend.settings import DEFAULT_LOCAL_MODEL

    df = halueval_rows("dialogue", n_labels, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        provider = LocalProvider(DEFAULT_LOCAL_MODEL, cache_dir=Path(tmp) / "cache")
        t0 = time.time()
        provider.load()
        load_s = time.time() - t0
        template = ("Knowledge: {context}\nDialogue: {input}\nResponse: {output}\n"
                    "Is the response supported by the knowledge? Pass or Fail.")
        spec = JudgeSpec(template=template, provider="local", model=DEFAULT_LOCAL_MODEL, rationale=False,
                         few_shot_k=0, questions=(QUESTION,))
        labels = {i: r.label for i, r in df.iterrows()}
        data = {i: {"input": r.input, "context": r.context, "output": r.output} for i, r in df.iterrows()}
        split = stratified_split(labels, holdout_share=0.5, seed=seed)
        train = [LabeledTask(t, data[t], labels[t]) for t in split.train]
        held = [LabeledTask(t, data[t], labels[t]) for t in split.held_out]
        budget = Budget(max_calls=None, max_cost=None, price=lambda i, o: 0.0)
        aligner = Aligner(spec, lambda s: Judge(s, provider, input_keys=("input", "context", "output")),
                          budget=budget, write=lambda m: provider.write(m, max_tokens=300),
                          cache=Store(Path(tmp) / "s.sqlite3"), labels=["Pass", "Fail"], concurrency=1)
        t1 = time.time()
        candidates = aligner.search(train, current=Candidate("current", "current", template), seed=seed, run_dir=None,
                                    max_search_calls=2 * len(train), minibatch=MINIBATCH)
        out: dict = {"status": None, "message": None}
        held_out_gate(aligner, candidates, held, out, 0.0, lambda _: None)
        return {"model": DEFAULT_LOCAL_MODEL, "labels": n_labels, "n_train": len(train), "n_held_out": len(held),
                "status": out["status"], "message": out["message"], "load_seconds": round(load_s, 1),
                "seconds": round(time.time() - t1, 1), "calls": budget.calls, "rejected": len(aligner.rejected),
                "rejected_reasons": sorted(set(aligner.rejected))[:5],
                "candidates": [{"name": c.name, "kind": c.kind, "train": c.train, "held_out": c.held_out,
                                "gain": c.gain} for c in candidates]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="simulated runs per scenario and size")
    ap.add_argument("--sizes", default="100,200,400", help="held-out labels per run (the training part is as large)")
    ap.add_argument("--scenarios", default="null,better")
    ap.add_argument("--base", type=float, default=0.80, help="the current judge's accuracy")
    ap.add_argument("--lift", type=float, default=0.05, help="how much better the truly better judge is")
    ap.add_argument("--real", type=int, default=0, help="also run SmolLM2 on this many HaluEval labels (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "align.json"))
    ap.add_argument("--merge", nargs="*", default=[], help="JSON files of earlier runs whose rows join this table")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict = {"runs": args.runs, "base": args.base, "lift": args.lift, "search_passes": SEARCH_PASSES,
                    "rows": []}
    for scenario in [s for s in args.scenarios.split(",") if s]:
        result["rows"] += simulate(scenario, sizes, args.runs, base=args.base, lift=args.lift)
    for other in args.merge:
        result["rows"] += json.loads(Path(other).read_text())["rows"]
    if args.real:
        result["real"] = real(args.real, seed=0)
        r = result["real"]
        print(f"SmolLM2 on {r['labels']} HaluEval labels: {r['status']} ({r['message']}); {r['calls']} calls, "
              f"{r['seconds']} s (+{r['load_seconds']} s loading); {r['rejected']} reflection replies rejected")
    print(f"\n{'scenario':<8} {'held out':>8} {'promoted':>10} {'share':>7} {'truly better among promoted':>28} "
          f"{'two-sided 95% gate':>19}")
    for row in result["rows"]:
        print(f"{row['scenario']:<8} {row['held_out']:>8} {row['promoted']:>6}/{row['runs']:<3} "
              f"{row['promoted_share']:>7.1%} {row['promoted_truly_better']:>28} "
              f"{row['promoted_two_sided_95'] / row['runs']:>19.1%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
