"""Bulk inserts: the staged COPY path (PostgreSQL, large batches) and the plain one agree."""

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tasks.decisions import NewDecision, note_decisions
from tasks.store import upsert
from tasks.store.models import (
    Decision,
    DecisionAction,
    Lead,
    LeadMatchKey,
    LeadStatus,
    UTCDateTime,
)
from tasks.store.upsert import append_rows, insert_ignore, insert_ignore_returning

AT = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)


def _decision(key: str) -> dict[str, object]:
    return {"dedupe_key": key, "run_id": None, "as_of": AT, "action": DecisionAction.TAG,
            "rule": "r", "lead_id": None, "opportunity_id": None, "reason": None,
            "facts": {"n": 1, "when": "now"}, "created_at": AT}  # fmt: skip


@pytest.mark.parametrize("stage_from", [10_000, 50], ids=["plain", "staged"])
def test_existing_keys_are_skipped_and_new_rows_come_back_in_input_order(
    session: Session, stage_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upsert, "STAGE_FROM_ROWS", stage_from)
    insert_ignore(session, Decision, [_decision(f"k{i}") for i in range(0, 120, 3)], ["dedupe_key"])
    rows = [_decision(f"k{i}") for i in reversed(range(120))]
    new = insert_ignore_returning(session, Decision, rows, ["dedupe_key"], ["dedupe_key", "id"])
    assert [key for key, _ in new] == [f"k{i}" for i in reversed(range(120)) if i % 3]
    assert session.scalar(select(func.count()).select_from(Decision)) == 120
    stored = session.scalars(select(Decision).where(Decision.dedupe_key == "k1")).one()
    assert (stored.facts, stored.as_of, stored.action) == (
        {"n": 1, "when": "now"},
        AT,
        DecisionAction.TAG,
    )


@pytest.mark.parametrize("stage_from", [10_000, 50], ids=["plain", "staged"])
def test_a_partial_unique_index_is_the_conflict_target(
    session: Session, stage_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upsert, "STAGE_FROM_ROWS", stage_from)

    def lead(i: int, role: bool) -> dict[str, object]:
        return {"email": f"p{i}@x.example", "email_key": f"p{i % 40}@x.example",
                "email_role": role, "status": LeadStatus.NEW, "status_changed_at": AT,
                "created_at": AT, "source": "web", "tags": [], "score": 0,
                "field_sources": {}}  # fmt: skip

    personal = insert_ignore(
        session, Lead, [lead(i, False) for i in range(100)], ["email_key"],
        where=text("NOT email_role"),
    )  # fmt: skip
    assert len(personal) == 40  # one lead per personal address
    roles = insert_ignore(
        session, Lead, [lead(i, True) for i in range(100)], ["email_key"],
        where=text("NOT email_role"),
    )  # fmt: skip
    assert len(roles) == 100  # a role address is not unique


@pytest.mark.parametrize("stage_from", [10_000, 50], ids=["plain", "staged"])
def test_repeated_dates_and_enums_are_stored_as_each_row_gave_them(
    session: Session, stage_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values converted once per distinct value: the same instant in two zones, instants
    that differ, enum members; and a naive datetime is still refused, every time."""
    monkeypatch.setattr(upsert, "STAGE_FROM_ROWS", stage_from)
    paris = dt.timezone(dt.timedelta(hours=1))
    moments = [AT, AT.astimezone(paris), AT + dt.timedelta(seconds=1), AT]
    actions = [DecisionAction.TAG, DecisionAction.MERGE]
    rows = [
        {**_decision(f"d{i}"), "as_of": moments[i % 4], "action": actions[i % 2]}
        for i in range(100)
    ]
    insert_ignore(session, Decision, rows, ["dedupe_key"])
    stored = dict(session.execute(select(Decision.dedupe_key, Decision.as_of)).tuples().all())
    assert all(stored[f"d{i}"] == moments[i % 4] for i in range(100))
    assert stored["d1"] == AT and stored["d2"] == AT + dt.timedelta(seconds=1)
    merges = select(func.count()).where(Decision.action == DecisionAction.MERGE)
    assert session.scalar(merges) == 50
    naive = [{**_decision(f"n{i}"), "as_of": AT.replace(tzinfo=None)} for i in range(60)]
    for _ in range(2):
        with pytest.raises(Exception, match="naive datetime"), session.begin_nested():
            insert_ignore(session, Decision, naive, ["dedupe_key"])


def test_each_distinct_moment_is_converted_once(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own datetime type (a TypeDecorator) is remembered like any date: a million
    rows of one import share a handful of moments."""
    calls: list[dt.datetime] = []
    convert = UTCDateTime.process_bind_param

    def counted(self: UTCDateTime, value: dt.datetime | None, dialect: object) -> object:
        calls.append(value)  # type: ignore[arg-type]
        return convert(self, value, dialect)

    monkeypatch.setattr(UTCDateTime, "process_bind_param", counted)
    later = AT + dt.timedelta(days=1)
    rows = [{**_decision(f"m{i}"), "as_of": (AT, later)[i % 2]} for i in range(1_000)]
    append_rows(session, Decision, rows)
    assert len(calls) == 3  # as_of: AT and the day after; created_at: AT (per column)
    stored = dict(session.execute(select(Decision.dedupe_key, Decision.as_of)).tuples().all())
    assert (stored["m0"], stored["m1"], len(stored)) == (AT, later, 1_000)


def test_new_keys_are_appended_as_the_conflict_checked_path_stores_them(
    session: Session,
) -> None:
    """``new_keys``: the same decisions as the checked path, and a key that does exist after
    all is an error, never a silent second decision."""
    made = [
        NewDecision(f"{kind}:{i}", DecisionAction.ASSIGN_OWNER, "round_robin", reason="why",
                    facts={"owner_id": i})
        for kind in ("checked", "appended") for i in range(600)
    ]  # fmt: skip
    note_decisions(session, made[:600], run_id=None, as_of=AT)
    note_decisions(session, made[600:], run_id=None, as_of=AT, new_keys=True)
    stored = {
        key: rest
        for key, *rest in session.execute(
            select(Decision.dedupe_key, Decision.action, Decision.rule, Decision.reason,
                   Decision.facts, Decision.as_of)
        ).tuples()
    }  # fmt: skip
    assert len(stored) == 1_200
    assert all(stored[f"checked:{i}"] == stored[f"appended:{i}"] for i in range(600))
    assert stored["appended:7"] == [DecisionAction.ASSIGN_OWNER, "round_robin", "why",
                                    {"owner_id": 7}, AT]  # fmt: skip
    with pytest.raises(Exception, match="dedupe_key"), session.begin_nested():
        note_decisions(session, made[:1], run_id=None, as_of=AT, new_keys=True)
    note_decisions(session, made[:1], run_id=None, as_of=AT)  # the checked path skips it
    assert session.scalar(select(func.count()).select_from(Decision)) == 1_200


@pytest.mark.parametrize(
    "wanted",
    [
        ['o"brien@x.example', "a,b@x.example", "{brace}@x.example", "back\\slash@x.example"],
        ["zoë@x.example", "  spaced  ", ""],
        ["unit\x1fseparated"],  # the separator itself: the array is sent as one
        [],
    ],
    ids=["punctuation", "unicode-and-blank", "separator", "none"],
)
def test_among_finds_exactly_the_strings_given(session: Session, wanted: list[str]) -> None:
    """Strings are sent as one joined string the server splits: whatever they hold, the rows
    found are those named."""
    keys = [
        'o"brien@x.example', "a,b@x.example", "{brace}@x.example", "back\\slash@x.example",
        "zoë@x.example", "  spaced  ", "", "unit\x1fseparated", "other@x.example", "a",
    ]  # fmt: skip
    for key in keys:
        session.add(Lead(email_key=key, source="web", status_changed_at=AT, created_at=AT, tags=[]))
    session.flush()
    found = session.scalars(
        select(Lead.email_key).where(upsert.among(session, Lead.email_key, wanted))
    )
    assert sorted(found) == sorted(wanted)


def test_reserved_ids_are_new_ascending_and_once_written_never_handed_out_again(
    session: Session,
) -> None:
    """What an import relies on: it reserves a batch's ids, writes rows under them, reserves
    the next batch's (on SQLite the ids after the largest stored; on PostgreSQL the sequence's)."""
    from tasks.store.upsert import reserve_ids

    stored = insert_ignore_returning(
        session, Decision, [_decision(f"r{i}") for i in range(3)], ["dedupe_key"], ["id"]
    )
    first = reserve_ids(session, Decision, 2_500)
    assert len(first) == len(set(first)) == 2_500 and first == sorted(first)
    assert min(first) > max(i for (i,) in stored)
    append_rows(session, Decision, [{**_decision(f"f{i}"), "id": i} for i in first])
    second = reserve_ids(session, Decision, 7)
    assert len(second) == 7 and second == sorted(second) and min(second) > max(first)
    assert reserve_ids(session, Decision, 0) == []


def test_a_statement_run_many_times_is_planned_for_its_own_values(session: Session) -> None:
    """``among`` sends its keys as one parameter that a plan for these very values folds into a
    constant array; a plan made once for any values splits it again for every row it reads
    (1.8 s instead of 2 ms a lookup, at a million rows). So PostgreSQL is never handed a
    prepared statement it could plan that way, however often one runs."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite plans every statement for its values")
    for i in range(10):
        session.execute(select(Lead.id).where(upsert.among(session, Lead.email_key, [f"k{i}"])))
    assert session.scalar(text("SELECT count(*) FROM pg_prepared_statements")) == 0


def test_integer_columns_are_appended_exactly_and_a_value_too_wide_is_refused(
    session: Session,
) -> None:
    """Binary COPY on PostgreSQL (each field its own width), executemany on SQLite: 64-bit
    keys at both ends of their range and 32-bit ids come back as given."""
    keys = np.array([-(2**63), -1, 0, 7, 2**63 - 1], dtype=np.int64)
    leads = np.array([1, 2, 3, 2**31 - 1, 5], dtype=np.int64)
    upsert.append_int_columns(session, LeadMatchKey, ["key", "lead_id"], [keys, leads])
    stored = session.execute(select(LeadMatchKey.key, LeadMatchKey.lead_id)).tuples().all()
    assert sorted(stored) == sorted(zip(keys.tolist(), leads.tolist(), strict=True))
    upsert.append_int_columns(session, LeadMatchKey, ["key", "lead_id"], [keys[:0], leads[:0]])
    if session.get_bind().dialect.name == "postgresql":  # SQLite's integers are all 64-bit
        with pytest.raises(OverflowError, match=r"lead_match_keys\.lead_id"):
            upsert.append_int_columns(
                session, LeadMatchKey, ["key", "lead_id"], [keys[:1] + 1, leads[:1] + 2**31]
            )
