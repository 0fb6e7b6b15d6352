"""Keys a phone caller presses reach the agent as one user input.

LiveKit's SIP service reports each key as a `sip_dtmf_received` room event
(`rtc.SipDTMF`). Keys arrive one by one, so they are buffered: `#` ends the input (it is
not part of it), and so does a pause of `pause_s` after the last key (callers often
skip `#`). The input reaches the agent as the user turn ``"(keypad) 1 2 3 4"`` — LiveKit's
own `format_dtmf` spelling with a prefix that tells the model these are keys, not
speech. A buffer of `MAX_DIGITS` keys is submitted at once (a stuck key cannot grow it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc

log = logging.getLogger(__name__)

TERMINATOR = "#"
PREFIX = "(keypad)"
MAX_DIGITS = 32
KEYS = frozenset("0123456789*#ABCD")


def keypad_text(digits: str) -> str:
    """The user input for `digits`, as the agent sees it."""
    return f"{PREFIX} {' '.join(digits)}"


class DtmfInput:
    """Buffers key presses and submits them as one user input (see the module docstring).

    `submit` gets the text; in a room it is `session.generate_reply(user_input=...)`, in
    the sim `session.run(user_input=...)`. `submitted` holds the submissions' tasks in
    order, so a caller (the sim) can wait for the turn a key press started.
    """

    def __init__(self, submit: Callable[[str], Awaitable[Any]], *, pause_s: float = 2.0) -> None:
        self._submit = submit
        self.pause_s = pause_s
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self.submitted: asyncio.Queue[asyncio.Task[Any]] = asyncio.Queue()
        self._room: rtc.Room | None = None

    def attach(self, room: rtc.Room) -> DtmfInput:
        self._room = room
        room.on("sip_dtmf_received", self.on_dtmf)
        return self

    def detach(self) -> None:
        if self._room is not None:
            self._room.off("sip_dtmf_received", self.on_dtmf)
            self._room = None
        self._cancel_timer()
        self._digits.clear()

    def on_dtmf(self, ev: rtc.SipDTMF) -> None:
        """A room event handler: never raises, ignores anything that is not a key."""
        digit = ev.digit if isinstance(ev.digit, str) else ""
        if digit not in KEYS or len(digit) != 1:
            log.debug("ignoring DTMF event with digit %r (code %r)", digit[:4], ev.code)
            return
        if digit == TERMINATOR:
            self.flush()
            return
        self._digits.append(digit)
        if len(self._digits) >= MAX_DIGITS:
            self.flush()
            return
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(self.pause_s, self.flush)

    def flush(self) -> None:
        """Submit what was pressed so far (nothing if nothing was)."""
        self._cancel_timer()
        if not self._digits:
            return
        digits, self._digits = "".join(self._digits), []
        task = asyncio.ensure_future(self._run(keypad_text(digits)))
        self.submitted.put_nowait(task)

    async def _run(self, text: str) -> Any:
        result = self._submit(text)
        return await result if isinstance(result, Awaitable) else result

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
