"""Learning curve: held-out accuracy and training time at each label count, on several labeled datasets
the project was not tuned on, for what LabelJudge trains beside what a user would do instead, in one run:

- ``labeljudge``: the product path, `run_training` over the labels as Label Studio records (split, fit,
  held-out measurement and calibration, one more epoch over every label, ONNX export, runtime choice,
  registry), scored as served;
- ``plain``: a plain fine-tune of the same packaged MiniLM (the 30-line script: every row, 4 epochs,
  AdamW 5e-5, batch 16, at most 128 tokens, no validation);
- ``embed+lr``: frozen MiniLM mean-pooled embeddings + logistic regression;
- ``tfidf+lr``: TF-IDF (1-2 grams) + logistic regression.

Each dataset has a fixed test set (``--test`` rows, never trained on); training rows are the first N of
a disjoint pool. ``--draws 1,2,3`` repeats it on other samples of the dataset (draw 1 is the README
table's). Accuracy comes with a 95% bootstrap CI over the test rows, and the evaluator's difference to
the plain script with a paired one (same test rows). Prints a table, writes JSON
and a plot (one learning curve per dataset).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_rows  # noqa: E402
from ml_backend.evaluator.data import InputSpec  # noqa: E402
from ml_backend.evaluator.loading import load_evaluator  # noqa: E402
from ml_backend.evaluator.pipeline import run_training  # noqa: E402
from ml_backend.evaluator.registry import Registry  # noqa: E402
from ml_backend.evaluator.train import TrainConfig, base_model_path  # noqa: E402
from ml_backend.quality.metrics import bootstrap_ci  # noqa: E402

CONTROL = {"name": "label", "kind": "single", "options": ["Pass", "Fail"], "ordinal": False}


def dataset(name: str, n_pool: int, n_test: int, draw: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training pool, test rows) of a HaluEval task, disjoint, each balanced Pass/Fail; ``draw`` seeds
    which items (draw 1 is the README table's)."""
    df = halueval_rows(name, n_pool + n_test, seed=draw)
    return df.iloc[n_test:].reset_index(drop=True), df.iloc[:n_test].reset_index(drop=True)


def as_records(rows: pd.DataFrame) -> list[dict]:
    """Labels as Label Studio records: one human annotation per task."""
    return [{"id": i + 1, "data": {"input": r.input, "context": r.context, "output": r.output},
             "annotations": [{"id": i + 1, "answers": {"label": r.label}, "ground_truth": False}],
             "predictions": []} for i, r in enumerate(rows.itertuples())]


def texts(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    spec = InputSpec()
    pairs = [spec.pair({"input": r.input, "context": r.context, "output": r.output}) for r in rows.itertuples()]
    return [a for a, _ in pairs], [b for _, b in pairs]


def labeljudge(train: pd.DataFrame, test: pd.DataFrame, max_length: int, epochs: int) -> tuple[np.ndarray, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp), "1")
        t0 = time.perf_counter()
        result = run_training(as_records(train), CONTROL, registry, spec=InputSpec(judge_weight=0.0),
                              cfg=TrainConfig(max_length=max_length, epochs=epochs))
        seconds = time.perf_counter() - t0
        model = load_evaluator(registry.path(result.version))
        p = model.score([{"input": r.input, "context": r.context, "output": r.output} for r in test.itertuples()])
        fit_seconds = json.loads((registry.path(result.version) / "metrics.json").read_text())["seconds"]
    return (np.asarray(p) >= 0.5), {"seconds": seconds, "fit_seconds": fit_seconds, "runtime": result.runtime,
                                     "n_served_train": result.n_served_train, "holdout_accuracy": result.accuracy}


def plain_finetune(train: pd.DataFrame, test: pd.DataFrame, max_length: int, epochs: int) -> tuple[np.ndarray, dict]:
    """What a user writes instead: every row, fixed epochs, no validation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    t0 = time.perf_counter()
    path = base_model_path(TrainConfig())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    a, b = texts(train)
    y = torch.tensor((train.label == "Pass").astype(int).to_numpy())
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            enc = tok([a[j] for j in idx], [b[j] for j in idx], truncation=True, max_length=max_length,
                      padding=True, return_tensors="pt")
            loss = model(**enc, labels=y[idx]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    seconds = time.perf_counter() - t0
    model.eval()
    ta, tb = texts(test)
    with torch.inference_mode():
        preds = [model(**enc).logits.argmax(-1).numpy() == 1 for enc in encoded(tok, ta, tb, max_length)]
    return np.concatenate(preds), {"seconds": seconds}


def encoded(tok, a: list[str], b: list[str], max_length: int, size: int = 64):
    """Tokenized text pairs in batches of ``size``, each padded to its longest row."""
    for i in range(0, len(a), size):
        yield tok(a[i:i + size], b[i:i + size], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")


def embed_lr(train: pd.DataFrame, test: pd.DataFrame, max_length: int, cache: dict) -> tuple[np.ndarray, dict]:
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    if "model" not in cache:
        path = base_model_path(TrainConfig())
        cache["tok"], cache["model"] = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    tok, model = cache["tok"], cache["model"]

    def embed(rows: pd.DataFrame) -> np.ndarray:
        a, b = texts(rows)
        out = []
        with torch.inference_mode():
            for enc in encoded(tok, a, b, max_length):
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((h * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(out)

    clf = LogisticRegression(max_iter=2000).fit(embed(train), train.label == "Pass")
    seconds = time.perf_counter() - t0
    return clf.predict(embed(test)), {"seconds": seconds}


def tfidf_lr(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    a, b = texts(train)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = vec.fit_transform([f"{p} [SEP] {q}" for p, q in zip(a, b)])
    clf = LogisticRegression(max_iter=2000).fit(x, train.label == "Pass")
    seconds = time.perf_counter() - t0
    ta, tb = texts(test)
    return clf.predict(vec.transform([f"{p} [SEP] {q}" for p, q in zip(ta, tb)])), {"seconds": seconds}


def point(pred: np.ndarray, test: pd.DataFrame, info: dict) -> dict:
    correct = (np.asarray(pred, dtype=bool) == (test.label == "Pass").to_numpy()).astype(float)
    lo, hi = bootstrap_ci(correct)
    return {"accuracy": float(correct.mean()), "ci_low": lo, "ci_high": hi, **info}


def paired_diff(a: np.ndarray, b: np.ndarray, test: pd.DataFrame, n_boot: int = 2000) -> list[float]:
    """Accuracy of predictions ``a`` minus ``b`` on the same test rows, with a paired 95% bootstrap CI."""
    truth = (test.label == "Pass").to_numpy()
    d = (np.asarray(a, dtype=bool) == truth).astype(float) - (np.asarray(b, dtype=bool) == truth).astype(float)
    rng = np.random.default_rng(0)
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)]
    return [float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def over_draws(results: list[dict]) -> list[dict]:
    """One row per (dataset, labels, method): the mean accuracy over data draws, the band their min-max
    (one draw: its own CI)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["n"], r["method"]), []).append(r)
    out = []
    for (name, n, method), rows in groups.items():
        if len(rows) == 1:
            out.append(rows[0])
            continue
        acc = [r["accuracy"] for r in rows]
        out.append({"dataset": name, "n": n, "method": method, "accuracy": float(np.mean(acc)),
                    "ci_low": min(acc), "ci_high": max(acc)})
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = over_draws(results)
    names = list(dict.fromkeys(r["dataset"] for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in results if r["dataset"] == name]
        for method, style in (("labeljudge", "o-"), ("plain", "s--"), ("embed+lr", "^:"), ("tfidf+lr", "v:")):
            pts = [r for r in rows if r["method"] == method]
            n = [r["n"] for r in pts]
            acc = [r["accuracy"] for r in pts]
            ax.plot(n, acc, style, label=method)
            lo = [r["ci_low"] if r["ci_low"] is not None else r["accuracy"] for r in pts]
            hi = [r["ci_high"] if r["ci_high"] is not None else r["accuracy"] for r in pts]
            ax.fill_between(n, lo, hi, alpha=0.12)
        ax.set_xscale("log")
        ax.set_title(f"HaluEval {name}")
        ax.set_xlabel("labels")
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="qa,dialogue,summarization")
    parser.add_argument("--sizes", default="50,100,200,400,1000,2000")
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--draws", default="1", help="data draws (seeds of which items train and test), e.g. 1,2,3")
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "learning_curve.json"))
    args = parser.parse_args()
    import torch

    sizes = [int(s) for s in args.sizes.split(",")]
    results, cache = [], {}
    header = (f"{'dataset':<14}{'draw':>5}{'labels':>7}  {'method':<11}{'accuracy':>9}{'95% CI':>15}{'fit s':>8}{'vs plain':>9}"
              f"{'total s':>9}")
    print(f"torch threads {torch.get_num_threads()}; test rows {args.test}; max_length {args.max_length}; "
          f"epochs {args.epochs}\n{header}")
    for name, draw in [(name, int(d)) for name in args.datasets.split(",") for d in args.draws.split(",")]:
        pool, test = dataset(name, max(sizes), args.test, draw)
        for n in sizes:
            train = pool.iloc[:n]
            runs = {"labeljudge": labeljudge(train, test, args.max_length, args.epochs),
                    "plain": plain_finetune(train, test, args.max_length, args.epochs),
                    "embed+lr": embed_lr(train, test, args.max_length, cache),
                    "tfidf+lr": tfidf_lr(train, test)}
            plain_s = runs["plain"][1]["seconds"]
            vs_plain = paired_diff(runs["labeljudge"][0], runs["plain"][0], test)
            for method, (pred, info) in runs.items():
                r = {"dataset": name, "draw": draw, "n": n, "method": method, **point(pred, test, info)}
                if method == "labeljudge":
                    r["vs_plain"] = vs_plain  # [difference, paired 95% CI low, high]
                # the product's fit (split model + refit) against the script's; export and registry apart
                r["time_vs_plain"] = r.get("fit_seconds", r["seconds"]) / plain_s
                results.append(r)
                ci = f"{r['ci_low']:.3f}-{r['ci_high']:.3f}"
                print(f"{name:<14}{draw:>5}{n:>7}  {method:<11}{r['accuracy']:>9.3f}{ci:>15}{r.get('fit_seconds', r['seconds']):>8.1f}"
                      f"{r['time_vs_plain']:>8.2f}x{r['seconds']:>9.1f}", flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
            plot(results, out.with_suffix(".png"))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    gaps = [(r["dataset"], r["draw"], r["n"], *r["vs_plain"]) for r in results if r["method"] == "labeljudge"]
    worst = min(gaps, key=lambda g: g[3])
    behind = [g for g in gaps if g[5] < 0]  # the paired CI lies below zero: behind beyond noise
    print(f"labeljudge - plain accuracy: worst {worst[3]:+.3f} ({worst[0]}, draw {worst[1]}, {worst[2]} labels); "
          f"mean {np.mean([g[3] for g in gaps]):+.3f}; behind beyond the paired CI at {len(behind)} of {len(gaps)} "
          f"points{': ' + ', '.join(f'{g[0]} draw {g[1]} at {g[2]}' for g in behind) if behind else ''}")


if __name__ == "__main__":
    main()
