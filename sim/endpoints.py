"""The sim's scripted OpenAI-compatible servers, addressed as agents address providers.

Agents in the sim are built exactly as in production: every LLM/STT/TTS member gets its
own client from the factory (its base URL, its timeouts). Only the network is replaced
(connecting is instant; a request is reported sent, through httpcore's `trace`
extension, before the scripted delay, so a member's first-byte limit counts from there):
the factory is given `SimEndpoints` as the transport under those clients, and it routes
each request by the host of its URL to a named endpoint (`endpoints:` in a scenario; any
host not named there is `default`, which is where an agent without a `base_url` goes).

Each endpoint answers chat completions from its own script (`FakeOpenAI`, one per
endpoint, fed by the scenario's `llm` replies tagged with `endpoint:`; all of them
record requests into one list, in arrival order) and audio requests from the session's
voice fake. Its behaviour is scripted too: `down` refuses connections (as a closed port
does: LiveKit sees a connection error), `delay_ms` holds each answer back (a slow
provider: the member's own timeouts cut it), `fail_status` answers every chat request
with that HTTP error (captured, like any request; its other requests, such as the
plugin's warm-up `GET /models`, fail uncaptured), `honour_cap: false` ignores reply caps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import httpx2

from sim.fake_openai import FakeOpenAI
from sim.scenario import DEFAULT_ENDPOINT, EndpointSpec

_ROUTES = ("transcriptions", "speech", "chat")


class SimEndpoints(httpx2.AsyncBaseTransport):
    def __init__(
        self,
        chat: Callable[[str], FakeOpenAI],
        *,
        audio: FakeOpenAI | None = None,
        specs: Mapping[str, EndpointSpec] | None = None,
    ) -> None:
        """`chat(name)`: the fake scripting endpoint `name`'s chat completions; `audio`:
        the fake answering `/audio/*` on every endpoint (voice sessions)."""
        self._chat = chat
        self._audio = audio
        self.specs: dict[str, EndpointSpec] = dict(specs or {})
        self.refused: list[str] = []
        """Endpoint names of the requests refused because the endpoint was down."""

    def name_for(self, host: str) -> str:
        return host if host in self.specs and host != DEFAULT_ENDPOINT else DEFAULT_ENDPOINT

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        name = self.name_for(request.url.host)
        spec = self.specs.get(name) or EndpointSpec()
        if spec.down:
            self.refused.append(name)
            raise httpx2.ConnectError(f"connection refused by {name} (scripted: down)", request=request)
        trace = request.extensions.get("trace")
        if trace is not None:  # as httpcore reports it: the request reached the server
            await trace("http11.send_request_body.complete", {})
        path = request.url.path
        route = next((r for r in _ROUTES if r in path), None)
        delay_ms = getattr(spec.delay_ms, route) if route is not None else 0
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        await request.aread()
        if spec.fail_status is not None and "/audio/" not in path:
            if route == "chat":
                return self._chat(name).fail(request, spec.fail_status)
            # anything else (the plugin's warm-up GET /models): failing too, but no chat request
            return httpx2.Response(spec.fail_status, json={"error": {"message": f"scripted failure ({spec.fail_status})"}})
        if "/audio/" in path:
            if self._audio is None:
                return httpx2.Response(404, json={"error": {"message": f"no audio endpoint for {path}"}})
            return self._audio.handle(request)
        fake = self._chat(name)
        fake.honour_cap = spec.honour_cap
        return fake.handle(request)

    async def aclose(self) -> None:
        """Shared by every client of the session: nothing to close per client."""
