"""The labeling campaign through a real Label Studio: the judge pre-labels every task, simulated annotators
review in rounds of 50 what each strategy picks, their annotations reach the backend as Label Studio's
webhooks, the backend retrains its evaluator after every round (TRAIN_EVERY=50) and the queue uses the
evaluator it promoted. At each budget: judge errors found per 100 reviews, the final label set's accuracy,
and whether the report's estimate (its 95% CI) holds the truth.

Where `bench_campaign.py` drives the queue code directly on 2,000 rows with an evaluator trained out of
fold once, this run goes through every real part a team would use: Label Studio 1.23 (its API, its
webhooks), the backend over HTTP (POST /jobs/label, GET /review, GET /report), the judge over the
chat-completions protocol (a deterministic local server playing a judge of known accuracy; its
confidence is only partly informative, as in `bench_campaign.py`), and the product's own training on
the webhooks (the evaluator trains on every judge label at JUDGE_WEIGHT and on the human labels, as served).

Strategies: "random" (GET /review with audit_share=1: every review a random audit; no training),
"queue" (GET /review with the default 10% audits; the evaluator retrained between rounds). "judge only"
is the label set before any review. Prints a table and writes JSON (default bench_results/campaign_ls.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_rows  # noqa: E402
from ml_backend.labelstudio import LabelStudioAPI  # noqa: E402
from ml_backend.labelstudio.local import LocalLabelStudio, find_ls_venv  # noqa: E402
from scripts.bench_campaign import simulate_judge  # noqa: E402
from tests.conftest import CONFIGS, judge_settings, serve_backend  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402

PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()


class SimulatedJudge:
    """Answers a chat-completions request with the simulated judge's label and confidence for the task
    the prompt is about (found by its input and output text)."""

    def __init__(self, rows: list[dict], labels: list[str], confidence: list[float]) -> None:
        self.rows, self.labels, self.confidence = rows, labels, confidence
        self.misses = 0
        self._found: dict[str, int | None] = {}

    def row_of(self, body: dict) -> int | None:
        """The task's row, looked up once per prompt (decide and p_answer ask about the same request)."""
        text = body["messages"][-1]["content"]
        if text not in self._found:
            self._found[text] = next((i for i, r in enumerate(self.rows)
                                      if r["output"] in text and r["input"][:200] in text), None)
            self.misses += self._found[text] is None
        return self._found[text]

    def decide(self, body: dict, options: list[str]) -> str | None:
        i = self.row_of(body)
        return None if i is None else self.labels[i]

    def p_answer(self, body: dict) -> float:
        i = self.row_of(body)
        return 0.5 if i is None else self.confidence[i]


def wait(what: str, ready, timeout: float, every: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = ready()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def campaign(strategy: str, ls: LocalLabelStudio, fake: FakeOpenAI, rows: list[dict], truth: list[str],
             judge: list[str], args, work: Path) -> list[dict]:
    """One strategy's campaign in its own project and backend; a row per budget."""
    env = {"TRAIN_EVERY": str(args.round) if strategy == "queue" else "0", "TRAIN_EPOCHS": str(args.train_epochs),
           "TRAIN_MAX_LENGTH": str(args.train_max_length),
           "TRAIN_SOUP": "1", "TRAIN_DEBOUNCE": "3", "FEW_SHOT_K": "0", "JUDGE_TIMEOUT": "30"}
    settings = judge_settings(work / strategy, fake, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token, **env)
    api = LabelStudioAPI(ls.url, ls.token)
    out = []
    with serve_backend(settings) as srv, httpx.Client(base_url=srv.url, timeout=600) as http:
        project = api.create_project(f"campaign {strategy} seed {args.seed}", PASS_FAIL)
        ids = api.import_tasks(project, [{"data": r} for r in rows])
        row_of = {int(t): i for i, t in enumerate(ids)}
        api.connect_backend(project, srv.url)
        job = http.post("/jobs/label", json={"project": project, "concurrency": 8}).json()["id"]
        done = wait("the labeling job", lambda: (j := http.get(f"/jobs/{job}").json())["status"] in ("finished", "failed") and j,
                    timeout=1800)
        assert done["status"] == "finished", done
        said = {int(p.task): p.result[0]["value"]["choices"][0] for p in api.predictions(project)}
        assert all(said[t] == judge[row_of[t]] for t in said) and len(said) == len(rows), "the judge's labels were not written"
        reviewed: list[int] = []
        trainings = 0
        for r in range(args.budget // args.round):
            t0 = time.time()
            q = http.get(f"/review/{project}", params={"n": args.round, "seed": args.seed * 1000 + r,
                                                      "audit_share": 1.0 if strategy == "random" else args.audit_share}).json()
            queue = q["queue"]
            why = [item["why"] for item in queue]
            for item in queue:  # the annotators: each answers from the known label
                api.client.annotations.create(id=item["task"], result=[{
                    "from_name": "verdict", "to_name": "output", "type": "choices",
                    "value": {"choices": [truth[row_of[item["task"]]]]}}])
                reviewed.append(item["task"])
            train = None
            if strategy == "queue" and len(reviewed) < args.budget:  # the webhooks start one training per round; the next round waits for it
                trainings += 1
                jobs = wait("training", lambda: (js := http.get("/jobs", params={"project": str(project), "kind": "train"}).json()["jobs"])
                            and len(js) >= trainings and all(j["status"] in ("finished", "failed") for j in js)
                            and not srv.backend.trainer.busy(str(project)) and js, timeout=3600, every=2)
                last = jobs[0]
                train = {"status": last["status"], "promoted": (last.get("result") or {}).get("promoted"),
                         "accuracy": (last.get("result") or {}).get("accuracy"),
                         "version": (last.get("result") or {}).get("version")}
            rep = http.get(f"/report/{project}", params={"format": "json"}).json()["label_set"]
            budget = len(reviewed)
            found = sum(judge[row_of[t]] != truth[row_of[t]] for t in reviewed)
            done_set = set(reviewed)
            final = sum(1 if t in done_set else said[t] == truth[row_of[t]] for t in row_of) / len(rows)
            ci = rep.get("ci")
            out.append({"strategy": strategy, "budget": budget, "errors_found": found,
                        "errors_per_100": round(100 * found / budget, 1), "final_accuracy": round(final, 4),
                        "estimate": rep.get("accuracy"), "ci": ci, "covered": bool(ci and ci[0] <= final <= ci[1]),
                        "evaluator_in_queue": sum("evaluator" in w for w in why), "training": train,
                        "round_seconds": round(time.time() - t0, 1)})
            print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="qa", choices=("qa", "dialogue", "summarization"))
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--round", type=int, default=50)
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--judge-accuracy", type=float, default=0.85)
    ap.add_argument("--audit-share", type=float, default=0.1)
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--train-max-length", type=int, default=256, help="the evaluator's tokens per pair (the product's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default="random,queue")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "campaign_ls.json"))
    args = ap.parse_args(argv)
    df = halueval_rows(args.dataset, args.tasks, seed=11)
    rows = [{"input": str(r.input), "context": str(r.context), "output": str(r.output)} for r in df.itertuples()]
    truth = list(df.label)
    judge, conf = simulate_judge(truth, args.judge_accuracy, random.Random(1000 + args.seed))
    judge_only = sum(j == t for j, t in zip(judge, truth)) / len(truth)
    sim = SimulatedJudge(rows, judge, conf)
    table = []
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(decide=sim.decide) as fake:
        fake.p_answer = sim.p_answer
        ls = LocalLabelStudio(data_dir=Path(tmp) / "ls", venv=find_ls_venv(ROOT)).start()
        try:
            for strategy in args.strategies.split(","):
                table += campaign(strategy, ls, fake, rows, truth, judge, args, Path(tmp))
        except BaseException:
            print((Path(tmp) / "ls" / "label_studio.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            ls.stop()
    assert sim.misses == 0, f"{sim.misses} judge requests named no known task"
    print(f"\n{args.dataset}, {len(rows)} tasks, judge accuracy {judge_only:.3f} (judge only), seed {args.seed}")
    print(f"{'strategy':<10}{'budget':>7}{'errors/100':>12}{'final acc':>11}{'estimate':>10}{'95% CI':>16}"
          f"{'covered':>9}{'picks the evaluator led':>25}{'training after':>16}")
    for r in table:
        ci = f"{r['ci'][0]:.3f}-{r['ci'][1]:.3f}" if r["ci"] else "-"
        led = "-" if r["strategy"] == "random" else str(r["evaluator_in_queue"])
        trained = "-" if r["training"] is None else ("promoted" if r["training"]["promoted"] else "kept")
        print(f"{r['strategy']:<10}{r['budget']:>7}{r['errors_per_100']:>12.1f}{r['final_accuracy']:>11.4f}"
              f"{(r['estimate'] or 0):>10.3f}{ci:>16}{str(r['covered']):>9}{led:>25}{trained:>16}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "cpus": os.cpu_count(), "judge_only": judge_only, "llm_calls": len(fake.requests),
              "seconds": round(time.time() - t_start), "rows": table}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}; {len(fake.requests)} chat-completions requests")
    return result


if __name__ == "__main__":
    main()
