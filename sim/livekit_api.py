"""A loopback LiveKit server API (Twirp over HTTP) for tests: the real `livekit-api`
client talks to it through `LIVEKIT_URL`, so the platform's request building, JWTs,
timeouts and error handling all run; only the telephone network is missing.

Every request is decoded with `livekit-protocol`'s own message classes (a request the
real server could not parse fails here too), its bearer JWT is verified with
`api.TokenVerifier` against the configured key and secret and checked for the grant
the method needs, and the decoded message is recorded for the test to inspect.

Answers follow LiveKit: a protobuf body on success; on failure a Twirp JSON error
`{"code", "msg", "meta"}` with the HTTP status Twirp uses for that code. SIP dial
failures carry `meta.sip_status_code` / `meta.sip_status`, which the client turns into
`api.SipCallError`. What a number does is scripted per number:

    async with LoopbackLiveKit() as lk:          # lk.url -> http://127.0.0.1:PORT
        lk.numbers["+15550000486"] = Dial.busy()
        lk.numbers["+15550000480"] = Dial.no_answer()
        lk.trunks = {"ST_out"}                    # others: not_found, like an unknown trunk
        ...
        lk.requests_for("CreateSIPParticipant")  # decoded CreateSIPParticipantRequest list
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError, Message
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import agent_dispatch as ad, models, room, sip

KEY = "loopback-key"
SECRET = "loopback-secret-loopback-secret-0123456789"

TWIRP_STATUS = {
    "invalid_argument": 400, "malformed": 400, "unauthenticated": 401, "permission_denied": 403,
    "not_found": 404, "bad_route": 404, "already_exists": 409, "resource_exhausted": 429,
    "failed_precondition": 412, "internal": 500, "unknown": 500, "unimplemented": 501,
    "unavailable": 503, "deadline_exceeded": 504,
}


@dataclass(frozen=True)
class Dial:
    """What dialling a number does: answer after `delay` seconds, or fail with a SIP status."""

    sip_status_code: int | None = None
    sip_status: str = ""
    code: str = "unavailable"
    delay: float = 0.0

    @classmethod
    def answer(cls, delay: float = 0.0) -> Dial:
        return cls(delay=delay)

    @classmethod
    def busy(cls) -> Dial:
        return cls(486, "Busy Here")

    @classmethod
    def no_answer(cls) -> Dial:
        return cls(480, "Temporarily Unavailable")

    @classmethod
    def timeout(cls) -> Dial:
        return cls(408, "Request Timeout", code="deadline_exceeded")

    @classmethod
    def rejected(cls) -> Dial:
        return cls(603, "Decline")

    @classmethod
    def failed(cls) -> Dial:
        return cls(500, "Server Internal Error", code="internal")


@dataclass(frozen=True)
class Recorded:
    service: str
    method: str
    message: Message
    claims: Claims
    headers: dict[str, str]


class TwirpError(Exception):
    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.meta = code, msg, meta or {}


Grant = Callable[[Claims, Message], str | None]
"""Why the token may not make this request (None: it may)."""


def _room_admin(claims: Claims, msg: Message) -> str | None:
    video = claims.video
    if video is None or not video.room_admin:
        return "needs the roomAdmin grant"
    room_name = getattr(msg, "room", "") or getattr(msg, "room_name", "")
    if video.room and room_name and video.room != room_name:
        return f"token is for room {video.room!r}"
    return None


def _room_create(claims: Claims, msg: Message) -> str | None:
    return None if claims.video is not None and claims.video.room_create else "needs the roomCreate grant"


def _sip_call(claims: Claims, msg: Message) -> str | None:
    return None if claims.sip is not None and claims.sip.call else "needs the sip.call grant"


def _sip_admin(claims: Claims, msg: Message) -> str | None:
    return None if claims.sip is not None and claims.sip.admin else "needs the sip.admin grant"


def _both(*checks: Grant) -> Grant:
    def check(claims: Claims, msg: Message) -> str | None:
        for c in checks:
            why = c(claims, msg)
            if why:
                return why
        return None

    return check


METHODS: dict[tuple[str, str], tuple[type[Message], Grant]] = {
    ("livekit.RoomService", "CreateRoom"): (room.CreateRoomRequest, _room_create),
    ("livekit.RoomService", "DeleteRoom"): (room.DeleteRoomRequest, _room_create),
    ("livekit.AgentDispatchService", "CreateDispatch"): (ad.CreateAgentDispatchRequest, _room_admin),
    ("livekit.AgentDispatchService", "DeleteDispatch"): (ad.DeleteAgentDispatchRequest, _room_admin),
    ("livekit.SIP", "CreateSIPParticipant"): (sip.CreateSIPParticipantRequest, _sip_call),
    ("livekit.SIP", "TransferSIPParticipant"): (sip.TransferSIPParticipantRequest, _both(_room_admin, _sip_call)),
    ("livekit.SIP", "ListSIPOutboundTrunk"): (sip.ListSIPOutboundTrunkRequest, _sip_admin),
}


@dataclass
class LoopbackLiveKit:
    """The server; `async with` starts it on a free loopback port."""

    key: str = KEY
    secret: str = SECRET
    trunks: set[str] = field(default_factory=lambda: {"ST_outbound"})
    numbers: dict[str, Dial | list[Dial]] = field(default_factory=dict)
    """Per dialled number (a list: one per attempt, the last repeating); not listed: answers at once."""
    transfers: dict[str, Dial] = field(default_factory=dict)
    """Per transfer target (`tel:+1…` or `sip:…`); not listed: the transfer succeeds."""
    fail_next: dict[str, TwirpError] = field(default_factory=dict)
    """Method name -> an error its next call answers (once)."""
    requests: list[Recorded] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(method, why) of requests refused before they were decoded or authorised."""
    rooms: dict[str, room.CreateRoomRequest] = field(default_factory=dict)
    dispatches: dict[str, ad.AgentDispatch] = field(default_factory=dict)
    participants: dict[str, sip.SIPParticipantInfo] = field(default_factory=dict)
    """Live SIP participants by identity (a deleted room drops its own)."""
    in_flight: int = 0
    max_in_flight: int = 0
    """Most dials ringing at once (concurrency caps are checked with it)."""
    double_dials: list[str] = field(default_factory=list)
    """Numbers dialled while a dial to them was still ringing (must stay empty)."""
    _ringing: set[str] = field(default_factory=set)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    url: str = ""

    async def __aenter__(self) -> LoopbackLiveKit:
        app = web.Application()
        app.router.add_post("/twirp/{svc}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def threaded(self) -> Iterator[LoopbackLiveKit]:
        """Serve from a thread with its own event loop: for callers whose client blocks
        the test's loop (Litestar's test client runs the app in a portal thread)."""
        ready = threading.Event()
        stop: list[asyncio.AbstractEventLoop | asyncio.Event] = []

        async def serve() -> None:
            async with self:
                halt = asyncio.Event()
                stop.extend([asyncio.get_running_loop(), halt])
                ready.set()
                await halt.wait()

        thread = threading.Thread(target=asyncio.run, args=(serve(),), name="loopback-livekit", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the loopback LiveKit server did not start")
        try:
            yield self
        finally:
            loop, halt = stop
            assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(halt, asyncio.Event)
            loop.call_soon_threadsafe(halt.set)
            thread.join(10)

    # --------------------------------------------------------------- inspecting

    def requests_for(self, method: str) -> list[Any]:
        return [r.message for r in self.requests if r.method == method]

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    # ----------------------------------------------------------------- serving

    async def _handle(self, request: web.Request) -> web.Response:
        svc, method = request.match_info["svc"], request.match_info["method"]
        try:
            spec = METHODS.get((svc, method))
            if spec is None:
                raise TwirpError("bad_route", f"no handler for {svc}/{method}")
            if request.headers.get("Content-Type") != "application/protobuf":
                raise TwirpError("malformed", "content type must be application/protobuf")
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                raise TwirpError("unauthenticated", "no bearer token")
            try:
                claims = api.TokenVerifier(self.key, self.secret).verify(auth.removeprefix("Bearer "))
            except Exception as e:
                raise TwirpError("unauthenticated", f"invalid token: {type(e).__name__}") from None
            cls, grant = spec
            try:
                msg = cls.FromString(await request.read())
            except DecodeError:
                raise TwirpError("malformed", f"body is not a {cls.__name__}") from None
            why = grant(claims, msg)
            if why:
                raise TwirpError("permission_denied", why)
        except TwirpError as e:
            self.rejected.append((method, e.msg))
            return self._error(e)
        self.requests.append(Recorded(svc, method, msg, claims, dict(request.headers)))
        try:
            pending = self.fail_next.pop(method, None)
            if pending is not None:
                raise pending
            reply = await getattr(self, f"_{method}")(msg)
        except TwirpError as e:
            return self._error(e)
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")

    @staticmethod
    def _error(e: TwirpError) -> web.Response:
        body: dict[str, Any] = {"code": e.code, "msg": e.msg}
        if e.meta:
            body["meta"] = e.meta
        return web.json_response(body, status=TWIRP_STATUS.get(e.code, 500))

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    async def _CreateRoom(self, msg: room.CreateRoomRequest) -> models.Room:
        if not msg.name:
            raise TwirpError("invalid_argument", "room name is required")
        self.rooms.setdefault(msg.name, msg)
        return models.Room(sid=self._id("RM"), name=msg.name, metadata=msg.metadata,
                           empty_timeout=msg.empty_timeout)

    async def _DeleteRoom(self, msg: room.DeleteRoomRequest) -> room.DeleteRoomResponse:
        if msg.room not in self.rooms:
            raise TwirpError("not_found", "requested room does not exist")
        del self.rooms[msg.room]
        for d in [d for d in self.dispatches.values() if d.room == msg.room]:
            del self.dispatches[d.id]
        for ident in [i for i, p in self.participants.items() if p.room_name == msg.room]:
            del self.participants[ident]
        return room.DeleteRoomResponse()

    async def _CreateDispatch(self, msg: ad.CreateAgentDispatchRequest) -> ad.AgentDispatch:
        if not msg.room:
            raise TwirpError("invalid_argument", "room is required")
        d = ad.AgentDispatch(id=self._id("AD"), agent_name=msg.agent_name, room=msg.room, metadata=msg.metadata)
        self.dispatches[d.id] = d
        return d

    async def _DeleteDispatch(self, msg: ad.DeleteAgentDispatchRequest) -> ad.AgentDispatch:
        d = self.dispatches.pop(msg.dispatch_id, None)
        if d is None:
            raise TwirpError("not_found", "dispatch not found")
        return d

    async def _ListSIPOutboundTrunk(self, msg: sip.ListSIPOutboundTrunkRequest) -> sip.ListSIPOutboundTrunkResponse:
        return sip.ListSIPOutboundTrunkResponse(
            items=[sip.SIPOutboundTrunkInfo(sip_trunk_id=t, name=t) for t in sorted(self.trunks)])

    async def _CreateSIPParticipant(self, msg: sip.CreateSIPParticipantRequest) -> sip.SIPParticipantInfo:
        if msg.sip_trunk_id not in self.trunks:
            raise TwirpError("not_found", "requested sip trunk does not exist")
        if not msg.sip_call_to:
            raise TwirpError("invalid_argument", "missing sip_call_to")
        if msg.room_name not in self.rooms:
            # LiveKit would create it; the platform always creates it first, so a dial
            # into a room nobody created is a bug worth failing loudly here
            raise TwirpError("failed_precondition", f"room {msg.room_name!r} was not created first")
        scripted = self.numbers.get(msg.sip_call_to, Dial.answer())
        if isinstance(scripted, list):  # one per attempt; the last one repeats
            plan = scripted.pop(0) if len(scripted) > 1 else scripted[0]
        else:
            plan = scripted
        if msg.sip_call_to in self._ringing:
            self.double_dials.append(msg.sip_call_to)
        self._ringing.add(msg.sip_call_to)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(plan.delay)
        finally:
            self.in_flight -= 1
            self._ringing.discard(msg.sip_call_to)
        if plan.sip_status_code is not None:
            raise TwirpError(plan.code, f"sip call failed: {plan.sip_status_code} {plan.sip_status}", {
                "sip_status_code": str(plan.sip_status_code), "sip_status": plan.sip_status})
        identity = msg.participant_identity or f"sip_{msg.sip_call_to}"
        info = sip.SIPParticipantInfo(participant_id=self._id("PA"), participant_identity=identity,
                                      room_name=msg.room_name, sip_call_id=self._id("SCL"))
        self.participants[identity] = info
        return info

    async def _TransferSIPParticipant(self, msg: sip.TransferSIPParticipantRequest) -> sip.TransferSIPParticipantResponse:
        p = self.participants.get(msg.participant_identity)
        if p is None or p.room_name != msg.room_name:
            raise TwirpError("not_found", "participant not found")
        plan = self.transfers.get(msg.transfer_to)
        if plan is not None and plan.sip_status_code is not None:
            raise TwirpError(plan.code, f"transfer failed: {plan.sip_status_code} {plan.sip_status}", {
                "sip_status_code": str(plan.sip_status_code), "sip_status": plan.sip_status,
                "sip_transfer_reason": "STR_REJECTED"})
        del self.participants[msg.participant_identity]  # the caller left for the new party
        return sip.TransferSIPParticipantResponse(
            transfer_id=self._id("ST"), status=sip.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL,
            reason=sip.SIPTransferReason.STR_COMPLETED, sip_status=sip.SIPStatus(code=200, status="OK"))


@contextlib.asynccontextmanager
async def loopback_livekit(**kw: Any) -> Any:
    async with LoopbackLiveKit(**kw) as server:
        yield server
