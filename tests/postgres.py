"""Debian's PostgreSQL for the tests: a throwaway cluster in a temporary folder on a free port, run as
the ``postgres`` system user when the tests run as root (PostgreSQL refuses root), always stopped."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ml_backend.labelstudio.local import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """Label Studio's database settings for a fresh cluster: DJANGO_DB and POSTGRE_*. The cluster lives
    in a folder of its own under the system temp dir (pytest's are private to root, which the
    ``postgres`` user cannot enter), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="labeljudge-pg-"))
    data, sock = root / "pgdata", root / "pgsock"
    sock.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port, password = free_port(), "labeljudge-test"
    pwfile = root / "pwfile"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
                                 "-A", "scram-sha-256", "--no-sync"]), check=True, capture_output=True)
    log = root / "postgres.log"
    subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                                 f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"]) + ["start"],
                   check=True, capture_output=True)
    try:
        env = dict(os.environ, PGPASSWORD=password)
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE labelstudio"],
                       check=True, capture_output=True, env=env)
        yield {"DJANGO_DB": "default", "POSTGRE_NAME": "labelstudio", "POSTGRE_USER": "postgres",
               "POSTGRE_PASSWORD": password, "POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": str(port)}
    finally:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
