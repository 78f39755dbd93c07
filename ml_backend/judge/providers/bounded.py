"""Bounds on what one provider reply may cost: its size and its time.

Why a transport wrapper: the ``openai`` client reads a whole reply into memory and its timeout is per
read, so a server that answers 50 MB, or drips a byte every few seconds for minutes, is read to the
end. Wrapped around the HTTP transport, every attempt (retries included) stops at ``max_bytes`` or
at ``deadline`` seconds after it was sent, whichever comes first. Only chat completions are bounded:
a Batch API result file holds every verdict of a run.
"""
from __future__ import annotations

import time
from typing import AsyncIterator, Iterator, TypeVar

try:
    import httpx2 as httpx  # the HTTP library of openai 2.x and later
except ImportError:  # pragma: no cover - openai 1.x
    import httpx  # type: ignore[no-redef]

MAX_REPLY_BYTES = 1 << 20  # 1 MiB: a verdict with a rationale is a few KB; anything near this is not one
BOUNDED_PATH = "/chat/completions"  # one verdict per reply; the Batch API's result files are big by design


def _bounded(request: httpx.Request) -> bool:
    return request.url.path.rstrip("/").endswith(BOUNDED_PATH)


class ReplyTooLarge(httpx.TransportError):
    """The provider's reply passed MAX_REPLY_BYTES; nothing past the bound was read."""


class ReplyTooSlow(httpx.ReadTimeout):
    """The provider's reply did not arrive in full within the per-call deadline (a dripping reply)."""


def _check(read: int, chunk: bytes, max_bytes: int, until: float, request: httpx.Request) -> int:
    read += len(chunk)
    if read > max_bytes:
        raise ReplyTooLarge(f"the provider's reply passed {max_bytes} bytes", request=request)
    if time.monotonic() > until:
        raise ReplyTooSlow("the provider's reply did not arrive in full within the per-call deadline",
                           request=request)
    return read


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, max_bytes: int, until: float, request: httpx.Request) -> None:
        self.inner, self.max_bytes, self.until, self.request = inner, max_bytes, until, request

    def __iter__(self) -> Iterator[bytes]:
        read = 0
        for chunk in self.inner:
            read = _check(read, chunk, self.max_bytes, self.until, self.request)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, max_bytes: int, until: float, request: httpx.Request) -> None:
        self.inner, self.max_bytes, self.until, self.request = inner, max_bytes, until, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = 0
        async for chunk in self.inner:
            read = _check(read, chunk, self.max_bytes, self.until, self.request)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def _declared_too_large(response: httpx.Response, max_bytes: int, request: httpx.Request) -> None:
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ReplyTooLarge(f"the provider's reply is {length} bytes, over the {max_bytes}-byte bound",
                            request=request)


class BoundedTransport(httpx.BaseTransport):
    """A synchronous transport whose replies stop at ``max_bytes`` and ``deadline`` seconds."""

    def __init__(self, inner: httpx.BaseTransport, *, deadline: float, max_bytes: int = MAX_REPLY_BYTES) -> None:
        self.inner, self.deadline, self.max_bytes = inner, deadline, max_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        until = time.monotonic() + self.deadline
        response = self.inner.handle_request(request)
        if not _bounded(request):
            return response
        try:
            _declared_too_large(response, self.max_bytes, request)
        except ReplyTooLarge:
            response.close()
            raise
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_SyncBody(response.stream, self.max_bytes, until, request))  # type: ignore[arg-type]

    def close(self) -> None:
        self.inner.close()


class AsyncBoundedTransport(httpx.AsyncBaseTransport):
    """``BoundedTransport`` for the async clients (httpx's or openai's aiohttp transport)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, deadline: float, max_bytes: int = MAX_REPLY_BYTES) -> None:
        self.inner, self.deadline, self.max_bytes = inner, deadline, max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        until = time.monotonic() + self.deadline
        response = await self.inner.handle_async_request(request)
        if not _bounded(request):
            return response
        try:
            _declared_too_large(response, self.max_bytes, request)
        except ReplyTooLarge:
            await response.aclose()
            raise
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_AsyncBody(response.stream, self.max_bytes, until, request))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self.inner.aclose()


_Client = TypeVar("_Client", httpx.Client, httpx.AsyncClient)


def bound_client(client: _Client, *, deadline: float, max_bytes: int = MAX_REPLY_BYTES) -> _Client:
    """``client`` with its transport wrapped (whatever transport it built: httpx's, aiohttp's)."""
    inner = client._transport  # the transport the client chose; httpx keeps it here
    wrapper = AsyncBoundedTransport if isinstance(client, httpx.AsyncClient) else BoundedTransport
    client._transport = wrapper(inner, deadline=deadline, max_bytes=max_bytes)
    return client
