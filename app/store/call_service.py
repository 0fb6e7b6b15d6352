"""The store's rules for outbound calls and campaigns, once for every backend (mixed into
`StoreService`): ids and times, which journal events each change commits, campaign
status transitions, and contact leases (a runner takes due contacts with a lease token;
only that token can write their outcome back)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.domain import InvalidInput, NotFound, StoreUnavailable
from app.domain.calls import (
    FINAL_CONTACT,
    CallOutcome,
    CallRecord,
    Campaign,
    CampaignInput,
    CampaignProgress,
    CampaignStatus,
    CampaignView,
    Contact,
    ContactStatus,
    new_campaign_id,
)
from app.domain.errors import WrongState
from app.domain.events import (
    CALL_DIALED,
    CALL_PLACED,
    CAMPAIGN_CREATED,
    CAMPAIGN_UPDATED,
    SYSTEM,
    ChangeContext,
    Event,
    make_event,
)
from app.store.backend import Backend
from app.store.retry import MAX_ATTEMPTS, backoff
from app.store.session_rules import must_be_str

TRANSITIONS: dict[str, tuple[frozenset[CampaignStatus], CampaignStatus]] = {
    "paused": (frozenset({CampaignStatus.running}), CampaignStatus.paused),
    "resumed": (frozenset({CampaignStatus.paused}), CampaignStatus.running),
    "cancelled": (frozenset({CampaignStatus.running, CampaignStatus.paused}), CampaignStatus.cancelled),
    "completed": (frozenset({CampaignStatus.running}), CampaignStatus.completed),
}


@dataclass(frozen=True, slots=True)
class ClaimedContact:
    """A contact a runner holds: only `token` may write its outcome (`release_contact`)."""

    contact: Contact
    token: str


def _campaign_event(change: str, c: Campaign, ctx: ChangeContext) -> list[Event]:
    et = CAMPAIGN_CREATED if change == "created" else CAMPAIGN_UPDATED
    data = {"campaign_id": c.id, "change": change, "name": c.name, "status": c.status.value, "total": c.total}
    return [make_event(et, data, at=c.updated_at, agent_id=c.agent_id, ctx=ctx)]


class CallStore:
    backend: Backend

    def _journaled(self) -> None:  # StoreService: wake in-process journal readers
        raise NotImplementedError

    # -------------------------------------------------------------------- calls

    async def create_call(self, call: CallRecord, *, ctx: ChangeContext = SYSTEM) -> CallRecord:
        """Store a call that is being dialled, with its `call.placed` event."""
        call = call.model_copy(update={"created_at": self.backend.now(), "status": CallOutcome.dialing,
                                       "actor": ctx.actor if ctx.actor is not None else call.actor})
        data = {"call_id": call.id, "to": call.to, "agent_id": call.agent_id, "purpose": call.purpose,
                "version": call.version, "room": call.room, "campaign_id": call.campaign_id}
        await self.backend.calls.insert(call, [make_event(CALL_PLACED, data, at=call.created_at,
                                                          agent_id=call.agent_id, ctx=ctx)])
        self._journaled()
        return call

    async def finish_call(self, call_id: str, outcome: CallOutcome, **fields: Any) -> CallRecord:
        """The dial's outcome (once: a call no longer `dialing` is a `WrongState`)."""
        if outcome is CallOutcome.dialing:
            raise InvalidInput("a finished call is not dialing")
        allowed = {"sip_status_code", "sip_status", "error", "participant_identity", "sip_call_id", "dispatch_id"}
        unknown = set(fields) - allowed
        if unknown:
            raise InvalidInput(f"unknown call field(s): {', '.join(sorted(unknown))}")
        call = await self.get_call(call_id)
        now = self.backend.now()
        values = {**fields, "status": outcome, "ended_at": now}
        done = call.model_copy(update=values)
        data = {"call_id": call.id, "to": call.to, "status": outcome.value, "sip_status_code": done.sip_status_code,
                "sip_status": done.sip_status, "error": done.error, "room": call.room, "campaign_id": call.campaign_id}
        if not await self.backend.calls.finish(call_id, values, [make_event(CALL_DIALED, data, at=now,
                                                                             agent_id=call.agent_id)]):
            raise WrongState(f"call {call_id!r} is no longer dialing", call_id=call_id)
        self._journaled()
        return done

    async def get_call(self, call_id: str) -> CallRecord:
        got = await self.backend.calls.get(must_be_str(call_id, "call_id"))
        if got is None:
            raise NotFound(f"call {call_id!r} not found", call_id=str(call_id))
        return got

    async def list_calls(
        self, *, campaign_id: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[CallRecord], int]:
        if campaign_id is not None:
            must_be_str(campaign_id, "campaign_id")
        return await self.backend.calls.list(campaign_id, offset, limit)

    # ---------------------------------------------------------------- campaigns

    async def create_campaign(self, data: CampaignInput, *, ctx: ChangeContext = SYSTEM) -> CampaignView:
        now = self.backend.now()
        settings = data.model_dump(exclude={"contacts"})
        campaign = Campaign.model_validate({**settings, "id": new_campaign_id(), "status": CampaignStatus.running,
                                            "total": len(data.contacts), "actor": ctx.actor,
                                            "created_at": now, "updated_at": now})
        contacts = [Contact(campaign_id=campaign.id, seq=i, phone=x.phone, variables=x.variables,
                            timezone=x.timezone or data.timezone, updated_at=now)
                    for i, x in enumerate(data.contacts)]
        await self.backend.campaigns.create(campaign, contacts, _campaign_event("created", campaign, ctx))
        self._journaled()
        return await self.get_campaign(campaign.id)

    async def _campaign(self, campaign_id: str) -> tuple[Campaign, int]:
        got = await self.backend.campaigns.get(must_be_str(campaign_id, "campaign_id"))
        if got is None:
            raise NotFound(f"campaign {campaign_id!r} not found", campaign_id=str(campaign_id))
        return got

    async def _view(self, campaign: Campaign) -> CampaignView:
        by_status, attempts = await self.backend.campaigns.progress(campaign.id)
        counts = {s.value: by_status.get(s.value, 0) for s in ContactStatus}
        done = sum(counts[s.value] for s in FINAL_CONTACT)
        progress = CampaignProgress(total=campaign.total, by_status=counts, done=done, attempts=attempts)
        return CampaignView.model_validate({**campaign.model_dump(), "progress": progress})

    async def get_campaign(self, campaign_id: str) -> CampaignView:
        return await self._view((await self._campaign(campaign_id))[0])

    async def list_campaigns(self, *, offset: int = 0, limit: int = 50) -> tuple[list[CampaignView], int]:
        rows, total = await self.backend.campaigns.page(offset, limit)
        return [await self._view(c) for c in rows], total

    async def running_campaigns(self) -> list[Campaign]:
        return await self.backend.campaigns.running()

    async def change_campaign(
        self, campaign_id: str, change: str, *, ctx: ChangeContext = SYSTEM
    ) -> CampaignView:
        """`paused`, `resumed`, `cancelled` (a user's), or `completed` (the runner's)."""
        if change not in TRANSITIONS:
            raise InvalidInput(f"unknown campaign change {change!r}")
        allowed, to = TRANSITIONS[change]
        for attempt in range(MAX_ATTEMPTS):
            campaign, rev = await self._campaign(campaign_id)
            if campaign.status not in allowed:
                raise WrongState(f"campaign {campaign_id!r} is {campaign.status.value}; it cannot be {change}",
                                 campaign_id=campaign_id, status=campaign.status.value)
            new = campaign.model_copy(update={"status": to, "updated_at": self.backend.now()})
            if await self.backend.campaigns.set_status(new, rev, _campaign_event(change, new, ctx)):
                self._journaled()
                return await self._view(new)
            await backoff(attempt)
        raise StoreUnavailable(f"campaign {campaign_id!r} is changing too fast, try again")

    async def campaign_contacts(
        self, campaign_id: str, *, status: ContactStatus | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[Contact], int]:
        await self._campaign(campaign_id)
        status = ContactStatus(status) if status is not None else None
        return await self.backend.campaigns.contacts(campaign_id, status, offset, limit)

    async def claim_contacts(
        self, campaign: Campaign, owner: str, *, lease_s: float, limit: int
    ) -> list[ClaimedContact]:
        """Due contacts of a running campaign, leased for `lease_s` (at most the campaign's
        concurrency hold a lease at once)."""
        must_be_str(owner, "owner")
        if limit <= 0:
            return []
        token = f"{owner}/{secrets.token_hex(6)}"
        now = self.backend.now()
        taken = await self.backend.campaigns.claim(campaign.id, token, now, now + timedelta(seconds=lease_s),
                                                   limit, campaign.concurrency)
        return [ClaimedContact(c, token) for c in taken]

    async def release_contact(self, claim: ClaimedContact, **values: Any) -> bool:
        """Write the contact's new state (status, attempts, next attempt, last call) and
        give the lease up; False if the lease was lost meanwhile (nothing written)."""
        allowed = {"status", "attempts", "next_attempt_at", "last_call_id", "last_sip_status_code", "last_error"}
        unknown = set(values) - allowed
        if unknown:
            raise InvalidInput(f"unknown contact field(s): {', '.join(sorted(unknown))}")
        if ContactStatus(values.get("status", ContactStatus.pending)) is ContactStatus.dialing:
            raise InvalidInput("a released contact is not dialing")
        values["updated_at"] = self.backend.now()
        c = claim.contact
        return await self.backend.campaigns.release(c.campaign_id, c.seq, claim.token, values)
