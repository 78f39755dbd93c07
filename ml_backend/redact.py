"""The one choke point for secrets: every error message, failure reason, job result and log line that
LabelJudge writes passes through ``redact``.

Why one process-wide registry: a secret can reach text from anywhere (a provider that echoes the
Authorization header back in its reply, an SDK exception that quotes a request), and the places that
write text (the store, the HTTP error handler, the log) cannot each know every secret. Settings
register the configured secrets once; providers register the keys they were built with; the log
record factory installed here redacts every record before any handler formats it.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# Shapes that are secrets whatever their value: API keys, bearer tokens, Basic credentials, session
# cookies. The key-like shape follows OpenAI/HF/Groq-style prefixes (sk-..., hf_...).
_SHAPES = re.compile(
    r"(?P<key>\b(?:sk|pk|rk|hf|gsk|key)[-_][A-Za-z0-9_\-*]{6,})"
    r"|(?P<auth>\b(?:Bearer|Basic|Token)\s+)(?P<cred>[A-Za-z0-9._~+/=\-]{6,})"
    r"|(?P<cookie>\b(?:sessionid|csrftoken)=)(?P<cval>[^;\s,'\"]+)"
    # a URL's user-info (https://user:password@host): the password, whatever it is
    r"|(?P<userinfo>\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)(?P<upass>[^@\s/]+)(?=@)",
    re.IGNORECASE,
)


def register(*secrets: str | None) -> None:
    """Treat these values as secrets from now on (values shorter than 4 characters are ignored:
    masking "ab" everywhere would garble text without protecting anything)."""
    global _pattern
    fresh = {s for s in secrets if isinstance(s, str) and len(s) >= 4} - _secrets
    if not fresh:
        return
    with _lock:
        _secrets.update(fresh)
        # longest first, so a secret that contains another is masked whole
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def url_passwords(*urls: str | None) -> list[str]:
    """The passwords in URLs' user-info (``https://user:pass@host``), raw and percent-decoded, so a
    base URL's credentials are secrets wherever they show up, not only in URL shape."""
    from urllib.parse import unquote, urlsplit

    out = []
    for url in urls:
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            continue
        if password:
            out += [password, unquote(password)]
    return out


def redact(text: Any) -> str:
    """``text`` as a string with every registered secret and every secret-shaped token masked."""
    out = text if isinstance(text, str) else str(text)
    pattern = _pattern
    if pattern is not None:
        out = pattern.sub(MASK, out)
    return _SHAPES.sub(_mask_shape, out)


def redact_obj(value: Any) -> Any:
    """``redact`` applied to every string inside a JSON-like value (job results, progress)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v) for v in value]
    return value


def _mask_shape(m: re.Match[str]) -> str:
    if m.group("key"):
        return m.group("key").split("-", 1)[0].split("_", 1)[0] + "-" + MASK
    if m.group("auth"):
        return m.group("auth") + MASK
    if m.group("userinfo"):
        return m.group("userinfo") + MASK
    return m.group("cookie") + MASK


_installed = False


def install_log_redaction() -> None:
    """Redact every log record at creation, whatever logger or handler it goes to (ours, gunicorn's,
    a library's): the message is rendered once, redacted, and its arguments dropped."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw text rather than lose the line
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            # the traceback text is formatted later by the handler: render it now, redacted
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)


install_log_redaction()
