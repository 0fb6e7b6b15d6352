"""Named API keys in the `ConfigStore` contract, on every backend (sqlite, mongo,
postgres): the secret is returned once and only its hash is stored, names are unique
(also between two processes racing), a revoke is seen by another process's next read,
`key.*` events are committed with each change and never carry the secret, and a
revoked key's name can be used again."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest
from pydantic import ValidationError

from app.domain import AlreadyExists, NotFound
from app.domain.events import ChangeContext
from app.domain.keys import ApiKeyInput, Role, hash_key

ADMIN = ChangeContext(actor="admin", note="onboarding")


def key_input(name: str = "ci-deploy", role: str = "publish") -> ApiKeyInput:
    return ApiKeyInput.model_validate({"name": name, "role": role})


async def test_create_returns_the_secret_once_and_stores_only_its_hash(store):
    created = await store.create_api_key(key_input(), ctx=ADMIN)
    assert created.secret.startswith("vp_") and len(created.secret) == 46
    assert (created.name, created.role, created.last_used_at) == ("ci-deploy", Role.publish, None)
    (listed,) = await store.list_api_keys()
    assert listed.model_dump() == {k: v for k, v in created.model_dump().items() if k != "secret"}
    assert "secret" not in listed.model_dump() and "key_hash" not in listed.model_dump()
    (stored,) = await store.api_key_table()
    assert stored.key_hash == hashlib.sha256(created.secret.encode()).hexdigest() == hash_key(created.secret)
    assert created.secret not in str(stored.model_dump())

    events, _ = await store.list_events(types=["key.created"])
    assert len(events) == 1
    ev = events[0]
    assert (ev.actor, ev.note, ev.data) == ("admin", "onboarding",
                                            {"name": "ci-deploy", "role": "publish", "change": "created"})
    assert created.secret not in str(ev.model_dump()) and stored.key_hash not in str(ev.model_dump())


async def test_two_keys_never_share_a_secret_and_names_are_unique_across_processes(store, open_another):
    other = await open_another()
    a = await store.create_api_key(key_input("a", "read"))
    b = await store.create_api_key(key_input("b", "read"))
    assert a.secret != b.secret
    results = await asyncio.gather(store.create_api_key(key_input("same", "edit")),
                                   other.create_api_key(key_input("same", "admin")), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "ApiKeyCreated"]
    assert [k.name for k in await other.list_api_keys()] == ["a", "b", "same"]
    assert (await store.list_events(types=["key.created"]))[1] == 3  # the loser wrote no event
    with pytest.raises(AlreadyExists):
        await store.create_api_key(key_input("a", "admin"))


async def test_revoke_is_seen_by_another_process_and_frees_the_name(store, open_another):
    other = await open_another()
    first = await store.create_api_key(key_input("jane", "edit"))
    assert [k.name for k in await other.api_key_table()] == ["jane"]
    gone = await other.revoke_api_key("jane", ctx=ChangeContext(actor="ops", note="left the team"))
    assert (gone.name, gone.role) == ("jane", Role.edit)
    assert await store.api_key_table() == [] and await store.list_api_keys() == []
    with pytest.raises(NotFound):
        await store.revoke_api_key("jane")
    events, _ = await store.list_events(types=["key.revoked"])
    assert [(e.actor, e.note, e.data["name"], e.data["role"]) for e in events] == [
        ("ops", "left the team", "jane", "edit")]

    again = await store.create_api_key(key_input("jane", "read"))
    assert again.secret != first.secret
    (stored,) = await other.api_key_table()
    assert stored.role is Role.read and stored.key_hash == hash_key(again.secret)


async def test_touch_records_last_use(store):
    await store.create_api_key(key_input())
    (before,) = await store.list_api_keys()
    later = before.created_at.replace(microsecond=0) + timedelta(days=1)
    await store.touch_api_key("ci-deploy", later)
    (after,) = await store.list_api_keys()
    assert after.last_used_at == later
    await store.touch_api_key("nobody", later)  # a key revoked meanwhile: nothing happens
    assert [k.name for k in await store.list_api_keys()] == ["ci-deploy"]


@pytest.mark.parametrize("doc, field", [
    ({"name": "admin", "role": "read"}, "name"),
    ({"name": "Has Space", "role": "read"}, "name"),
    ({"name": "x" * 65, "role": "read"}, "name"),
    ({"name": "ok", "role": "owner"}, "role"),
    ({"name": "ok", "role": "read", "secret": "vp_mine"}, "secret"),
])
def test_bad_key_input_names_the_field(doc, field):
    with pytest.raises(ValidationError) as e:
        ApiKeyInput.model_validate(doc)
    assert e.value.errors()[0]["loc"] == (field,)


def test_roles_are_ordered():
    assert [r.value for r in sorted(Role, key=lambda r: r.rank)] == ["read", "edit", "publish", "admin"]
    assert Role.admin.allows(Role.publish) and Role.edit.allows(Role.read)
    assert not Role.edit.allows(Role.publish) and not Role.read.allows(Role.edit)
