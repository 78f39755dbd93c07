"""One holder at a time across the processes that share this store."""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from .base import Busy, StoreBase, _owner_alive

log = logging.getLogger(__name__)


class Leases(StoreBase):
    # -- leases: one holder at a time across the processes that share this store -----------------
    def take_lease(self, name: str, owner: str, ttl: float) -> str | None:
        """Take or renew ``name`` for ``owner`` until ``ttl`` seconds from now. Returns None when
        ``owner`` holds it, else the holder. A lease past its expiry, or held by a process of this host
        that no longer exists (killed), is taken over."""
        now = time.time()
        with self._tx() as db:  # one statement: atomic between processes
            db.execute("INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, "
                       "expires=excluded.expires WHERE leases.owner=excluded.owner OR leases.expires<?",
                       (name, owner, now + ttl, now))
        holder = self._conn().execute("SELECT owner FROM leases WHERE name=?", (name,)).fetchone()["owner"]
        if holder == owner:
            return None
        if not _owner_alive(holder):
            with self._tx() as db:  # take it from the dead holder only if nobody else did meanwhile
                db.execute("UPDATE leases SET owner=?, expires=? WHERE name=? AND owner=?",
                           (owner, now + ttl, name, holder))
            return self.take_lease(name, owner, ttl)
        return holder

    def lease_held(self, name: str) -> bool:
        """Whether a live process holds ``name`` now (one read; a killed holder's lease counts as free)."""
        row = self._conn().execute("SELECT owner, expires FROM leases WHERE name=?", (name,)).fetchone()
        return row is not None and row["expires"] >= time.time() and _owner_alive(row["owner"])

    def drop_lease(self, name: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE name=? AND owner=?", (name, owner))

    @contextmanager
    def lease(self, name: str, what: str, ttl: float = 60.0) -> Iterator[None]:
        """Hold ``name`` for the block, renewed in the background every ``ttl``/3 seconds; raises
        Busy, naming the holder, when another live process holds it."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        holder = self.take_lease(name, owner, ttl)
        if holder is not None:
            host, pid = holder.split(":")[:2]
            raise Busy(f"{what} is already running in another process (pid {pid} on {host}); it holds the "
                       f"lock until it ends, or {ttl:.0f} s after it was killed on another host")
        done = threading.Event()

        def renew() -> None:
            while not done.wait(ttl / 3):
                if self.take_lease(name, owner, ttl) is not None:
                    log.error("lost the lock on %s to another process", what)
                    return

        keeper = threading.Thread(target=renew, name=f"labeljudge-lease-{name}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()
            self.drop_lease(name, owner)

    @contextmanager
    def waiting_lease(self, name: str, what: str, *, timeout: float = 3600.0, poll: float = 2.0,
                      on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """``lease``, but while another process holds it, wait (``on_wait(why)`` each time) instead of
        raising Busy; Busy only after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            held = self.lease(name, what)
            try:
                held.__enter__()
                break
            except Busy as exc:
                if time.monotonic() > deadline:
                    raise
                if on_wait is not None:
                    on_wait(str(exc))
                time.sleep(poll)
        try:
            yield
        except BaseException:
            if not held.__exit__(*sys.exc_info()):
                raise
        else:
            held.__exit__(None, None, None)
