"""Start and stop a real local Label Studio (its own venv) for the quickstart and the e2e tests.

The first start on an empty data dir runs ~60 s of migrations; the migrated dir is then kept as a
template (1-2 MB) and copied for later starts, which take ~6 s.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LS_VERSION = "1.23.2"
DEFAULT_USER = "admin@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cache_root() -> Path:
    return Path(os.environ.get("LABELJUDGE_CACHE") or Path.home() / ".cache" / "labeljudge")


def find_ls_venv(root: Path | None = None) -> Path:
    """The venv holding Label Studio: $LABEL_STUDIO_VENV, else .venv-ls beside the project."""
    env = os.environ.get("LABEL_STUDIO_VENV")
    candidates = [Path(env)] if env else []
    candidates += [(root or Path.cwd()) / ".venv-ls", Path(__file__).resolve().parents[1] / ".venv-ls"]
    for venv in candidates:
        if (venv / "bin" / "label-studio").exists():
            return venv
    raise FileNotFoundError("Label Studio is not installed: run scripts/setup.sh (it makes .venv-ls) "
                            "or set LABEL_STUDIO_VENV")


FAST_PREDICTION_IMPORT = "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"


@dataclass
class LocalLabelStudio:
    data_dir: Path
    venv: Path
    port: int = 0
    username: str = DEFAULT_USER
    password: str = ""
    token: str = ""
    log_path: Path | None = None
    # Label Studio's database settings (DJANGO_DB=default, POSTGRE_*: PostgreSQL, as production runs
    # it); empty: its own sqlite in data_dir
    database: dict[str, str] = field(default_factory=dict, repr=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _credentials(self) -> None:
        creds = self.data_dir / "labeljudge_credentials.json"
        if creds.exists():
            saved = json.loads(creds.read_text())
        else:
            saved = {"username": self.username, "password": self.password or secrets.token_urlsafe(12),
                     "token": self.token or secrets.token_hex(20)}
            self.data_dir.mkdir(parents=True, exist_ok=True)
            creds.write_text(json.dumps(saved))
            creds.chmod(0o600)
        self.username, self.password, self.token = saved["username"], saved["password"], saved["token"]

    def start(self, timeout: float = 180.0) -> LocalLabelStudio:
        template = cache_root() / f"ls-template-{LS_VERSION}"
        fresh = not (self.data_dir / "label_studio.sqlite3").exists() and not self.database
        if fresh and (template / "label_studio.sqlite3").exists():
            shutil.copytree(template, self.data_dir, dirs_exist_ok=True)
            fresh = False
        self._credentials()
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("USERNAME", "PASSWORD", "HOST", "PORT")}
        env.update(LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir), ML_BLOCK_LOCAL_IP="false",
                   SSRF_PROTECTION_ENABLED="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="",
                   COLLECT_ANALYTICS="false", LATEST_VERSION_CHECK="false",
                   LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
                   # credentials through the environment: a command line is visible to every local user
                   LABEL_STUDIO_USERNAME=self.username, LABEL_STUDIO_PASSWORD=self.password,
                   LABEL_STUDIO_USER_TOKEN=self.token, **self.database)
        # Label Studio 1.23.2's default prediction import recounts every task of the project on each
        # request (1 prediction into a project holding 1,000: 0.87 s); its own flag limits the
        # recount to the imported tasks (0.06 s). The environment may still turn it off.
        env.setdefault(FAST_PREDICTION_IMPORT, "true")
        cmd = [str(self.venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), "--enable-legacy-api-token"]
        log = open(self.log_path or self.data_dir / "label_studio.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(timeout)
        if fresh:
            self._save_template(template)
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode}; see {self.data_dir}/label_studio.log")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "UP":
                    # the port is ours only if the API accepts our token (LS moves to port+1 when busy)
                    me = httpx.get(f"{self.url}/api/current-user/whoami",
                                   headers={"Authorization": f"Token {self.token}"}, timeout=5)
                    if me.status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s")

    def _save_template(self, template: Path) -> None:
        tmp = template.with_name(template.name + f".tmp{os.getpid()}")
        try:
            shutil.copytree(self.data_dir, tmp, ignore=shutil.ignore_patterns("*.log", "media", "export"))
            if not template.exists():
                tmp.rename(template)
        except OSError:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
