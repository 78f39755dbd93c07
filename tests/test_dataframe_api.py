"""label_dataframe against the real OpenAI-compatible HTTP server, and dataset file round trips."""
from __future__ import annotations

import pandas as pd
import pytest

from ml_backend.dataframe import label_dataframe
from ml_backend.io import read_table, rows_to_tasks, write_table
from ml_backend.store import Store


def test_label_dataframe_adds_label_score_rationale_and_uses_the_cache(fake_llm, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("JUDGE_MAX_RETRIES", "0")
    df = pd.DataFrame({"input": ["q1", "q2", "q3"], "context": ["c", "c", None],
                       "output": ["a EXPECT=Fail", "b EXPECT=Pass", "c"]})
    store = Store(tmp_path / "cache.sqlite3")
    out = label_dataframe(df, metric="faithfulness", cache=store, concurrency=2)
    assert list(out["judge_label"][:2]) == ["Fail", "Pass"]
    assert out["judge_score"][0] == pytest.approx(0.9, abs=1e-3)
    assert out["judge_rationale"][0] == "Judged Fail."
    assert pd.isna(out["judge_label"][2]) and "missing field 'context'" in out["judge_error"][2]
    calls = len(fake_llm.requests)
    again = label_dataframe(df, metric="faithfulness", cache=store)
    assert len(fake_llm.requests) == calls  # every usable verdict came from the cache
    assert list(again["judge_label"][:2]) == ["Fail", "Pass"]


def test_label_dataframe_takes_the_server_and_key_as_arguments(fake_llm, tmp_path, monkeypatch):
    """A notebook passes the server and the key, as to the openai client; nothing in the environment."""
    for var in ("JUDGE_PROVIDER", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "m"))
    df = pd.DataFrame({"input": ["q"], "context": ["c"], "output": ["a EXPECT=Fail"]})
    out = label_dataframe(df, metric="faithfulness", model="gpt-4o-mini", base_url=fake_llm.url,
                          api_key="sk-notebook-key-12345", cache=Store(tmp_path / "c.sqlite3"))
    assert list(out["judge_label"]) == ["Fail"]
    headers = {k.lower(): v for k, v in fake_llm.requests[-1]["headers"].items()}
    assert headers["authorization"] == "Bearer sk-notebook-key-12345"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_table_round_trip(tmp_path, suffix):
    df = pd.DataFrame({"input": ["a", "b"], "output": ["x", "y"], "n": [1, 2]})
    path = tmp_path / f"data{suffix}"
    write_table(df, path)
    back = read_table(path)
    assert back.to_dict("records") == df.to_dict("records")
    assert rows_to_tasks(back)[1] == {"data": {"input": "b", "output": "y", "n": 2}}
