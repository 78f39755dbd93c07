"""Which Label Studio a command talks to, and, when that fails, the one line that names the real cause.

The flags win over the environment; a running quickstart fills in what neither gives (both, or the key
for the demo's own URL). Each mistake a new user makes (a wrong key, a wrong URL, no scheme, a key
without a URL and the reverse, with the demo running or not) gets its own message; none shows the key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..labelstudio import LabelStudioAPI, api_status, is_labelstudio_error
from ..redact import redact
from .output import UserError, user_message

TOKEN_HELP = "Label Studio: Account & Settings, Access Token"


@dataclass(frozen=True)
class Credentials:
    url: str
    key: str
    url_from: str  # "--url", "LABEL_STUDIO_URL" or "the running demo"
    key_from: str
    demo_url: str | None  # a running quickstart's Label Studio, for the hints


def _origin(value: str | None, env: str, flag: str) -> str:
    return env if value is not None and value == os.environ.get(env) else flag


def _same(a: str, b: str) -> bool:
    return a.rstrip("/").lower().replace("localhost", "127.0.0.1") == b.rstrip("/").lower().replace("localhost", "127.0.0.1")


def resolve(url: str | None, key: str | None, demo: dict | None) -> Credentials:
    """The URL and key to use, or a UserError naming what is missing and why the demo's were not used."""
    url, key = url or None, key or None
    url_from = _origin(url, "LABEL_STUDIO_URL", "--url")
    key_from = _origin(key, "LABEL_STUDIO_API_KEY", "--api-key")
    demo_url = demo["ls_url"] if demo else None
    if url is None and key is None:
        if demo is None:
            raise UserError("no Label Studio to talk to: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or --url and "
                            "--api-key), or start the demo with `labeljudge quickstart` (none is running)")
        return Credentials(demo["ls_url"], demo["token"], "the running demo", "the running demo", demo_url)
    if url is None:
        where = (f"; the running demo's Label Studio is at {demo_url}, but its settings are used only when neither "
                 f"the URL nor the key is given (unset {key_from} to use them)") if demo_url else \
            " (for example http://localhost:8080)"
        raise UserError(f"a Label Studio API key is set ({key_from}) but no URL: set LABEL_STUDIO_URL or --url{where}")
    if not url.lower().startswith(("http://", "https://")):
        raise UserError(f"the Label Studio URL {redact(url)[:80]!r} ({url_from}) has no scheme: use "
                        f"http://{redact(url)[:80]} (or https://)")
    if key is None:
        if demo is not None and _same(url, demo["ls_url"]):
            return Credentials(url, demo["token"], url_from, "the running demo", demo_url)
        raise UserError(f"a Label Studio URL is set ({url_from}: {redact(url)}) but no API key: set "
                        f"LABEL_STUDIO_API_KEY or --api-key ({TOKEN_HELP})")
    return Credentials(url, key, url_from, key_from, demo_url)


def diagnose(exc: BaseException, api: LabelStudioAPI, creds: Credentials) -> str | None:
    """After a command failed talking to Label Studio: the real cause when the URL or the key is it (one
    whoami call tells), else None and the command's own message stands (a project that does not exist).
    Asked only after a failure, so local mistakes (a bad file) are named first and a success costs no call."""
    seen: BaseException | None = exc
    while seen is not None and not is_labelstudio_error(seen):
        seen = seen.__context__
    if seen is None and user_message(exc) is not None:  # the user's own mistake elsewhere (a file, a flag)
        return None
    try:
        check(api, creds)
    except UserError as why:
        return str(why)
    except Exception:
        return None
    return None


def check(api: LabelStudioAPI, creds: Credentials) -> None:
    """One cheap call (whoami), turned into the cause when it fails."""

    url = redact(creds.url)
    elsewhere = f" (the running demo's Label Studio is at {creds.demo_url})" \
        if creds.demo_url and not _same(creds.url, creds.demo_url) else ""
    try:
        api.whoami()
    except Exception as exc:
        _explain(exc, creds, url, elsewhere)


def _explain(exc: Exception, creds: Credentials, url: str, elsewhere: str) -> None:
    import httpx

    status = api_status(exc)
    if status is not None:
        if status in (401, 403):
            if creds.demo_url and _same(creds.url, creds.demo_url) and creds.key_from != "the running demo":
                hint = f"it is not the running demo's token: unset {creds.key_from} to use the demo's"
            else:
                hint = f"copy the token from {TOKEN_HELP}"
            raise UserError(f"Label Studio at {url} refused the API key from {creds.key_from} "
                            f"({status}): {hint}") from None
        raise UserError(f"{url} ({creds.url_from}) answered {status} to Label Studio's API: is it Label "
                        f"Studio's address, not the backend's or another service's?{elsewhere}") from None
    if isinstance(exc, httpx.ConnectError):
        raise UserError(f"nothing answers at {url} ({creds.url_from}): is Label Studio running there?{elsewhere}") \
            from None
    if isinstance(exc, httpx.TimeoutException):
        raise UserError(f"Label Studio at {url} ({creds.url_from}) did not answer in time") from None
    if isinstance(exc, httpx.HTTPError):
        raise UserError(f"could not reach Label Studio at {url} ({creds.url_from}): {type(exc).__name__}") from None
    # a 200 that is not Label Studio's JSON (an HTML page, another API)
    raise UserError(f"{url} ({creds.url_from}) does not answer like Label Studio: is it Label Studio's address, "
                        f"not the backend's or another service's?{elsewhere}") from None
