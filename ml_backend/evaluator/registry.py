"""Evaluator versions of a project: ``MODEL_DIR/<project>/<version>/`` plus a ``current.json`` pointer.

A version directory appears only when complete (trained in a temporary directory, then renamed), and
promotion rewrites ``current.json`` with os.replace, so a crash at any point leaves either the old
or the new state, never a half-written one. ``current.json`` keeps the promotion history for rollback.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

VERSION = re.compile(r"^evaluator-(\d{4,})$")


class Registry:
    def __init__(self, root: Path, project: str) -> None:
        self.dir = Path(root) / str(project)
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- versions ----------------------------------------------------------------------------------
    def versions(self) -> list[dict]:
        out = []
        for d in sorted(self.dir.iterdir()):
            if d.is_dir() and VERSION.match(d.name) and (d / "metrics.json").exists():
                out.append({"version": d.name, "path": str(d), **json.loads((d / "metrics.json").read_text())})
        return out

    def path(self, version: str) -> Path:
        p = self.dir / version
        if not VERSION.match(version) or not (p / "metrics.json").exists():
            raise KeyError(f"no evaluator version {version!r} in {self.dir}")
        return p

    def metrics(self, version: str | None) -> dict:
        """A version's metrics.json ({} for no version or an unreadable file: readers show what they can)."""
        if not version:
            return {}
        try:
            return json.loads((self.dir / version / "metrics.json").read_text())
        except (OSError, ValueError):
            return {}

    def staging(self) -> Path:
        """A temporary directory inside the registry (same filesystem, so commit is a rename)."""
        return Path(tempfile.mkdtemp(prefix=".train-", dir=self.dir))

    def commit(self, staging: Path) -> str:
        numbers = [int(m.group(1)) for d in self.dir.iterdir() if (m := VERSION.match(d.name))]
        version = f"evaluator-{(max(numbers) + 1) if numbers else 1:04d}"
        os.replace(staging, self.dir / version)
        return version

    def cleanup_staging(self) -> int:
        """Remove what crashed trainings left behind."""
        stale = [d for d in self.dir.iterdir() if d.name.startswith(".train-")]
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)
        return len(stale)

    # -- the served version ------------------------------------------------------------------------
    def _pointer(self) -> dict:
        p = self.dir / "current.json"
        return json.loads(p.read_text()) if p.exists() else {"current": None, "history": []}

    def current(self) -> str | None:
        return self._pointer()["current"]

    def pointer_mtime(self) -> float:
        p = self.dir / "current.json"
        return p.stat().st_mtime_ns if p.exists() else 0

    def promote(self, version: str, reason: str = "") -> None:
        self.path(version)
        state = self._pointer()
        if state["current"] == version:
            return
        state["history"].append({"version": version, "at": time.time(), "reason": reason,
                                 "previous": state["current"]})
        state["current"] = version
        self._write(state)

    def rollback(self) -> str | None:
        """Serve the previously promoted version again; returns it (None: nothing before)."""
        state = self._pointer()
        previous = state["history"][-1]["previous"] if state["history"] else None
        if previous is None:
            raise KeyError("no earlier promoted version to roll back to")
        state["history"].append({"version": previous, "at": time.time(), "reason": "rollback",
                                 "previous": state["current"]})
        state["current"] = previous
        self._write(state)
        return previous

    def _write(self, state: dict) -> None:
        tmp = self.dir / f".current.{os.getpid()}.json"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.dir / "current.json")
