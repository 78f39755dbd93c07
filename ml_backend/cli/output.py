"""What the CLI shows: one JSON document for --json (library chatter kept off stdout), and one line
for an error the user can fix."""
from __future__ import annotations

import json
import os
import sys

from ..io import TableError
from ..labelstudio import describe_error, is_labelstudio_error
from ..redact import redact
from ..settings import ConfigError
from ..store import Busy

_json_out = None


def json_stdout():
    """Where a --json command writes its one document: the real stdout, which library chatter (an
    onnxruntime print, a warning) cannot reach while the command runs (see ``quiet_stdout``)."""
    return _json_out or sys.stdout


class quiet_stdout:
    """For --json commands: file descriptor 1 points at stderr while the command runs, so whatever a
    library prints (C extensions included) lands there; the JSON goes to the saved real stdout."""

    def __enter__(self):
        global _json_out
        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)
        _json_out = os.fdopen(os.dup(self._saved), "w")
        self._py = sys.stdout
        sys.stdout = sys.stderr
        return self

    def __exit__(self, *exc) -> None:
        global _json_out
        sys.stdout = self._py
        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        if _json_out is not None:
            _json_out.close()
        _json_out = None


class UserError(Exception):
    """Something the user must fix; printed without a traceback."""


def emit_json(value: object) -> None:
    """The one JSON document a --json command leaves on stdout (see quiet_stdout)."""
    stream = json_stdout()
    stream.write(json.dumps(value, default=str) + "\n")
    stream.flush()


def user_message(exc: BaseException) -> str | None:
    """The one line to print for an error the user can fix (exit status 2), or None for our own bug."""
    if isinstance(exc, (UserError, TableError, ConfigError, Busy)):
        return redact(str(exc))
    if is_labelstudio_error(exc):
        return redact(describe_error(exc))
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"cannot read {exc.filename}: {exc.strerror}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text: {exc.reason}"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return None
