"""What a batch of lead rows needs to know of the store, read in one go before it is judged.

The stored leads its rows' exact keys name, the holders of its rows' block keys (stored, and
those of the import's own key log), the values of those holders (fuzzy candidates), and ids
for the leads it may create. Read up front, they let the batch be judged in Python while the
previous batch's writes run (see ``lead_writer.py``); what those writes change is the writer's
to add (``Recent``).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text, union_all
from sqlalchemy.orm import Session

from tasks.ingest.cleaning import identity
from tasks.ingest.matching import MAX_BLOCK
from tasks.ingest.survivorship import FILLABLE
from tasks.store.models import Lead, LeadAlias, LeadMatchKey
from tasks.store.upsert import among, id_slices, joined_among, reserve_ids, table

# Word for word the partial indexes' predicates: a planner uses a partial index only when it can
# prove the query implies its predicate, and neither proves it from ``email_role IS false``
# (PostgreSQL) or ``email_role = 0`` (SQLite), the same test as far as the data goes. Without
# them, each batch's lookup read every lead.
_PERSONAL = text("NOT leads.email_role")
_ROLE = text("leads.email_role")
_LOOKUP_COLUMNS = (Lead.id, Lead.email_key, Lead.email_role, Lead.merged_into_id,
                   Lead.created_at, Lead.created_run_id, Lead.field_sources,
                   *(getattr(Lead, name) for name in FILLABLE))  # fmt: skip


@dataclass(slots=True)
class Stored:
    """A lead already in the store (or written by this import), with the values a duplicate
    may fill."""

    id: int
    values: dict[str, Any]


# What fuzzy matching reads of a candidate, in ``Person``'s order after its ref.
_CANDIDATE_COLUMNS = (Lead.first_name, Lead.last_name, Lead.company_key, Lead.website,
                      Lead.email_key, Lead.phone)  # fmt: skip
Candidate = tuple[str | None, str | None, str | None, str | None, str | None, str | None]


def candidate(values: Mapping[str, Any]) -> Candidate:
    """A lead's values as fuzzy matching reads them (see ``_CANDIDATE_COLUMNS``)."""
    return (values.get("first_name"), values.get("last_name"), values.get("company_key"),
            values.get("website"), values.get("email_key"), values.get("phone"))  # fmt: skip


@dataclass
class Found:
    """A batch's view of the store, as of the writes that ran before it was read."""

    stored: dict[str, Stored]  # exact key -> the lead it names
    holders: dict[int, set[int]]  # block key -> its holders, for keys not crowded
    crowded: set[int]  # block keys held by more than MAX_BLOCK leads
    # Holders (not merged away) by id, with what matching reads of them: thousands a batch,
    # of whom few match, so their other values are read only for those (``Lookup.values``).
    candidates: dict[int, Candidate]
    ids: list[int] = field(default_factory=list)  # new lead ids, reserved
    # Every lead read in full so far, by id: one ``Stored`` a lead, whichever key found it.
    leads: dict[int, Stored] = field(default_factory=dict)


class Lookup:
    """Reads for the writer; used by the one thread that runs the session's statements."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # SQLite: the ids after the largest stored one are the import's own (it holds the
        # write lock), counted here rather than read again: reserved ids may not be written yet.
        self._next_sqlite_id: int | None = None

    def read(
        self,
        keys: set[str],
        wanted: Sequence[int],
        logged: Mapping[int, list[int]],
        log_crowded: set[int],
        ids: int,
        not_candidates: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> Found:
        """The batch's view: ``keys`` its exact keys, ``wanted`` its block keys, ``logged``
        and ``log_crowded`` what the key log holds of them, ``ids`` how many new ids to take.
        Holders of ``not_candidates`` keys (the batch's phones: everyone on a number is counted,
        never a candidate for that alone) are read only if another key brings them."""
        holders, crowded = self.holders(wanted, logged, log_crowded)
        wanted_leads = {
            lead for key, leads in holders.items() if key not in not_candidates for lead in leads
        }
        leads: dict[int, Stored] = {}  # one Stored a lead, whichever query read it
        return Found(
            stored=self.stored(keys, leads),
            holders=holders,
            crowded=crowded,
            candidates=self.candidates(wanted_leads),
            ids=self.reserve(ids),
            leads=leads,
        )

    def reserve(self, count: int) -> list[int]:
        if count <= 0:
            return []
        if self.session.get_bind().dialect.name == "postgresql":
            return reserve_ids(self.session, Lead, count)
        if self._next_sqlite_id is None:
            self._next_sqlite_id = reserve_ids(self.session, Lead, 1)[0]
        first, self._next_sqlite_id = self._next_sqlite_id, self._next_sqlite_id + count
        return list(range(first, first + count))

    def stored(self, keys: set[str], leads: dict[int, Stored] | None = None) -> dict[str, Stored]:
        """The leads already stored under these keys (a merged-away lead answers for its
        survivor), one ``Stored`` per lead however many keys name it.

        An address is looked for among the leads' own and among their aliases (the other
        addresses merged rows brought), so a person is found by any address they were seen with.
        """
        emails = [k.removeprefix("email:") for k in keys if k.startswith("email:")]
        roles = {k.split(":", 2)[1] for k in keys if k.startswith("role:")}
        phones = {k.split(":", 2)[1] for k in keys if k.startswith("phone:")}
        if not emails and not phones and not roles:
            return {}
        # One query a kind of key, each through its own index; their rows in id order (the
        # oldest holder of a key answers for it), sorted here rather than by the planner, who
        # walked the whole primary key in order to avoid sorting a few hundred rows. Personal
        # addresses, thousands a batch, are joined to the index (see ``joined_among``); the few
        # role addresses and phones are looked up in their small partial indexes.
        session = self.session
        lookup = select(*_LOOKUP_COLUMNS)
        branches = []
        if emails:
            branches.append(joined_among(session, lookup, Lead.email_key, emails).where(_PERSONAL))
        if roles:
            branches.append(lookup.where(among(session, Lead.email_key, sorted(roles)), _ROLE))
        if phones:
            branches.append(
                lookup.where(Lead.email_key.is_(None), among(session, Lead.phone, sorted(phones)))
            )
        rows = sorted(
            session.execute(union_all(*branches) if len(branches) > 1 else branches[0]),
            key=operator.attrgetter("id"),
        )
        leads = {} if leads is None else leads
        survivors = self._survivors({r.merged_into_id for r in rows if r.merged_into_id}, leads)
        found: dict[str, Stored] = {}
        for r in rows:
            key = identity(r.email_key, r.phone, r.first_name, r.last_name, role=r.email_role)
            if key in keys and key not in found:
                found[key] = survivors.get(r.merged_into_id) or _one(leads, r)
        unseen = [e for e in emails if f"email:{e}" not in found]
        if unseen:
            aliased = dict(
                session.execute(
                    select(LeadAlias.key, LeadAlias.lead_id)
                    .where(LeadAlias.kind == "email", among(session, LeadAlias.key, unseen))
                    .order_by(LeadAlias.id.desc())
                )
                .tuples()
                .all()
            )
            owners = self._survivors(set(aliased.values()), leads)
            for email, lead_id in aliased.items():
                if lead_id in owners:
                    found[f"email:{email}"] = owners[lead_id]
        return found

    def holders(
        self, wanted: Sequence[int], logged: Mapping[int, list[int]], log_crowded: set[int]
    ) -> tuple[dict[int, set[int]], set[int]]:
        """The holders of the block keys, stored or in the import's key log (``logged``), and
        the crowded keys (held by more than ``MAX_BLOCK`` leads), whose holders are not listed:
        they are neither followed nor given more holders."""
        holders: dict[int, set[int]] = defaultdict(set)
        if not wanted:
            return holders, set()
        keys = table(LeadMatchKey).c
        # Core, not ORM: tens of thousands of plain pairs a batch need no entity loading.
        for key, lead_id in self.session.connection().execute(
            select(keys.key, keys.lead_id).where(among(self.session, keys.key, list(wanted)))
        ):
            holders[key].add(lead_id)
        for key, leads in logged.items():
            holders[key].update(leads)
        crowded = set(log_crowded)
        crowded.update(key for key, leads in holders.items() if len(leads) > MAX_BLOCK)
        for key in crowded:
            holders.pop(key, None)
        return holders, crowded

    def candidates(self, ids: Iterable[int]) -> dict[int, Candidate]:
        """The stored leads of ``ids`` that are not merged away, as matching reads them: plain
        text columns through Core, no entity, no JSON or date to convert (a million-row import
        reads over a million candidates, most of them only to be told apart by name)."""
        found: dict[int, Candidate] = {}
        connection = self.session.connection()
        for some in id_slices(self.session, sorted(ids)):
            query = select(Lead.id, *_CANDIDATE_COLUMNS).where(
                among(self.session, Lead.id, some), Lead.merged_into_id.is_(None)
            )
            for lead_id, *values in connection.execute(query):
                found[lead_id] = tuple(values)  # type: ignore[assignment]
        return found

    def values(
        self, ids: Iterable[int], leads: dict[int, Stored] | None = None
    ) -> dict[int, Stored]:
        """The stored leads of ``ids`` that are not merged away, with their values."""
        leads = {} if leads is None else leads
        found: dict[int, Stored] = {}
        for some in id_slices(self.session, sorted(ids)):
            for r in self.session.execute(
                select(*_LOOKUP_COLUMNS).where(
                    among(self.session, Lead.id, some), Lead.merged_into_id.is_(None)
                )
            ):
                found[r.id] = _one(leads, r)
        return found

    def new_leads(self, ids: Sequence[int]) -> list[tuple[Any, ...]]:
        """(id, created_at, phone, country) of the leads of ``ids`` that have an address."""
        found: list[tuple[Any, ...]] = []
        for some in id_slices(self.session, ids):
            found += self.session.execute(
                select(Lead.id, Lead.created_at, Lead.phone, Lead.country)
                .where(among(self.session, Lead.id, some), Lead.email.is_not(None))
                .order_by(Lead.id)
            ).tuples()
        return found

    def _survivors(self, ids: set[int], leads: dict[int, Stored]) -> dict[int, Stored]:
        """{id: the lead it was merged into, in the end (itself if it was not)}; ``leads``:
        the ``Stored`` of each lead read so far, shared."""
        found: dict[int, Stored] = {}
        redirect: dict[int, int] = {}
        for _ in range(8):  # merge chains are short; the bound only guards against a cycle
            if not ids:
                break
            rows = self.session.execute(
                select(*_LOOKUP_COLUMNS).where(among(self.session, Lead.id, sorted(ids)))
            ).all()
            ids = set()
            for r in rows:
                if r.merged_into_id:
                    redirect[r.id] = r.merged_into_id
                    ids.add(r.merged_into_id)
                else:
                    found[r.id] = _one(leads, r)
        for start, target in redirect.items():
            while target in redirect and redirect[target] != start:
                target = redirect[target]
            if target in found:
                found[start] = found[target]
        return found


def _one(leads: dict[int, Stored], row: Any) -> Stored:
    """The ``Stored`` of the row's lead: one per lead, so that two keys naming it fill one."""
    lead = leads.get(row.id)
    if lead is None:
        lead = leads[row.id] = Stored(row.id, _values(row))
    return lead


def _values(row: Any) -> dict[str, Any]:
    """A stored lead's values a merge may change, with where they came from."""
    values = {name: getattr(row, name) for name in FILLABLE}
    values.update(
        email_key=row.email_key,
        field_sources=row.field_sources,
        created_at=row.created_at,
        created_run_id=row.created_run_id,
    )
    return values
