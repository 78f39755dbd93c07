"""The deployment topology, run: docker-compose.yml's services started as local processes (no Docker
engine runs on these machines), each with its own command and the environment the compose file gives
it, hostnames and volumes mapped to loopback ports and folders. Then the loop goes through them:
Label Studio -> the backend on gunicorn (Retrieve predictions, webhooks) -> Redis -> the worker (Start
Training) -> the backend serves the worker's evaluator. This checks that the compose file's commands,
ports, variables and shared volume agree; `docker compose config` runs where the client has compose."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from ml_backend.labelstudio.local import free_port

from .conftest import ROOT
from .fake_openai import FakeOpenAI
from .test_e2e_evaluator import annotate_all, qa_tasks
from .test_e2e_labelstudio import PASS_FAIL, _wait
from .test_e2e_rq import redis_server

pytestmark = pytest.mark.e2e
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKER_CMD = re.search(r'^CMD (\[.*\])$', (ROOT / "Dockerfile").read_text(), re.M)


def interpolate(value: str, shell: dict) -> str:
    """Compose's ``${VAR:-default}``: the shell's value, else the default."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: shell.get(m.group(1)) or m.group(2), str(value))


def service_env(name: str, shell: dict) -> dict[str, str]:
    return {k: interpolate(v, shell) for k, v in (COMPOSE["services"][name].get("environment") or {}).items()}


def command(name: str) -> list[str]:
    """The service's command, or the image's CMD (the Dockerfile's, for the services built from it)."""
    service = COMPOSE["services"][name]
    if "command" in service:
        return list(service["command"])
    assert service.get("build") == ".", f"{name} neither has a command nor is built from the Dockerfile"
    return yaml.safe_load(DOCKER_CMD.group(1))


def port_of(name: str) -> int:
    """The container port a service publishes (compose "host:container")."""
    return int(str(COMPOSE["services"][name]["ports"][0]).split(":")[-1])


def test_the_compose_file_agrees_with_itself():
    services = COMPOSE["services"]
    backend, worker = service_env("labeljudge", {}), service_env("worker", {})
    assert backend == worker, "the backend and the worker must see the same settings"
    ls = urlsplit(backend["LABEL_STUDIO_URL"])
    assert ls.hostname == "label-studio" and ls.port == port_of("label-studio")
    me = urlsplit(backend["LABELJUDGE_URL"])
    serve = command("labeljudge")
    assert me.hostname == "labeljudge" and me.port == port_of("labeljudge") == int(serve[serve.index("--port") + 1])
    assert urlsplit(backend["REDIS_URL"]).hostname == "redis" and "redis" in services
    assert command("worker")[:2] == ["labeljudge", "worker"]
    # the worker trains into the registry the backend serves from: one volume, mounted at MODEL_DIR
    mounts = {name: {v.split(":")[0]: v.split(":")[1] for v in services[name]["volumes"]} for name in ("labeljudge", "worker")}
    assert mounts["labeljudge"] == mounts["worker"] and backend["MODEL_DIR"] in mounts["worker"].values()
    # the token the backend uses is the one Label Studio is told to create
    assert service_env("label-studio", {})["LABEL_STUDIO_USER_TOKEN"] == backend["LABEL_STUDIO_API_KEY"]
    assert service_env("label-studio", {})["ML_BLOCK_LOCAL_IP"] == "false"  # the backend is on a private network


def test_docker_compose_config_where_the_client_has_compose():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose client here (the docker CLI is present without its compose plugin)")
    out = subprocess.run([docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A service's command as a local process (``labeljudge`` is this checkout's CLI)."""
    if argv[0] == "labeljudge":
        argv = [sys.executable, "-m", "ml_backend.cli", *argv[1:]]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_compose_services_run_the_loop_together(tmp_path, label_studio, ls_api):
    """Label Studio (the session's real one: its token stands in for the compose default), Redis, the
    backend with the image's CMD on gunicorn and the worker with its command, each with its compose
    environment; the shared `models` volume is one folder."""
    volume = tmp_path / "models"
    volume.mkdir()
    backend_port = free_port()
    procs: list[subprocess.Popen] = []
    with redis_server() as redis_url, FakeOpenAI() as fake:
        where = {"label-studio": label_studio.url, "labeljudge": f"http://127.0.0.1:{backend_port}",
                 "redis": redis_url.rsplit("/", 1)[0]}
        # what an operator exports before `docker compose up` (the file passes these through)
        shell = {"LABEL_STUDIO_API_KEY": label_studio.token, "JUDGE_PROVIDER": "openai", "JUDGE_MODEL": "fake-judge",
                 "OPENAI_API_KEY": "sk-test-secret-key-123456", "OPENAI_BASE_URL": fake.url}

        def local_env(name: str) -> dict:
            env = service_env(name, shell)
            for key, value in env.items():  # service hostnames -> the loopback address each process listens on
                for host, url in where.items():
                    scheme = "redis" if host == "redis" else "http"
                    default = {"label-studio": 8080, "labeljudge": 9090, "redis": 6379}[host]
                    value = value.replace(f"{scheme}://{host}:{default}", url)
                env[key] = value
            env["MODEL_DIR"] = str(volume)  # the `models` volume, mounted at /data in both containers
            return {**{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "REDIS_"))},
                    **env, "PRELOAD_MODEL": "false", "TRAIN_EPOCHS": "3", "TRAIN_MAX_LENGTH": "64", "FEW_SHOT_K": "0",
                    "OMP_NUM_THREADS": "1"}  # two torch processes on a small host: a core each

        serve = command("labeljudge")
        serve[serve.index("--port") + 1] = str(backend_port)
        serve[serve.index("--host") + 1] = "127.0.0.1"
        try:
            procs.append(_start(serve, local_env("labeljudge"), tmp_path / "backend.log"))
            procs.append(_start(command("worker"), local_env("worker"), tmp_path / "worker.log"))
            _wait(lambda: _up(where["labeljudge"]), timeout=60, what="the backend on gunicorn")
            project = ls_api.create_project("e2e compose topology", PASS_FAIL)
            tasks = qa_tasks(60, seed=11)
            for t in tasks:  # a cue 3 short epochs learn: this tests the topology, not quality
                t["data"]["output"] = f"{t['data']['output']} TRUTH={t['data']['truth']}"
            ls_api.import_tasks(project, tasks)
            ls_api.connect_backend(project, where["labeljudge"])
            ls_api.retrieve_predictions(project, ls_api.task_ids(project)[:5])  # Label Studio -> /predict
            assert len(ls_api.predictions(project)) == 5
            annotate_all(ls_api, project)  # Label Studio -> /webhook, stored by the backend
            ls_api.client.ml.train(id=ls_api.backends(project)[0].id)  # START_TRAINING -> Redis -> worker
            job = _wait(lambda: [j for j in httpx.get(f"{where['labeljudge']}/jobs?project={project}&kind=train")
                                 .json()["jobs"] if j["status"] in ("finished", "failed")], timeout=600,
                        what="the worker to train")[0]
            assert job["status"] == "finished" and job["result"]["promoted"], (job, _tail(tmp_path / "worker.log"))
            assert ":" in job["progress"]["worker"]  # run by the worker process, not the backend
            assert (volume / "evaluators" / str(project) / "current.json").exists()
            served = _wait(lambda: _predict(where["labeljudge"], project), timeout=30,
                           what="the backend to serve the worker's evaluator")
            assert served.startswith("evaluator-0001"), served
        finally:
            for proc in procs:
                _stop(proc)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _predict(url: str, project: int) -> str | None:
    r = httpx.post(f"{url}/predict", json={"project": project, "tasks": [{"id": 1, "data": qa_tasks(1, seed=9)[0]["data"]}]},
                   timeout=60)
    version = r.json().get("model_version", "")
    return version if version.startswith("evaluator-") else None


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""
