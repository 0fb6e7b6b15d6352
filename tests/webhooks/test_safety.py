"""The URL policy: which addresses `start` refuses, and that a delivery connects to the
address it checked (a resolver that changes its answer — DNS rebinding — gets one
question per attempt, and its first answer is where the request goes)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from app.domain.webhooks import DeliveryStatus
from app.webhooks.safety import UnsafeDestination, UrlPolicy, address_problem, resolve_checked, url_problem
from tests.webhooks.conftest import subscribe
from tests.webhooks.test_dispatcher import wait_status

PUBLIC = UrlPolicy(public_only=True)
LOOPBACK_OK = UrlPolicy(public_only=True, allow_loopback=True)
ANY = UrlPolicy(public_only=False)


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "10.1.2.3", "172.31.0.1", "192.168.0.1", "169.254.169.254",
                                "fe80::1", "fc00::1", "100.64.1.1", "0.0.0.0", "::", "224.0.0.5", "::ffff:10.0.0.1",
                                "::ffff:127.0.0.1", "198.18.0.1", "240.0.0.1", "192.0.0.8"])
def test_internal_addresses_are_refused(ip):
    assert address_problem(ipaddress.ip_address(ip), PUBLIC) is not None


@pytest.mark.parametrize("ip", ["93.184.215.14", "2606:4700::6810:84e5", "8.8.8.8"])
def test_public_addresses_pass(ip):
    assert address_problem(ipaddress.ip_address(ip), PUBLIC) is None


def test_loopback_exception_and_dev_policy():
    assert address_problem(ipaddress.ip_address("127.0.0.1"), LOOPBACK_OK) is None
    assert address_problem(ipaddress.ip_address("10.0.0.1"), LOOPBACK_OK) is not None
    assert url_problem("http://127.0.0.1:8080/x", LOOPBACK_OK) is None
    assert url_problem("http://example.com/x", LOOPBACK_OK) == "must use https"
    assert url_problem("http://10.0.0.1/x", ANY) is None


def _fake_resolver(answers: list[str], calls: list[str]):
    async def getaddrinfo(host, port, *a, **k):
        calls.append(host)
        ip = answers[min(len(calls) - 1, len(answers) - 1)]
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(fam, socket.SOCK_STREAM, 6, "", (ip, port))]

    return getaddrinfo


async def test_a_name_that_resolves_inside_is_refused(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", _fake_resolver(["93.184.215.14", "127.0.0.1"], calls))
    dest = await resolve_checked("https://hooks.example.com/x", PUBLIC)
    assert dest.ip == "93.184.215.14" and dest.host == "hooks.example.com" and dest.port == 443
    with pytest.raises(UnsafeDestination, match="loopback"):
        await resolve_checked("https://hooks.example.com/x", PUBLIC)  # rebound


async def test_any_forbidden_address_among_several_refuses(monkeypatch):
    async def two(host, port, *a, **k):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.9", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two)
    with pytest.raises(UnsafeDestination, match="private"):
        await resolve_checked("https://hooks.example.com/x", PUBLIC)


async def test_delivery_connects_to_the_checked_address_with_the_host_named(store, receiver, dispatcher_factory,
                                                                             monkeypatch):
    """The resolver answers loopback (where the receiver is) the first time and a private
    address after: the request arrives (first answer, one lookup per attempt) with
    `Host` naming the URL's host, not the address."""
    calls: list[str] = []
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", _fake_resolver(["127.0.0.1", "10.9.9.9"], calls))
    url = f"http://rebind.test:{receiver.port}/hook"
    hook = await subscribe(store, url, ["session.started"])
    dispatcher_factory()
    from app.domain import SessionRecord

    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (req,) = await receiver.wait_for(1, timeout=5)
    assert req.headers["host"] == f"rebind.test:{receiver.port}"
    assert calls == ["rebind.test"]
    await wait_status(store, hook.id, DeliveryStatus.succeeded, 1)


async def test_a_rebound_name_is_refused_at_delivery(store, receiver, dispatcher_factory, monkeypatch):
    """Created while it resolved to a public address; by delivery time it points at
    loopback, and the public policy refuses to send there."""
    calls: list[str] = []
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", _fake_resolver(["127.0.0.1"], calls))
    hook = await subscribe(store, f"https://rebind.test:{receiver.port}/hook", ["session.started"])
    dispatcher_factory(webhook_url_policy="public", webhook_retry_window=0.5)
    from app.domain import SessionRecord

    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (d,) = await wait_status(store, hook.id, DeliveryStatus.failed, 1, timeout=10)
    assert "refused by the URL policy" in (d.last_error or "") and "loopback" in (d.last_error or "")
    assert receiver.received == []
