"""Owners: the reps from config, and one owner per lead by round robin that remembers its place."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tasks.config.models import Owners
from tasks.decisions import NewDecision, record_decisions
from tasks.store.models import DecisionAction, Lead, Owner


def sync_owners(session: Session, owners: Owners) -> None:
    """Upsert the reps from config by email; reps no longer listed stop receiving leads."""
    existing = {o.email.casefold(): o for o in session.scalars(select(Owner))}
    listed = set()
    for entry in owners.owners:
        key = entry.email.casefold()
        listed.add(key)
        row = existing.get(key)
        if row is None:
            session.add(Owner(name=entry.name, email=entry.email, region=entry.region, active=True))
        else:
            row.name, row.region, row.active = entry.name, entry.region, True
    for key, row in existing.items():
        if key not in listed:
            row.active = False
    session.flush()


def _last_assigned_owner(session: Session) -> int | None:
    # The round robin's position is derived from the store: the owner of the latest assignment.
    return session.scalar(
        select(Lead.owner_id)
        .where(Lead.owner_id.is_not(None), Lead.owner_assigned_at.is_not(None))
        .order_by(Lead.owner_assigned_at.desc(), Lead.id.desc())
        .limit(1)
    )


def assign_owners(
    session: Session,
    lead_ids: list[int],
    *,
    as_of: dt.datetime,
    run_id: int | None,
    exclude_owner: dict[int, int] | None = None,
) -> dict[int, int]:
    """Give each unowned lead one active owner, round robin; return {lead_id: owner_id}.

    A lead that already has an owner keeps it (first come). ``exclude_owner`` names, per lead,
    an owner to skip (a released lead goes to someone else when there is anyone else).
    """
    if not lead_ids:
        return {}
    owners = list(
        session.scalars(select(Owner.id).where(Owner.active.is_(True)).order_by(Owner.id))
    )
    if not owners:
        return {}
    unowned = list(
        session.scalars(
            select(Lead.id).where(Lead.id.in_(lead_ids), Lead.owner_id.is_(None)).order_by(Lead.id)
        )
    )
    last = _last_assigned_owner(session)
    position = owners.index(last) + 1 if last in owners else 0
    exclude = exclude_owner or {}
    chosen: dict[int, int] = {}
    for lead_id in unowned:
        owner = owners[position % len(owners)]
        if len(owners) > 1 and exclude.get(lead_id) == owner:
            position += 1
            owner = owners[position % len(owners)]
        chosen[lead_id] = owner
        position += 1
    by_owner: dict[int, list[int]] = defaultdict(list)
    for lead_id, owner in chosen.items():
        by_owner[owner].append(lead_id)
    for owner, leads in by_owner.items():
        session.execute(
            update(Lead)
            .where(Lead.id.in_(leads))
            .values(owner_id=owner, owner_assigned_at=as_of)
            .execution_options(synchronize_session="fetch")
        )
    record_decisions(
        session,
        [
            NewDecision(
                dedupe_key=f"assign:{lead_id}:{as_of.isoformat()}",
                action=DecisionAction.ASSIGN_OWNER,
                rule="round_robin",
                lead_id=lead_id,
                facts={"owner_id": owner},
            )
            for lead_id, owner in chosen.items()
        ],
        run_id=run_id,
        as_of=as_of,
    )
    return chosen
