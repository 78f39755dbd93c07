"""The store's leases: one holder at a time across processes sharing the sqlite file."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from ml_backend.store import Busy, Store

HOST = socket.gethostname()


def test_a_lease_has_one_holder_until_it_is_dropped_or_expires(tmp_path):
    a, b = Store(tmp_path / "s.sqlite3"), Store(tmp_path / "s.sqlite3")  # two connections, as two processes
    me = f"{HOST}:{os.getpid()}"
    assert a.take_lease("label:1", f"{me}:a", ttl=60) is None
    assert b.take_lease("label:1", f"{me}:b", ttl=60) == f"{me}:a"
    assert a.take_lease("label:1", f"{me}:a", ttl=60) is None  # renewing
    assert b.take_lease("label:2", f"{me}:b", ttl=60) is None  # another name is another lease
    a.drop_lease("label:1", f"{me}:b")  # only the holder can drop it
    assert b.take_lease("label:1", f"{me}:b", ttl=60) == f"{me}:a"
    a.drop_lease("label:1", f"{me}:a")
    assert b.take_lease("label:1", f"{me}:b", ttl=60) is None
    assert a.take_lease("label:1", f"{me}:a", ttl=-1) == f"{me}:b"
    b.take_lease("label:1", f"{me}:b", ttl=-1)  # an expired lease (another host's, say) is taken over
    assert a.take_lease("label:1", "other-host:1:a", ttl=60) is None


def test_a_lease_of_a_killed_process_of_this_host_is_taken_over(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert store.take_lease("label:1", f"{HOST}:{gone}:x", ttl=60) is None
    assert store.take_lease("label:1", f"{HOST}:{os.getpid()}:y", ttl=60) is None
    assert store.take_lease("label:1", "elsewhere:1:z", ttl=60) == f"{HOST}:{os.getpid()}:y"


def test_lease_block_raises_busy_naming_the_holder_and_releases_on_exit(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.lease("label:7", "labeling project 7", ttl=0.3):  # renewed every 0.1 s meanwhile
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    try:
        threading.Event().wait(0.5)  # longer than the ttl: only the renewals keep it
        with pytest.raises(Busy, match=rf"labeling project 7 is already running in another process \(pid {os.getpid()}"):
            with store.lease("label:7", "labeling project 7"):
                pass
    finally:
        release.set()
        holder.join()
    with store.lease("label:7", "labeling project 7"):
        pass
