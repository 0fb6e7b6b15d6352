"""Applying a scenario's config changes, through the store or the real admin API.

Why both: `store` is the shortest path (and what a second process writing the same
database looks like to the worker); `api` goes through `app.api.create_app` — auth,
validation, merge-patch, If-Match/412, error mapping — with the *same* store object the
worker's cache subscribes to, which is what makes the cache's promise testable: the
next session after a successful API write sees the new version.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.agents.test_pool import TestRunPool
from app.domain import AgentConfigInput, DomainError, NotFound, Route
from app.domain.agent_tests import AgentTestCreate, AgentTestInput
from app.domain.events import change_types
from app.domain.keys import KEY_PREFIX, ApiKeyInput
from app.domain.rollout import GuardPolicy
from app.domain.routing import MetadataSource
from app.store.resolver import resolve_current
from app.store.rollout_guard import RolloutGuard
from sim.outage import SwitchableStore
from sim.report import Checks, Loc
from sim.scenario import AuditOp, ConfigOp, GuardOp, ResolveOp

AGENTS = "/api/v1/agents/config"
ROUTES = "/api/v1/routes"
KEYS = "/api/v1/keys"
AUDIT = "/api/v1/audit"
PAGE = 200
SECRET = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]+")


class ConfigApplier:
    def __init__(
        self,
        store: SwitchableStore,
        *,
        api: Callable[[], Awaitable[httpx.AsyncClient]] | None,
        default_via: str,
        cache: Any = None,
        test_runs: TestRunPool | None = None,
    ) -> None:
        self.store = store
        self.api = api
        """Returns the admin API client, built on first use."""
        self.default_via = default_via
        self.cache = cache
        self.test_runs = test_runs
        """The environment's pool: `run_tests` waits for the run it queued."""
        self.keys: dict[str, str] = {}
        """Secrets of the keys `create_key` made, by name (in memory only: `as: <name>`)."""

    async def apply_all(self, checks: Checks, loc: Loc, ops: list[ConfigOp]) -> None:
        for i, op in enumerate(ops):
            await self.apply(checks, (*loc, i), op)

    async def apply(self, checks: Checks, loc: Loc, op: ConfigOp) -> None:
        if op.store is not None:
            await self._switch(op.store == "down")
            return
        if op.guard is not None:
            await self._guard(checks, (*loc, "guard"), op.guard)
            return
        if op.resolve is not None:
            await self._resolve(checks, (*loc, "resolve"), op.resolve)
            return
        via = op.via or self.default_via
        if via == "store" and (op.as_ is not None or op.expect_body_contains is not None):
            checks.fail(loc, f"config {op.kind}: `as` and `expect_body_contains` need via: api")
            return
        if op.audit is not None:
            await self._audit(checks, loc, op, via)
            return
        if op.run_tests is not None:
            await self._run_tests(checks, loc, op, via)
            return
        if via == "api":
            await self._via_api(checks, loc, op)
        else:
            await self._via_store(checks, loc, op)

    async def _switch(self, down: bool) -> None:
        """Flip the store; when going down, wait until the worker's cache has noticed
        (its poll failed), as it would within one poll interval in production."""
        self.store.down = down
        if down and self.cache is not None:
            deadline = time.monotonic() + 5
            while self.cache.is_fresh() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    async def _guard(self, checks: Checks, loc: Loc, op: GuardOp) -> None:
        """One round of the real rollout guard, with the scenario's thresholds."""
        policy = GuardPolicy(min_sessions=op.min_sessions, margin=op.margin, confidence=op.confidence)
        aborted = await RolloutGuard(self.store, policy).check_all()  # type: ignore[arg-type]  # a store, wrapped
        checks.check(sorted(aborted) == sorted(op.expect_aborted), (*loc, "expect_aborted"),
                     "the rollout guard aborted other canaries", expected=op.expect_aborted, actual=aborted)

    async def _resolve(self, checks: Checks, loc: Loc, op: ResolveOp) -> None:
        """Each caller through the worker's own resolver and config source (the cache)."""
        if self.cache is None:
            checks.fail(loc, "resolve needs the worker's config source")
            return
        for uid in op.user_ids:
            meta: dict[str, Any] = {"user_id": uid}
            if op.agent_id:
                meta["agent_id"] = op.agent_id
            if op.purpose:
                meta["purpose"] = op.purpose
            res = await resolve_current(self.cache, [MetadataSource("job", json.dumps(meta))], room=f"sim-{uid}")
            if op.expect_arm is not None or "expect_arm" in op.model_fields_set:
                checks.check(res.arm == op.expect_arm, (*loc, "expect_arm"), f"caller {uid} got another arm",
                             expected=op.expect_arm, actual=res.arm)
            if op.expect_version is not None:
                checks.check(res.config.version == op.expect_version, (*loc, "expect_version"),
                             f"caller {uid} got another version", expected=op.expect_version,
                             actual=res.config.version)

    # ---------------------------------------------------------------- store

    async def _via_store(self, checks: Checks, loc: Loc, op: ConfigOp) -> None:
        s = self.store
        try:
            result: Any = None
            if op.create is not None:
                result = await s.create_agent_config(AgentConfigInput.model_validate(op.create))
            elif op.patch is not None:
                result = await s.update_agent_config(op.patch.agent_id, op.patch.body, op.patch.if_match)
            elif op.replace is not None:
                body = AgentConfigInput.model_validate({"agent_id": op.replace.agent_id, **op.replace.body})
                result = await s.update_agent_config(op.replace.agent_id, body, op.replace.if_match)
            elif op.rollback is not None:
                result = await s.rollback(op.rollback.agent_id, op.rollback.version, op.rollback.if_match)
            elif op.delete is not None:
                await s.delete_agent_config(op.delete.agent_id)
            elif op.put_route is not None:
                await s.put_route(Route(**op.put_route.model_dump()))
            elif op.delete_route is not None:
                await s.delete_route(op.delete_route.purpose)
            elif op.replace_routes is not None:
                await s.replace_routes([Route(**r.model_dump()) for r in op.replace_routes])
            elif op.put_test is not None:
                t = op.put_test
                try:
                    await s.replace_agent_test(t.agent_id, t.name, AgentTestInput(content=t.content))
                except NotFound:
                    await s.create_agent_test(t.agent_id, AgentTestCreate(name=t.name, content=t.content))
            elif op.publish is not None:
                p = op.publish
                result = await s.publish(p.agent_id, p.version, canary_percent=p.canary_percent, expected_rev=p.if_match)
            elif op.promote is not None:
                result = await s.promote_canary(op.promote.agent_id, expected_rev=op.promote.if_match)
            elif op.abort is not None:
                result = await s.abort_canary(op.abort.agent_id, reason=op.abort.reason, expected_rev=op.abort.if_match)
            elif op.create_key is not None:
                created = await s.create_api_key(ApiKeyInput(name=op.create_key.name, role=op.create_key.role))
                self.keys[created.name] = created.secret
        except (DomainError, ValueError) as e:
            name = type(e).__name__
            if op.expect_error is None:
                checks.fail(loc, f"config {op.kind} via store failed", expected="success", actual=f"{name}: {e}")
            else:
                checks.check(name == op.expect_error, (*loc, "expect_error"), f"config {op.kind} raised another error",
                             expected=op.expect_error, actual=f"{name}: {e}")
            return
        if op.expect_error is not None:
            checks.fail((*loc, "expect_error"), f"config {op.kind} via store succeeded", expected=op.expect_error, actual="success")
        if op.expect_version is not None:
            got = getattr(result, "version", getattr(result, "published_version", None))
            checks.check(got == op.expect_version, (*loc, "expect_version"), f"config {op.kind}: version differs",
                         expected=op.expect_version, actual=got)

    # ------------------------------------------------------------------ api

    async def _via_api(self, checks: Checks, loc: Loc, op: ConfigOp) -> None:
        client = await self._client(checks, loc, op)
        if client is None:
            return
        c, headers = client
        if op.create is not None:
            r = await c.post(AGENTS, json=op.create, headers=headers)
        elif op.create_key is not None:
            r = await c.post(KEYS, json=op.create_key.model_dump(), headers=headers)
        elif op.patch is not None:
            headers["content-type"] = "application/merge-patch+json"
            if op.patch.if_match is not None:
                headers["If-Match"] = f'"{op.patch.if_match}"'
            r = await c.patch(f"{AGENTS}/{op.patch.agent_id}", json=op.patch.body, headers=headers)
        elif op.replace is not None:
            if op.replace.if_match is not None:
                headers["If-Match"] = f'"{op.replace.if_match}"'
            body = {"agent_id": op.replace.agent_id, **op.replace.body}
            r = await c.put(f"{AGENTS}/{op.replace.agent_id}", json=body, headers=headers)
        elif op.rollback is not None:
            if op.rollback.if_match is not None:
                headers["If-Match"] = f'"{op.rollback.if_match}"'
            r = await c.post(f"{AGENTS}/{op.rollback.agent_id}/rollback/{op.rollback.version}", headers=headers)
        elif op.delete is not None:
            r = await c.delete(f"{AGENTS}/{op.delete.agent_id}", headers=headers)
        elif op.put_route is not None:
            body = {"agent_id": op.put_route.agent_id, "is_default": op.put_route.is_default}
            r = await c.put(f"{ROUTES}/{op.put_route.purpose}", json=body, headers=headers)
        elif op.delete_route is not None:
            r = await c.delete(f"{ROUTES}/{op.delete_route.purpose}", headers=headers)
        elif op.put_test is not None:
            t = op.put_test
            r = await c.put(f"{AGENTS}/{t.agent_id}/tests/{t.name}", json={"content": t.content}, headers=headers)
            if r.status_code == 404:
                r = await c.post(f"{AGENTS}/{t.agent_id}/tests", json={"name": t.name, "content": t.content},
                                 headers=headers)
        elif op.publish is not None:
            if op.publish.if_match is not None:
                headers["If-Match"] = f'"{op.publish.if_match}"'
            body: dict[str, Any] = {"version": op.publish.version}
            if op.publish.canary_percent is not None:
                body["canary_percent"] = op.publish.canary_percent
            r = await c.post(f"{AGENTS}/{op.publish.agent_id}/publish", json=body, headers=headers)
        elif op.promote is not None or op.abort is not None:
            rop = op.promote or op.abort
            assert rop is not None
            if rop.if_match is not None:
                headers["If-Match"] = f'"{rop.if_match}"'
            action = "promote" if op.promote is not None else "abort"
            payload = {"reason": rop.reason} if action == "abort" and rop.reason else None
            r = await c.post(f"{AGENTS}/{rop.agent_id}/rollout/{action}", json=payload, headers=headers)
        else:
            assert op.replace_routes is not None
            r = await c.put(ROUTES, json=[x.model_dump() for x in op.replace_routes], headers=headers)
        if not self._answered(checks, loc, op, r):
            return
        if op.create_key is not None and r.is_success:
            self.keys[op.create_key.name] = r.json()["secret"]
        if op.expect_version is not None:
            doc = r.json() if r.content else {}
            got = doc.get("version", doc.get("published_version"))
            checks.check(got == op.expect_version, (*loc, "expect_version"), f"config {op.kind}: version differs",
                         expected=op.expect_version, actual=got)

    async def _client(
        self, checks: Checks, loc: Loc, op: ConfigOp
    ) -> tuple[httpx.AsyncClient, dict[str, str]] | None:
        """The admin API client and the op's request headers; None (with a failure) when the
        API is not running or `as:` names no key."""
        if self.api is None:
            checks.fail(loc, "via: api but the admin API is not running")
            return None
        c = await self.api()
        headers = self._auth(checks, loc, op)
        return None if headers is None else (c, headers)

    def _auth(self, checks: Checks, loc: Loc, op: ConfigOp) -> dict[str, str] | None:
        """Request headers: the named key's bearer token for `as: <name>` (None, with a
        failure, for a name no `create_key` made); empty: the client's admin key."""
        if op.as_ is None:
            return {}
        secret = self.keys.get(op.as_)
        if secret is None:
            checks.fail((*loc, "as"), f"no key named {op.as_!r}: make it with a create_key op first",
                        expected=sorted(self.keys), actual=op.as_)
            return None
        return {"Authorization": f"Bearer {secret}"}

    @staticmethod
    def _answered(checks: Checks, loc: Loc, op: ConfigOp, r: httpx.Response) -> bool:
        """The response has the expected status (default any 2xx) and body texts."""
        ok = r.status_code == op.expect_status if op.expect_status is not None else 200 <= r.status_code < 300
        if not ok:
            checks.fail(
                (*loc, "expect_status") if op.expect_status is not None else loc,
                f"config {op.kind} via api: unexpected status",
                expected=op.expect_status or "2xx", actual=f"{r.status_code} {_shown(r)}",
            )
            return False
        _check_body(checks, loc, op, r)
        return True

    # ---------------------------------------------------------------- audit

    async def _audit(self, checks: Checks, loc: Loc, op: ConfigOp, via: str) -> None:
        """The audit trail oldest first (through `GET /api/v1/audit`, or the store's
        journal), then `expect` as an ordered subsequence of its (type, actor) pairs."""
        spec = op.audit
        assert spec is not None
        trail: list[tuple[str, str | None]] = []
        if via == "api":
            client = await self._client(checks, loc, op)
            if client is None:
                return
            c, headers = client
            params: dict[str, Any] = {"limit": PAGE}
            if spec.agent_id is not None:
                params["agent_id"] = spec.agent_id
            while True:
                r = await c.get(AUDIT, params={**params, "offset": len(trail)}, headers=headers)
                if not self._answered(checks, loc, op, r) or not 200 <= r.status_code < 300:
                    return  # failed, or an expected refusal: nothing to compare
                page = r.json()
                trail += [(e["type"], e.get("actor")) for e in page["items"]]
                if not page["items"] or len(trail) >= page["total"]:
                    break
        else:
            while True:
                items, total = await self.store.list_events(types=change_types(), agent_id=spec.agent_id,
                                                            offset=len(trail), limit=PAGE)
                trail += [(e.type, e.actor) for e in items]
                if not items or len(trail) >= total:
                    break
        trail.reverse()  # newest first → the story's order
        _check_audit(checks, (*loc, "audit"), spec, trail)

    # ------------------------------------------------------------ test runs

    async def _run_tests(self, checks: Checks, loc: Loc, op: ConfigOp, via: str) -> None:
        """Queue a run (through the API's endpoint, or the store), wait for the pool to
        finish it, and check its verdict."""
        spec = op.run_tests
        assert spec is not None
        if self.test_runs is None:
            checks.fail(loc, "run_tests: this environment has no test run pool")
            return
        if via == "api":
            client = await self._client(checks, loc, op)
            if client is None:
                return
            c, headers = client
            r = await c.post(f"{AGENTS}/{spec.agent_id}/versions/{spec.version}/test-runs", headers=headers)
            want = op.expect_status or 202
            if r.status_code != want:
                checks.fail((*loc, "expect_status") if op.expect_status else loc, "run_tests via api: unexpected status",
                            expected=want, actual=f"{r.status_code} {_shown(r)}")
                return
            _check_body(checks, loc, op, r)
            if want != 202:
                return
            run_id = r.json()["id"]
        else:
            queued, tests = await self.store.create_test_run(spec.agent_id, spec.version)
            self.test_runs.submit(queued, tests)
            run_id = queued.id
        await asyncio.wait_for(self.test_runs.wait(run_id), 120)
        run = await self.store.get_test_run(spec.agent_id, run_id)
        detail = "; ".join(f"{f.field} (line {f.line}): {f.message}" for r in run.results for s in r.steps
                           for f in s.failures)[:600]
        if spec.expect is not None:
            checks.check(run.status.value == spec.expect, (*loc, "run_tests", "expect"), "the test run's verdict differs",
                         expected=spec.expect, actual=f"{run.status.value} {run.error or ''} {detail}".strip())
        if spec.failing is not None:
            checks.check(run.failing == spec.failing, (*loc, "run_tests", "failing"), "other tests failed",
                         expected=spec.failing, actual=f"{run.failing} {detail}".strip())


def _check_body(checks: Checks, loc: Loc, op: ConfigOp, r: httpx.Response) -> None:
    missing = [t for t in op.body_texts() if t not in r.text]
    checks.check(not missing, (*loc, "expect_body_contains"), f"config {op.kind}: the response lacks {missing}",
                 expected=op.body_texts(), actual=_shown(r))


def _shown(r: httpx.Response) -> str:
    """The start of a response body for a report, a named key's secret masked."""
    return SECRET.sub(KEY_PREFIX + "…", r.text)[:300]


def _check_audit(checks: Checks, loc: Loc, spec: AuditOp, trail: list[tuple[str, str | None]]) -> None:
    """Each expected entry must match a change after the previous entry's match (greedy
    matching finds a subsequence whenever one exists). The first entry not found fails,
    with the whole trail as the actual value."""
    shown = "audit trail, oldest first:\n" + ("\n".join(f"  [{i}] {t} by {a}" for i, (t, a) in enumerate(trail))
                                               or "  (no changes)")
    at = 0
    for k, want in enumerate(spec.expect):
        found = next((i for i in range(at, len(trail)) if trail[i] == (want.type, want.actor)), None)
        if found is None:
            after = f" after trail [{at - 1}] (the previous entry's match)" if at else ""
            checks.fail((*loc, "expect", k), f"the audit trail lacks this change{after}",
                        expected=f"{want.type} by {want.actor}", actual=f"{len(trail)} changes", context=shown)
            return
        at = found + 1
