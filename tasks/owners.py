"""Owners: the reps from config, and one owner per lead by the assignment policy in owners.yaml.

A lead that has an owner keeps it (first come). A lead without one goes to the first pool of the
policy's ``strategy`` with a rep under their cap of open leads: ``by_region`` (the reps of the
region the lead's country is in), then ``round_robin`` (every rep). Each pool is a round robin
that keeps no state of its own: where it stands is read from the store (the owner of the pool's
latest assignment decision), so it carries on across runs and processes, and a backfill that
replays the same store and ``as_of`` hands out the same owners. When every rep of every pool is
at their cap the lead stays unassigned, and a decision says so.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    TableClause,
    case,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.orm import Session

from tasks.config.models import Assignment, OwnerEntry, Owners
from tasks.decisions import NewDecision, note_decisions
from tasks.store.models import IN_PLAY, Decision, DecisionAction, Lead, Owner
from tasks.store.upsert import among, id_slices

ROUND_ROBIN = "round_robin"
BY_REGION = "by_region"
# The rule of a "nobody could take it" decision: never a pool, so no round robin reads it.
UNASSIGNED = "unassigned"
AT_CAPACITY = "all owners at capacity"
NO_OWNER_IN_REGION = "no owner for the lead's region"
# pg_advisory_xact_lock key of owner assignment (any constant no other lock of ours uses).
ASSIGNMENT_LOCK = 0x4E55_0001


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


def _last_owner(session: Session, rule: str) -> int | None:
    """The owner a pool's round robin chose last: the facts of its latest decision.

    Decision ids follow the order assignments were made, whatever their ``as_of`` and whatever
    the ids of the leads: a release of old leads after an import of new ones is still "later".
    """
    facts = session.scalar(
        select(Decision.facts)
        .where(Decision.action == DecisionAction.ASSIGN_OWNER, Decision.rule == rule)
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


@dataclass
class _Pool:
    """One round robin: its decisions' rule (where it remembers its place) and its reps by id."""

    rule: str
    owners: list[int]
    position: int
    region: str | None = None

    def take(self, allowed: Callable[[int], bool]) -> int | None:
        """The next rep in turn that ``allowed`` accepts; the turn passes beyond them."""
        for step in range(len(self.owners)):
            owner = self.owners[(self.position + step) % len(self.owners)]
            if allowed(owner):
                self.position += step + 1
                return owner
        return None


@dataclass(frozen=True)
class _Rep:
    id: int
    email: str
    region: str | None


class _Pools:
    """The pools a lead may draw from, built on first use (each reads its place from the store)."""

    def __init__(self, session: Session, reps: list[_Rep], assignment: Assignment) -> None:
        self.session = session
        self.reps = reps
        self.assignment = assignment
        self.region_of = {
            country: region
            for region, countries in assignment.regions.items()
            for country in countries
        }
        self._built: dict[str, _Pool | None] = {}

    def for_lead(self, country: str | None) -> list[_Pool]:
        """The lead's pools with at least one rep, in strategy order."""
        pools: list[_Pool] = []
        for strategy in self.assignment.strategy:
            if strategy == BY_REGION:
                region = self.region_of.get((country or "").upper())
                pool = self._pool(f"{BY_REGION}:{region}", region) if region else None
            else:
                pool = self._pool(ROUND_ROBIN, None)
            if pool is not None:
                pools.append(pool)
        return pools

    def build_all(self) -> None:
        """Every pool the policy can draw from, each with its place read from the store now."""
        for strategy in self.assignment.strategy:
            if strategy == BY_REGION:
                for region in self.assignment.regions:
                    self._pool(f"{BY_REGION}:{region}", region)
            else:
                self._pool(ROUND_ROBIN, None)

    def _pool(self, rule: str, region: str | None) -> _Pool | None:
        if rule not in self._built:
            owners = [r.id for r in self.reps if region is None or r.region == region]
            self._built[rule] = (
                _Pool(rule, owners, _start(owners, _last_owner(self.session, rule)), region)
                if owners
                else None
            )
        return self._built[rule]


def _caps(policy: Owners | None, reps: list[_Rep]) -> dict[int, int]:
    """{rep id: max open leads} for the reps that have a cap (matched to config by email)."""
    if policy is None:
        return {}
    entries = {e.email.casefold(): e for e in policy.owners}
    caps: dict[int, int] = {}
    for rep in reps:
        entry = entries.get(rep.email.casefold())
        cap = entry.max_open_leads if entry and entry.max_open_leads else None
        cap = cap or policy.assignment.max_open_leads
        if cap is not None:
            caps[rep.id] = cap
    return caps


def _open_leads(session: Session, owners: Iterable[int]) -> dict[int, int]:
    """Open leads per rep: what counts against the cap."""
    listed = list(owners)
    if not listed:
        return {}
    rows = session.execute(
        select(Lead.owner_id, func.count())
        .where(
            Lead.owner_id.in_(listed),
            Lead.status.in_(IN_PLAY),
            Lead.merged_into_id.is_(None),
        )
        .group_by(Lead.owner_id)
    ).tuples()
    return {int(owner): int(n) for owner, n in rows if owner is not None}


class Assigner:
    """Owners for many leads in turn: the active reps, their caps, their loads and the pools'
    places are read once, then kept as leads are given out. ``assign_owners`` uses one per
    call; an import keeps one for all its batches and gives each new lead its owner before
    the lead is written (see ``tasks/ingest/leads.py``).

    Taking one takes the assignment lock until the transaction ends (see
    ``_one_assigner_at_a_time``): the loads it keeps are then the store's.
    """

    def __init__(self, session: Session, policy: Owners | None = None) -> None:
        _one_assigner_at_a_time(session)
        self.reps = [
            _Rep(*row)
            for row in session.execute(
                select(Owner.id, Owner.email, Owner.region)
                .where(Owner.active.is_(True))
                .order_by(Owner.id)
            ).tuples()
        ]
        self.caps = _caps(policy, self.reps) if self.reps else {}
        self.load = _open_leads(session, self.caps)
        self.pools = _Pools(session, self.reps, policy.assignment if policy else Assignment())
        # The reps at their cap: once it holds them all, a lead is refused without asking
        # each pool's reps in turn (an import past everyone's cap asked them all per lead).
        self.full = {rep for rep, cap in self.caps.items() if self.load.get(rep, 0) >= cap}

    def ready(self) -> None:
        """Read what the pools need from the store now: afterwards ``pick`` reads nothing, so
        it may run while the session is busy elsewhere (an import's statements' thread)."""
        self.pools.build_all()

    def release(self, owner: int | None) -> None:
        """A lead leaving ``owner``: it stops counting against their cap."""
        if owner in self.load:
            self.load[owner] -= 1
            if self.load[owner] < self.caps.get(owner, 0):
                self.full.discard(owner)

    def pick(self, country: str | None, avoid: int | None = None) -> tuple[int, _Pool] | str:
        """The next lead's owner and pool, counted against the owner's cap; or, when nobody can
        take it, why. ``avoid``: an owner to pass over whenever anyone else is free."""
        pools = self.pools.for_lead(country)
        everyone_full = len(self.full) == len(self.reps)
        picked = None if everyone_full else _pick(pools, avoid, self.caps, self.load)
        if picked is None:
            # Pools but nobody free: capacity. No pool at all: by_region only, and no rep there.
            return AT_CAPACITY if pools else NO_OWNER_IN_REGION
        owner = picked[0]
        self.load[owner] = self.load.get(owner, 0) + 1
        if owner in self.caps and self.load[owner] >= self.caps[owner]:
            self.full.add(owner)
        return picked


def assignment_decisions(
    picks: dict[int, tuple[int, _Pool] | str],
    as_of: dt.datetime,
    released_from: dict[int, int] | None = None,
) -> list[NewDecision]:
    """A decision per lead of ``picks`` ({lead: what ``Assigner.pick`` said}): its owner, or
    why it has none."""
    exclude = released_from or {}
    stamp = as_of.isoformat()  # an import's thousands of decisions share it
    return [
        _unassigned(lead, picked, exclude, stamp)
        if isinstance(picked, str)
        else _assigned(lead, picked[0], picked[1], exclude, stamp)
        for lead, picked in picks.items()
    ]


# What an assignment decision says beyond its lead and owner: (rule, reason, region).
Verdict = tuple[str, str | None, str | None]


def verdict(picked: tuple[int, _Pool] | str) -> Verdict:
    """What the decision about a lead given ``picked`` (see ``Assigner.pick``) will say."""
    if isinstance(picked, str):
        return UNASSIGNED, picked, None
    return picked[1].rule, None, picked[1].region


def insert_assignments(
    session: Session,
    leads: TableClause,
    verdicts: Sequence[Verdict],
    *,
    as_of: dt.datetime,
    run_id: int | None,
) -> None:
    """The decisions ``assignment_decisions`` makes about new leads (none released), made by
    one INSERT ... SELECT from a table of them: ``leads`` has their ``id``, ``owner_id`` and
    ``owner_verdict``, the index in ``verdicts`` of what their decision says (NULL: none).

    An import's new leads are staged before they are stored: building a decision in Python
    for each of a million of them, then copying it, cost more than storing the lead itself.
    The leads are new, so no key can exist yet: nothing is checked.
    """
    if not verdicts:
        return
    dialect = session.get_bind().dialect.name
    build = func.json_build_object if dialect == "postgresql" else func.json_object
    index = leads.c.owner_verdict

    def said(part: int) -> ColumnElement[Any]:
        given = {i: v[part] for i, v in enumerate(verdicts) if v[part] is not None}
        if not given:
            return null()
        return case(given, value=index)  # type: ignore[arg-type]

    rule, reason, region = said(0), said(1), said(2)
    owner = leads.c.owner_id
    owner_fact = (literal("owner_id", String), owner)
    facts = case(
        (region.is_not(None), build(*owner_fact, literal("region", String), region)),
        else_=build(*owner_fact),
    )
    stamp = literal(":" + as_of.isoformat(), String)
    key = case((owner.is_(None), literal("unassigned:", String)), else_=literal("assign:", String))
    d = Decision
    rows = (
        select(
            key + cast(leads.c.id, String) + stamp,
            literal(run_id, d.run_id.type),
            literal(as_of, d.as_of.type),
            literal(DecisionAction.ASSIGN_OWNER, d.action.type),
            rule,
            leads.c.id,
            reason,
            facts,
            literal(dt.datetime.now(dt.UTC), d.created_at.type),
        )
        .where(index.is_not(None))
        .order_by(leads.c.id)
    )
    names = ["dedupe_key", "run_id", "as_of", "action", "rule", "lead_id", "reason", "facts",
             "created_at"]  # fmt: skip
    session.execute(insert(Decision).from_select(names, rows))


def assign_owners(
    session: Session,
    lead_ids: Iterable[int],
    *,
    as_of: dt.datetime,
    run_id: int | None,
    exclude_owner: dict[int, int] | None = None,
    policy: Owners | None = None,
) -> dict[int, int]:
    """Give each lead one active owner by ``policy`` (None: round robin over every owner, no
    caps); return {lead: owner} for the leads that got an owner now.

    A lead that already has one keeps it (first come), unless it is being released:
    ``exclude_owner`` maps such a lead to the owner to avoid, and it goes to someone else
    whenever there is anyone else free. A lead nobody can take stays unassigned, with a
    decision that says why.
    """
    wanted = sorted(set(lead_ids))
    if not wanted:
        return {}
    assigner = Assigner(session, policy)
    if not assigner.reps:
        return {}
    exclude = exclude_owner or {}
    current: dict[int, tuple[int | None, str | None]] = {}
    for ids in id_slices(session, wanted):
        current.update(
            (lead, (owner, country))
            for lead, owner, country in session.execute(
                select(Lead.id, Lead.owner_id, Lead.country).where(among(session, Lead.id, ids))
            ).tuples()
        )
    # Lead order is the id order: the same leads and store always give the same owners.
    due = [
        lead for lead in wanted if lead in current and (current[lead][0] is None or lead in exclude)
    ]
    if not due:
        return {}
    for lead in due:
        assigner.release(current[lead][0])  # a released lead stops counting for its owner
    picks = {lead: assigner.pick(current[lead][1], exclude.get(lead)) for lead in due}
    chosen = {lead: p[0] for lead, p in picks.items() if not isinstance(p, str)}
    _write(session, chosen, as_of)
    note_decisions(session, assignment_decisions(picks, as_of, exclude), run_id=run_id, as_of=as_of)
    return chosen


def _one_assigner_at_a_time(session: Session) -> None:
    """Round robins and caps read the owners' current load: two workers assigning at once (two
    batches of the rules, or an import beside the daily run) would both see a rep under their
    cap and both give them a lead. On PostgreSQL a transaction-level advisory lock queues them;
    SQLite's write lock (BEGIN IMMEDIATE) already does."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(ASSIGNMENT_LOCK)))


def _pick(
    pools: list[_Pool], excluded: int | None, caps: dict[int, int], load: dict[int, int]
) -> tuple[int, _Pool] | None:
    """The first pool's next rep under their cap; the owner to avoid only if nobody else can."""

    def free(owner: int) -> bool:
        return owner not in caps or load.get(owner, 0) < caps[owner]

    for avoid in (True, False) if excluded is not None else (False,):
        for pool in pools:
            owner = pool.take(partial(_allowed, free, excluded if avoid else None))
            if owner is not None:
                return owner, pool
    return None


def _allowed(free: Callable[[int], bool], avoid: int | None, owner: int) -> bool:
    return free(owner) and owner != avoid


def _write(session: Session, chosen: dict[int, int], as_of: dt.datetime) -> None:
    """One UPDATE per owner (per id slice), however many leads."""
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


def _assigned(
    lead: int, owner: int, pool: _Pool, exclude: dict[int, int], stamp: str
) -> NewDecision:
    facts: dict[str, object] = {"owner_id": owner}
    if pool.region is not None:
        facts["region"] = pool.region
    if lead in exclude:
        facts["released_from"] = exclude[lead]
    return NewDecision(
        dedupe_key=f"assign:{lead}:{stamp}",
        action=DecisionAction.ASSIGN_OWNER,
        rule=pool.rule,
        lead_id=lead,
        facts=facts,
    )


def _unassigned(lead: int, reason: str, exclude: dict[int, int], stamp: str) -> NewDecision:
    return NewDecision(
        dedupe_key=f"unassigned:{lead}:{stamp}",
        action=DecisionAction.ASSIGN_OWNER,
        rule=UNASSIGNED,
        lead_id=lead,
        reason=reason,
        facts={"owner_id": None} | ({"released_from": exclude[lead]} if lead in exclude else {}),
    )
