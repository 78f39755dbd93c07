"""Hostile and careless input, one test per finding of the trust review (each failed before its fix):
a malformed webhook, a provider that echoes the key, options that cost millions of tokens, tasks
that used to fail their whole batch, client errors that used to be 500s."""
from __future__ import annotations

import base64
import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest

from .conftest import CONFIGS, judge_settings, serve_backend

PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()
RATING = """<View><Text name="output" value="$output"/>
<Rating name="stars" toName="output" maxRating="5"/></View>"""
PAIRWISE = """<View><Text name="a" value="$response_a"/><Text name="b" value="$response_b"/>
<Pairwise name="pref" toName="a,b"/></View>"""
CANARIES = {"OPENAI_API_KEY": "sk-canaryOPENAI0000000000001", "LABEL_STUDIO_API_KEY": "lscanaryTOKEN00000000002",
            "BASIC_AUTH_PASS": "canary-basic-pass-0003", "WEBHOOK_SECRET": "canary-webhook-secret-0004"}
TASK = {"id": 1, "data": {"input": "q", "context": "c", "output": "o"}}


def setup(url: str, config: str = PASS_FAIL, project="7", extra=None, **kw) -> httpx.Response:
    return httpx.post(f"{url}/setup", json={"project": project, "schema": config, "extra_params": extra}, **kw)


def predict(url: str, tasks, project="7", **kw) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"tasks": tasks, "project": project}, **kw)


def annotation_event(result, project=7, ann_id=9, task_id=1):
    return {"action": "ANNOTATION_CREATED", "project": {"id": project},
            "task": {"id": task_id, "data": {"output": "o", "input": "q", "context": "c"}},
            "annotation": {"id": ann_id, "task": task_id, "result": result}}


# -- 1. a malformed webhook ---------------------------------------------------------------------------
def test_a_bare_string_value_is_quarantined_and_the_project_keeps_working(tmp_path, fake_llm):
    settings = judge_settings(tmp_path, fake_llm)
    with serve_backend(settings) as srv:
        assert setup(srv.url).status_code == 200
        r = httpx.post(f"{srv.url}/webhook",
                       json=annotation_event([{"from_name": "verdict", "value": "Pass"}]))
        assert r.status_code == 422 and "value must be an object" in r.json()["error"]
        srv.backend.worker.wait_idle(10)
        assert setup(srv.url).status_code == 200
        assert predict(srv.url, [TASK]).status_code == 200
        q = httpx.get(f"{srv.url}/metrics").json()["quarantine"]
        assert q["total"] == 1 and q["by_project"][0]["project_id"] == "7"
        assert srv.backend.store.annotations("7") == []
    with serve_backend(settings) as again:  # and after a restart
        assert setup(again.url).status_code == 200
        assert predict(again.url, [TASK]).status_code == 200


def test_a_rating_of_five_in_words_is_quarantined_when_processed(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        assert setup(srv.url, RATING).status_code == 200
        event = annotation_event([{"from_name": "stars", "to_name": "output", "type": "rating",
                                   "value": {"rating": "five"}}])
        assert httpx.post(f"{srv.url}/webhook", json=event).status_code == 201
        good = annotation_event([{"from_name": "stars", "to_name": "output", "type": "rating",
                                  "value": {"rating": 4}}], ann_id=10, task_id=2)
        assert httpx.post(f"{srv.url}/webhook", json=good).status_code == 201
        assert srv.backend.worker.wait_idle(10)
        assert [a["id"] for a in srv.backend.store.annotations("7")] == [10]
        latest = httpx.get(f"{srv.url}/metrics").json()["quarantine"]["latest"]
        assert latest[0]["source"] == "annotation" and "rating must be a whole number" in latest[0]["reason"]
        assert setup(srv.url, RATING).status_code == 200  # was a 400 before
        assert predict(srv.url, [TASK]).status_code == 200


def test_bad_rows_already_in_the_store_never_break_reads(tmp_path, fake_llm):
    """Annotations stored by an older version, before ingestion checked them, are skipped on read."""
    settings = judge_settings(tmp_path, fake_llm)
    with serve_backend(settings) as srv:
        assert setup(srv.url).status_code == 200
    db = sqlite3.connect(settings.model_dir / "labeljudge.sqlite3")
    for i, result in enumerate(([{"from_name": "verdict", "value": "Pass"}], "not a list",
                                [{"from_name": "verdict", "value": {"choices": "Pass"}}], [17])):
        db.execute("INSERT INTO annotations (id, project_id, task_id, result, ground_truth, completed_by, task_data, "
                   "updated_at, correction) VALUES (?, '7', ?, ?, 0, 1, ?, 0, NULL)",
                   (100 + i, 100 + i, json.dumps(result), json.dumps(TASK["data"])))
    db.commit()
    db.close()
    with serve_backend(settings) as srv:
        assert setup(srv.url).status_code == 200
        assert predict(srv.url, [TASK]).status_code == 200


# -- 2. secrets ---------------------------------------------------------------------------------------
def test_no_canary_secret_reaches_a_response_the_log_or_the_store(tmp_path, fake_llm, caplog):
    caplog.set_level(logging.DEBUG)
    settings = judge_settings(tmp_path, fake_llm, **CANARIES, BASIC_AUTH_USER="u")
    auth = ("u", CANARIES["BASIC_AUTH_PASS"])
    seen: list[str] = []
    with serve_backend(settings) as srv:
        assert setup(srv.url, auth=auth).status_code == 200
        for fault in ("echo_auth", "echo_auth_rationale", "echo_auth_error", "echo_auth_error", "echo_auth_error"):
            fake_llm.faults.append(fault)
            r = predict(srv.url, [{"id": 1, "data": {**TASK["data"], "output": f"o {fault}"}}], auth=auth)
            assert r.status_code == 200
            seen.append(r.text)
        # the request really carried the key: the fake server saw it, so a leak was possible
        assert any(CANARIES["OPENAI_API_KEY"] in json.dumps(q["headers"]) for q in fake_llm.requests)
        for path in ("/metrics", "/versions", "/jobs"):
            seen.append(httpx.get(f"{srv.url}{path}", auth=auth).text)
        srv.backend.store.record_failure("7", 1, "judge-x", f"echoed {CANARIES['OPENAI_API_KEY']}")
        job = srv.backend.store.create_job("7", "label")
        srv.backend.store.update_job(job, status="failed", error=f"Bearer {CANARIES['LABEL_STUDIO_API_KEY']}",
                                     result={"failures": [{"reason": CANARIES["OPENAI_API_KEY"]}]})
        seen.append(httpx.get(f"{srv.url}/jobs/{job}", auth=auth).text)
        logging.getLogger("test").warning("a library said %s", CANARIES["OPENAI_API_KEY"])
    seen.append(caplog.text)
    seen.extend(r.getMessage() for r in caplog.records)
    for file in Path(settings.model_dir).glob("labeljudge.sqlite3*"):
        seen.append(file.read_bytes().decode("latin-1"))
    blob = "\n".join(seen)
    assert "rationale" in blob or "verdict" in blob  # the checks looked at real content
    for name, canary in CANARIES.items():
        assert canary not in blob, f"{name} leaked"


# -- 3/8. auth edge cases -----------------------------------------------------------------------------
def test_non_ascii_credentials_are_a_401_not_a_500(tmp_path, fake_llm):
    settings = judge_settings(tmp_path, fake_llm, BASIC_AUTH_USER="u", BASIC_AUTH_PASS="pw-1234",
                              WEBHOOK_SECRET="hook-secret")
    with serve_backend(settings) as srv:
        token = base64.b64encode("ü:päss".encode()).decode()
        assert setup(srv.url, headers={"Authorization": f"Basic {token}"}).status_code == 401
        r = httpx.post(f"{srv.url}/webhook", json={"action": "X"},
                       headers={"X-Webhook-Secret": "sécret".encode()})
        assert r.status_code == 401
        assert setup(srv.url, headers={"Authorization": "Basic !!notbase64"}).status_code == 401


# -- 4. models only from the allowlist ----------------------------------------------------------------
@pytest.mark.parametrize("model", ["some-org/some-model", "/etc", "../../../root"])
def test_extra_params_cannot_pick_a_local_model(tmp_path, fake_llm, model):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        r = setup(srv.url, extra={"provider": "local", "model": model})
        assert r.status_code == 400 and "JUDGE_MODELS" in r.json()["error"]


def test_a_model_that_fails_to_load_abstains_with_a_message(tmp_path, caplog):
    settings = judge_settings(tmp_path, JUDGE_MODELS="/etc")
    with serve_backend(settings) as srv:
        assert setup(srv.url, extra={"provider": "local", "model": "/etc"}).status_code == 200
        r = predict(srv.url, [TASK], timeout=60)  # trying to load /etc as a model takes seconds on a busy machine
        assert r.status_code == 200 and r.json()["results"] == [[]]
    assert "could not be loaded" in caplog.text


# -- 6. cost amplification ----------------------------------------------------------------------------
def test_a_million_options_is_refused_at_setup(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        r = setup(srv.url, RATING.replace('maxRating="5"', 'maxRating="1000000"'))
        assert r.status_code == 400 and "maxRating=1000000" in r.json()["error"]
        many = "".join(f'<Choice value="c{i}"/>' for i in range(500))
        r = setup(srv.url, f'<View><Text name="t" value="$t"/><Choices name="c" toName="t">{many}</Choices></View>')
        assert r.status_code == 400 and "500 options" in r.json()["error"]


def test_a_huge_task_is_skipped_not_sent(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm, MAX_PROMPT_CHARS="5000")) as srv:
        assert setup(srv.url, extra={"prompt": "{a}{b}{c}"}).status_code == 200
        before = len(fake_llm.requests)
        big = {"id": 3, "data": {"a": "x" * 4000, "b": "y" * 4000, "c": "z" * 4000}}
        r = predict(srv.url, [big, {"id": 4, "data": {"a": "1", "b": "2", "c": "3"}}])
        assert r.status_code == 200
        results = r.json()["results"]
        assert results[0] == [] and results[1]
        assert len(fake_llm.requests) == before + 1


# -- 8. client errors that were 500s ------------------------------------------------------------------
def test_client_errors_that_used_to_be_500s(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        deep = "[" * 100_000 + "]" * 100_000
        r = httpx.post(f"{srv.url}/setup", content=deep, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        missing = PASS_FAIL.replace('toName="output"', 'toName="nowhere"', 1)
        r = setup(srv.url, missing)
        assert r.status_code == 400 and "nowhere" in r.json()["error"]
        r = setup(srv.url, 12345)
        assert r.status_code == 400 and "XML string" in r.json()["error"]
        assert httpx.get(f"{srv.url}/health").status_code == 200


# -- 9. one bad task is its own abstention ------------------------------------------------------------
def test_a_lone_surrogate_is_judged_and_does_not_fail_the_batch(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        assert setup(srv.url).status_code == 200
        raw = json.dumps({"project": "7", "tasks": [TASK]})[:-2] + \
            ', {"id": 2, "data": {"input": "q", "context": "c", "output": "bad \\ud800 text"}}]}'
        r = httpx.post(f"{srv.url}/predict", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 200
        assert all(res for res in r.json()["results"])


def test_a_pairwise_task_without_an_integer_id_is_judged(tmp_path):
    from .fake_openai import FakeOpenAI
    from .test_pairwise import content_judge

    with FakeOpenAI(decide=content_judge) as fake, serve_backend(judge_settings(tmp_path, fake)) as srv:
        assert setup(srv.url, PAIRWISE).status_code == 200
        tasks = [{"id": "abc", "data": {"input": "q", "response_a": "x GOOD", "response_b": "y"}},
                 {"id": 5, "data": {"input": "q", "response_a": "x GOOD", "response_b": "y"}}]
        r = predict(srv.url, tasks)
        assert r.status_code == 200 and all(r.json()["results"])


# -- 10. ids and sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize("project", [{"a": 1}, "../../x", [1], 0, -3, True, "1e3", "", 2**70])
def test_only_project_ids_become_store_keys(tmp_path, fake_llm, project):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        r = setup(srv.url, project=project)
        assert r.status_code == 400 and "project" in r.json()["error"]
        assert srv.backend.store.projects() == []


def test_a_huge_webhook_is_refused_before_it_is_stored(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm, MAX_WEBHOOK_BYTES="100000")) as srv:
        event = annotation_event([])
        event["task"]["data"]["output"] = "x" * 200_000
        r = httpx.post(f"{srv.url}/webhook", json=event)
        assert r.status_code == 413 and "100,000 bytes" in r.json()["error"]
        assert srv.backend.store.events() == []


@pytest.mark.parametrize("extra,needle", [({"model": "m" * 1_000_000}, "model"), ({"max_tokens": 10**30}, "max_tokens"),
                                          ({"max_tokens": 0}, "max_tokens"), ({"few_shot_k": 10**6}, "few_shot_k"),
                                          ({"prompt": "p" * 200_000}, "prompt")])
def test_extra_params_have_sane_limits(tmp_path, fake_llm, extra, needle):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        r = setup(srv.url, extra=extra)
        assert r.status_code == 400 and needle in r.json()["error"] and len(r.json()["error"]) < 400


# -- 12. no response headers (cookies) in the log -----------------------------------------------------
def test_label_studio_errors_are_described_without_headers():
    from label_studio_sdk.core.api_error import ApiError

    from ml_backend.labelstudio import describe_error

    exc = ApiError(status_code=404, headers={"set-cookie": "sessionid=abcdef123456; Path=/"},
                   body={"detail": "Not found."})
    text = describe_error(exc)
    assert text == "Label Studio answered 404 Not Found: Not found." and "sessionid" not in text


def test_connection_refused_is_not_reported_as_a_timeout():
    import socket

    from ml_backend.labelstudio import LabelStudioAPI, describe_error

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    api = LabelStudioAPI(f"http://127.0.0.1:{port}", "token", timeout=2)
    with pytest.raises(Exception) as info:
        api.project_tasks(1)
    assert "could not connect" in describe_error(info.value)
