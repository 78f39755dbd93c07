"""Fixtures that start real servers on free ports and always stop them."""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from werkzeug.serving import make_server

from ml_backend.app import LabelJudgeBackend
from ml_backend.http import create_app
from ml_backend.settings import Settings
from ml_backend.store import Store

from .fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "label_configs"


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", help="also run the e2e (real Label Studio) and slow "
                     "(real local model) tests; the README's test command passes it")


def pytest_collection_modifyitems(config, items):
    """Fast unit tests by default; ``-m e2e`` / ``-m slow`` pick those; ``--all`` runs everything but
    the ``real_server`` tests, which run only when asked for by name (``-m real_server``: they need
    llama-cpp-python's server, built once by scripts/setup_llama_server.sh)."""
    if "real_server" not in (config.getoption("-m") or ""):
        skip_real = pytest.mark.skip(reason="real_server: run with -m real_server after scripts/setup_llama_server.sh")
        for item in items:
            if "real_server" in item.keywords:
                item.add_marker(skip_real)
    if config.getoption("--all") or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="needs --all (or -m e2e / -m slow)")
    for item in items:
        if "e2e" in item.keywords or "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def judge_settings(tmp_path: Path, fake: FakeOpenAI | None = None, **env: str) -> Settings:
    base = {"MODEL_DIR": str(tmp_path / "models"), "PRELOAD_MODEL": "false", "JUDGE_MAX_RETRIES": "2",
            "JUDGE_TIMEOUT": "1"}
    if fake is not None:
        base.update(JUDGE_PROVIDER="openai", JUDGE_MODEL="fake-judge", OPENAI_BASE_URL=fake.url,
                    OPENAI_API_KEY="sk-test-secret-key-123456")
    base.update(env)
    return Settings.from_env(base)


class RunningBackend:
    def __init__(self, url: str, backend: LabelJudgeBackend, app) -> None:
        self.url, self.backend, self.app = url, backend, app


@contextmanager
def serve_backend(settings: Settings, *, public_url: bool = True) -> Iterator[RunningBackend]:
    """The real Flask app on a real socket (werkzeug's threaded server), stopped afterwards.
    ``public_url``: set LABELJUDGE_URL to the socket's URL, as an operator would (unless given)."""
    server = make_server("127.0.0.1", 0, lambda environ, start: [], threaded=True)
    if public_url and not settings.backend_url:  # what an operator sets: the URL Label Studio reaches the backend at
        settings = dataclasses.replace(settings, backend_url=f"http://127.0.0.1:{server.server_port}")
    backend = LabelJudgeBackend(settings, Store(settings.model_dir / "labeljudge.sqlite3"))
    app = create_app(settings, backend)
    server.app = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield RunningBackend(f"http://127.0.0.1:{server.server_port}", backend, app)
    finally:
        server.shutdown()
        backend.worker.stop()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio 1.23.2 (from .venv-ls), started once per test session."""
    from ml_backend.labelstudio.local import LocalLabelStudio, find_ls_venv

    try:
        venv = find_ls_venv(ROOT)
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} (the README's setup installs it)")
    ls = LocalLabelStudio(data_dir=tmp_path_factory.mktemp("ls-data"), venv=venv).start()
    try:
        yield ls
    finally:
        ls.stop()


@pytest.fixture(scope="session")
def ls_api(label_studio):
    from ml_backend.labelstudio import LabelStudioAPI

    return LabelStudioAPI(label_studio.url, label_studio.token)


class LSProject:
    """A backend on a real socket, wired to the session's Label Studio, and a project there with tasks."""

    def __init__(self, srv: RunningBackend, project: int, task_ids: list[int]) -> None:
        self.srv, self.project, self.task_ids = srv, project, task_ids
        self.url, self.backend = srv.url, srv.backend


@pytest.fixture
def ls_project(tmp_path, ls_api, label_studio):
    """The set-up every e2e test repeats, as a factory: ``ls_project(title, config, tasks, fake=...,
    connect=True, extra_params=None, **env)`` serves a backend with Label Studio's URL and token (and
    ``env``), creates the project, imports the tasks and connects the backend; all stop afterwards."""
    stack = contextlib.ExitStack()

    def make(title: str, config: str, tasks: list[dict], *, fake: FakeOpenAI | None = None, connect: bool = True,
             extra_params: dict | None = None, **env: str) -> LSProject:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url,
                                  LABEL_STUDIO_API_KEY=label_studio.token, **env)
        srv = stack.enter_context(serve_backend(settings))
        project = ls_api.create_project(title, config)
        ids = ls_api.import_tasks(project, tasks)
        if connect:
            ls_api.connect_backend(project, srv.url, extra_params=extra_params)
        return LSProject(srv, project, ids)

    with stack:
        yield make


@pytest.fixture
def browser():
    """A page in headless Chromium (Debian's, driven by Playwright), closed afterwards."""
    from playwright.sync_api import sync_playwright

    from .test_browser_loop import CHROMIUM_ARGS

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b.new_page(viewport={"width": 1400, "height": 900})
        finally:
            b.close()


def _hypothesis_profiles() -> None:
    """Property-based tests are derandomised by default (the "ci" profile: the same examples on every
    run, so a landing is never blocked by a random draw); ``HYPOTHESIS_PROFILE=random`` (with more
    examples) is the longer random exploration a person starts by hand."""
    import os

    from hypothesis import settings as hyp

    hyp.register_profile("ci", derandomize=True, database=None, print_blob=True)
    hyp.register_profile("random", derandomize=False, max_examples=500, print_blob=True)
    hyp.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profiles()
