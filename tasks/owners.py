"""Owners: the reps from config, and one owner per lead by a round robin that remembers its place.

The round robin keeps no state of its own: where it stands is read from the store (the owner of
its latest assignment decision), so it carries on across runs and processes, and a backfill
that replays the same store and ``as_of`` hands out the same owners.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tasks.config.models import OwnerEntry, Owners
from tasks.decisions import NewDecision, record_decisions
from tasks.store.models import Decision, DecisionAction, Lead, Owner
from tasks.store.upsert import among, id_slices

ROUND_ROBIN = "round_robin"


def sync_owners(session: Session, owners_cfg: Owners | Iterable[OwnerEntry]) -> dict[str, int]:
    """Upsert the reps from config by email; reps no longer listed stop receiving leads.

    Returns {email as configured: owner id}. Nothing is deleted: a rep who leaves keeps the
    leads and decisions that name them, and is only marked inactive.
    """
    entries = owners_cfg.owners if isinstance(owners_cfg, Owners) else list(owners_cfg)
    existing = {o.email.casefold(): o for o in session.scalars(select(Owner).order_by(Owner.id))}
    listed: dict[str, Owner] = {}
    for entry in entries:
        key = entry.email.casefold()
        row = existing.get(key)
        if row is None:
            row = Owner(name=entry.name, email=entry.email, region=entry.region, active=True)
            session.add(row)
            existing[key] = row
        else:
            row.name, row.email, row.region, row.active = (
                entry.name,
                entry.email,
                entry.region,
                True,
            )
        listed[entry.email] = row
    keep = {email.casefold() for email in listed}
    for key, row in existing.items():
        if key not in keep:
            row.active = False
    session.flush()
    return {email: row.id for email, row in listed.items()}


def _last_owner(session: Session) -> int | None:
    """The owner the round robin chose last: the facts of its latest decision.

    Decision ids follow the order assignments were made, whatever their ``as_of`` and whatever
    the ids of the leads: a release of old leads after an import of new ones is still "later".
    """
    facts = session.scalar(
        select(Decision.facts)
        .where(Decision.action == DecisionAction.ASSIGN_OWNER, Decision.rule == ROUND_ROBIN)
        .order_by(Decision.id.desc())
        .limit(1)
    )
    owner = (facts or {}).get("owner_id")
    return int(owner) if owner is not None else None


def _start(owners: list[int], last: int | None) -> int:
    """The index of the next owner after ``last``, even if ``last`` has since become inactive."""
    if last is None:
        return 0
    later = [i for i, owner in enumerate(owners) if owner > last]
    return later[0] if later else 0


def assign_owners(
    session: Session,
    lead_ids: Iterable[int],
    *,
    as_of: dt.datetime,
    run_id: int | None,
    exclude_owner: dict[int, int] | None = None,
) -> dict[int, int]:
    """Give each lead one active owner, round robin over owners by id; return {lead: owner}.

    Only leads that get an owner now are returned. A lead that already has one keeps it (first
    come), unless it is being released: ``exclude_owner`` maps such a lead to the owner to avoid,
    and it goes to someone else whenever there is anyone else.
    """
    wanted = sorted(set(lead_ids))
    if not wanted:
        return {}
    owners = list(
        session.scalars(select(Owner.id).where(Owner.active.is_(True)).order_by(Owner.id))
    )
    if not owners:
        return {}
    exclude = exclude_owner or {}
    current: dict[int, int | None] = {}
    for ids in id_slices(session, wanted):
        current.update(
            session.execute(select(Lead.id, Lead.owner_id).where(among(session, Lead.id, ids)))
            .tuples()
            .all()
        )
    # Lead order is the id order: the same leads and store always give the same owners.
    due = [
        lead for lead in wanted if lead in current and (current[lead] is None or lead in exclude)
    ]
    if not due:
        return {}
    position = _start(owners, _last_owner(session))
    chosen: dict[int, int] = {}
    for lead in due:
        owner = owners[position % len(owners)]
        if len(owners) > 1 and exclude.get(lead) == owner:
            position += 1  # the excluded owner sits this one out
            owner = owners[position % len(owners)]
        chosen[lead] = owner
        position += 1
    by_owner: dict[int, list[int]] = defaultdict(list)
    for lead, owner in chosen.items():
        by_owner[owner].append(lead)
    for owner, leads in by_owner.items():
        for ids in id_slices(session, leads):
            session.execute(
                update(Lead)
                .where(among(session, Lead.id, ids))
                .values(owner_id=owner, owner_assigned_at=as_of)
                .execution_options(synchronize_session="fetch")
            )
    record_decisions(
        session,
        [
            NewDecision(
                dedupe_key=f"assign:{lead}:{as_of.isoformat()}",
                action=DecisionAction.ASSIGN_OWNER,
                rule=ROUND_ROBIN,
                lead_id=lead,
                facts={"owner_id": owner}
                | ({"released_from": exclude[lead]} if lead in exclude else {}),
            )
            for lead, owner in chosen.items()
        ],
        run_id=run_id,
        as_of=as_of,
    )
    return chosen
