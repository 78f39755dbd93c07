"""Training on RQ workers against a real Redis (Debian's redis-server on a free port) and a real Label
Studio: Start Training queues the run, a `labeljudge worker` in another process sharing MODEL_DIR
trains it, and the backend then serves the new version; a worker SIGKILLed mid-run leaves the registry
and the served version untouched and its job failed with a reason; with Redis down, webhooks are still
acknowledged and stored, and the run is queued once Redis is back."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from ml_backend.labelstudio.local import free_port

from .conftest import CONFIGS, ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_e2e_evaluator import annotate_all, qa_tasks
from .test_e2e_labelstudio import _wait

pytestmark = pytest.mark.e2e
PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()


@contextmanager
def redis_server(port: int | None = None):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/setup.sh installs Debian's)")
    port = port or free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from redis import Redis

        deadline = time.time() + 10
        while True:
            try:
                Redis(port=port, socket_connect_timeout=0.5).ping()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def worker(env: dict, burst: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "worker", *(["--burst"] if burst else [])],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.fixture
def rq_project(tmp_path, ls_api, label_studio):
    """A Label Studio project with 80 human labels and a backend that queues training on Redis."""
    with redis_server() as redis_url, FakeOpenAI() as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  REDIS_URL=redis_url, TRAIN_EVERY="0", TRAIN_EPOCHS="3", TRAIN_MAX_LENGTH="64",
                                  FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e rq", PASS_FAIL)
            tasks = qa_tasks(80, seed=5)
            for t in tasks:  # a cue a 2-core CPU learns in 3 short epochs: this tests the plumbing, not quality
                t["data"]["output"] = f"{t['data']['output']} TRUTH={t['data']['truth']}"
            ls_api.import_tasks(project, tasks)
            ls_api.connect_backend(project, srv.url)
            annotate_all(ls_api, project)
            env = dict(os.environ, MODEL_DIR=str(settings.model_dir), LABEL_STUDIO_URL=label_studio.url,
                       LABEL_STUDIO_API_KEY=label_studio.token, REDIS_URL=redis_url, TRAIN_EPOCHS="3",
                       TRAIN_MAX_LENGTH="64", PRELOAD_MODEL="false", JUDGE_PROVIDER="openai",
                       OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="sk-test-secret-key-123456", JUDGE_MODEL="fake-judge",
                       # several workers on one small host: a core each, as the scaling guide says (torch's
                       # default of every core per process makes them spin against each other)
                       OMP_NUM_THREADS="1")
            yield {"srv": srv, "project": project, "env": env, "redis_url": redis_url}


def _train_job(srv, project: int) -> dict:
    return _wait(lambda: httpx.get(f"{srv.url}/jobs?project={project}&kind=train").json()["jobs"], what="a train job")[0]


def test_start_training_is_run_by_a_worker_process_and_the_backend_serves_it(rq_project, ls_api, tmp_path,
                                                                             monkeypatch):
    srv, project, env = rq_project["srv"], rq_project["project"], rq_project["env"]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this process's MlflowClient, reading it back
    # the worker logs its run to MLflow (a real file store): the environment alone switches it on
    mlruns = (tmp_path / "mlruns").as_uri()
    env = dict(env, MLFLOW_TRACKING_URI=mlruns, MLFLOW_ALLOW_FILE_STORE="true")
    ls_api.client.ml.train(id=ls_api.backends(project)[0].id)
    job = _train_job(srv, project)
    assert job["status"] == "queued"  # nobody trains in the backend's process
    time.sleep(1)
    assert httpx.get(f"{srv.url}/jobs/{job['id']}").json()["status"] == "queued"
    out = worker(env)
    out.wait(600)
    assert out.returncode == 0, out.stdout.read()[-2000:]
    done = httpx.get(f"{srv.url}/jobs/{job['id']}").json()
    assert done["status"] == "finished" and done["result"]["promoted"], done["result"]
    from mlflow import MlflowClient

    tracked = done["result"]["tracking"]["mlflow"]
    run = MlflowClient(mlruns).get_run(tracked["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == f"project-{project}-binary"
    assert run.data.metrics["accuracy"] == pytest.approx(done["result"]["accuracy"])
    version = _wait(lambda: srv.backend.state(project).version.startswith("evaluator-0001")
                    and srv.backend.state(project).version, what="the backend to serve the new version")
    r = httpx.post(f"{srv.url}/predict", json={"project": project, "tasks": [
        {"id": 1, "data": qa_tasks(1, seed=9)[0]["data"]}]})
    assert r.json()["results"][0]["model_version"] == version


def test_a_worker_killed_mid_training_leaves_the_served_version_and_fails_its_job(rq_project, ls_api):
    srv, project, env = rq_project["srv"], rq_project["project"], rq_project["env"]
    ls_api.client.ml.train(id=ls_api.backends(project)[0].id)
    job = _train_job(srv, project)
    proc = worker(env, burst=False)
    _wait(lambda: httpx.get(f"{srv.url}/jobs/{job['id']}").json()["status"] == "running", timeout=120,
          what="the worker to start training")
    time.sleep(2)
    import psutil

    # the worker and its work horse (RQ runs each job in a forked child with a process group of its
    # own): what an out-of-memory kill or a lost machine does to a training run
    horses = psutil.Process(proc.pid).children(recursive=True)
    assert horses, "RQ forks a work horse per job"
    for p in [psutil.Process(proc.pid), *horses]:
        p.send_signal(signal.SIGKILL)
    proc.wait()
    registry = srv.backend.evaluators.registry(str(project))
    assert registry.current() is None and srv.backend.state(project).version.startswith("judge-")
    # the next worker to start marks the dead worker's job failed, with the reason
    out = worker(env)
    out.wait(120)
    failed = httpx.get(f"{srv.url}/jobs/{job['id']}").json()
    assert failed["status"] == "failed" and "died before it finished" in failed["error"], (failed["progress"], out.stdout.read()[-600:])


def test_with_redis_down_webhooks_are_acknowledged_and_training_is_queued_when_it_is_back(tmp_path, ls_api, label_studio):
    port = free_port()
    with FakeOpenAI() as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  REDIS_URL=f"redis://127.0.0.1:{port}/0", TRAIN_EVERY="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e rq down", PASS_FAIL)
            ls_api.import_tasks(project, qa_tasks(6, seed=4))
            ls_api.connect_backend(project, srv.url)
            annotate_all(ls_api, project)  # Label Studio's webhooks arrive while Redis is down
            _wait(lambda: len(srv.backend.store.annotations(str(project))) == 6, what="the annotations to be stored")
            r = httpx.post(f"{srv.url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}})
            assert r.status_code == 201
            job = _train_job(srv, project)
            _wait(lambda: "Redis" in str(httpx.get(f"{srv.url}/jobs/{job['id']}").json()["progress"].get("waiting_for")),
                  what="the job to say it waits for Redis")
            with redis_server(port):
                from redis import Redis
                from rq import Queue

                queue = Queue("labeljudge", connection=Redis(port=port))
                _wait(lambda: queue.count == 1, timeout=30, what="the run to be queued once Redis is back")
                assert queue.jobs[0].args[0] == project


def test_two_workers_train_two_projects_at_once_and_one_project_one_run_at_a_time(rq_project, ls_api):
    """Start Training twice on project A and once on B, two worker processes: A's runs never overlap
    (the second waits for the project's lease, saying so), B trains beside one of them, every run ends
    finished, and the backend serves both projects' evaluators."""
    srv, a, env = rq_project["srv"], rq_project["project"], rq_project["env"]
    b = ls_api.create_project("e2e rq second project", PASS_FAIL)
    tasks = qa_tasks(80, seed=6)
    for t in tasks:
        t["data"]["output"] = f"{t['data']['output']} TRUTH={t['data']['truth']}"
    ls_api.import_tasks(b, tasks)
    ls_api.connect_backend(b, srv.url)
    annotate_all(ls_api, b)
    for project in (a, a, b):
        assert httpx.post(f"{srv.url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}).status_code == 201
    _wait(lambda: len(httpx.get(f"{srv.url}/jobs?kind=train").json()["jobs"]) == 3, what="three queued runs")
    workers = [worker(env), worker(env)]
    seen_waiting = False
    deadline = time.time() + 900
    while any(w.poll() is None for w in workers) and time.time() < deadline:
        jobs = httpx.get(f"{srv.url}/jobs?kind=train").json()["jobs"]
        seen_waiting |= any("waiting_for" in (j["progress"] or {}) for j in jobs)
        time.sleep(0.3)
    for w in workers:
        assert w.wait(10) == 0, w.stdout.read()[-2000:]
    jobs = httpx.get(f"{srv.url}/jobs?kind=train").json()["jobs"]
    assert [j["status"] for j in jobs] == ["finished"] * 3, [(j["status"], j["error"]) for j in jobs]
    runs = {p: sorted((j["result"]["started_at"], j["result"]["finished_at"]) for j in jobs if j["project_id"] == str(p))
            for p in (a, b)}
    (a1, a2), (b1,) = runs[a], runs[b]
    assert a1[1] <= a2[0], f"project {a}'s two runs overlapped: {runs[a]}"
    assert any(b1[0] < end and start < b1[1] for start, end in runs[a]), f"B never trained beside A: {runs}"
    assert seen_waiting, "the second run of A never said it waited for the first"
    # each job runs in a work horse RQ forks for it, so three runs name three processes
    assert len({j["progress"]["worker"] for j in jobs}) == 3
    for project in (a, b):
        _wait(lambda: srv.backend.state(project).version.startswith("evaluator-"), timeout=30,
              what=f"project {project} to serve its evaluator")


def test_labeling_jobs_go_through_rq_and_workers_label_two_projects(rq_project, ls_api):
    """With REDIS_URL, POST /jobs/label queues the job (the backend's process labels nothing: a restart
    cannot lose it), a second request for the same project answers with the queued job, and two worker
    processes label two projects; every task gets exactly one prediction."""
    srv, a, env = rq_project["srv"], rq_project["project"], rq_project["env"]
    b = ls_api.create_project("e2e rq labeling second project", PASS_FAIL)
    ls_api.import_tasks(b, qa_tasks(50, seed=8))
    ls_api.connect_backend(b, srv.url)
    first = httpx.post(f"{srv.url}/jobs/label", json={"project": a}).json()
    again = httpx.post(f"{srv.url}/jobs/label", json={"project": a}).json()
    other = httpx.post(f"{srv.url}/jobs/label", json={"project": b}).json()
    assert first["id"] == again["id"] != other["id"] and first["status"] == "queued"
    from redis import Redis
    from rq import Queue

    assert Queue("labeljudge", connection=Redis.from_url(rq_project["redis_url"])).count == 2
    time.sleep(1)
    assert httpx.get(f"{srv.url}/jobs/{first['id']}").json()["status"] == "queued"  # nobody labels in the backend
    workers = [worker(env), worker(env)]
    for w in workers:
        assert w.wait(600) == 0, w.stdout.read()[-2000:]
    for job, project, n in ((first, a, 80), (other, b, 50)):
        done = httpx.get(f"{srv.url}/jobs/{job['id']}").json()
        assert done["status"] == "finished" and done["result"]["labeled"] == n, done
        assert done["progress"]["worker"].split(":")[1] != str(os.getpid())
        per_task = {}
        for p in ls_api.predictions(project):
            per_task[p.task] = per_task.get(p.task, 0) + 1
        assert len(per_task) == n and set(per_task.values()) == {1}
