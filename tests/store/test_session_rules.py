"""The session write rules every backend gets from `app.store.session_rules`: which fields
may be set and how a batch folds into runs (the contract suite checks the stored result)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.domain import Handoff, InvalidInput, SessionRecord, SessionStatus, Turn
from app.store.base import (
    AppendTurn,
    FinishSession,
    RecordData,
    RecordHandoff,
    StartSession,
    UpdateSession,
)
from app.store.session_rules import fold, merge_runs, session_fields

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def turn(seq: int) -> Turn:
    return Turn(seq=seq, role="user", text=f"t{seq}")


def test_fold_keeps_order_and_splits_at_starts_and_kind_changes() -> None:
    rec = SessionRecord(session_id="s", room="r", agent_id="a", owner="me")
    runs = fold([
        StartSession(rec), AppendTurn(turn(0)), AppendTurn(turn(1)),
        UpdateSession({"metrics": [{"n": 1}]}), RecordData({"a": {"x": 1}}), UpdateSession({"metrics": [{"n": 2}]}),
        AppendTurn(turn(2)), FinishSession(SessionStatus.completed, reason="done"),
    ], NOW)
    assert [r.ops for r in runs] == [1, 2, 3, 1, 1]
    assert runs[0].start is not None and runs[0].start.heartbeat_at == NOW  # an owned start is a sign of life
    assert [t.seq for t in runs[1].turns] == [0, 1]
    # a later snapshot overrides an earlier one; the worst turn is stored beside it (none here)
    assert runs[2].fields == {"metrics": [{"n": 2}], "worst_turn_ms": None}
    assert runs[2].merged_collected({"a": {"y": 2}}) == {"a": {"x": 1, "y": 2}}
    assert runs[4].fields == {"status": "completed", "end_reason": "done", "error": None, "ended_at": NOW}


def test_the_worst_turn_is_derived_never_taken_from_the_caller() -> None:
    rec = SessionRecord(session_id="s", room="r", agent_id="a", worst_turn_ms=1.0,
                        metrics=[{"total_ms": 850.0}, {"total_ms": None}, {"total_ms": 1200}])
    runs = fold([
        StartSession(rec),
        UpdateSession({"metrics": [{"total_ms": 400.0}, {"eou_delay_ms": 9000.0}, {"total_ms": True}]}),
    ], NOW)
    assert runs[0].start is not None and runs[0].start.worst_turn_ms == 1200.0
    assert runs[1].fields["worst_turn_ms"] == 400.0  # only end-to-end figures; a bool is no figure
    with pytest.raises(InvalidInput):
        fold([UpdateSession({"worst_turn_ms": 5.0})], NOW)  # not a field a writer may set


def test_merge_runs_folds_everything_after_a_start_into_it() -> None:
    rec = SessionRecord(session_id="s", room="r", agent_id="a")
    h = Handoff(from_agent="a", to_agent="b")
    runs = fold([AppendTurn(turn(0)), RecordHandoff(h), StartSession(rec), AppendTurn(turn(1)),
                 UpdateSession({"degraded": "x"}), AppendTurn(turn(2))], NOW)
    merged = merge_runs(runs)
    assert [(m.ops, m.start is not None) for m in merged] == [(2, False), (4, True)]
    assert [t.seq for t in merged[1].turns] == [1, 2] and merged[1].fields == {"degraded": "x"}
    assert merged[0].handoffs == [h]
    assert [t.seq for t in runs[3].turns] == [1]  # the input runs are left as they were


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"status": "completed"}, "cannot update session field(s): status"),
     ({"config_version": "seven"}, "bad value for session field config_version"),
     ({"metrics": {"not": "a list"}}, "bad value for session field metrics")],
)
def test_bad_fields_are_refused_before_any_write(fields: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        fold([AppendTurn(turn(0)), UpdateSession(fields)], NOW)
    with pytest.raises(InvalidInput):
        session_fields(fields)
