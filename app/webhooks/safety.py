"""Where a webhook may be sent: the URL policy, checked when an endpoint is written and
again, on the resolved addresses, at every delivery.

Why twice: a hostname that resolved to a public address when the endpoint was created
can resolve to 127.0.0.1 or 169.254.169.254 a minute later (DNS rebinding), and a
delivery would then carry our signed payload to an internal service. So a delivery
resolves the host itself, refuses if ANY address is forbidden, and connects to the
address it checked (the request names the host only in `Host` and TLS SNI), never
resolving again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXTRA_FORBIDDEN = [ipaddress.ip_network(n) for n in (
    "100.64.0.0/10",  # carrier-grade NAT (not `is_private` in Python 3.11)
    "192.0.0.0/24",  # IETF protocol assignments
    "198.18.0.0/15",  # benchmarking
    "fd00:ec2::254/128",  # AWS IMDS over IPv6 (inside fc00::/7 too; named for the reader)
)]
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "metadata.azure.internal"})


class UnsafeDestination(ValueError):
    """The URL, or an address its host resolves to, is refused by the policy."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    public_only: bool
    """https only, and no loopback, private, link-local, metadata or otherwise internal address."""
    allow_loopback: bool = False
    """Under `public_only`: loopback receivers (also over http) are allowed anyway."""

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls(public_only=settings.webhooks_public_only, allow_loopback=settings.webhook_allow_loopback)


def address_problem(ip: IPAddress, policy: UrlPolicy) -> str | None:
    """Why `policy` refuses to connect to `ip`, or None."""
    if not policy.public_only:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if policy.allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_private or any(ip in net for net in _EXTRA_FORBIDDEN if net.version == ip.version):
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public unicast address"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def url_problem(url: str, policy: UrlPolicy) -> str | None:
    """What the policy refuses in the URL itself (scheme, literal address, internal
    names), without resolving it; None if nothing."""
    if not policy.public_only:
        return None
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    ip = _literal(host)
    loopback = (ip is not None and (ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address)
                                                       and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback))
                ) or host == "localhost" or host.endswith(".localhost")
    if loopback and policy.allow_loopback:
        return None
    if parts.scheme.lower() != "https":
        return "must use https"
    if ip is not None:
        why = address_problem(ip, policy)
        return f"points at {why}" if why else None
    if loopback:
        return "points at a loopback address"
    if host in _METADATA_HOSTS or "." not in host or host.endswith((".internal", ".local", ".lan", ".home.arpa")):
        return "names an internal host"
    return None


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked place to connect to: the address, and the host the URL named."""

    ip: str
    port: int
    host: str
    https: bool


async def resolve_checked(url: str, policy: UrlPolicy, *, timeout: float = 5.0) -> Destination:
    """Resolve the URL's host and check every address; the first one is where to connect.
    `UnsafeDestination` if the policy refuses the URL or any address it resolves to."""
    if (why := url_problem(url, policy)) is not None:
        raise UnsafeDestination(f"URL {why}")
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    literal = _literal(host)
    if literal is not None:
        ips: list[IPAddress] = [literal]
    else:
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise OSError(f"resolving {host!r} timed out") from None
        ips = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        if not ips:
            raise OSError(f"{host!r} did not resolve")
    for ip in ips:
        if (why := address_problem(ip, policy)) is not None:
            raise UnsafeDestination(f"{host} resolves to {why} ({ip})")
    return Destination(ip=str(ips[0]), port=port, host=host, https=https)
