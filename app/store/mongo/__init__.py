"""The MongoDB backend, on pymongo's native async client (`AsyncMongoClient`).

Chosen by `open_store()` for `mongodb://` and `mongodb+srv://` URLs; the database is
the one named in the URL path (default `voice`). Documents are envelopes around the
domain models in `app.domain` (an agent version keeps the whole validated config as
its `data`), exactly like the SQL rows: there is one definition of a config.

Collections
-----------
- `agent_configs`: one immutable document per version, `{agent_id, version, gen, enabled,
  created_at, data}`, unique index `(agent_id, version)`.
- `agent_heads`: one document per agent, `_id = agent_id`, `{gen, current_version,
  enabled, created_at, updated_at}` plus the delete markers below. Readers only ever
  see the version the head points at and older ones of the same `gen`.
- `routes`: ONE document (`_id: "table"`) holding the whole routing table and a
  revision counter `rev`. Every route write is a compare-and-swap on `rev`, so
  `replace_routes` is a single atomic document replace, "at most one default" is
  checked on the whole table before it is written, and two writers cannot interleave.
  (A routing table is a handful of purposes; the 16 MB document limit is ~100k routes.)
- `sessions` (`_id = session_id`) and `session_turns` (unique `(session_id, seq)`).
- `events`: the journal (`_id` = event id), filled by the relay described below.
- `webhooks`, `webhook_deliveries`: endpoints and deliveries (`app.store.mongo.webhooks`).
- `api_keys`: named API keys, only the hash of each secret (`app.store.mongo.keys`).
- `agent_tests`, `test_runs`: tests stored with an agent and their runs (`app.store.mongo.agent_tests`).
- `calls`, `campaigns`, `campaign_contacts`: outbound calls and campaigns (`app.store.mongo.calls`).
- `meta`: `config_epoch` and `schema_version` counters.

Atomicity without multi-document transactions
---------------------------------------------
A standalone `mongod` has no multi-document transactions (they need a replica set), so
no operation needs one; the same code runs on a replica set, on Atlas and on
SecantusDB. (SecantusDB 0.7 does run them, with snapshot isolation and WriteConflict
errors, but requiring them would drop standalone servers, and every repair below would
still be needed for the leftovers older builds may have written.) Every write has a single *commit point*, a one-document write,
and every other step is either invisible to readers before it or repairable after it:

- **Create**: insert version 1 (commit point; the unique index lets exactly one of
  several concurrent creators win), then insert the head. A crash in between leaves a
  version-1 document without a head: invisible to readers (they go through heads). The
  next create of that id hits the unique index, finds no head and *rolls the orphan
  forward* (inserts its head): the crashed create had committed, its caller just never
  heard back. It then reports `AlreadyExists`, as it would have anyway.
- **Update / rollback**: read the head (version N, generation G), validate the new
  content, insert version N+1 (commit point; the unique index is the conflict check, so
  there is no read-modify-write race), then advance the head with a conditional update
  `{_id, gen: G, current_version < N+1}`. A crash in between leaves N+1 written and the
  head at N; readers keep seeing N (never a version above the head). The next writer
  collides on N+1, advances the head to it on the crashed writer's behalf and reports
  `VersionConflict` (or, without `expected_version`, retries on top of N+1). A writer
  whose head advance finds the head already moved past N+1 by such a helper has still
  succeeded: its document is what the head points at.
- **Delete**: (1) set a `deleting` intent token on the head (readers ignore it);
  (2) read the routes table; if a route uses the agent, clear the intent and raise
  `InUse`; (3) bump the routes table `rev` without changing it (a fence: a route write
  racing with us fails its CAS and re-checks, seeing our intent); (4) tombstone the
  head, conditional on our token still being there (commit point: readers treat a
  tombstoned head as absent); (5) delete the generation's versions, then the head.
  A crash after (4) leaves a tombstone that the next create of that id finishes off; a
  crash before (4) leaves only an intent that any route write may clear.
  A route write that finds an intent on an agent it references *clears* it (only if it
  is still that token) before its own CAS, which makes the pending delete's step (4)
  fail; the delete then starts over and sees the route. So a route can never end up
  pointing at a deleted agent, without locks or timeouts.
- **Generations**: every create picks a fresh `gen`; heads and versions carry it, and
  reads and deletes filter on it. A version left over from a deleted generation (say, an
  update that raced a delete) can therefore never be served for a later agent with the
  same id; when a new write collides with such a leftover it deletes it and retries.
  The service's parsed-config memo is keyed by `(agent_id, gen, version)` for the same reason.
- **Config epoch**: bumped right before a config write's commit point and again after
  it. The bump after the commit is what other processes' caches rely on (a slow writer
  cannot commit "behind" a reload). The bump before it covers a crash right after the
  commit: other caches still reload within their poll interval, and only a reload that
  happened inside the ~1 ms between the two writes could miss the change.
- **Sessions**: every session write is a batch of runs (`app.store.session_rules`),
  and a batch is NOT one atomic write: it is applied in order as a few single-document
  writes: the session insert (a start), each run of consecutive turns as one
  `insert_many` (duplicates ignored: the unique index makes a retried turn a no-op),
  each run of consecutive row changes (data merges, handoffs, fields, finish) as one
  update of the session document. A data merge deep-merges in Python and writes back
  with a CAS on a per-session counter (`crev`), retried on a lost race, so concurrent
  merges never lose a field. A failure part-way leaves a prefix applied and says how
  long (`ops_applied_before`); what the caller re-applies is idempotent except a
  handoff, which could then be recorded twice.
- **Journal**: a write's events are embedded in its commit-point document (the new
  version, the delete's tombstone, the routes table, the session document) as
  `pending_events`, in the same single-document write, then relayed into `events`
  (`_id` = event id, so relaying twice is harmless) and pulled from the document. A
  crash in between leaves them embedded; the sweep (`MongoJournal.relay`, run at start
  and by every dispatcher periodically) relays them: always for sessions, routes and
  tombstones (those writes are committed), and for a version only once it is current
  (rolled forward first if its writer died, like the next writer would), never for a
  version that never became current (another generation's, or above a tombstone). See
  `app.store.mongo.journal`.
- **Owner / heartbeat**: `owner` and `heartbeat_at` are plain fields (absent on older
  documents, read as null), so no migration is needed and the schema version stays 1.

Untrusted values never become operators: ids used in filters must be strings (or
ints for versions), and every dict key stored from configs, collected data or metrics
is escaped (`%` -> `%25`, `$` -> `%24`, `.` -> `%2E`, NUL -> `%00`) and unescaped on
read, so `{"$where": ...}` or `"a.b"` keys are stored verbatim and never interpreted.

Times: BSON dates keep milliseconds, so every time this store stamps is truncated to
milliseconds before it is returned, and a re-read equals what a write returned.

Outages: connection errors (`ConnectionFailure` and subclasses: `AutoReconnect`,
`NetworkTimeout`, `ServerSelectionTimeoutError`...) become `StoreUnavailable`, found
within `serverSelectionTimeoutMS` (2 s unless the URL sets it). After an outage the
indexes and counters are re-ensured before the next operation (the server may have
come back empty).

Change notification across processes uses the `config_epoch` poll (the config cache
polls it every 0.5 s), which works on any deployment; change streams are not needed.
"""

from __future__ import annotations

from typing import Any

from app.store.mongo.agent_tests import MongoAgentTests, MongoTestRuns
from app.store.mongo.analysis import MongoAnalysisQueue
from app.store.mongo.calls import MongoCalls, MongoCampaigns
from app.store.mongo.client import MongoDatabase, escape_keys, unescape_keys
from app.store.mongo.configs import MongoConfigs
from app.store.mongo.journal import MongoJournal
from app.store.mongo.keys import MongoKeys
from app.store.mongo.routes import MongoRoutes
from app.store.mongo.sessions import MongoLiveness, MongoSessions
from app.store.mongo.usage import MongoUsage
from app.store.mongo.webhooks import MongoDeliveries, MongoWebhooks
from app.store.service import StoreService


class MongoBackend(MongoDatabase):
    """`app.store.backend.Backend` on MongoDB: the database plus one repository per concern."""

    def __init__(self, database_url: str, **client_options: Any) -> None:
        super().__init__(database_url, **client_options)
        self.configs = MongoConfigs(self)
        self.routes = MongoRoutes(self)
        self.sessions = MongoSessions(self)
        self.liveness = MongoLiveness(self)
        self.analysis = MongoAnalysisQueue(self)
        self.usage = MongoUsage(self)
        self.webhooks = MongoWebhooks(self)
        self.deliveries = MongoDeliveries(self)
        self.keys = MongoKeys(self)
        self.agent_tests = MongoAgentTests(self)
        self.test_runs = MongoTestRuns(self)
        self.calls = MongoCalls(self)
        self.campaigns = MongoCampaigns(self)
        self.journal = MongoJournal(self, self.configs, self.webhooks, self.keys)


class MongoStore(StoreService):
    """`ConfigStore` on MongoDB."""

    def __init__(self, database_url: str, **client_options: Any) -> None:
        super().__init__(MongoBackend(database_url, **client_options))
        self.url = database_url


__all__ = ["MongoBackend", "MongoStore", "escape_keys", "unescape_keys"]
