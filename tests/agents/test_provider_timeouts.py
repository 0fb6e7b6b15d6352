"""`TimeoutTransport`: one provider's connect / first-byte / total limits, over a real
loopback server (httpcore's sockets) and over an in-process transport alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
import uvicorn

from app.agents.provider_timeouts import Limits, TimeoutTransport
from sim.db_servers import free_port

App = Callable[..., Any]


def streaming_app(*, first_after: float, gap: float, chunks: int) -> App:
    """Answers after `first_after` s, then sends `chunks` chunks `gap` s apart."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(first_after)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await asyncio.sleep(gap)
        await send({"type": "http.response.body", "body": b""})

    return app


@contextlib.asynccontextmanager
async def served(app: App) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=0.2))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await task


async def fetch(url: str, limits: Limits, inner: httpx2.AsyncBaseTransport | None = None) -> tuple[bytes, float]:
    transport = TimeoutTransport(inner or httpx2.AsyncHTTPTransport(), limits)
    async with httpx2.AsyncClient(transport=transport, timeout=60) as client:  # the client's own 60 s is overridden
        t0 = time.perf_counter()
        r = await client.get(url)
        return r.content, time.perf_counter() - t0


async def test_a_response_within_its_limits_passes() -> None:
    async with served(streaming_app(first_after=0.05, gap=0.05, chunks=4)) as url:
        body, _ = await fetch(url, Limits(connect_s=1, first_byte_s=1, total_s=5))
    assert body == b"xxxx"


async def test_no_first_byte_within_the_limit_is_a_timeout() -> None:
    async with served(streaming_app(first_after=3, gap=0, chunks=1)) as url:
        t0 = time.perf_counter()
        with pytest.raises(httpx2.TimeoutException):
            await fetch(url, Limits(connect_s=1, first_byte_s=0.3, total_s=10))
        assert time.perf_counter() - t0 < 1.5


async def test_a_stream_that_stalls_between_chunks_is_a_timeout() -> None:
    async with served(streaming_app(first_after=0, gap=2, chunks=3)) as url:
        with pytest.raises(httpx2.ReadTimeout):
            await fetch(url, Limits(connect_s=1, first_byte_s=0.3, total_s=10))


async def test_a_stream_that_never_ends_is_cut_at_the_total_limit() -> None:
    """Each chunk comes quickly, so only the total limit can end it."""
    async with served(streaming_app(first_after=0, gap=0.05, chunks=1000)) as url:
        t0 = time.perf_counter()
        with pytest.raises(httpx2.ReadTimeout, match="total time limit"):
            await fetch(url, Limits(connect_s=1, first_byte_s=0.5, total_s=0.6))
        assert 0.5 < time.perf_counter() - t0 < 2.0


async def test_limits_hold_for_an_in_process_transport_and_reach_httpcore() -> None:
    """An in-process transport (no sockets) still gets the limits (connect and first byte
    at once: it reports no sending); a network transport is handed them as httpcore's
    per-request timeouts."""
    seen: list[dict[str, float]] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.extensions["timeout"])
        await asyncio.sleep(2)
        return httpx2.Response(200, content=b"late")

    t0 = time.perf_counter()
    with pytest.raises(httpx2.ConnectTimeout):
        await fetch("http://fake/", Limits(connect_s=0.2, first_byte_s=0.25, total_s=9), httpx2.MockTransport(handler))
    assert time.perf_counter() - t0 < 1.0
    assert seen == [{"connect": 0.2, "read": 0.25, "write": 0.25, "pool": 0.2}]


async def test_the_first_byte_limit_runs_from_when_the_request_went_out() -> None:
    """A slow connection (2.5 s, within connect_s) then a quick answer passes; the
    first-byte limit (0.3 s) is counted from the send httpcore reports, not the start."""

    async def handler(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(0.6)  # connecting
        await request.extensions["trace"]("http11.send_request_body.complete", {})
        await asyncio.sleep(0.1)  # the server thinks
        return httpx2.Response(200, content=b"ok")

    body, took = await fetch("http://fake/", Limits(connect_s=1, first_byte_s=0.3, total_s=9), httpx2.MockTransport(handler))
    assert body == b"ok" and took >= 0.7

    async def slow_server(request: httpx2.Request) -> httpx2.Response:
        await request.extensions["trace"]("http11.send_request_body.complete", {})
        await asyncio.sleep(2)
        return httpx2.Response(200, content=b"late")

    t0 = time.perf_counter()
    with pytest.raises(httpx2.ReadTimeout):
        await fetch("http://fake/", Limits(connect_s=5, first_byte_s=0.3, total_s=9), httpx2.MockTransport(slow_server))
    assert time.perf_counter() - t0 < 1.0  # 0.3 s, not connect_s + first_byte_s
