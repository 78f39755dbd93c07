"""The report as one self-contained HTML page with matplotlib plots (PNG, inlined as data URIs)."""
from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def accuracy_plot(versions: list[dict]) -> str | None:
    rows = [v for v in versions if v["accuracy"] is not None][:12]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    y = np.arange(len(rows))[::-1]
    acc = [v["accuracy"] for v in rows]
    lo = [v["accuracy"] - (v["ci_low"] if v["ci_low"] is not None else v["accuracy"]) for v in rows]
    hi = [(v["ci_high"] if v["ci_high"] is not None else v["accuracy"]) - v["accuracy"] for v in rows]
    ax.barh(y, acc, xerr=[lo, hi], color="#4C72B0", capsize=4)
    ax.set_yticks(y, [v["model_version"] for v in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy vs reference (95% bootstrap CI)")
    return _png(fig)


def confusion_plot(version: dict) -> str | None:
    cm = np.array(version.get("confusion") or [])
    if cm.size == 0:
        return None
    labels = version["labels"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(labels), 1 + 0.6 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("judge")
    ax.set_ylabel("reference")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(version["model_version"])
    return _png(fig)


def reliability_plot(versions: list[dict]) -> str | None:
    rows = [v for v in versions if v.get("reliability")][:5]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for v in rows:
        pts = v["reliability"]
        ax.plot([p["confidence"] for p in pts], [p["accuracy"] for p in pts], "o-",
                label=f"{v['model_version']} (ECE {v['ece']:.3f})")
    ax.set_xlabel("score (judge's probability)")
    ax.set_ylabel("fraction correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return _png(fig)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v, digits) for v in x) + "]"
    return html.escape(str(x))


def _task_link(row: dict) -> str:
    if not row.get("url"):
        return str(row["task"])
    return f'<a href="{html.escape(row["url"], quote=True)}">{row["task"]}</a>'


def render_html(report: dict, *, title: str = "LabelJudge report") -> str:
    versions = report["versions"]
    plots = [accuracy_plot(versions), confusion_plot(versions[0]) if versions else None, reliability_plot(versions)]
    rows = "".join(
        f"<tr><td>{_fmt(v['model_version'])}</td><td>{v['n']}</td><td>{_fmt(v['accuracy'])}</td>"
        f"<td>{_fmt(v['ci_low'])} – {_fmt(v['ci_high'])}</td><td>{_fmt(v['macro_f1'])}</td>"
        f"<td>{_fmt(v['kappa'])}</td><td>{_fmt(v['coverage'])}</td><td>{_fmt(v['ece'])}</td>"
        f"<td>{v.get('tokens_in', 0)}/{v.get('tokens_out', 0)}</td><td>{_fmt(float(v.get('cost') or 0), 4)}</td></tr>"
        for v in versions)
    per_label = ""
    if versions:
        per_label = "".join(f"<tr><td>{_fmt(lab)}</td><td>{_fmt(m['precision'])}</td><td>{_fmt(m['recall'])}</td>"
                            f"<td>{_fmt(m['f1'])}</td><td>{m['support']}</td></tr>"
                            for lab, m in versions[0]["per_label"].items())
    ann = "".join(f"<tr><td>{_fmt(a['annotator'])}</td><td>{a['n']}</td><td>{_fmt(a['agreement'])}</td>"
                  f"<td>{_fmt(a['kappa'])}</td></tr>" for a in report["annotators"])
    iaa = "".join(f"<tr><td>{_fmt(a['a'])} / {_fmt(a['b'])}</td><td>{a['n']}</td><td>{_fmt(a['agreement'])}</td>"
                  f"<td>{_fmt(a['kappa'])}</td></tr>" for a in report["inter_annotator"])
    iaa = (f"<table id='inter-annotator'><tr><th>pair</th><th>n</th><th>agreement</th><th>kappa</th></tr>{iaa}</table>"
           if iaa else "<p id='inter-annotator'>No task has labels from two annotators yet, so agreement between "
                       "annotators cannot be measured: set the project's overlap (Settings, Quality) above 1.</p>")
    dis = "".join(
        f"<tr><td>{_task_link(d)}</td>"
        f"<td>{_fmt(d['reference'])}</td><td>{_fmt(d['predicted'])}</td><td>{_fmt(d['score'])}</td></tr>"
        for d in report["disagreements"])
    pairwise = _pairwise_html(report.get("pairwise"))
    label_set = _label_set_html(report.get("label_set"))
    imgs = "".join(f'<img class="plot" src="{p}" alt="plot">' for p in plots if p)
    next_step = html.escape(next_steps(report))
    if report.get("comparison"):
        cmp_msg = html.escape(report["comparison"]["message"])
    elif versions:
        cmp_msg = "Only one version has predicted on reference tasks so far: change the prompt or model to compare."
    else:
        cmp_msg = next_step
    empty = "" if versions else f"<p class='warn' id='next'>{next_step}</p>"
    training = _labeling_html(report.get("labeling_jobs") or []) + _training_html(report.get("training") or []) \
        + _evaluators_html(report.get("evaluators")) + _alignment_html(report.get("alignment") or [])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.plot{{max-width:48%;margin:0.5em;border:1px solid #eee;vertical-align:top}}.warn{{color:#a33}}.note{{background:#f6f6f6;padding:0.6em}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Project {_fmt(report.get('project'))}: {report['n_tasks']} tasks, {report['n_reference']} with a human reference
({html.escape(report['reference'])}); control <b>{html.escape(report['primary_control'])}</b>.</p>{empty}
<p class="note" id="comparison">{cmp_msg}</p>
<h2>Versions (best first)</h2><table id="versions"><tr><th>model version</th><th>n</th><th>accuracy</th><th>95% CI</th>
<th>macro-F1</th><th>kappa</th><th>coverage</th><th>ECE</th><th>tokens in/out</th><th>cost $</th></tr>{rows}</table>
<div>{imgs}</div>
<h2>Per label (best version)</h2><table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_label}</table>
<h2>Annotators vs the judge (best version)</h2><table><tr><th>annotator</th><th>n</th><th>agreement</th><th>kappa</th></tr>{ann}</table>
<h2>Between annotators (overlapping tasks)</h2>{iaa}
<h2>Most confident disagreements (worth a second look)</h2><table id="disagreements"><tr><th>task</th><th>reference</th><th>judge</th><th>score</th></tr>{dis}</table>
{label_set}{pairwise}{training}<p>Built in {report['seconds']} s.</p></body></html>"""


def next_steps(report: dict) -> str:
    """What to do next when the report has nothing to compare yet (one message, HTML and CLI alike)."""
    project = report.get("project")
    if report.get("n_tasks", 0) == 0:
        return f"Project {project} has no tasks yet: import some (labeljudge import data.csv --project {project})."
    if report.get("n_reference", 0) == 0:
        return (f"No task has a human label yet, so no version can be scored: open a few tasks in Label Studio and "
                f"submit (or correct) their labels; pre-label first with labeljudge label --project {project} --sample 20.")
    return (f"{report['n_reference']} tasks have a human label but none has a judge prediction yet: run "
            f"labeljudge label --project {project} (or Retrieve predictions in Label Studio), then reload.")


def _label_set_html(est: dict | None) -> str:
    """How accurate the project's labels are now: per source from random audits, and overall."""
    if not est or not est.get("sources"):
        return ""
    rows = ""
    for src in est["sources"]:
        ci = f"{_fmt(src['ci'][0])} – {_fmt(src['ci'][1])}" if src.get("ci") else "–"
        errs = f"{_fmt(src['errors_expected'], 1)} ({_fmt(src['errors_ci'][0], 1)} – {_fmt(src['errors_ci'][1], 1)})" \
            if src.get("errors_ci") else "–"
        basis = f"{src['n_audits']} random audits" if src["unbiased"] else (
            f"{src['n_audits']} reviews that were not random (biased: run labeljudge next for audits)"
            if src["n_audits"] else "no review yet: run labeljudge next")
        rows += (f"<tr><td>{_fmt(src['source'])}</td><td>{src['n_labels']}</td><td>{_fmt(src['accuracy'])}</td>"
                 f"<td>{ci}</td><td>{errs}</td><td>{_audits(src)}</td>"
                 f"<td style='text-align:left'>{basis}</td></tr>")
    overall = (f"<p>The label set as a whole ({est['n_human']} human labels counted correct): estimated accuracy "
               f"<b>{_fmt(est['accuracy'])}</b> (95% CI {_fmt(est['ci'][0])} – {_fmt(est['ci'][1])}).</p>"
               if est.get("accuracy") is not None else
               "<p>The label set's accuracy needs a review of every machine source first.</p>")
    policy = est.get("policy") or {}
    if policy.get("evaluator_overrides_at") is not None:
        overall += (f"<p id='relabel-policy'>Relabel policy on: where the promoted evaluator gives the other label at "
                    f"least {_fmt(policy['evaluator_overrides_at'])}, the final labels (export) take its label: "
                    f"{_fmt(policy.get('relabeled'))} tasks now (not counted above).</p>")
    elif policy:
        overall += ("<p id='relabel-policy'>Relabel policy off: the judge's labels stand where the evaluator "
                    "disagrees (extra_params <code>evaluator_overrides_at</code> turns it on).</p>")
    return ("<h2 id='label-set'>How accurate are the labels now</h2>" + overall +
            "<table id='label-set-sources'><tr><th>source</th><th>labels not reviewed</th><th>accuracy</th><th>95% CI</th>"
            "<th>errors expected</th><th>more audits for ±1 point</th><th>from</th></tr>" + rows + "</table>")


def _audits(src: dict) -> str:
    """More audits for +-1 point, or "all N" where that is every label left (it then gives the accuracy exactly)."""
    n = src.get("audits_for_one_point")
    return f"all {src['n_labels']} (exact)" if n is not None and n >= src["n_labels"] else _fmt(n)


def _labeling_html(jobs: list[dict]) -> str:
    """Labeling jobs with their progress: the background work Retrieve predictions handed over."""
    if not jobs:
        return ""
    rows = "".join(f"<tr><td>{j['job']}</td><td>{_fmt(j['status'])}</td><td>{_fmt(j['done'])} / {_fmt(j['total'])}</td>"
                   f"<td>{_fmt(j['failed'])}</td><td>{_fmt(j['cost'])}</td>"
                   f"<td style='text-align:left;min-width:16em'>{_job_why(j)}</td></tr>" for j in jobs)
    return ("<h2 id='labeling'>Labeling jobs</h2><table id='labeling-jobs'><tr><th>job</th><th>status</th>"
            f"<th>done / total</th><th>failed</th><th>cost $</th><th>why</th></tr>{rows}</table>")


def _job_why(job: dict) -> str:
    """Why a job is where it is: a failed job's error first (not why it was queued), a queued one's wait."""
    if job.get("status") == "failed" and job.get("error"):
        return f"failed: {_fmt(job['error'])}" + (f"<br><small>started for: {_fmt(job['reason'])}</small>" if job.get("reason") else "")
    parts = [_fmt(job.get("reason") or "-")]
    if job.get("waiting_for"):
        parts.append(f"<small>waiting for {_fmt(job['waiting_for'])}</small>")
    return "<br>".join(parts)


def _training_html(runs: list[dict]) -> str:
    """The evaluator's training runs: what each was trained on and whether it now serves, and why."""
    if not runs:
        return ("<h2 id='training'>Evaluator training</h2><p>No training run yet: it starts after TRAIN_EVERY new "
                "labels, or from Start Training in the project's Model settings.</p>")
    rows = "".join(
        f"<tr><td>{r['job']}</td><td>{_fmt(r['status'])}</td><td>{_fmt(r['version'])}</td>"
        f"<td>{_fmt(r['n_human_train'])}/{_fmt(r['n_judge_train'])}</td><td>{_fmt(r['n_test'])}</td>"
        f"<td>{_fmt(r.get('n_served_train'))}</td><td>{_fmt(r['accuracy'])}{_by_seed(r.get('soup'))}</td>"
        f"<td>{_fmt((r.get('cascade') or {}).get('band'))}</td><td>{_fmt(r['device'])}</td><td>{_fmt(r['seconds'])}</td>"
        f"<td>{'yes' if r['promoted'] else 'no' if r['promoted'] is not None else '-'}</td>"
        f"<td style='text-align:left;min-width:16em'>{_run_why(r)}{'; held out ' + _fmt(r['holdout']) if r.get('holdout') else ''}"
        f"{_tracked(r.get('tracking'))}</td><td>{_curve(r)}</td></tr>" for r in runs)
    return ("<h2 id='training'>Evaluator training</h2><table id='training-runs'><tr><th>job</th><th>status</th>"
            "<th>version</th><th>train human/judge</th><th>test</th><th>served model trained on</th>"
            "<th>held-out accuracy</th><th>cascade band</th><th>device</th><th>seconds</th><th>promoted</th>"
            f"<th>why</th><th>curve</th></tr>{rows}</table>")


def _run_why(run: dict) -> str:
    """A finished run's decision; a queued or running one's stage (epoch, validation loss, what it waits for)."""
    progress = run.get("progress")
    if not progress:
        return _fmt(run.get("decision"))
    parts = [f"{_fmt(run['status'])}" + (f" (started for: {_fmt(progress['reason'])})" if progress.get("reason") else "")]
    if progress.get("waiting_for"):
        parts.append(f"waiting for {_fmt(progress['waiting_for'])}")
    if progress.get("epoch") is not None:
        stage = f"epoch {_fmt(progress['epoch'])}" + (f" ({_fmt(progress['phase'])})" if progress.get("phase") else "")
        if progress.get("val_accuracy") is not None:
            stage += f", validation accuracy {_fmt(progress['val_accuracy'])}"
        parts.append(stage + f", {_fmt(progress.get('seconds'))} s")
    elif run["status"] == "running" and not progress.get("waiting_for"):
        parts.append("reading the project's labels from Label Studio and preparing the data")
    return "<br>".join(parts)


def _by_seed(soup: dict | None) -> str:
    """A two-seed evaluator's held-out accuracy of each seed alone, beside the served mean of their weights."""
    if not isinstance(soup, dict) or not soup.get("accuracy_by_seed"):
        return ""
    return "<br><small>seeds alone: " + " / ".join(_fmt(a) for a in soup["accuracy_by_seed"]) + "</small>"


def _tracked(tracking: dict | None) -> str:
    """Where the run was tracked (MLflow run id, W&B run id), or why tracking stopped."""
    parts = []
    for name, status in (tracking or {}).items():
        if not isinstance(status, dict):
            continue
        parts.append(f"{name}: stopped ({status['error']})" if status.get("error") else f"{name} run {status.get('run_id')}")
    return ("; tracked in " + html.escape("; ".join(parts))) if parts else ""


def _curve(run: dict) -> str:
    uri = run.get("curve")
    if not uri or not str(uri).startswith("data:image/png;base64,"):
        return "-"
    return f"<img class='curve' alt='training curve of {html.escape(str(run.get('version')))}' src='{uri}' width='320'>"


def _evaluators_html(section: dict | None) -> str:
    """What serves, and what the cascade saved: tasks the evaluator answered alone against judge calls."""
    if not section:
        return ""
    serving = section.get("serving")
    head = (f"<p>Serving <b>{_fmt(serving['version'])}</b> (held-out accuracy {_fmt(serving['accuracy'])}, cascade "
            f"band {_fmt(serving['band'])}: {_fmt(serving.get('band_note') or 'scores inside it go to the judge')})."
            f"</p>") if serving else \
        "<p>No evaluator serves yet: the judge answers every task.</p>"
    rows = "".join(f"<tr><td>{_fmt(c['version'])}</td><td>{_fmt(c['evaluator_answered'])}</td>"
                   f"<td>{_fmt(c['judge_answered'])}</td><td>{_fmt(c['saved_share'])}</td><td>{_fmt(c['accuracy'])}"
                   f"</td><td>{_fmt(c['n'])}</td></tr>" for c in section.get("cascade") or [])
    table = ("<table id='cascade'><tr><th>served version</th><th>answered by the evaluator (no LLM call)</th>"
             "<th>answered by the judge</th><th>share saved</th><th>accuracy vs reference</th><th>n</th></tr>"
             f"{rows}</table>") if rows else ""
    return f"<h2 id='evaluators'>Evaluators and the cascade</h2>{head}{table}"


def _pairwise_html(pw: dict | None) -> str:
    if not pw:
        return ""
    def rates(rows):
        return "".join(f"<tr><td>{_fmt(r['model'])}</td><td>{r['comparisons']}</td><td>{_fmt(r['win_rate'])}</td>"
                       f"<td>{_fmt(r['ci_low'])} – {_fmt(r['ci_high'])}</td></tr>" for r in rows)
    bias = "".join(f"<tr><td>{_fmt(v)}</td><td>{b['n']}</td><td>{_fmt(b['flip_rate'])}</td>"
                   f"<td>{_fmt(b['first_position_rate'])}</td></tr>" for v, b in pw["position_bias"].items())
    jh = pw["judge_vs_human"]
    head = "<tr><th>model</th><th>comparisons</th><th>win rate</th><th>95% CI</th></tr>"
    return (f"<h2 id='pairwise'>Pairwise</h2><h3>Win rate by the judge</h3><table>{head}{rates(pw['win_rates_judge'])}</table>"
            f"<h3>Win rate by humans</h3><table>{head}{rates(pw['win_rates_human'])}</table>"
            f"<p>Judge vs human on {jh['n']} pairs: agreement {_fmt(jh['agreement'])}, kappa {_fmt(jh['kappa'])}.</p>"
            "<h3>Position bias (verdict flips when the responses swap)</h3><table><tr><th>judge version</th><th>pairs</th>"
            f"<th>flip rate</th><th>first-position rate</th></tr>{bias}</table>")


def alignment_plot(run: dict) -> str | None:
    """Held-out accuracy per candidate of one alignment run, with its exact 95% CI; the one the gate
    tested (chosen on the training part) in orange."""
    rows = [c for c in run.get("candidates") or [] if c.get("held_out")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(rows)))
    y = np.arange(len(rows))[::-1]
    acc = [c["held_out"]["accuracy"] for c in rows]
    err = [[a - c["held_out"]["ci_low"] for a, c in zip(acc, rows)], [c["held_out"]["ci_high"] - a for a, c in zip(acc, rows)]]
    colors = ["#DD8452" if c["name"] == run.get("selected") else "#4C72B0" for c in rows]
    ax.barh(y, acc, xerr=err, color=colors, capsize=4)
    ax.set_yticks(y, [f"{c['name']} ({c['kind']})" for c in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("held-out accuracy (exact 95% CI); orange: chosen on the training part and tested")
    return _png(fig)


def _span(numbers: dict) -> str:
    """"low – high" of a CI, or one dash when there is none (not measured)."""
    return f"{_fmt(numbers['ci_low'])} – {_fmt(numbers['ci_high'])}" if numbers.get("ci_low") is not None else "–"


def _alignment_html(runs: list[dict]) -> str:
    if not runs:
        return ""
    parts = ["<h2 id='alignment'>Alignment</h2><p>Each run searched candidate judges on the training part of the "
             "human labels, chose one there, and tested it against the current judge on the held-out part; it is "
             "promoted only when its gain's one-sided 95% lower bound (the lower end of the 90% CI shown) is above "
             "the minimum gain. Held-out numbers "
             "of the candidates the run did not choose are for reading only.</p>"]
    for run in runs:
        res = run.get("result") or {}
        split, budget = res.get("split") or {}, res.get("budget") or {}
        head = (f"<h3>Job {run['job']}: {html.escape(str(res.get('status') or run['status']))}</h3>"
                f"<p class='note'>{html.escape(str(res.get('message') or run.get('error') or ''))}</p>")
        if split:
            head += (f"<p>{split['n_train']} labels for the search, {split['n_held_out']} held out (seed {split['seed']}); "
                     f"spent {budget.get('calls', 0)} calls, ${_fmt(float(budget.get('cost') or 0), 4)}.</p>")
        rows = ""
        for c in res.get("candidates") or []:
            tr, ho, g = c.get("train") or {}, c.get("held_out") or {}, c.get("gain") or {}
            same = "the current prompt" + (", with few-shot examples from the training part" if c.get("few_shot")
                                           and c["kind"] != "current" else "")
            diff = (f"<details><summary>prompt diff</summary><pre style='text-align:left'>{html.escape(c['diff'])}"
                    f"</pre></details>") if c.get("diff") else f"({same})"
            if c.get("diff") and "few-shot" in c["kind"]:
                diff += "<br>with few-shot examples from the training part" if c.get("few_shot") else "<br>without few-shot examples"
            rows += (f"<tr><td>{html.escape(c['name'])}{' (tested)' if c['name'] == res.get('selected') else ''}</td>"
                     f"<td>{html.escape(c['kind'])}</td><td>{_fmt(tr.get('accuracy'))}</td><td>{_fmt(ho.get('accuracy'))}"
                     f"</td><td>{_span(ho)}</td><td>{_fmt(g.get('gain'))}</td>"
                     f"<td>{_span(g)}</td><td style='text-align:left'>{diff}</td></tr>")
        table = ("<table class='alignment-candidates'><tr><th>candidate</th><th>kind</th><th>train acc</th>"
                 "<th>held-out acc</th><th>95% CI</th><th>gain</th><th>gain 90% CI</th><th>prompt</th></tr>"
                 f"{rows}</table>") if rows else ""
        plot = alignment_plot(res)
        parts.append(head + table + (f'<img class="plot" src="{plot}" alt="held-out accuracy per candidate">' if plot else ""))
    return "".join(parts)
