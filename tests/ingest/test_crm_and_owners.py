"""CRM imports and owner assignment on a real store."""

import datetime as dt
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.ingest.crm import import_activities, import_opportunities
from tasks.owners import assign_owners, sync_owners
from tasks.store.models import Activity, ImportRow, Lead, Opportunity, Owner
from tests.builders import lead

AS_OF = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
STAGES = ["discovery", "demo", "proposal", "negotiation"]


def test_deals_need_a_known_lead_a_known_stage_and_a_reason_when_lost(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    lead(session, AS_OF, email="kim@firm.example")
    deals = tmp_path / "deals.csv"
    deals.write_text(
        "Deal ID,Email,Stage,Status,Lost Reason\n"
        "D1,KIM@firm.example,demo,open,\n"
        "D2,kim@firm.example,demo,lost,\n"
        "D3,who@nowhere.example,demo,open,\n"
        "D4,kim@firm.example,closing,open,\n"
        "D5,kim@firm.example,proposal,lost,no_budget\n"
    )
    result = import_opportunities(session, [deals], run_id=run_id, as_of=AS_OF, stages=STAGES)
    assert result.counts == {"rows": 5, "accepted": 2, "updated": 0, "rejected": 3}
    reasons = [r for (r,) in session.execute(select(ImportRow.reasons).order_by(ImportRow.id))]
    assert "a lost deal needs a lost reason" in reasons[1][0]
    assert reasons[2] == ["no lead with email who@nowhere.example"]
    assert reasons[3][0].startswith("unknown stage 'closing'")
    again = import_opportunities(session, [deals], run_id=run_id, as_of=AS_OF, stages=STAGES)
    assert again.counts["accepted"] == 0 and again.counts["updated"] == 2
    assert session.scalar(select(func.count()).select_from(Opportunity)) == 2


def test_activities_are_imported_once(session: Session, run_id: int, tmp_path: Path) -> None:
    lead(session, AS_OF, email="kim@firm.example")
    acts = tmp_path / "acts.csv"
    acts.write_text(
        "Activity ID,Email,Type,Date,Follow Up On\n"
        "A1,kim@firm.example,reply,2026-03-05T10:00:00Z,\n"
        "A2,kim@firm.example,Out of office,2026-03-06,\n"
        "A3,kim@firm.example,named_followup,2026-03-07,2026-06-01\n"
        "A4,kim@firm.example,named_followup,2026-03-07,\n"
    )
    first = import_activities(session, [acts], run_id=run_id, as_of=AS_OF)
    second = import_activities(session, [acts], run_id=run_id, as_of=AS_OF)
    assert first.counts == {"rows": 4, "accepted": 3, "updated": 0, "rejected": 1}
    assert second.counts == {"rows": 4, "accepted": 0, "updated": 3, "rejected": 1}
    kinds = sorted(k.value for k in session.scalars(select(Activity.kind)))
    assert kinds == ["auto_reply", "named_followup", "reply"]


def test_round_robin_remembers_its_place_and_release_goes_elsewhere(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    sync_owners(session, config.owners)
    owners = list(session.scalars(select(Owner.id).order_by(Owner.id)))
    first = [lead(session, AS_OF).id for _ in range(3)]
    assert list(assign_owners(session, first, as_of=AS_OF, run_id=run_id).values()) == owners[:3]
    later = AS_OF + dt.timedelta(days=1)
    second = [lead(session, later).id for _ in range(2)]
    assert list(assign_owners(session, second, as_of=later, run_id=run_id).values()) == [
        owners[3],
        owners[0],
    ]
    # Already owned: first come keeps it.
    assert assign_owners(session, first[:1], as_of=later, run_id=run_id) == {}
    released = first[0]
    session.get(Lead, released).owner_id = None
    session.flush()
    moved = assign_owners(session, [released], as_of=later + dt.timedelta(days=1), run_id=run_id,
                          exclude_owner={released: owners[1]})  # fmt: skip
    assert moved[released] != owners[1]


def test_competitors_take_the_picklist_spelling_or_are_flagged(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    lead(session, AS_OF, email="kim@firm.example")
    deals = tmp_path / "deals.csv"
    deals.write_text(
        "Deal ID,Email,Stage,Status,Lost Reason,Competitor\n"
        "D1,kim@firm.example,demo,lost,competitor,hubspot\n"
        "D2,kim@firm.example,demo,lost,competitor,Brand New CRM\n"
    )
    import_opportunities(session, [deals], run_id=run_id, as_of=AS_OF, stages=STAGES,
                         competitors=["HubSpot", "Salesforce"])  # fmt: skip
    names = [c for (c,) in session.execute(select(Opportunity.competitor).order_by(Opportunity.id))]
    assert names == ["HubSpot", "Brand New CRM"]
    flags = [r for (r,) in session.execute(select(ImportRow.reasons).order_by(ImportRow.id))]
    assert flags[0] == [] and "'Brand New CRM' is not on the picklist" in flags[1][0]
