"""Exports: every row and column, in id order, values a person can read back, in constant memory."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import tracemalloc

import pytest
from sqlalchemy import event, insert
from sqlalchemy.orm import ORMExecuteState, Session

from tasks.export import TABLES, export
from tasks.store.models import (
    ClosedBy,
    Decision,
    DecisionAction,
    EmailStatus,
    FollowUp,
    FollowUpStatus,
    Lead,
    LeadStatus,
    LostReason,
    Opportunity,
    OpportunityStatus,
    OutboxEmail,
)

PARIS = dt.timezone(dt.timedelta(hours=1))
CREATED = dt.datetime(2026, 3, 2, 15, 30, tzinfo=PARIS)  # stored and exported as 14:30 UTC
BODY_TEXT = 'Hi José,\n\nSaid "not now", so: see you in May, 2026.\n\n-- Ava'
BODY_HTML = '<p>Hi José,</p>\n<p>Said "not now", so: see you in May, 2026.</p>'


# The stores (SQLite and PostgreSQL, where a missing ORDER BY shows) come from tests/conftest.py.


def _lead(session: Session, id: int, **fields: object) -> Lead:
    email = f"person{id}@example.example"
    fields.setdefault("tags", [])
    row = Lead(
        id=id,
        email=email,
        email_key=email,
        status_changed_at=CREATED,
        created_at=CREATED,
        **fields,
    )
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def store(session: Session) -> Session:
    """A few rows of each exported table, inserted out of id order."""
    _lead(session, 3, first_name="Zoë", status=LeadStatus.DISQUALIFIED, tags=["b"])
    _lead(
        session,
        1,
        first_name="José",
        last_name="Núñez, Jr.",
        status=LeadStatus.NURTURING,
        tags=["webinar", "vip"],
        score=42,
    )
    _lead(session, 2)
    session.add_all(
        [
            Opportunity(
                id=2, lead_id=1, name="Núñez - Pilot", stage="proposal", amount=12500,
                stage_entered_at=CREATED, created_at=CREATED, status=OpportunityStatus.LOST,
                closed_at=CREATED + dt.timedelta(days=30), closed_by=ClosedBy.ENGINE,
                lost_reason=LostReason.COMPETITOR, competitor="Zoho",
                lost_notes="Went with Zoho;\ntry again after their renewal",
            ),
            Opportunity(
                id=1, lead_id=3, name="Pilot", stage="demo", stage_entered_at=CREATED,
                created_at=CREATED,
            ),
        ]
    )  # fmt: skip
    session.flush()  # no relationships in the models: flush parents before children
    session.add_all(
        [
            OutboxEmail(
                id=1, dedupe_key="exit:2", lead_id=1, opportunity_id=2, template="exit_courteous",
                to_email="person1@example.example", subject="Thanks, José", body_text=BODY_TEXT,
                body_html=BODY_HTML, status=EmailStatus.RECORDED, due_at=CREATED,
                created_at=CREATED,
            ),
            Decision(
                id=1, dedupe_key="close:2", as_of=CREATED, action=DecisionAction.CLOSE_LOST,
                lead_id=1, opportunity_id=2, rule="said_no", reason="competitor",
                facts={"competitor": "Zoho", "days_in_stage": 12, "notes": ["a", "b"]},
                created_at=CREATED,
            ),
            FollowUp(
                id=1, lead_id=1, opportunity_id=2, dedupe_key="lost:2",
                due_on=dt.date(2026, 5, 4), basis="named", created_at=CREATED,
            ),
        ]
    )  # fmt: skip
    session.commit()
    return session


def _csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _export(session: Session, what: str, fmt: str) -> tuple[int, str]:
    out = io.StringIO(newline="")
    count = export(session, what, out, fmt)  # type: ignore[arg-type]
    return count, out.getvalue()


@pytest.mark.parametrize("what", list(TABLES))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_column_of_every_row_in_id_order(store: Session, what: str, fmt: str):
    count, text = _export(store, what, fmt)
    columns = [c.name for c in TABLES[what].__table__.columns]
    if fmt == "csv":
        header, rows = _csv_rows(text)
        assert header == columns
    else:
        rows = [json.loads(line) for line in text.splitlines()]
        assert all(list(r) == columns for r in rows)
    expected = {"leads": 3, "opportunities": 2, "emails": 1, "decisions": 1, "followups": 1}[what]
    assert count == len(rows) == expected
    assert [int(r["id"]) for r in rows] == list(range(1, expected + 1))


def test_leads_csv_reads_back_as_the_values_stored(store: Session):
    _, text = _export(store, "leads", "csv")
    _, rows = _csv_rows(text)
    jose = rows[0]
    assert jose["first_name"] == "José"
    assert jose["last_name"] == "Núñez, Jr."
    assert jose["status"] == "nurturing"
    assert jose["score"] == "42"
    assert json.loads(jose["tags"]) == ["webinar", "vip"]
    assert jose["created_at"] == "2026-03-02T14:30:00+00:00"
    assert dt.datetime.fromisoformat(jose["created_at"]) == CREATED
    assert jose["owner_id"] == jose["phone"] == jose["merged_into_id"] == ""
    assert rows[2]["status"] == "disqualified"
    assert json.loads(rows[1]["tags"]) == []


def test_leads_jsonl_keeps_types(store: Session):
    _, text = _export(store, "leads", "jsonl")
    jose = json.loads(text.splitlines()[0])
    assert jose["id"] == 1 and jose["score"] == 42
    assert jose["tags"] == ["webinar", "vip"]
    assert jose["status"] == "nurturing"
    assert jose["owner_id"] is None and jose["phone"] is None
    assert dt.datetime.fromisoformat(jose["status_changed_at"]) == CREATED
    assert jose["status_changed_at"].endswith("+00:00")
    assert text.endswith("\n") and len(text.splitlines()) == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_opportunities_keep_their_treasure_map(store: Session, fmt: str):
    _, text = _export(store, "opportunities", fmt)
    rows = _csv_rows(text)[1] if fmt == "csv" else [json.loads(x) for x in text.splitlines()]
    lost = rows[1]
    assert lost["status"] == "lost"
    assert lost["closed_by"] == "engine"
    assert lost["lost_reason"] == "competitor"
    assert lost["competitor"] == "Zoho"
    assert lost["lost_notes"] == "Went with Zoho;\ntry again after their renewal"
    assert dt.datetime.fromisoformat(lost["closed_at"]) == CREATED + dt.timedelta(days=30)
    assert str(lost["amount"]) == "12500"
    assert rows[0]["status"] == "open"
    assert rows[0]["closed_at"] in ("", None)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_emails_carry_their_bodies_verbatim(store: Session, fmt: str):
    _, text = _export(store, "emails", fmt)
    rows = _csv_rows(text)[1] if fmt == "csv" else [json.loads(x) for x in text.splitlines()]
    (email,) = rows
    assert email["body_text"] == BODY_TEXT
    assert email["body_html"] == BODY_HTML
    assert email["subject"] == "Thanks, José"
    assert email["status"] == "recorded"
    assert email["template"] == "exit_courteous"


def test_decisions_facts_are_json_text_in_csv_and_json_in_jsonl(store: Session):
    facts = {"competitor": "Zoho", "days_in_stage": 12, "notes": ["a", "b"]}
    _, text = _export(store, "decisions", "csv")
    (row,) = _csv_rows(text)[1]
    assert json.loads(row["facts"]) == facts
    assert row["action"] == "close_lost"
    assert row["as_of"] == "2026-03-02T14:30:00+00:00"
    _, text = _export(store, "decisions", "jsonl")
    assert json.loads(text)["facts"] == facts


def test_followup_dates_are_iso_dates(store: Session):
    _, text = _export(store, "followups", "csv")
    (row,) = _csv_rows(text)[1]
    assert row["due_on"] == "2026-05-04"
    assert row["status"] == FollowUpStatus.SCHEDULED.value
    assert row["resolved_at"] == ""


def test_an_empty_table_writes_only_the_header(session: Session):
    count, text = _export(session, "followups", "csv")
    assert count == 0
    assert text == ",".join(c.name for c in FollowUp.__table__.columns) + "\r\n"
    assert _export(session, "followups", "jsonl") == (0, "")


def test_unknown_table_or_format_is_refused(store: Session):
    with pytest.raises(ValueError, match="what: expected one of leads"):
        export(store, "owners", io.StringIO(), "csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fmt: expected csv or jsonl"):
        export(store, "leads", io.StringIO(), "xlsx")  # type: ignore[arg-type]


class _Discard(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_large_table_streams_in_bounded_memory(session: Session, fmt: str):
    rows, size = 5000, 4000  # 40 MB of bodies: far more than one batch of 1,000 rows
    _lead(session, 1)
    session.execute(
        insert(OutboxEmail),
        [
            dict(dedupe_key=f"step:{i}", lead_id=1, template="welcome", to_email="a@b.example",
                 subject="Hi", body_text=f"t{i:05d}" * (size // 6),
                 body_html=f"h{i:05d}" * (size // 6), due_at=CREATED, created_at=CREATED)
            for i in range(rows)
        ],
    )  # fmt: skip
    session.commit()
    tracemalloc.start()
    try:
        count = export(session, "emails", _Discard(), fmt)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < 0.4 * rows * size * 2, f"peak {peak / 1e6:.1f} MB: the table was loaded whole"


def test_rows_are_fetched_in_batches_of_a_thousand(store: Session):
    seen: list[object] = []

    def remember(state: ORMExecuteState) -> None:
        seen.append(state.execution_options.get("yield_per"))

    event.listen(store, "do_orm_execute", remember)
    try:
        _export(store, "leads", "csv")
    finally:
        event.remove(store, "do_orm_execute", remember)
    assert seen == [1000]
