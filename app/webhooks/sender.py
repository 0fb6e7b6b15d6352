"""One delivery attempt: a signed POST to the checked address, bounded in every way.

- the host is resolved and checked here (`safety.resolve_checked`) and the request goes
  to that address, naming the host in `Host` and TLS SNI: no second lookup to rebind;
- one total deadline covers connecting, sending and reading the answer, so a receiver
  that trickles its body cannot hold a slot; at most `max_response_bytes` are read;
- redirects are not followed (a 3xx is a failed attempt, retried like any other);
- proxies from the environment are ignored (they would connect to a name, not the
  checked address).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.domain.events import Event
from app.domain.webhooks import StoredWebhook
from app.webhooks.safety import UnsafeDestination, UrlPolicy, resolve_checked
from app.webhooks.signing import signed_headers

USER_AGENT = "voice-platform-webhooks/1"
MAX_ERROR_CHARS = 300


def envelope(event: Event) -> bytes:
    """The Standard Webhooks payload: `{"type", "timestamp", "data"}`. Keys sorted, so the
    same frozen event always gives the same bytes, whichever backend stored it."""
    doc = {"type": event.type, "timestamp": event.at.isoformat().replace("+00:00", "Z"), "data": event.data}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def _snippet(raw: bytes) -> str:
    text = raw[:MAX_ERROR_CHARS].decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


async def tls_context() -> ssl.SSLContext:
    """The CA bundle, loaded once and off the event loop: loading it takes tens of ms,
    which every `httpx.AsyncClient()` would otherwise spend on the loop that carries calls."""
    return await asyncio.to_thread(httpx.create_ssl_context)


def new_client(connect_timeout: float, total_timeout: float, tls: ssl.SSLContext) -> httpx.AsyncClient:
    """A client for ONE endpoint: its pooled connections all carry that endpoint's host
    (a pool keyed by address could reuse a TLS session negotiated for another name)."""
    return httpx.AsyncClient(
        verify=tls, follow_redirects=False, trust_env=False,
        timeout=httpx.Timeout(total_timeout, connect=connect_timeout),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=8),
    )


async def attempt(
    client: httpx.AsyncClient, hook: StoredWebhook, event: Event, policy: UrlPolicy, *,
    total_timeout: float, connect_timeout: float, max_response_bytes: int, secrets: list[str],
) -> Outcome:
    body = envelope(event)
    deadline = time.monotonic() + total_timeout
    try:
        async with asyncio.timeout(total_timeout):
            dest = await resolve_checked(hook.url, policy, timeout=connect_timeout)
            parts = urlsplit(hook.url)
            host = f"[{dest.ip}]" if ":" in dest.ip else dest.ip
            target = urlunsplit((parts.scheme, f"{host}:{dest.port}", parts.path or "/", parts.query, ""))
            headers = {"content-type": "application/json", "user-agent": USER_AGENT, "host": parts.netloc,
                       **signed_headers(secrets, event.id, int(time.time()), body)}
            extensions = {"sni_hostname": dest.host} if dest.https else {}
            request = client.build_request("POST", target, content=body, headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                kept = bytearray()
                async for chunk in response.aiter_raw():
                    kept += chunk[: max(0, max_response_bytes - len(kept))]
                    if len(kept) >= max_response_bytes:
                        break  # enough: the rest is dropped with the connection
            finally:
                await response.aclose()
    except UnsafeDestination as e:
        return Outcome(None, f"refused by the URL policy: {e}")
    except TimeoutError:
        spent = total_timeout - max(0.0, deadline - time.monotonic())
        return Outcome(None, f"timed out after {spent:.1f}s")
    except httpx.ConnectError as e:
        return Outcome(None, f"connection failed: {str(e)[:200] or type(e).__name__}")
    except (httpx.HTTPError, OSError) as e:
        return Outcome(None, f"{type(e).__name__}: {str(e)[:200]}")
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(code)
    what = f"HTTP {code}"
    if 300 <= code < 400:
        what += " (redirects are not followed)"
    snippet = _snippet(bytes(kept))
    return Outcome(code, f"{what}: {snippet}" if snippet else what)
