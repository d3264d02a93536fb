"""Owners from config, and a round robin that remembers its place across runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from tasks.config.models import OwnerEntry, Owners
from tasks.ingest.leads import import_leads
from tasks.owners import AT_CAPACITY, NO_OWNER_IN_REGION, Assigner, assign_owners, sync_owners
from tasks.store.models import Decision, DecisionAction, Lead, LeadStatus, Owner
from tests.ingest.conftest import AS_OF

REPS = Owners(
    owners=[
        OwnerEntry(name="Ava Patel", email="ava@nurture.example", region="NA"),
        OwnerEntry(name="Ben Okafor", email="ben@nurture.example", region="EMEA"),
        OwnerEntry(name="Chloe Martin", email="chloe@nurture.example", region="EMEA"),
        OwnerEntry(name="Diego Ramos", email="diego@nurture.example", region="LATAM"),
    ]
)


def new_leads(session: Session, n: int) -> list[int]:
    rows = [
        Lead(email=None, email_key=None, phone=f"+1415555{i:04d}", source="web", tags=[],
             status_changed_at=AS_OF, created_at=AS_OF)
        for i in range(n)
    ]  # fmt: skip
    session.add_all(rows)
    session.flush()
    return [r.id for r in rows]


@pytest.fixture
def reps(session: Session) -> list[int]:
    ids = sync_owners(session, REPS)
    return [ids[e.email] for e in REPS.owners]


@pytest.fixture
def lead_updates(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE LEADS"):
            statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", seen)
    yield statements
    event.remove(engine, "before_cursor_execute", seen)


def test_sync_owners_upserts_by_email_and_retires_the_unlisted(session: Session) -> None:
    first = sync_owners(session, REPS)
    assert len(first) == 4 and len(set(first.values())) == 4
    renamed = Owners(
        owners=[
            OwnerEntry(name="Ava P. Patel", email="AVA@nurture.example", region="EMEA"),
            *REPS.owners[1:3],
        ]
    )
    second = sync_owners(session, renamed)
    owners = {o.email.casefold(): o for o in session.scalars(select(Owner))}
    assert len(owners) == 4  # nothing deleted
    assert second["AVA@nurture.example"] == first["ava@nurture.example"]
    ava = owners["ava@nurture.example"]
    assert (ava.name, ava.region, ava.active) == ("Ava P. Patel", "EMEA", True)
    assert owners["diego@nurture.example"].active is False
    sync_owners(session, REPS)
    assert all(o.active for o in session.scalars(select(Owner)))


def test_round_robin_remembers_its_place_across_calls(
    session: Session, run_id: int, reps: list[int]
) -> None:
    leads = new_leads(session, 9)
    first = assign_owners(session, leads[3:6], as_of=AS_OF, run_id=run_id)
    assert first == dict(zip(leads[3:6], reps[:3], strict=True))
    later = AS_OF + dt.timedelta(days=1)
    # Lower lead ids, a later call: the rotation carries on where it stopped.
    second = assign_owners(session, leads[:2], as_of=later, run_id=run_id)
    assert second == {leads[0]: reps[3], leads[1]: reps[0]}
    third = assign_owners(session, [leads[2]], as_of=later, run_id=run_id)
    assert third == {leads[2]: reps[1]}
    session.commit()
    fourth = assign_owners(session, leads[6:], as_of=later, run_id=run_id)
    assert list(fourth.values()) == [reps[2], reps[3], reps[0]]

    owned = dict(session.execute(select(Lead.id, Lead.owner_id)).tuples().all())
    assert owned == first | second | third | fourth
    stamp = session.scalar(select(Lead.owner_assigned_at).where(Lead.id == leads[0]))
    assert stamp == later


def test_first_come_keeps_its_owner(session: Session, run_id: int, reps: list[int]) -> None:
    leads = new_leads(session, 3)
    assign_owners(session, leads[:1], as_of=AS_OF, run_id=run_id)
    again = assign_owners(session, leads, as_of=AS_OF + dt.timedelta(hours=1), run_id=run_id)
    assert again == {leads[1]: reps[1], leads[2]: reps[2]}
    assert session.scalar(select(Lead.owner_id).where(Lead.id == leads[0])) == reps[0]


def test_a_released_lead_goes_to_someone_else(
    session: Session, run_id: int, reps: list[int]
) -> None:
    leads = new_leads(session, 2)
    assign_owners(session, leads, as_of=AS_OF, run_id=run_id)  # reps[0], reps[1]
    later = AS_OF + dt.timedelta(days=100)
    # A lead being released is reassigned even while it still has an owner; next in turn is
    # reps[2], the owner to avoid, so it sits this one out.
    moved = assign_owners(
        session, [leads[0]], as_of=later, run_id=run_id, exclude_owner={leads[0]: reps[2]}
    )
    assert moved == {leads[0]: reps[3]}
    # The engine clears the owner before it releases; the excluded owner is skipped either way.
    session.execute(update(Lead).where(Lead.id == leads[1]).values(owner_id=None))
    moved = assign_owners(
        session, [leads[1]], as_of=later, run_id=run_id, exclude_owner={leads[1]: reps[0]}
    )
    assert moved == {leads[1]: reps[1]}
    decision = session.scalar(
        select(Decision).where(Decision.dedupe_key == f"assign:{leads[1]}:{later.isoformat()}")
    )
    assert decision is not None and decision.facts == {
        "owner_id": reps[1],
        "released_from": reps[0],
    }


def test_with_one_owner_a_released_lead_comes_back(session: Session, run_id: int) -> None:
    only = sync_owners(session, Owners(owners=[REPS.owners[0]]))["ava@nurture.example"]
    [lead] = new_leads(session, 1)
    assign_owners(session, [lead], as_of=AS_OF, run_id=run_id)
    later = AS_OF + dt.timedelta(days=100)
    assert assign_owners(
        session, [lead], as_of=later, run_id=run_id, exclude_owner={lead: only}
    ) == {lead: only}


def test_inactive_owners_get_nothing_and_the_turn_passes_on(
    session: Session, run_id: int, reps: list[int]
) -> None:
    leads = new_leads(session, 4)
    assign_owners(session, leads[:2], as_of=AS_OF, run_id=run_id)  # reps[0], reps[1]
    sync_owners(session, Owners(owners=[REPS.owners[0], REPS.owners[3]]))  # Ben, Chloe leave
    rest = assign_owners(session, leads[2:], as_of=AS_OF, run_id=run_id)
    assert list(rest.values()) == [reps[3], reps[0]]


def test_one_update_per_owner_and_a_decision_per_lead(
    session: Session, run_id: int, reps: list[int], lead_updates: list[str]
) -> None:
    leads = new_leads(session, 10)
    chosen = assign_owners(session, leads, as_of=AS_OF, run_id=run_id)
    assert len(chosen) == 10 and len(lead_updates) == 4
    decisions = session.scalars(
        select(Decision).where(Decision.action == DecisionAction.ASSIGN_OWNER)
    ).all()
    assert {d.dedupe_key for d in decisions} == {f"assign:{i}:{AS_OF.isoformat()}" for i in leads}
    for d in decisions:
        assert d.lead_id is not None
        assert (d.rule, d.facts, d.run_id) == (
            "round_robin",
            {"owner_id": chosen[d.lead_id]},
            run_id,
        )


def test_nobody_to_assign_to(session: Session, run_id: int) -> None:
    leads = new_leads(session, 2)
    assert assign_owners(session, leads, as_of=AS_OF, run_id=run_id) == {}
    assert assign_owners(session, [], as_of=AS_OF, run_id=run_id) == {}


def leads_in(session: Session, countries: list[str | None]) -> list[int]:
    ids = new_leads(session, len(countries))
    for lead, country in zip(ids, countries, strict=True):
        session.execute(update(Lead).where(Lead.id == lead).values(country=country))
    return ids


REGIONAL = Owners.model_validate(
    {
        "assignment": {
            "strategy": ["by_region", "round_robin"],
            "regions": {"NA": ["US", "CA"], "EMEA": ["GB", "DE"], "LATAM": ["MX"]},
        },
        "owners": [o.model_dump() for o in REPS.owners],
    }
)


def test_by_region_rotates_within_the_region_and_falls_back_to_everyone(
    session: Session, run_id: int, reps: list[int]
) -> None:
    ava, ben, chloe, diego = reps
    leads = leads_in(session, ["GB", "DE", "GB", "US", "JP", None, "MX"])
    chosen = assign_owners(session, leads, as_of=AS_OF, run_id=run_id, policy=REGIONAL)
    # EMEA alternates Ben and Chloe; JP and no country go to the round robin over everyone.
    assert [chosen[i] for i in leads] == [ben, chloe, ben, ava, ava, ben, diego]
    decisions = {
        d.lead_id: d
        for d in session.scalars(
            select(Decision).where(Decision.action == DecisionAction.ASSIGN_OWNER)
        )
    }
    assert (decisions[leads[0]].rule, decisions[leads[0]].facts) == (
        "by_region:EMEA",
        {"owner_id": ben, "region": "EMEA"},
    )
    assert decisions[leads[4]].rule == "round_robin"
    # Each region's rotation remembers its own place in a later call.
    later = AS_OF + dt.timedelta(days=1)
    more = leads_in(session, ["DE", "US", "JP"])
    again = assign_owners(session, more, as_of=later, run_id=run_id, policy=REGIONAL)
    assert [again[i] for i in more] == [chloe, ava, chloe]


def test_a_rep_at_the_cap_is_skipped_and_a_lead_nobody_can_take_waits(
    session: Session, run_id: int, reps: list[int]
) -> None:
    ava, ben, chloe, _diego = reps
    capped = Owners.model_validate(
        {
            "assignment": {
                "strategy": ["by_region"],
                "regions": {"NA": ["US"], "EMEA": ["GB"], "LATAM": ["MX"]},
                "max_open_leads": 2,
            },
            "owners": [
                {**o.model_dump(), "max_open_leads": 1}
                if o.email.startswith("ben")
                else o.model_dump()
                for o in REPS.owners
            ],
        }
    )
    leads = leads_in(session, ["GB", "GB", "GB", "GB", "US", "US", "US", "JP"])
    chosen = assign_owners(session, leads, as_of=AS_OF, run_id=run_id, policy=capped)
    # Ben's own cap is 1, Chloe has the default 2; the fourth GB lead waits, so does the third
    # US lead; JP has no region and by_region is the only strategy.
    assert chosen == {leads[0]: ben, leads[1]: chloe, leads[2]: chloe, leads[4]: ava, leads[5]: ava}
    waiting = {
        d.lead_id: d.reason
        for d in session.scalars(select(Decision).where(Decision.rule == "unassigned"))
    }
    assert waiting == {
        leads[3]: "all owners at capacity",
        leads[6]: "all owners at capacity",
        leads[7]: "no owner for the lead's region",
    }
    assert session.scalar(select(Lead.owner_id).where(Lead.id == leads[3])) is None
    # A closed lead frees its owner's place.
    session.execute(update(Lead).where(Lead.id == leads[0]).values(status=LeadStatus.DISQUALIFIED))
    later = AS_OF + dt.timedelta(days=1)
    assert assign_owners(session, [leads[3]], as_of=later, run_id=run_id, policy=capped) == {
        leads[3]: ben
    }


def test_a_round_robin_finds_where_it_stopped_through_an_index(
    session: Session, run_id: int, reps: list[int]
) -> None:
    """Its latest assignment is looked up by index, not by walking back through every decision
    made since (an import of a million rows makes two million)."""
    from tests.plans import statements, whole_reads

    leads = new_leads(session, 4)
    assign_owners(session, leads[:2], as_of=AS_OF, run_id=run_id)
    with statements(session.get_bind(), "SELECT decisions.facts") as seen:
        assigned = assign_owners(session, leads[2:], as_of=AS_OF, run_id=run_id)
    assert assigned == {leads[2]: reps[2], leads[3]: reps[3]}
    assert seen
    for statement, params in seen:
        assert not whole_reads(session.connection(), statement, params, "decisions"), statement


def test_an_import_gives_its_new_leads_the_owners_assigning_afterwards_would(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    """Owned as they are created (each lead written once): the same owners, in the same
    round-robin order, under the same caps, with the same decisions, as assign_owners run
    over the new leads after the import."""
    policy = Owners.model_validate(
        {"owners": [e.model_dump() for e in REPS.owners],
         "assignment": {"strategy": ["by_region", "round_robin"], "max_open_leads": 3,
                        "regions": {"NA": ["US", "CA"], "EMEA": ["GB", "DE"]}}}
    )  # fmt: skip
    countries = ["US", "GB", "DE", "BR", "", "CA", "US", "GB"] * 3
    file = tmp_path / "leads.csv"
    file.write_text(
        "Email,First Name,Country\n"
        + "".join(f"p{i}@x{i}.example,P{i},{c}\n" for i, c in enumerate(countries)),
        encoding="utf-8",
    )
    sync_owners(session, policy)

    def outcome(owned_at_birth: bool) -> tuple[dict[str, int | None], list[tuple[Any, ...]]]:
        with session.begin_nested() as attempt:
            if owned_at_birth:
                import_leads(session, [file], run_id=run_id, as_of=AS_OF,
                             owners=Assigner(session, policy))  # fmt: skip
            else:
                made = import_leads(session, [file], run_id=run_id, as_of=AS_OF)
                assign_owners(session, made.new_lead_ids, as_of=AS_OF, run_id=run_id,
                              policy=policy)  # fmt: skip
            owners = dict(session.execute(select(Lead.email, Lead.owner_id)).tuples().all())
            decided = (
                session.execute(
                    select(
                        Decision.rule,
                        Decision.reason,
                        Decision.facts,
                        Lead.email,
                        Decision.dedupe_key,
                        Lead.id,
                        Decision.run_id,
                        Decision.as_of,
                    )
                    .join(Lead, Lead.id == Decision.lead_id)
                    .where(Decision.action == DecisionAction.ASSIGN_OWNER)
                    .order_by(Decision.id)
                )
                .tuples()
                .all()
            )
            attempt.rollback()
        # Keys name the lead: its id differs between the two tries (a sequence is not rolled back).
        return owners, [(*d[:4], d[4].replace(f":{d[5]}:", ":<lead>:"), *d[6:]) for d in decided]

    born, after = outcome(True), outcome(False)
    assert born == after
    owners, decided = born
    assert len(owners) == 24 and 0 < sum(o is None for o in owners.values()) < 24  # caps bite
    assert {rule for rule, *_ in decided} == {"by_region:NA", "by_region:EMEA", "round_robin",
                                              "unassigned"}  # fmt: skip


def test_once_every_rep_is_at_the_cap_leads_wait_until_one_is_released(
    session: Session, reps: list[int]
) -> None:
    ava, ben, chloe, diego = reps
    everyone_one = Owners.model_validate(
        {
            "assignment": {"strategy": ["by_region", "round_robin"], "max_open_leads": 1,
                           "regions": {"NA": ["US"]}},
            "owners": [o.model_dump() for o in REPS.owners],
        }
    )  # fmt: skip
    assigner = Assigner(session, everyone_one)
    firsts = [assigner.pick("US")[0], *(assigner.pick("JP")[0] for _ in range(3))]
    assert sorted(firsts) == sorted([ava, ben, chloe, diego])
    assert assigner.pick("US") == AT_CAPACITY
    assigner.release(chloe)
    assert assigner.pick("US")[0] == chloe  # not Ava's region, but the round robin's
    assert assigner.pick("JP") == AT_CAPACITY
    regions_only = Owners.model_validate(
        {**everyone_one.model_dump(), "assignment": {
            "strategy": ["by_region"], "max_open_leads": 1,
            "regions": {"NA": ["US"], "EMEA": ["GB"], "LATAM": ["MX"]}}}
    )  # fmt: skip
    session.execute(update(Lead).values(owner_id=None))  # the first assigner wrote nothing
    by_region = Assigner(session, regions_only)
    assert {by_region.pick(c)[0] for c in ("US", "GB", "GB", "MX")} == {ava, ben, chloe, diego}
    # Everyone full: a lead whose region has nobody still says so, not that they are busy.
    assert (by_region.pick("JP"), by_region.pick("GB")) == (NO_OWNER_IN_REGION, AT_CAPACITY)
