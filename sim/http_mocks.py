"""respx routes answering our HTTP tools (they use `httpx`, which respx intercepts).

The scenario's router is opened with `assert_all_mocked=True`: an HTTP tool calling a
URL the scenario did not mock fails the call (the tool reports a connection error)
instead of reaching the internet. Timeouts are real: `delay_ms` sleeps inside the
mocked server, so the tool's own `asyncio.timeout` is what cuts the call short.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import respx

from sim.report import Checks, Loc
from sim.scenario import HttpMock


@dataclass
class MockedRoute:
    route: respx.Route
    requests: list[httpx.Request] = field(default_factory=list)
    """Every request that reached the mock, counted on arrival (respx only counts calls
    whose response was delivered, and a timed-out call never gets one)."""


def add_routes(router: respx.MockRouter, mocks: list[HttpMock]) -> list[MockedRoute]:
    routes = []
    for m in mocks:
        parts = urlsplit(m.url)
        route = router.route(method=m.method, scheme=parts.scheme, host=parts.hostname, path=parts.path or "/")
        mocked = MockedRoute(route)
        route.side_effect = _responder(m, mocked.requests)
        routes.append(mocked)
    return routes


def _responder(m: HttpMock, seen: list[httpx.Request]) -> Any:
    async def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if m.delay_ms:
            await asyncio.sleep(m.delay_ms / 1000)
        if m.raise_ == "timeout":
            raise httpx.ReadTimeout("simulated timeout", request=request)
        if m.raise_ == "connect_error":
            raise httpx.ConnectError("simulated connection failure", request=request)
        if m.text is not None:
            return httpx.Response(m.status, text=m.text)
        if m.json_ is not None:
            return httpx.Response(m.status, json=m.json_)
        return httpx.Response(m.status)

    return respond


def check_calls(checks: Checks, loc: Loc, mocks: list[HttpMock], routes: list[MockedRoute]) -> None:
    for i, (m, route) in enumerate(zip(mocks, routes, strict=True)):
        mloc = (*loc, i)
        if m.expect_calls is not None:
            checks.check(len(route.requests) == m.expect_calls, (*mloc, "expect_calls"),
                         f"{m.method} {m.url}: number of calls differs", expected=m.expect_calls, actual=len(route.requests))
        if m.expect_json is None and m.expect_params is None:
            continue
        if not route.requests:
            checks.fail(mloc, f"{m.method} {m.url} was never called", expected="a call", actual="none")
            continue
        request = route.requests[-1]
        if m.expect_json is not None:
            try:
                body = json.loads(request.content or b"null")
            except ValueError:
                body = request.content.decode(errors="replace")
            checks.check(body == m.expect_json, (*mloc, "expect_json"), f"{m.method} {m.url}: request body differs",
                         expected=json.dumps(m.expect_json), actual=json.dumps(body) if not isinstance(body, str) else body)
        if m.expect_params is not None:
            params = dict(request.url.params)
            checks.check(params == m.expect_params, (*mloc, "expect_params"), f"{m.method} {m.url}: query differs",
                         expected=m.expect_params, actual=params)
