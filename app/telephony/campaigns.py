"""The campaign runner: dials the due contacts of every running campaign.

Every `dev`/`start` process with LiveKit configured runs one; any number may share a
store. A contact is dialled only under a lease the store hands out with a conditional
write (`claim_contacts`), so two runners never dial one contact at once, and at most a
campaign's `concurrency` contacts are being dialled at a time. The lease outlasts a dial
(ring timeout plus margin); a runner that dies mid-dial leaves its contacts to be taken
over when their leases run out (that dial may then be repeated: the call was placed,
its outcome was never stored). All state is in the store, so a restart picks up where
the last process stopped, and a paused campaign's contacts are simply not claimed.

Per claimed contact: outside calling hours in the contact's time zone it goes back,
unattempted, due when the window next opens; otherwise it is dialled (`Dialer.place`)
and its outcome decides: answered is done, busy/no-answer is tried again after
`retry_delay_s` until `max_attempts`, anything else is failed. LiveKit being
unreachable costs no attempt (the contact is due again shortly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from app.background import stop_task
from app.domain import StoreUnavailable
from app.domain.calls import CallOutcome, Campaign, ContactStatus, after_attempt
from app.domain.errors import WrongState
from app.domain.events import ChangeContext
from app.domain.values import utcnow
from app.settings import Settings
from app.store.base import ConfigStore
from app.store.call_service import ClaimedContact
from app.telephony.outbound import CallPlan, Dialer, LiveKitUnavailable

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 30.0
"""Beyond the ring timeout: the room and dispatch requests, and writing the outcome."""
OUTAGE_RETRY_S = 30.0
"""A contact LiveKit could not take (unreachable) is due again after this."""


class CampaignRunner:
    def __init__(self, settings: Settings, store: ConfigStore, *, owner: str, dialer: Dialer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.owner = owner
        self.dialer = dialer or Dialer(settings)
        self.lease_s = settings.call_ring_timeout + LEASE_MARGIN_S
        self._calls: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="campaign-runner")

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Stop claiming; dials ringing now get `grace_s` to finish, then are cancelled
        (their leases run out and another runner, or the next start, tries them again)."""
        task, self._task = self._task, None
        if task is not None:  # bounded: a round in flight may swallow the cancel (app.background)
            await stop_task(task, "campaign runner")
        if self._calls:
            _, pending = await asyncio.wait(self._calls, timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self) -> None:
        while self._task is asyncio.current_task():  # until `aclose` lets go of it
            try:
                await self.run_once()
            except StoreUnavailable as e:
                log.warning("campaign runner: store unavailable (%s); trying again", e.message)
            except Exception:
                log.exception("campaign runner: a round failed; trying again")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.campaign_poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self) -> int:
        """One round: start dials for every running campaign's due contacts; mark
        campaigns with nothing left to do completed. Returns how many dials started."""
        started = 0
        for campaign in await self.store.running_campaigns():
            claims = await self.store.claim_contacts(campaign, self.owner, lease_s=self.lease_s,
                                                     limit=campaign.concurrency)
            for claim in claims:
                task = asyncio.create_task(self._attempt(campaign, claim), name=f"campaign-call-{campaign.id}")
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
                started += 1
            if not claims:
                await self._complete_if_done(campaign)
        return started

    async def idle(self) -> None:
        """Until the dials started so far have finished (tests, shutdown)."""
        while self._calls:
            await asyncio.gather(*list(self._calls), return_exceptions=True)

    async def _complete_if_done(self, campaign: Campaign) -> None:
        progress = (await self.store.get_campaign(campaign.id)).progress.by_status
        if progress.get(ContactStatus.pending.value, 0) or progress.get(ContactStatus.dialing.value, 0):
            return
        with contextlib.suppress(WrongState):  # paused, cancelled or completed meanwhile
            await self.store.change_campaign(campaign.id, "completed")
            log.info("campaign %s completed", campaign.id)

    async def _attempt(self, campaign: Campaign, claim: ClaimedContact) -> None:
        contact = claim.contact
        now = self._now()
        opens = campaign.calling_hours.next_open(now, contact.timezone)
        if opens is not None:
            await self.store.release_contact(claim, status=ContactStatus.pending, next_attempt_at=opens)
            return
        trunk = campaign.trunk or self.settings.outbound_trunk_id
        if trunk is None:  # the setting was removed after the campaign was created
            await self.store.release_contact(claim, status=ContactStatus.failed, attempts=contact.attempts,
                                             last_error="no trunk (OUTBOUND_TRUNK_ID unset)")
            return
        plan = CallPlan(to=contact.phone, trunk=trunk, agent_id=campaign.agent_id, purpose=campaign.purpose,
                        version=campaign.version, variables=contact.variables, campaign_id=campaign.id,
                        contact_seq=contact.seq)
        ctx = ChangeContext(actor=campaign.actor, note=f"campaign {campaign.id}")
        try:
            call = await self.dialer.place(self.store, plan, ctx=ctx)
        except LiveKitUnavailable as e:
            if e.refused:  # LiveKit refuses this call itself (unknown trunk, ...): no point retrying
                await self._finish(claim, campaign, CallOutcome.failed, None, None, e.message)
            else:
                await self.store.release_contact(claim, status=ContactStatus.pending, last_error=e.message,
                                                 next_attempt_at=self._now() + timedelta(seconds=OUTAGE_RETRY_S))
            return
        except Exception as e:
            log.exception("campaign %s contact %d: the dial failed", campaign.id, contact.seq)
            await self.store.release_contact(claim, status=ContactStatus.pending, last_error=type(e).__name__,
                                             next_attempt_at=self._now() + timedelta(seconds=OUTAGE_RETRY_S))
            return
        await self._finish(claim, campaign, call.status, call.id, call.sip_status_code, call.error)

    async def _finish(self, claim: ClaimedContact, campaign: Campaign, outcome: CallOutcome, call_id: str | None,
                      sip_code: int | None, error: str | None) -> None:
        contact = claim.contact.model_copy(update={"attempts": claim.contact.attempts + 1})
        nxt = after_attempt(contact, outcome, campaign, self._now())
        kept = await self.store.release_contact(claim, attempts=contact.attempts, last_call_id=call_id,
                                                last_sip_status_code=sip_code, last_error=error, **nxt)
        if not kept:
            log.warning("campaign %s contact %d: lease lost before the outcome (%s) was stored",
                        campaign.id, contact.seq, outcome.value)

    @staticmethod
    def _now() -> datetime:
        return utcnow()
