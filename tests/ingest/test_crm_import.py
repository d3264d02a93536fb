"""Importing deals and activities from a CRM export, keyed to the leads already imported."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.ingest import crm
from tasks.ingest.crm import import_activities, import_opportunities
from tasks.ingest.leads import import_leads
from tasks.store.models import (
    Activity,
    ActivityKind,
    ClosedBy,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    LeadStatus,
    LostReason,
    Opportunity,
    OpportunityStatus,
    Owner,
)
from tests.ingest.conftest import AS_OF, FIXTURES

STAGES = ["discovery", "demo", "proposal", "negotiation"]
LEAD_FILES = [FIXTURES / name for name in ("hubspot_contacts.csv", "salesforce_leads.csv",
                                           "pipedrive_persons.csv", "tradeshow_scans.jsonl")]  # fmt: skip
UTC = dt.UTC


@pytest.fixture
def book(session: Session, run_id: int) -> dict[str, int]:
    """The fixture leads, Ana owned by a rep; returns {email key: lead id}."""
    import_leads(session, LEAD_FILES, run_id=run_id, as_of=AS_OF)
    rep = Owner(name="Ava Patel", email="ava@nurture.example", active=True)
    session.add(rep)
    session.flush()
    ana = session.scalar(select(Lead).where(Lead.email_key == "ana.silva@acme.example"))
    assert ana is not None
    ana.owner_id, ana.owner_assigned_at = rep.id, AS_OF
    session.commit()
    return {k: i for k, i in session.execute(select(Lead.email_key, Lead.id)) if k}


def deal(session: Session, external_id: str) -> Opportunity:
    found = session.scalar(select(Opportunity).where(Opportunity.external_id == external_id))
    assert found is not None, external_id
    return found


def import_deals(session: Session, run_id: int) -> None:
    path = FIXTURES / "opportunities.csv"
    import_opportunities(session, [path], run_id=run_id, as_of=AS_OF, stages=STAGES)


def reasons_of(session: Session, kind: ImportKind) -> dict[int, list[str]]:
    rows = session.execute(
        select(ImportRow.row_number, ImportRow.reasons).where(
            ImportRow.kind == kind, ImportRow.outcome == ImportOutcome.REJECTED
        )
    )
    return dict(rows.tuples().all())


def test_deals_are_checked_and_imported(
    session: Session, run_id: int, book: dict[str, int]
) -> None:
    path = FIXTURES / "opportunities.csv"
    result = import_opportunities(session, [path], run_id=run_id, as_of=AS_OF, stages=STAGES)
    session.commit()
    assert result.counts == {"rows": 7, "accepted": 4, "updated": 0, "rejected": 3}
    assert len(result.new_ids) == 4

    rejected = reasons_of(session, ImportKind.OPPORTUNITY)
    assert set(rejected) == {3, 4, 5}
    assert rejected[3][0].startswith("a lost deal needs a lost reason from: no_budget,")
    assert rejected[4] == ["no lead with email nobody@nowhere.example"]
    assert rejected[5] == [
        "unknown stage 'Closing' (expected one of: discovery, demo, proposal, negotiation)"
    ]

    pilot = deal(session, "D-1")
    ana = session.get(Lead, book["ana.silva@acme.example"])
    assert ana is not None
    assert (pilot.lead_id, pilot.owner_id, pilot.stage, pilot.amount) == (ana.id, ana.owner_id, "demo", 12500)  # fmt: skip
    assert pilot.owner_id is not None
    assert pilot.stage_entered_at == dt.datetime(2026, 2, 20, tzinfo=UTC)
    assert pilot.created_at == dt.datetime(2026, 2, 15, tzinfo=UTC)
    assert (pilot.status, pilot.closed_at, pilot.closed_by) == (OpportunityStatus.OPEN, None, None)

    lost = deal(session, "D-2")
    assert (lost.status, lost.lost_reason, lost.closed_by) == (OpportunityStatus.LOST, LostReason.NO_BUDGET, ClosedBy.PERSON)  # fmt: skip
    assert lost.closed_at == dt.datetime(2026, 2, 28, tzinfo=UTC)
    assert lost.lost_notes == "Budget frozen until Q3"
    assert lost.stage_entered_at == lost.created_at  # no stage date: in the stage since created
    assert lost.lead_id == book["mia.wong@globex.example"]

    to_rival = deal(session, "D-7")
    assert (to_rival.lost_reason, to_rival.competitor) == (LostReason.COMPETITOR, "Rival CRM")
    assert to_rival.created_at == to_rival.stage_entered_at == AS_OF  # no dates at all

    won = deal(session, "D-6")
    assert (won.status, won.closed_by) == (OpportunityStatus.WON, ClosedBy.PERSON)
    jose = session.get(Lead, book["jose@empresa.example"])
    assert jose is not None
    assert (jose.status, jose.status_changed_at) == (LeadStatus.CUSTOMER, dt.datetime(2026, 2, 27, tzinfo=UTC))  # fmt: skip


def test_reimporting_deals_adds_and_changes_nothing(
    session: Session, run_id: int, book: dict[str, int]
) -> None:
    import_deals(session, run_id)
    session.commit()
    before = {o.external_id: (o.stage, o.status, o.amount) for o in session.scalars(select(Opportunity))}  # fmt: skip
    path = FIXTURES / "opportunities.csv"
    again = import_opportunities(session, [path], run_id=run_id, as_of=AS_OF, stages=STAGES)
    assert again.counts == {"rows": 7, "accepted": 0, "updated": 4, "rejected": 3}
    assert again.new_ids == []
    after = {o.external_id: (o.stage, o.status, o.amount) for o in session.scalars(select(Opportunity))}  # fmt: skip
    assert after == before
    updated = session.scalars(
        select(ImportRow.reasons).where(ImportRow.outcome == ImportOutcome.UPDATED)
    ).all()
    assert len(updated) == 4 and all(r[0] == "already imported; left as is" for r in updated)


def test_deals_by_lead_id_and_manual_closes_need_a_reason(
    session: Session, run_id: int, book: dict[str, int], tmp_path: Path
) -> None:
    path = tmp_path / "deals.csv"
    kim = book["kevin.mcdonald@initech.example"]
    path.write_text(
        "Opportunity ID,Lead ID,Opportunity Name,Stage,Status,Closed Lost Reason\n"
        f"S-1,{kim},Initech,Proposal,Closed Lost,Went dark\n"
        f"S-2,{kim},Initech 2,Proposal,lost,because\n"
        f"S-3,{kim},,Discovery,,\n"
        "S-4,999999,Nobody,Discovery,open,\n"
        f",{kim},No id,Discovery,open,\n"
    )
    result = import_opportunities(session, [path], run_id=run_id, as_of=AS_OF, stages=STAGES)
    assert result.counts == {"rows": 5, "accepted": 2, "updated": 0, "rejected": 3}
    assert deal(session, "S-1").lost_reason is LostReason.UNRESPONSIVE
    assert (deal(session, "S-3").name, deal(session, "S-3").status) == ("Deal S-3", OpportunityStatus.OPEN)  # fmt: skip
    rejected = reasons_of(session, ImportKind.OPPORTUNITY)
    assert "got 'because'" in rejected[2][0]
    assert rejected[4] == ["no lead with id 999999"]
    assert rejected[5][0].startswith("no deal id")


def test_activities_are_checked_and_imported_once(
    session: Session, run_id: int, book: dict[str, int]
) -> None:
    import_deals(session, run_id)
    path = FIXTURES / "activities.csv"
    first = import_activities(session, [path], run_id=run_id, as_of=AS_OF)
    session.commit()
    assert first.counts == {"rows": 11, "accepted": 6, "updated": 0, "rejected": 5}
    rejected = reasons_of(session, ImportKind.ACTIVITY)
    assert rejected == {
        3: ["a named follow-up needs a Follow Up On date"],
        6: ["no deal with id D-99"],
        7: [rejected[7][0]],
        10: ["deal D-2 belongs to another lead"],
        11: ["no lead with email ghost@nowhere.example"],
    }
    assert rejected[7][0].startswith("unknown activity type 'Carrier pigeon'")

    acts = {a.external_id: a for a in session.scalars(select(Activity))}
    ana = book["ana.silva@acme.example"]
    pilot = deal(session, "D-1")
    assert (acts["A-1"].kind, acts["A-1"].lead_id, acts["A-1"].opportunity_id) == (ActivityKind.REPLY, ana, pilot.id)  # fmt: skip
    assert acts["A-2"].kind is ActivityKind.MEETING_HELD
    assert acts["A-2"].occurred_at == dt.datetime(2026, 3, 3, 14, tzinfo=UTC)
    assert (acts["A-4"].kind, acts["A-4"].followup_on) == (ActivityKind.NAMED_FOLLOWUP, dt.date(2026, 9, 1))  # fmt: skip
    said_no = acts["A-5"]
    assert (said_no.kind, said_no.reason, said_no.competitor) == (ActivityKind.SAID_NO, LostReason.COMPETITOR, "Rival CRM")  # fmt: skip
    assert said_no.opportunity_id == deal(session, "D-7").id
    assert acts["A-8"].occurred_at > AS_OF  # the future is kept: flows filter by as_of
    [derived] = [a for key, a in acts.items() if key and key.startswith("derived:")]
    assert (derived.kind, derived.notes) == (ActivityKind.CALL, "Intro call")

    second = import_activities(session, [path], run_id=run_id, as_of=AS_OF)
    assert second.counts == {"rows": 11, "accepted": 0, "updated": 6, "rejected": 5}
    assert second.new_ids == []
    assert session.scalar(select(func.count()).select_from(Activity)) == 6


def test_an_activity_of_a_merged_lead_goes_to_the_survivor(
    session: Session, run_id: int, book: dict[str, int], tmp_path: Path
) -> None:
    old = session.get(Lead, book["sean.obrien@hooli.example"])
    assert old is not None
    old.merged_into_id = book["kevin.mcdonald@initech.example"]
    session.flush()
    path = tmp_path / "acts.jsonl"
    path.write_text(
        '{"Email": "Sean.OBrien@hooli.example", "Type": "reply", "Date": "2026-03-01"}\n'
    )
    result = import_activities(session, [path], run_id=run_id, as_of=AS_OF)
    assert result.counts["accepted"] == 1
    assert session.scalar(select(Activity.lead_id)) == book["kevin.mcdonald@initech.example"]


def test_a_row_imported_concurrently_is_not_inserted_twice(
    session: Session, run_id: int, book: dict[str, int]
) -> None:
    # Between our lookup and our insert another run stored A-1: the insert must skip it.
    ana = book["ana.silva@acme.example"]
    row = {"lead_id": ana, "opportunity_id": None, "kind": ActivityKind.REPLY,
           "occurred_at": AS_OF, "followup_on": None, "reason": None, "competitor": None,
           "notes": None}  # fmt: skip
    session.add(Activity(external_id="A-1", **row))
    session.flush()
    inserted = crm._insert_absent(
        session, Activity, [{**row, "external_id": "A-1"}, {**row, "external_id": "A-2"}]
    )
    assert list(inserted) == ["A-2"]
    assert sorted(session.scalars(select(Activity.external_id))) == ["A-1", "A-2"]
