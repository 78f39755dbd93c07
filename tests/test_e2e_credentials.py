"""Every credential mistake of a new user, against a real Label Studio, with the demo running or not:
each gets a message that names its real cause, and none shows the key (issue: rough edges)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CONFIGS
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e

WRONG_KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def setting(label_studio, ls_api, tmp_path_factory):
    """A project, a fake running demo (its state file and credentials, pointing at the real Label
    Studio), a port where nothing listens and a server that is not Label Studio."""
    project = ls_api.create_project("e2e credentials", (CONFIGS / "pass_fail.xml").read_text())
    home = tmp_path_factory.mktemp("demo-home")
    creds = home / "creds.json"
    creds.write_text(json.dumps({"token": label_studio.token}))
    (home / "quickstart.json").write_text(json.dumps({"ls_url": label_studio.url, "credentials": str(creds),
                                                       "model_dir": str(home / "store")}))
    from ml_backend.labelstudio.local import free_port

    with FakeOpenAI() as other:
        yield {"project": project, "demo": home, "none": tmp_path_factory.mktemp("no-demo"),
               "dead": f"http://127.0.0.1:{free_port()}", "other": other.url.removesuffix("/v1"), "ls": label_studio}


def run(setting, tmp_path: Path, *, demo: bool, env: dict[str, str], flags: list[str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "LABELJUDGE_", "MODEL_DIR"))}
    base.update(LABELJUDGE_HOME=str(setting["demo"] if demo else setting["none"]), PRELOAD_MODEL="false", **env)
    if not demo:
        base["MODEL_DIR"] = str(tmp_path / "store")
    return subprocess.run([sys.executable, "-m", "ml_backend.cli", "prompts", "--project", str(setting["project"]),
                           *flags], env=base, cwd=tmp_path, capture_output=True, text=True, timeout=120)


# (case, demo running, environment, flags, what the message must say); {ls} {dead} {other} filled in
CASES = [
    ("nothing-set-no-demo", False, {}, [], "no Label Studio to talk to"),
    ("nothing-set-demo", True, {}, [], None),
    ("key-without-url-no-demo", False, {"LABEL_STUDIO_API_KEY": "{token}"}, [],
     "a Label Studio API key is set (LABEL_STUDIO_API_KEY) but no URL"),
    ("key-without-url-demo", True, {"LABEL_STUDIO_API_KEY": WRONG_KEY}, [],
     "the running demo's Label Studio is at {ls}, but its settings are used only when neither"),
    ("key-flag-without-url-demo", True, {}, ["--api-key", WRONG_KEY], "unset --api-key to use them"),
    ("url-without-key-no-demo", False, {"LABEL_STUDIO_URL": "{ls}"}, [],
     "a Label Studio URL is set (LABEL_STUDIO_URL: {ls}) but no API key"),
    ("demo-url-without-key", True, {"LABEL_STUDIO_URL": "{ls}"}, [], None),
    ("other-url-without-key-demo", True, {}, ["--url", "{dead}"], "a Label Studio URL is set (--url: {dead}) but no API key"),
    ("no-scheme", False, {"LABEL_STUDIO_URL": "{ls_bare}", "LABEL_STUDIO_API_KEY": "{token}"}, [],
     "(LABEL_STUDIO_URL) has no scheme: use http://"),
    ("wrong-key-no-demo", False, {"LABEL_STUDIO_URL": "{ls}"}, ["--api-key", WRONG_KEY],
     "refused the API key from --api-key (401): copy the token"),
    ("wrong-key-at-the-demo", True, {"LABEL_STUDIO_URL": "{ls}", "LABEL_STUDIO_API_KEY": WRONG_KEY}, [],
     "it is not the running demo's token: unset LABEL_STUDIO_API_KEY"),
    ("wrong-url-no-demo", False, {"LABEL_STUDIO_API_KEY": "{token}"}, ["--url", "{dead}"],
     "nothing answers at {dead} (--url): is Label Studio running there?"),
    ("wrong-url-demo", True, {"LABEL_STUDIO_URL": "{dead}", "LABEL_STUDIO_API_KEY": "{token}"}, [],
     "(the running demo's Label Studio is at {ls})"),
    ("not-label-studio", False, {"LABEL_STUDIO_URL": "{other}", "LABEL_STUDIO_API_KEY": "{token}"}, [],
     "is it Label Studio's address, not the backend's or another service's?"),
    ("right-flags", False, {}, ["--url", "{ls}", "--api-key", "{token}"], None),
]


@pytest.mark.parametrize("case,demo,env,flags,needle", CASES, ids=[c[0] for c in CASES])
def test_each_credential_mistake_names_its_cause(setting, tmp_path, case, demo, env, flags, needle):
    ls = setting["ls"]
    fill = {"ls": ls.url, "ls_bare": ls.url.removeprefix("http://"), "dead": setting["dead"], "other": setting["other"],
            "token": ls.token}
    out = run(setting, tmp_path, demo=demo, env={k: v.format(**fill) for k, v in env.items()},
              flags=[f.format(**fill) for f in flags])
    said = out.stdout + out.stderr
    assert ls.token not in said and WRONG_KEY not in said
    if needle is None:
        assert out.returncode == 0, said[-2000:]
        return
    assert out.returncode == 2, said[-2000:]
    assert needle.format(**fill) in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr  # one line, no traceback
