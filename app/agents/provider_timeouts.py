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
in-process scripted endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

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
        wait = min(lim.connect_s + lim.first_byte_s, lim.total_s)
        try:
            async with asyncio.timeout(wait):
                response = await self._inner.handle_async_request(request)
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no response within {wait:g}s", request=request) from None
        response.stream = _LimitedStream(response.stream, lim.first_byte_s, deadline, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


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
