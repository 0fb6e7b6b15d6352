"""A real HTTP/1.1 webhook receiver on loopback, for tests and benchmarks, that can
misbehave on purpose: answer with scripted statuses, stall before answering, trickle
its body, send a huge body, redirect, or be down (stopped and restarted on its port).

Every request is recorded with its headers, body and arrival time, so a test can
verify signatures with a real Standard Webhooks library and count what arrived.

    async with WebhookReceiver() as rx:         # rx.url -> http://127.0.0.1:PORT/hook
        rx.script = [500, 500]                   # then 200 for the rest
        ...
        await rx.wait_for(3, timeout=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.db_servers import free_port


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """`time.monotonic()` when the body was complete."""
    wall: float
    """`time.time()` then (for latency across processes)."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Behaviour:
    """What to do with one request: answer `status` after `delay` seconds; `trickle`:
    send the body one byte per `trickle` seconds; `body_bytes`: a body of that size;
    `hang`: never answer; `location`: a Location header (redirects)."""

    status: int = 200
    delay: float = 0.0
    trickle: float = 0.0
    body_bytes: int = 2
    hang: bool = False
    location: str | None = None


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    path: str = "/hook"
    script: list[int | Behaviour] = field(default_factory=list)
    """Consumed one per request; when empty, `default` answers."""
    default: Behaviour = field(default_factory=Behaviour)
    decide: Callable[[Received], Behaviour | None] | None = None
    """Optional: choose per request (after `script`)."""
    received: list[Received] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None
    _arrived: asyncio.Condition | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        self._arrived = self._arrived or asyncio.Condition()
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        """Stop listening and drop open connections (the receiver is down)."""
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, n: int, timeout: float, pred: Callable[[Received], bool] | None = None) -> list[Received]:
        """Wait until `n` requests (matching `pred`) arrived; TimeoutError with what did."""
        assert self._arrived is not None
        deadline = time.monotonic() + timeout

        def matching() -> list[Received]:
            return [r for r in self.received if pred is None or pred(r)]

        async with self._arrived:
            while len(matching()) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(matching())} of {n} webhook request(s) arrived in {timeout}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
        return matching()

    def _behaviour(self, req: Received) -> Behaviour:
        if self.script:
            item = self.script.pop(0)
            return item if isinstance(item, Behaviour) else Behaviour(status=item)
        if self.decide is not None and (b := self.decide(req)) is not None:
            return b
        return self.default

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Received(method, path, headers, body, time.monotonic(), time.time())
                b = self._behaviour(req)
                self.received.append(req)
                assert self._arrived is not None
                async with self._arrived:
                    self._arrived.notify_all()
                if b.hang:
                    await asyncio.sleep(3600)
                if b.delay:
                    await asyncio.sleep(b.delay)
                extra = f"Location: {b.location}\r\n" if b.location else ""
                writer.write((f"HTTP/1.1 {b.status} X\r\nContent-Length: {b.body_bytes}\r\n{extra}"
                              "Content-Type: text/plain\r\n\r\n").encode())
                if b.trickle:
                    for _ in range(b.body_bytes):
                        writer.write(b"x")
                        await writer.drain()
                        await asyncio.sleep(b.trickle)
                else:
                    chunk = b"x" * min(b.body_bytes, 1 << 20)
                    left = b.body_bytes
                    while left > 0:
                        writer.write(chunk[:left])
                        left -= len(chunk)
                        await writer.drain()
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:  # the receiver stopped under a held request: just close
            return
        finally:
            self._conns.discard(writer)
            writer.close()


async def _serve_forever(ports: list[int]) -> None:
    """`python -m sim.webhook_receiver PORT...`: receivers answering 200 in a process of
    their own (benchmarks: their work must not run on the measured process); on SIGTERM
    prints how many requests arrived."""
    import signal

    receivers = [WebhookReceiver(port=p) for p in ports]
    for rx in receivers:
        await rx.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for rx in receivers:
        await rx.stop()
    print(sum(len(rx.received) for rx in receivers), flush=True)


if __name__ == "__main__":
    import sys

    asyncio.run(_serve_forever([int(p) for p in sys.argv[1:]]))
