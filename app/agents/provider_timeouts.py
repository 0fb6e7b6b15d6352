"""Per-provider timeouts, enforced on the HTTP client each provider's plugin is given.

Why here: the OpenAI plugins put one number on every request (LiveKit's per-attempt
`conn_options.timeout`, or a fixed 30 s read for audio), the same for every provider of
a session. A fallback chain needs each member cut on its own terms: a local model may
take 20 s to prefill a long prompt where a hosted one gets 5 s. `TimeoutTransport` wraps
the provider's transport and applies its `connect_s`, first-byte (first token) and
`total_s` limits to every request, whatever the plugin asked for. An expired limit
raises httpx's own timeout exceptions, which the plugins turn into LiveKit's
`APITimeoutError`: LiveKit's `FallbackAdapter` then moves to the next provider.

The limits are enforced with asyncio around the inner transport too (not only as
httpcore's socket timeouts), so they hold for any transport, including the sim's
in-process scripted endpoints; the first-byte limit runs from the moment the request
went out, which httpcore reports through its `trace` extension.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2


@dataclass(frozen=True)
class Limits:
    """One provider's limits in seconds: opening the connection, the wait for the first
    byte of the response (and for each later chunk), the whole exchange."""

    connect_s: float
    first_byte_s: float
    total_s: float


class TimeoutTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, limits: Limits) -> None:
        self._inner = inner
        self.limits = limits

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        lim = self.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lim.total_s
        # what httpcore enforces on real sockets; the plugin's own value is replaced
        request.extensions["timeout"] = {
            "connect": lim.connect_s, "read": lim.first_byte_s, "write": lim.first_byte_s, "pool": lim.connect_s,
        }
        sent = asyncio.Event()
        _watch_sent(request, sent)
        attempt = asyncio.ensure_future(self._inner.handle_async_request(request))
        try:
            response = await _respond(attempt, sent, lim, deadline, request)
        except BaseException:
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # an async transport's response
        response.stream = _LimitedStream(response.stream, lim.first_byte_s, deadline, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _watch_sent(request: httpx2.Request, sent: asyncio.Event) -> None:
    """Set `sent` once the request has gone out (httpcore's `trace` extension reports
    it; so does the sim's scripted network): the first-byte limit runs from then."""
    previous = request.extensions.get("trace")

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith("send_request_body.complete"):
            sent.set()
        if previous is not None:
            await previous(name, info)

    request.extensions["trace"] = trace


async def _respond(
    attempt: asyncio.Future[httpx2.Response], sent: asyncio.Event, lim: Limits, deadline: float, request: httpx2.Request
) -> httpx2.Response:
    """The response headers: the connection and the request within `connect_s` (plus
    `first_byte_s` to send the body), then the first byte within `first_byte_s` of the
    request going out, all within `total_s`. A transport that does not report sending
    (in-process ones) gets both limits at once."""
    loop = asyncio.get_running_loop()
    went_out: asyncio.Future[object] = asyncio.ensure_future(sent.wait())
    try:
        first = min(lim.connect_s + lim.first_byte_s, deadline - loop.time())
        pending: set[asyncio.Future[Any]] = {attempt, went_out}
        done, _ = await asyncio.wait(pending, timeout=first, return_when=asyncio.FIRST_COMPLETED)
        if attempt in done:
            return attempt.result()
        if not done:
            raise httpx2.ConnectTimeout(f"no connection within {lim.connect_s:g}s", request=request)
        wait = min(lim.first_byte_s, deadline - loop.time())
        answered, _ = await asyncio.wait({attempt}, timeout=max(wait, 0))
        if not answered:
            raise httpx2.ReadTimeout(f"no response within {lim.first_byte_s:g}s of the request", request=request)
        return attempt.result()
    finally:
        went_out.cancel()


class _LimitedStream(httpx2.AsyncByteStream):
    """The response body, each chunk within `gap_s` and all of it before `deadline`."""

    def __init__(self, inner: httpx2.AsyncByteStream, gap_s: float, deadline: float, request: httpx2.Request) -> None:
        self._inner = inner
        self._gap = gap_s
        self._deadline = deadline
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        chunks = self._inner.__aiter__()
        while True:
            left = self._deadline - loop.time()
            if left <= 0:
                raise httpx2.ReadTimeout("response exceeded its total time limit", request=self._request)
            try:
                async with asyncio.timeout(min(self._gap, left)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                what = "total time limit" if self._gap >= left else f"{self._gap:g}s between chunks"
                raise httpx2.ReadTimeout(f"response stalled ({what})", request=self._request) from None
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
