"""The accuracy report: every model version that predicted in a project, against human ground truth.

Input is plain data (tasks with their annotations' and predictions' answers per control); the caller
(`reporting.py`) fetches it from Label Studio. The reference for a task is its ground-truth
annotations when the project marks any, else all its human annotations (majority; ties -> latest).
"""
from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from typing import Any, Sequence

from .metrics import agreement, label_metrics, paired_difference

TOO_SMALL = ("The sample is too small to tell {a} and {b} apart: the 95% interval of the accuracy "
             "difference ({lo:+.3f} to {hi:+.3f}) includes 0 on {n} shared tasks. Label more tasks.")


def norm(value: Any) -> str | None:
    """One comparable string per answer: a checklist compares as the set of its labels."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return "|".join(sorted(map(str, value)))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def reference_labels(tasks: Sequence[dict], control: str, *, per_task: bool = False) -> tuple[dict[int, str], str]:
    """The human reference label of each task (majority vote, latest wins ties). For the report, once
    a project marks ground truth only those annotations count; ``per_task`` (training) takes a task's
    ground truth where it has some and its other annotations elsewhere, so no human label is dropped."""
    any_gt = any(a.get("ground_truth") for t in tasks for a in t["annotations"])
    ref: dict[int, str] = {}
    for t in tasks:
        if per_task:
            anns = [a for a in t["annotations"] if a.get("ground_truth")] or list(t["annotations"])
        else:
            anns = [a for a in t["annotations"] if (a.get("ground_truth") or not any_gt)]
        votes = [v for a in sorted(anns, key=lambda a: a["id"]) if (v := norm(a["answers"].get(control))) is not None]
        if votes:
            counts = Counter(votes)
            top = max(counts.values())
            ref[t["id"]] = [v for v in reversed(votes) if counts[v] == top][0]
    kind = "ground truth annotations where marked, else all human annotations" if per_task and any_gt else \
        "ground truth annotations" if any_gt else "all human annotations"
    return ref, kind


def build_report(tasks: Sequence[dict], controls: Sequence[dict], *, ledger: dict | None = None,
                 task_url: str | None = None, project: Any = None, n_boot: int = 1000) -> dict:
    t0 = time.time()
    ledger = ledger or {}
    primary = controls[0]
    ref, ref_kind = reference_labels(tasks, primary["name"])
    labels = list(primary.get("options") or [])
    ordinal = bool(primary.get("ordinal"))

    by_version: dict[str, dict[int, dict]] = defaultdict(dict)
    for t in tasks:
        for p in t["predictions"]:  # the latest prediction of a version wins
            by_version[p["model_version"]][t["id"]] = p

    versions = []
    ids = sorted(ref)
    for version, preds in by_version.items():
        y_pred = [norm(preds[i]["answers"].get(primary["name"])) if i in preds else None for i in ids]
        scores = [preds[i].get("score") if i in preds else None for i in ids]
        if not any(p is not None for p in y_pred):
            continue
        m = label_metrics([ref[i] for i in ids], y_pred, scores, labels=labels, ordinal=ordinal, n_boot=n_boot)
        m["model_version"] = version
        m["predicted_tasks"] = len(preds)
        m.update({k: ledger.get(version, {}).get(k, 0) for k in ("tokens_in", "tokens_out", "cost", "calls")})
        m["controls"] = _other_controls(tasks, controls[1:], preds, n_boot)
        versions.append(m)
    versions.sort(key=lambda m: (m["accuracy"] is not None, m["accuracy"] or 0, m["coverage"]), reverse=True)

    report = {
        "project": project, "primary_control": primary["name"], "labels": labels, "reference": ref_kind,
        "n_tasks": len(tasks), "n_reference": len(ref), "versions": versions,
        "comparison": _compare(versions, by_version, ref, primary["name"]),
        "annotators": [], "inter_annotator": [], "disagreements": [],
    }
    if versions:
        best = versions[0]["model_version"]
        report["annotators"] = _annotators_vs(tasks, by_version[best], primary["name"], labels, ordinal)
        report["disagreements"] = _disagreements(by_version[best], ref, primary["name"], best, task_url)
    report["inter_annotator"] = _inter_annotator(tasks, primary["name"], labels, ordinal)
    report["seconds"] = round(time.time() - t0, 3)
    return report


def _other_controls(tasks, controls, preds, n_boot) -> dict:
    out = {}
    for c in controls:
        ref, _ = reference_labels(tasks, c["name"])
        ids = sorted(i for i in ref if i in preds)
        if not ids:
            continue
        y_pred = [norm(preds[i]["answers"].get(c["name"])) for i in ids]
        m = label_metrics([ref[i] for i in ids], y_pred, None, labels=list(c.get("options") or []),
                          ordinal=bool(c.get("ordinal")), n_boot=n_boot)
        out[c["name"]] = {k: m[k] for k in ("n", "accuracy", "macro_f1", "kappa", "ci_low", "ci_high", "coverage")}
    return out


def _compare(versions, by_version, ref, control) -> dict | None:
    if len(versions) < 2:
        return None
    a, b = versions[0]["model_version"], versions[1]["model_version"]
    shared = [i for i in ref if i in by_version[a] and i in by_version[b]]
    ca = [float(norm(by_version[a][i]["answers"].get(control)) == ref[i]) for i in shared]
    cb = [float(norm(by_version[b][i]["answers"].get(control)) == ref[i]) for i in shared]
    diff = paired_difference(ca, cb)
    diff.update(best=a, runner_up=b)
    if diff["diff"] is None:
        diff["message"] = f"{a} and {b} share fewer than 2 reference tasks: nothing to compare yet."
    elif diff["distinguishable"]:
        diff["message"] = (f"{a} is better than {b} by {diff['diff']:+.3f} accuracy "
                           f"(95% interval {diff['ci_low']:+.3f} to {diff['ci_high']:+.3f}, n={diff['n']}).")
    else:
        diff["message"] = TOO_SMALL.format(a=a, b=b, lo=diff["ci_low"], hi=diff["ci_high"], n=diff["n"])
    return diff


def _annotators_vs(tasks, preds, control, labels, ordinal) -> list[dict]:
    pairs: dict[Any, tuple[list, list]] = defaultdict(lambda: ([], []))
    for t in tasks:
        p = preds.get(t["id"])
        if p is None or norm(p["answers"].get(control)) is None:
            continue
        for a in t["annotations"]:
            v = norm(a["answers"].get(control))
            if v is not None:
                pairs[a["annotator"]][0].append(v)
                pairs[a["annotator"]][1].append(norm(p["answers"][control]))
    return [{"annotator": who, **agreement(h, j, labels=labels, ordinal=ordinal)} for who, (h, j) in pairs.items()]


def _inter_annotator(tasks, control, labels, ordinal) -> list[dict]:
    pairs: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
    for t in tasks:
        latest = {}
        for a in sorted(t["annotations"], key=lambda a: a["id"]):
            v = norm(a["answers"].get(control))
            if v is not None:
                latest[a["annotator"]] = v
        for x, y in itertools.combinations(sorted(latest, key=str), 2):
            pairs[(x, y)][0].append(latest[x])
            pairs[(x, y)][1].append(latest[y])
    return [{"a": x, "b": y, **agreement(u, v, labels=labels, ordinal=ordinal)} for (x, y), (u, v) in pairs.items()]


def _disagreements(preds, ref, control, version, task_url, top: int = 20) -> list[dict]:
    rows = []
    for i, p in preds.items():
        got = norm(p["answers"].get(control))
        if i in ref and got is not None and got != ref[i]:
            rows.append({"task": i, "reference": ref[i], "predicted": got, "score": p.get("score"),
                         "model_version": version, "url": task_url.format(id=i) if task_url else None})
    rows.sort(key=lambda r: -(r["score"] or 0))
    return rows[:top]
