"""The adversarial corpus over HTTP: bad, huge, empty, malformed and hostile requests to every route.

Each case asserts the status, that the message names the problem, that the server is still up
afterwards, and that nothing wrong was stored (only integer project ids as keys, no oversized or
unreadable event, no annotation a read would trip on). The CLI's half is tests/test_cli_corpus.py.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from .conftest import CONFIGS, judge_settings, serve_backend
from .fake_openai import FakeOpenAI

PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()
RATING = (CONFIGS / "rating.xml").read_text()
MAX_WEBHOOK = 200_000
MAX_REQUEST = 2_000_000
TEXT = '<Text name="t" value="$t"/>'


@dataclass
class Case:
    id: str
    method: str
    path: str
    json: Any = None
    content: bytes | str | None = None
    headers: dict = field(default_factory=dict)
    status: int | tuple[int, ...] = 400
    needle: str = ""
    server: str = "open"  # or "auth": Basic auth and a webhook secret are on


def _setup(pid: Any = 1, config: Any = PASS_FAIL, extra: Any = None, **kw) -> dict:
    return {"project": pid, "schema": config, "extra_params": extra, **kw}


def _choices(n: int) -> str:
    return f'<View>{TEXT}<Choices name="c" toName="t">' + "".join(f'<Choice value="o{i}"/>' for i in range(n)) + \
        "</Choices></View>"


def _event(result: Any = None, *, action: str = "ANNOTATION_CREATED", project: Any = None, ann: Any = None,
           task: Any = None) -> dict:
    body: dict = {"action": action, "project": {"id": 1} if project is None else project,
                  "task": {"id": 1, "data": {"input": "q", "output": "o"}} if task is None else task}
    body["annotation"] = ann if ann is not None else {"id": 9, "task": 1, "result": [] if result is None else result}
    return body


def _region(value: Any, name: str = "verdict") -> list:
    return [{"from_name": name, "to_name": "output", "type": "choices", "value": value}]


def setup_cases() -> list[Case]:
    cases = []
    for i, pid in enumerate([{"a": 1}, "../../x", [1], 0, -1, True, False, "1e3", 1.5, "", None, 2**70, "abc",
                             "1/2", "١٢", " 1", "1;DROP TABLE projects"]):
        cases.append(Case(f"setup-project-{i}", "POST", "/setup", json=_setup(pid), needle="project"))
    configs = {
        "number": (12345, "xml string"), "list": ([], "xml string"), "object": ({"a": 1}, "xml string"),
        "empty": ("", "empty"), "blank": ("   ", "empty"), "not-xml": ("<View><Text", "not valid xml"),
        "no-controls": (f"<View>{TEXT}</View>", "no control"),
        "toname-missing": (PASS_FAIL.replace('toName="output"', 'toName="ghost"', 1), "ghost"),
        "rating-million": (RATING.replace('maxRating="5"', 'maxRating="1000000"'), "maxrating"),
        "rating-five": (RATING.replace('maxRating="5"', 'maxRating="five"'), "maxrating"),
        "rating-zero": (RATING.replace('maxRating="5"', 'maxRating="0"'), "maxrating"),
        "choices-none": (f'<View>{TEXT}<Choices name="c" toName="t"></Choices></View>', "no <choice>"),
        "choices-500": (_choices(500), "500 options"),
        "huge-config": ("<View>" + "<!-- x -->" * 30_000 + "</View>", "characters"),
        "xml-entity-bomb": ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;'
                            '&a;&a;&a;">]><View><Text name="t" value="&b;"/></View>', "config"),
        "number-attr": (f'<View>{TEXT}<Number name="n" toName="t" min="abc"/></View>', "not a number"),
        "pairwise-one": (f'<View>{TEXT}<Pairwise name="p" toName="t"/></View>', "exactly two"),
    }
    for name, (config, needle) in configs.items():
        cases.append(Case(f"setup-config-{name}", "POST", "/setup", json=_setup(config=config), needle=needle))
    extras = {
        "unknown-key": ({"temprature": 0.5}, "unknown extra_params key"),
        "huge-key": ({"k" * 100_000: 1}, "unknown extra_params key"),
        "model-1mb": ({"model": "m" * 1_000_000}, "model"),
        "model-empty": ({"model": "  "}, "model"),
        "model-type": ({"model": 5}, "model"),
        "local-hub": ({"provider": "local", "model": "some-org/some-model"}, "judge_models"),
        "local-path": ({"provider": "local", "model": "/etc"}, "judge_models"),
        "provider": ({"provider": "anthropic"}, "provider"),
        "max-tokens-huge": ({"max_tokens": 10**30}, "max_tokens"),
        "max-tokens-zero": ({"max_tokens": 0}, "max_tokens"),
        "max-tokens-bool": ({"max_tokens": True}, "max_tokens"),
        "temperature": ({"temperature": 5}, "temperature"),
        "temperature-nan": ('{"temperature": NaN}', "temperature"),
        "few-shot": ({"few_shot_k": 10**6}, "few_shot_k"),
        "train-every": ({"train_every": -1}, "train_every"),
        "prompt-huge": ({"prompt": "p" * 200_000}, "prompt"),
        "prompt-braces": ({"prompt": "{unclosed"}, "braces"),
        "prompt-attr": ({"prompt": "{x.__class__!r}"}, "not allowed"),
        "prompt-spec": ({"prompt": "{x:>10}"}, "not allowed"),
        "metric": ({"metric": "no-such-metric"}, "metric"),
        "string-not-json": ("{not json", "not valid json"),
        "string-list": ("[1, 2]", "json object"),
        "list": ([1, 2], "json object"),
        "number": (7, "json object"),
        "cascade-band": ({"cascade_band": [0.9, 0.1]}, "cascade_band"),
        "cascade-band-len": ({"cascade_band": [0.1]}, "cascade_band"),
        "mode": ({"mode": "oracle"}, "mode"),
        "fields": ({"fields": {"a": 1}}, "fields"),
        "fields-many": ({"fields": {f"k{i}": "v" for i in range(500)}}, "fields"),
        "control-missing": ({"control": "ghost"}, "ghost"),
        "control-empty": ({"control": []}, "control"),
        "judge-weight": ({"judge_weight": 7}, "judge_weight"),
        "evaluator-input": ({"evaluator_input": {"x": ["a"]}}, "evaluator_input"),
    }
    for name, (extra, needle) in extras.items():
        cases.append(Case(f"setup-extra-{name}", "POST", "/setup", json=_setup(extra=extra), needle=needle))
    bodies = {
        "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "deep-object": ('{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
        "not-json": ("{project: 1}", "not valid json"),
        "json-list": ("[1, 2, 3]", "json object"),
        "json-string": ('"hello"', "json object"),
        "empty": ("", "json object"),
        "latin1": (b"{\"project\": \"\xff\xfe\"}", "not valid json"),
        "nul": ('{"project": 1, "schema": "\\u0000"}', "config"),
    }
    for name, (raw, needle) in bodies.items():
        cases.append(Case(f"setup-body-{name}", "POST", "/setup", content=raw,
                          headers={"Content-Type": "application/json"}, needle=needle))
    cases.append(Case("setup-too-large", "POST", "/setup", content="x" * (MAX_REQUEST + 10),
                      headers={"Content-Type": "application/json"}, status=413, needle="too large"))
    return cases


def predict_cases() -> list[Case]:
    t = {"id": 1, "data": {"input": "q", "context": "c", "output": "o"}}
    cases = [
        Case("predict-no-tasks", "POST", "/predict", json={"project": 1}, needle="tasks"),
        Case("predict-empty-tasks", "POST", "/predict", json={"project": 1, "tasks": []}, needle="tasks"),
        Case("predict-tasks-object", "POST", "/predict", json={"project": 1, "tasks": {"id": 1}}, needle="tasks"),
        Case("predict-tasks-string", "POST", "/predict", json={"project": 1, "tasks": "all"}, needle="tasks"),
        Case("predict-unknown-project", "POST", "/predict", json={"project": 424242, "tasks": [t]}, status=409,
             needle="not set up"),
        Case("predict-project-object", "POST", "/predict", json={"project": {"a": 1}, "tasks": [t]}, needle="project"),
        Case("predict-project-path", "POST", "/predict", json={"project": "../../x", "tasks": [t]}, needle="project"),
        Case("predict-no-project", "POST", "/predict", json={"tasks": [t]}, needle="no project"),
        Case("predict-config-number", "POST", "/predict", json={"project": 1, "tasks": [t], "label_config": 5},
             needle="label_config"),
        Case("predict-config-bad", "POST", "/predict", json={"project": 1, "tasks": [t], "label_config": "<View"},
             needle="not valid xml"),
        Case("predict-deep", "POST", "/predict", content='{"tasks":' + "[" * 100_000 + "]" * 100_000 + "}",
             headers={"Content-Type": "application/json"}, needle="nested too deeply"),
        Case("predict-too-large", "POST", "/predict", content="x" * (MAX_REQUEST + 10),
             headers={"Content-Type": "application/json"}, status=413, needle="too large"),
    ]
    # per-task problems: a 200 with an abstention for that task, never the whole batch
    weird = [{"id": 1}, {"id": 2, "data": "text"}, {"id": 3, "data": None}, 5, "task", None, [1],
             {"id": 4, "data": {"input": "q"}}, {"id": 5, "data": {"input": "q", "context": "c", "output": "\ud800"}},
             {"id": {"x": 1}, "data": t["data"]}, {"id": 10**40, "data": t["data"]},
             {"id": 6, "data": {"input": "q", "context": "c", "output": "x" * 1_000_000}}]
    for i, task in enumerate(weird):
        cases.append(Case(f"predict-task-{i}", "POST", "/predict", json={"project": 1, "tasks": [task, t]},
                          status=200, needle=""))
    return cases


def webhook_cases() -> list[Case]:
    cases = []
    bad = {
        "bare-string-value": (_event(_region("Pass")), "value must be an object"),
        "value-list": (_event(_region(["Pass"])), "value must be an object"),
        "value-null": (_event(_region(None)), "value must be an object"),
        "region-string": (_event(["Pass"]), "must be an object"),
        "region-no-from": (_event([{"value": {"choices": ["Pass"]}}]), "from_name"),
        "result-string": (_event("Pass"), "list of regions"),
        "result-object": (_event({"choices": ["Pass"]}), "list of regions"),
        "too-many-regions": (_event(_region({"choices": ["Pass"]}) * 1001), "1001 regions"),
        "no-annotation": ({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, "annotation"),
        "annotation-list": (_event(ann=[1]), "annotation"),
        "annotation-no-id": (_event(ann={"task": 1, "result": []}), "annotation.id"),
        "annotation-id-string": (_event(ann={"id": "nine", "task": 1, "result": []}), "annotation.id"),
        "annotation-id-negative": (_event(ann={"id": -9, "task": 1, "result": []}), "annotation.id"),
        "annotation-id-huge": (_event(ann={"id": 2**80, "task": 1, "result": []}), "annotation.id"),
        "annotation-task-object": (_event(ann={"id": 9, "task": {"x": 1}, "result": []}), "annotation.task"),
        "task-string": (_event(task="t"), "'task'"),
        "task-data-list": (_event(task={"id": 1, "data": [1]}), "'task'"),
        "project-object-id": (_event(project={"id": {"a": 1}}), "project.id"),
        "project-path": (_event(project={"id": "../../x"}), "project.id"),
        "project-list": (_event(project=[1]), "'project'"),
        "project-config-number": (_event(project={"id": 1, "label_config": 5}), "label_config"),
        "no-action": ({"project": {"id": 1}}, "action"),
        "action-number": ({"action": 5}, "action"),
        "action-lowercase": ({"action": "annotation_created"}, "action"),
        "action-huge": ({"action": "A" * 10_000}, "action"),
        "deleted-not-list": ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": "all"},
                             "annotations"),
        "deleted-bad-id": ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": "x"}]},
                           "annotations[0].id"),
    }
    for name, (body, needle) in bad.items():
        cases.append(Case(f"webhook-{name}", "POST", "/webhook", json=body, status=422, needle=needle))
    for name, raw in {"deep": "[" * 100_000 + "]" * 100_000, "not-json": "action=x", "list": "[]", "empty": ""}.items():
        cases.append(Case(f"webhook-body-{name}", "POST", "/webhook", content=raw,
                          headers={"Content-Type": "application/json"},
                          needle="nested too deeply" if name == "deep" else "json"))
    big = _event()
    big["task"]["data"]["output"] = "x" * (MAX_WEBHOOK + 1)
    cases.append(Case("webhook-too-large", "POST", "/webhook", json=big, status=413, needle="too large"))
    # understood structurally, wrong for the config: stored, then quarantined when processed (201)
    for name, value in {"choice-not-in-config": {"choices": ["Maybe"]}, "choices-string": {"choices": "Pass"},
                        "choices-numbers": {"choices": [1, 2]}}.items():
        cases.append(Case(f"webhook-{name}", "POST", "/webhook", json=_event(_region(value)), status=201))
    cases.append(Case("webhook-unknown-action", "POST", "/webhook", json={"action": "PROJECT_UPDATED"}, status=201))
    return cases


def other_cases() -> list[Case]:
    cases = [
        Case("jobs-label-no-project", "POST", "/jobs/label", json={}, needle="project"),
        Case("jobs-label-project-string", "POST", "/jobs/label", json={"project": "1"}, needle="project"),
        Case("jobs-label-project-bool", "POST", "/jobs/label", json={"project": True}, needle="project"),
        Case("jobs-label-project-zero", "POST", "/jobs/label", json={"project": 0}, needle="project"),
        Case("jobs-label-concurrency-0", "POST", "/jobs/label", json={"project": 1, "concurrency": 0},
             needle="concurrency"),
        Case("jobs-label-concurrency-huge", "POST", "/jobs/label", json={"project": 1, "concurrency": 10**9},
             needle="concurrency"),
        Case("jobs-label-concurrency-str", "POST", "/jobs/label", json={"project": 1, "concurrency": "8"},
             needle="concurrency"),
        Case("jobs-label-sample-0", "POST", "/jobs/label", json={"project": 1, "sample": 0}, needle="sample"),
        Case("jobs-label-max-cost", "POST", "/jobs/label", json={"project": 1, "max_cost": -1}, needle="max_cost"),
        Case("jobs-label-poll", "POST", "/jobs/label", json={"project": 1, "poll_interval": 0}, needle="poll_interval"),
        Case("jobs-label-batch-api", "POST", "/jobs/label", json={"project": 1, "batch_api": "yes"},
             needle="batch_api"),
        Case("jobs-label-unknown-field", "POST", "/jobs/label", json={"project": 1, "temprature": 1},
             needle="unknown field"),
        Case("jobs-label-model-huge", "POST", "/jobs/label", json={"project": 1, "model": "m" * 100_000},
             needle="model"),
        Case("jobs-label-metric", "POST", "/jobs/label", json={"project": 1, "metric": "m" * 1000}, needle="metric"),
        Case("jobs-label-no-label-studio", "POST", "/jobs/label", json={"project": 1}, status=503,
             needle="label_studio_url"),
        Case("jobs-id-text", "GET", "/jobs/abc", status=404, needle="not found"),
        Case("jobs-id-missing", "GET", "/jobs/987654", status=404, needle="no job"),
        Case("jobs-project-object", "GET", "/jobs?project=%7B%22a%22%3A1%7D", needle="project"),
        Case("jobs-project-path", "GET", "/jobs?project=../../x", needle="project"),
        Case("jobs-kind", "GET", "/jobs?kind=everything", needle="kind"),
        Case("report-javascript", "GET", "/report/1?ls_url=javascript:alert(1)//x", needle="ls_url"),
        Case("report-data-url", "GET", "/report/1?ls_url=data:text/html,hi", needle="ls_url"),
        Case("report-quote", "GET", '/report/1?ls_url=http://x/"><script>', needle="ls_url"),
        Case("report-no-host", "GET", "/report/1?ls_url=http://", needle="ls_url"),
        Case("report-format", "GET", "/report/1?format=xml", needle="format"),
        Case("report-zero", "GET", "/report/0", needle="positive"),
        Case("report-text-id", "GET", "/report/abc", status=404, needle="not found"),
        Case("report-no-label-studio", "GET", "/report/1", status=503, needle="label_studio_url"),
        Case("unknown-route", "GET", "/admin", status=404, needle="not found"),
        Case("wrong-method", "GET", "/setup", status=405, needle="method"),
        Case("wrong-method-predict", "DELETE", "/predict", status=405, needle="method"),
    ]
    token = lambda raw: {"Authorization": "Basic " + base64.b64encode(raw).decode()}  # noqa: E731
    for name, headers in {"none": {}, "non-ascii": token("ü:päss".encode()), "latin1": token(b"\xff:\xfe"),
                          "not-base64": {"Authorization": "Basic !!!"}, "bearer": {"Authorization": "Bearer x"},
                          "no-colon": token(b"userpass"), "wrong": token(b"u:wrong-password")}.items():
        cases.append(Case(f"auth-{name}", "POST", "/setup", json=_setup(), headers=headers, status=401,
                          needle="authentication required", server="auth"))
    for name, secret in {"non-ascii": "sécret".encode(), "wrong": b"nope", "empty": b""}.items():
        cases.append(Case(f"auth-webhook-secret-{name}", "POST", "/webhook", json={"action": "X"},
                          headers={"X-Webhook-Secret": secret}, status=401, needle="authentication", server="auth"))
    return cases


CASES = setup_cases() + predict_cases() + webhook_cases() + other_cases()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two live backends (open, and with auth), each with projects 1 (Pass/Fail) and 2 (Rating) set up."""
    tmp = tmp_path_factory.mktemp("corpus")
    limits = {"MAX_WEBHOOK_BYTES": str(MAX_WEBHOOK), "MAX_REQUEST_BYTES": str(MAX_REQUEST),
              "MAX_PROMPT_CHARS": "20000"}
    with FakeOpenAI() as fake, \
            serve_backend(judge_settings(tmp / "open", fake, **limits)) as open_srv, \
            serve_backend(judge_settings(tmp / "auth", fake, BASIC_AUTH_USER="u", BASIC_AUTH_PASS="right-password",
                                         WEBHOOK_SECRET="hook-secret", **limits)) as auth_srv:
        for srv, auth in ((open_srv, None), (auth_srv, ("u", "right-password"))):
            for pid, config in ((1, PASS_FAIL), (2, RATING)):
                r = httpx.post(f"{srv.url}/setup", json=_setup(pid, config), auth=auth)
                assert r.status_code == 200, r.text
        yield {"open": open_srv, "auth": auth_srv}


def _invariants(srv) -> None:
    """Nothing wrong was stored: integer project keys only, events within the size limit and readable,
    every stored annotation readable, no project beyond the two set up."""
    store = srv.backend.store
    assert {p["project_id"] for p in store.projects()} == {"1", "2"}
    for event in store.events(limit=10_000):
        assert event["project_id"] is None or event["project_id"].isdigit()
    for event in store.pending_events(limit=10_000):
        assert len(json.dumps(event["payload"])) <= MAX_WEBHOOK
    for pid in ("1", "2"):
        for ann in store.annotations(pid):
            assert isinstance(ann["result"], list)
            assert all(isinstance(r, dict) and isinstance(r.get("value"), dict) for r in ann["result"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus(servers, case: Case) -> None:
    srv = servers[case.server]
    content, headers = case.content, dict(case.headers)
    if case.json is not None:  # ASCII-escaped, so lone surrogates travel as the \ud800 escapes JSON allows
        content, headers["Content-Type"] = json.dumps(case.json), "application/json"
    r = httpx.request(case.method, f"{srv.url}{case.path}", content=content, headers=headers, timeout=60)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert r.status_code in expected, f"{r.status_code}: {r.text[:300]}"
    assert r.status_code < 500 or 503 in expected
    if case.needle:
        message = r.json()["error"]
        assert case.needle.lower() in message.lower(), message
        assert len(message) < 1000  # a 1 MB input is not echoed back
    if r.status_code == 200 and case.path == "/predict":
        results = r.json()["results"]
        assert len(results) == len(case.json["tasks"]) and results[-1], results  # the good task is labeled
    if case.path == "/webhook":
        assert srv.backend.worker.wait_idle(10)
    assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
    _invariants(srv)
    again = httpx.post(f"{srv.url}/predict", json={"project": 1, "tasks": [
        {"id": 1, "data": {"input": "q", "context": "c", "output": "o"}}]},
        auth=("u", "right-password") if case.server == "auth" else None, timeout=60)
    assert again.status_code == 200 and again.json()["results"][0], again.text  # the project still works


def test_corpus_size():
    assert len(CASES) >= 150
