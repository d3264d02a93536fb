"""Import lead files: every row kept with its outcome; exact duplicates merged, never lost.

Every file is read and judged before anything is written, so a structural error in the last
file leaves the store untouched. Rows are then written in batches with set-based SQL: one
lookup of existing leads per batch, bulk inserts, one bulk update of the fields duplicates fill;
the new leads' fuzzy-matching block keys once, at the end (see keylog.py). The caller owns the
transaction (and commits it once): nothing here commits.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import operator
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import TableClause, select, text, true, union_all
from sqlalchemy.orm import Session

from tasks.decisions import NewDecision, note_decisions
from tasks.ingest.cleaning import CleanRow, cleaned, identity
from tasks.ingest.keylog import KeyLog
from tasks.ingest.matching import (
    MAX_BLOCK,
    Match,
    Person,
    block_keys,
    census_key,
    find_matches,
)
from tasks.ingest.normalise import CleanLead
from tasks.ingest.reader import read_records, resolve_encoding
from tasks.ingest.rows import update_by_id
from tasks.owners import assignment_decisions
from tasks.spans import LeadSpan
from tasks.store.models import (
    DecisionAction,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    LeadAlias,
    LeadMatchKey,
    LeadStatus,
)
from tasks.store.upsert import (
    among,
    append_int_rows,
    append_rows,
    dialect_insert,
    fit,
    id_slices,
    insert_ignore,
    insert_ignore_returning,
    joined_among,
    reserve_ids,
    staged,
    table,
    temp_name,
)

if TYPE_CHECKING:
    from tasks.grading import NewLeadGrades, StagedGrades
    from tasks.owners import Assigner

# Fields a duplicate row may fill on the surviving lead when they are empty; never overwritten.
FILLABLE = ("phone", "phone_ext", "first_name", "last_name", "company", "company_key",
            "website", "industry", "employees", "title", "country", "source", "budget",
            "authority", "need", "timing", "tags")  # fmt: skip
# Fields that travel together: a trusted source's phone brings its extension, and so on.
COUPLED = {"phone": ("phone_ext",), "company": ("company_key",)}
# Where the lead came from is recorded once, never replaced by a later source.
FIRST_ONLY = frozenset({"source", "phone_ext", "company_key"})
_fillable = operator.attrgetter(*FILLABLE)
# Word for word the partial indexes' predicates: a planner uses a partial index only when it can
# prove the query implies its predicate, and neither proves it from ``email_role IS false``
# (PostgreSQL) or ``email_role = 0`` (SQLite), the same test as far as the data goes. Without
# them, each batch's lookup read every lead.
_PERSONAL = text("NOT leads.email_role")
_ROLE = text("leads.email_role")
# Block keys stored per COPY when an import ends: bounds the rows made in Python at once.
KEYS_PER_WRITE = 100_000
# Leads an import creates before PostgreSQL's planner is first told of them; then at each
# doubling (six ANALYZEs, 2.7 s in all, in a million-row import).
INFORM_PLANNER_FROM = 20_000
_LOOKUP_COLUMNS = (Lead.id, Lead.email_key, Lead.email_role, Lead.merged_into_id,
                   Lead.created_at, Lead.field_sources,
                   *(getattr(Lead, name) for name in FILLABLE))  # fmt: skip


class Outcome(NamedTuple):
    """What became of one input row: ``(file, row, outcome, lead_id, reasons)``."""

    file: str
    row: int
    outcome: ImportOutcome
    lead_id: int | None
    reasons: list[str]


@dataclass
class LeadImportResult:
    counts: dict[str, int] = field(
        default_factory=lambda: {"rows": 0, "accepted": 0, "merged": 0, "rejected": 0}
    )
    new_lead_ids: list[int] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass(slots=True)
class _Stored:
    """A lead already in the store, with the values a duplicate may fill."""

    id: int
    values: dict[str, Any]


def import_leads(
    session: Session,
    files: Sequence[Path | str],
    *,
    run_id: int,
    as_of: dt.datetime,
    encoding: str | None = None,
    keep_outcomes: bool = True,
    parallel: bool | None = None,
    enrolling: bool = False,
    trust: Sequence[str] = (),
    columns: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    grades: NewLeadGrades | None = None,
    owners: Assigner | None = None,
) -> LeadImportResult:
    """Import lead files into the caller's transaction, streaming them batch by batch.

    Every file's encoding and header are checked before anything is written; then the files are
    read, cleaned and written batch by batch, never held in memory. A malformed line further
    down raises ``IngestFileError`` with its file and line, and the caller, who owns the one
    transaction and commits nothing before the end, rolls it all back. ``keep_outcomes=False`` keeps no per-row outcome in memory either (a million-row import):
    read them back with ``stored_outcomes``. Large files are cleaned in a second process while
    this one writes (``parallel``; see ``cleaning.py``). ``enrolling``: the caller enrols every
    new lead that has an address in the new-lead cadences, in this transaction; such a lead is
    created ``nurturing`` (what enrolling makes it) rather than rewritten right after.
    ``grades``: new leads are created scored and graded (their first grades recorded), not
    graded by an UPDATE afterwards; ``owners``: likewise with their owners.
    """
    paths = [Path(f) for f in files]
    encodings = {path: _check_file(path, encoding, columns) for path in paths}
    writer = _Writer(
        session,
        run_id,
        as_of,
        paths,
        keep_outcomes=keep_outcomes,
        trust=trust,
        sources=sources,
        enrolling=enrolling,
        grades=grades,
        owners=owners,
    )
    for batch in cleaned(paths, encodings, columns, parallel=parallel):
        writer.write(batch)
    writer.finish()
    session.flush()
    return writer.result


def _check_file(path: Path, encoding: str | None, columns: Mapping[str, str] | None) -> str:
    """The file's encoding (the whole file is scanned for it), once its header reads well."""
    chosen = resolve_encoding(path, encoding)
    next(iter(read_records(path, "lead", chosen, columns)), None)
    return chosen


def _empty(name: str, value: Any) -> bool:
    return value is None or value == "" or value == [] or (name == "source" and value == "unknown")


@dataclass(frozen=True)
class Provenance:
    """Where an incoming row's values come from: its source and when it was true."""

    source: str
    at: dt.datetime


def _fill(
    current: dict[str, Any],
    incoming: Mapping[str, Any],
    into: dict[str, Any],
    origin: Provenance,
    trust: Mapping[str, int],
) -> list[str]:
    """Merge an incoming row's values into ``current`` (and ``into``); return the fields taken.

    Survivorship, field by field: an empty field takes any value; a filled one takes the
    incoming value when its source is more trusted (lower rank in ``trust``; unlisted sources
    rank last), or equally trusted and more recent. ``current["field_sources"]`` remembers where
    each value came from; a field without an entry came with the lead (its source, creation).
    """
    taken = []
    sources: dict[str, Any] = dict(current.get("field_sources") or {})
    default = [current.get("source") or "unknown", _iso(current.get("created_at"))]
    last = len(trust)
    for name in FILLABLE:
        value = incoming.get(name)
        if _empty(name, value) or (name in FIRST_ONLY and not _empty(name, current.get(name))):
            continue
        if not _empty(name, current.get(name)):
            if value == current.get(name):
                continue
            held_source, held_at = sources.get(name, default)
            held, offered = trust.get(held_source, last), trust.get(origin.source, last)
            if offered > held or (offered == held and (_iso(origin.at) or "") <= (held_at or "")):
                continue
        for field_name in (name, *COUPLED.get(name, ())):
            current[field_name] = into[field_name] = incoming.get(field_name)
        sources[name] = [origin.source, _iso(origin.at)]
        taken.append(name)
    if taken:
        current["field_sources"] = into["field_sources"] = sources
    return taken


def _iso(moment: Any) -> str | None:
    if isinstance(moment, str) or moment is None:
        return moment
    return str(moment.astimezone(dt.UTC).isoformat())


def _dated(target: dict[str, Any], created: dt.datetime) -> None:
    target["created_at"] = target["status_changed_at"] = target["cycle_started_at"] = created


class _Writer:
    """Writes batches in order; what one batch created is found by the next one's lookup."""

    def __init__(
        self,
        session: Session,
        run_id: int,
        as_of: dt.datetime,
        paths: list[Path],
        *,
        keep_outcomes: bool,
        enrolling: bool = False,
        trust: Sequence[str] = (),
        sources: Mapping[str, str] | None = None,
        grades: NewLeadGrades | None = None,
        owners: Assigner | None = None,
    ) -> None:
        self.session, self.run_id, self.as_of = session, run_id, as_of
        self.grades, self.owners = grades, owners
        # "referrals" and "word_of_mouth" are "referral": one source for trust, score, reports.
        self.sources = dict(sources or {})
        self.keep_outcomes = keep_outcomes
        # Updating every new lead's status after the insert rewrote each row and its indexes.
        self.enrolled_status = LeadStatus.NURTURING if enrolling else LeadStatus.NEW
        self.trust = {source: rank for rank, source in enumerate(trust)}
        self.file_index = {str(path): index for index, path in enumerate(paths, 1)}
        # Each file's name as import rows keep it, and as decisions show it: made once per file.
        self.file_names = {str(p): (fit(ImportRow.file, str(p)) or "", p.name) for p in paths}
        self.result = LeadImportResult()
        # Leads this import created without a date: a later row of the same person that has one
        # tells when the lead began (a Pipedrive export has no created column).
        self.undated: set[int] = set()
        # The block keys of the leads this import created: stored by ``finish``.
        self.keys = KeyLog()
        # Each batch's new leads are staged under one name: what reads them compiles once.
        self.stage_name = temp_name("staged_leads")
        # The number of leads created at which the planner is next told of them (see _inform_planner).
        self.inform_at = INFORM_PLANNER_FROM

    def finish(self) -> None:
        """Store the block keys of the leads this import created, in key order: they are
        hashes, and keys inserted at random places in the index cost twice what the same keys
        walked in order did."""
        for pairs in self.keys.drain(KEYS_PER_WRITE):
            append_int_rows(self.session, LeadMatchKey, ["key", "lead_id"], pairs)

    def write(self, batch: list[CleanRow]) -> None:
        if self.sources:
            for row in batch:
                row.lead.source = self.sources.get(row.lead.source, row.lead.source)
        known = self._stored({row.key for row in batch if row.key})
        pending: dict[str, dict[str, Any]] = {}  # key -> the lead row this batch inserts
        pending_undated: set[str] = set()
        creators: dict[str, int] = {}  # key -> index of the row that creates it
        updates: dict[int, dict[str, Any]] = {}
        outcomes: list[ImportOutcome] = []
        filled: list[list[str]] = []
        aliases: list[tuple[str, CleanRow]] = []  # (the lead's key, the row seen with it)
        refilled: set[str] = set()  # pending keys a later row of the batch filled fields of
        for index, row in enumerate(batch):
            incoming = dict(zip(FILLABLE, _fillable(row.lead), strict=True))
            origin = Provenance(row.lead.source, row.lead.created or self.as_of)
            if row.key is None:
                outcomes.append(ImportOutcome.REJECTED)
                filled.append([])
            elif row.key in known:
                stored = known[row.key]
                into = updates.setdefault(stored.id, {})
                names = _fill(stored.values, incoming, into, origin, self.trust)
                aliases.append((row.key, row))
                if stored.id in self.undated and row.lead.created:
                    _dated(into, row.lead.created)
                    self.undated.discard(stored.id)
                    names.append("created_at")
                outcomes.append(ImportOutcome.MERGED)
                filled.append(names)
            elif row.key in pending:
                target = pending[row.key]
                names = _fill(target, incoming, target, origin, self.trust)
                if names:
                    refilled.add(row.key)
                aliases.append((row.key, row))
                if row.key in pending_undated and row.lead.created:
                    _dated(target, row.lead.created)
                    pending_undated.discard(row.key)
                    names.append("created_at")
                outcomes.append(ImportOutcome.MERGED)
                filled.append(names)
            else:
                pending[row.key] = self._lead_row(row.lead)
                if row.lead.created is None:
                    pending_undated.add(row.key)
                creators[row.key] = index
                outcomes.append(ImportOutcome.ACCEPTED)
                filled.append([])

        # Each new person's block keys, made once: to find candidates, then to be stored. Those
        # of a row alone came with it; a person whose later rows filled in fields has new ones.
        blocks: dict[str, Collection[int]] = {
            key: block_keys(_person(key, row)) if key in refilled else batch[creators[key]].blocks
            for key, row in pending.items()
        }
        holders, crowded = self._holders(blocks)
        fuzzy = self._fuzzy(pending, creators, blocks, holders, crowded)
        redirect: dict[str, str] = {}  # absorbed pending key -> the pending key it joined
        by_fuzzy: dict[int, Match] = {}  # row index -> the match that merged it
        # (the lead's key, the row's block keys)
        absorbed_keys: list[tuple[str, Collection[int]]] = []
        for key, (joined, match) in sorted(fuzzy.items(), key=lambda kv: creators[kv[0]]):
            index = creators[key]
            row = batch[index]
            origin = Provenance(row.lead.source, row.lead.created or self.as_of)
            incoming = pending.pop(key)
            pending_undated.discard(key)
            if isinstance(joined, _Stored):
                known[key] = joined
                into = updates.setdefault(joined.id, {})
                filled[index] = _fill(joined.values, incoming, into, origin, self.trust)
            else:
                redirect[key] = joined
                filled[index] = _fill(
                    pending[joined], incoming, pending[joined], origin, self.trust
                )
            outcomes[index] = ImportOutcome.MERGED
            by_fuzzy[index] = match
            aliases.append((key, row))
            absorbed_keys.append((key, blocks[key]))

        created = self._insert_leads(pending)
        lost = [key for key in pending if key not in created]
        if lost:
            # Another import created these people between our lookup and our insert: our first
            # row becomes a merge into theirs, filling what theirs lacks.
            raced = self._stored(set(lost))
            for key in lost:
                stored = known[key] = raced[key]
                row = batch[creators[key]]
                origin = Provenance(row.lead.source, row.lead.created or self.as_of)
                filled[creators[key]] = _fill(
                    stored.values, pending[key], updates.setdefault(stored.id, {}), origin,
                    self.trust,
                )  # fmt: skip
                aliases.append((key, row))
                outcomes[creators[key]] = ImportOutcome.MERGED
        for key, lead_id in created.items():
            known[key] = _Stored(lead_id, {})
            if key in pending_undated:
                self.undated.add(lead_id)
        for key, joined in redirect.items():
            known[key] = known[joined]
        self.result.new_lead_ids.extend(created.values())
        self._inform_planner()
        self._update_leads(updates)
        lead_ids = {k: s.id for k, s in known.items()}
        self._keep_aliases(aliases, lead_ids, pending, known, redirect)
        self._keep_match_keys(created, blocks, absorbed_keys, lead_ids, holders, crowded)
        self._keep_rows(batch, outcomes, filled, lead_ids, by_fuzzy)

    def _inform_planner(self) -> None:
        """Let PostgreSQL's planner know the leads and aliases this import has written, each
        time the leads it created have doubled.

        Its statistics come from ANALYZE, which autovacuum runs on committed rows only: inside
        the import's one transaction it knew nothing of them, took a lookup of a batch's few
        thousand addresses for most of the table and read all of it (at a million rows, 28 s
        of lookups instead of 9). ANALYZE run inside the transaction samples its own rows.
        """
        created = len(self.result.new_lead_ids)
        if created < self.inform_at or self.session.get_bind().dialect.name != "postgresql":
            return
        self.inform_at = 2 * created
        self.session.execute(text(f"ANALYZE {table(Lead).name}, {table(LeadAlias).name}"))

    def _holders(
        self, blocks: Mapping[str, Collection[int]]
    ) -> tuple[dict[int, set[int]], set[int]]:
        """The holders of the batch's block keys, stored or created by this import so far, and
        the crowded keys (held by more than ``MAX_BLOCK`` leads), whose holders are not listed:
        they are neither followed (``_fuzzy``) nor given more holders (``_keep_match_keys``).
        """
        holders: dict[int, set[int]] = defaultdict(set)
        wanted = sorted({k for keys in blocks.values() for k in keys})
        if not wanted:
            return holders, set()
        keys = table(LeadMatchKey).c
        # Core, not ORM: tens of thousands of plain pairs a batch need no entity loading.
        for key, lead_id in self.session.connection().execute(
            select(keys.key, keys.lead_id).where(among(self.session, keys.key, wanted))
        ):
            holders[key].add(lead_id)
        # At a million leads most name keys are crowded: their holders, read from the log
        # into sets only to be counted, were most of this lookup's time.
        logged, crowded = self.keys.holders(wanted, full=MAX_BLOCK + 1)
        for key, leads in logged.items():
            holders[key].update(leads)
        crowded.update(key for key, leads in holders.items() if len(leads) > MAX_BLOCK)
        for key in crowded:
            holders.pop(key, None)
        return holders, crowded

    def _fuzzy(
        self,
        pending: dict[str, dict[str, Any]],
        creators: dict[str, int],
        blocks: Mapping[str, Collection[int]],
        holders: dict[int, set[int]],
        crowded: set[int],
    ) -> dict[str, tuple[_Stored | str, Match]]:
        """The new people of this batch who are someone else: {their key: (who, the match)}.

        "Who" is a stored lead, or the key of an earlier new person of this batch. Candidates
        come from the block keys stored leads hold (``lead_match_keys``); a key held by more
        than ``MAX_BLOCK`` leads is crowded and not followed. Matches are taken best first; the
        stored lead, else the earlier row, survives. A row that would join two stored leads
        joins the better match only: two stored leads are never merged by a third party.
        """
        if not any(blocks.values()):
            return {}
        # Everyone on a number is counted (crowding), never a candidate for that alone.
        census = {census_key(row["phone"]) for row in pending.values() if row.get("phone")}
        # The keys each candidate shares with this batch: its blocks, without making them again.
        held_by: dict[int, list[int]] = defaultdict(list)
        for key, leads in holders.items():
            if key not in crowded and key not in census:
                for lead in leads:
                    held_by[lead].append(key)
        # Only what matching reads; the values a merge fills are read for the winners only.
        known = [
            Person(*row)
            for ids in id_slices(self.session, sorted(held_by))
            for row in self.session.execute(
                select(Lead.id, Lead.first_name, Lead.last_name, Lead.company_key,
                       Lead.website, Lead.email_key, Lead.phone)
                .where(among(self.session, Lead.id, ids), Lead.merged_into_id.is_(None))
            ).tuples()
        ]  # fmt: skip
        shares: dict[object, Iterable[int]] = {}
        for lead, held_keys in held_by.items():
            shares[lead] = held_keys
        parent: dict[object, tuple[object, Match]] = {}

        def root(ref: object) -> object:
            while ref in parent:
                ref = parent[ref][0]
            return ref

        def earlier(a: object, b: object) -> bool:
            """Does ``a`` survive ``b``? A stored lead always; of two new rows, the first."""
            if isinstance(a, int):
                return True
            return not isinstance(b, int) and creators[str(a)] < creators[str(b)]

        # Only the new people who share a block with someone are worth comparing, and only on
        # the blocks they share: a block of one yields no pair, however many a person has.
        held = set(holders) | crowded
        shared: dict[int, int] = defaultdict(int)
        for own_keys in blocks.values():
            for k in own_keys:
                shared[k] += 1
        people = []
        for pending_key, row in pending.items():
            useful = [k for k in blocks[pending_key] if k in held or shared[k] > 1]
            if useful:
                people.append(_person(pending_key, row))
                shares[pending_key] = useful
        for match in find_matches(people, known, crowded=crowded, keys=shares):
            a, b = root(match.a), root(match.b)
            if a == b or (isinstance(a, int) and isinstance(b, int)):
                continue
            survivor, absorbed = (a, b) if earlier(a, b) else (b, a)
            parent[absorbed] = (survivor, match)
        finals = {ref: root(ref) for ref in parent}
        stored = self._survivors({f for f in finals.values() if isinstance(f, int)})
        found: dict[str, tuple[_Stored | str, Match]] = {}
        for ref, (_, match) in parent.items():
            final = finals[ref]
            found[str(ref)] = (stored[final] if isinstance(final, int) else str(final), match)
        return found

    def _keep_match_keys(
        self,
        created: dict[str, int],
        blocks: Mapping[str, Collection[int]],
        absorbed: list[tuple[str, Collection[int]]],
        lead_ids: dict[str, int],
        holders: dict[int, set[int]],
        crowded: set[int],
    ) -> None:
        """Block keys of the new leads, and of the rows merged by fuzzy match into a lead (its
        other spellings: the next row spelled that way finds it too); ``holders`` and
        ``crowded``: what the batch's keys held before it. The new leads' keys go to the key
        log, stored at the end; the absorbed rows' keys (held by leads that may be stored) are
        stored now. A key keeps its first ``MAX_BLOCK + 1`` holders (see ``_room``)."""
        # Every (key, new lead) pair in arrays, by key then lead: a key's new holders are the
        # first of its pairs it has room for. Six pairs a lead, a million leads: a Python loop
        # per pair was a tenth of the import.
        pair_keys: list[int] = []
        pair_leads: list[int] = []
        for key, lead_id in created.items():
            own = blocks[key]
            pair_keys.extend(own)
            pair_leads.extend(itertools.repeat(lead_id, len(own)))
        new_keys = np.array(pair_keys, dtype=np.int64)
        new_leads = np.array(pair_leads, dtype=np.int64)
        if len(new_keys):
            order = np.lexsort((new_leads, new_keys))
            new_keys, new_leads = new_keys[order], new_leads[order]
            first = np.flatnonzero(np.r_[True, new_keys[1:] != new_keys[:-1]])
            group = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(new_keys)]))
            held = [
                MAX_BLOCK + 1 if k in crowded else len(holders.get(k, ()))
                for k in new_keys[first].tolist()
            ]
            room = MAX_BLOCK + 1 - np.array(held, dtype=np.int64)
            fits = np.arange(len(new_keys)) - first[group] < room[group]
            new_keys, new_leads = new_keys[fits], new_leads[fits]
            # New leads' keys cannot be held already: kept until the import ends (keylog.py).
            self.keys.add(new_keys, new_leads)
        more: dict[int, set[int]] = defaultdict(set)
        for key, keys in absorbed:
            for block in keys:
                if block not in crowded:
                    more[block].add(lead_ids[key])
        nobody: set[int] = set()
        extra = []
        for block in sorted(more):
            # This batch's new holders of the key: a lead a row was absorbed into may be one.
            lo = int(np.searchsorted(new_keys, block, "left"))
            hi = int(np.searchsorted(new_keys, block, "right"))
            taken = new_leads[lo:hi].tolist()
            # A key the lead already holds (from another spelling) is skipped by _room.
            for lead in _room(holders.get(block, nobody), list(more[block]), taken):
                extra.append((block, lead))
        if extra:
            insert_ignore_returning(
                self.session,
                LeadMatchKey,
                [{"key": k, "lead_id": i} for k, i in extra],
                ["key", "lead_id"],
                [],
            )

    def _keep_aliases(
        self,
        seen: list[tuple[str, CleanRow]],
        lead_ids: dict[str, int],
        pending: dict[str, dict[str, Any]],
        known: dict[str, _Stored],
        redirect: dict[str, str],
    ) -> None:
        """Every email and phone a merged row brought that its lead does not carry itself."""
        rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        for key, row in seen:
            lead_id = lead_ids[key]
            own = known[key].values or pending.get(redirect.get(key, key), {})
            offered = (("email", row.lead.email, row.lead.email_key),
                       ("phone", row.lead.phone, row.lead.phone))  # fmt: skip
            for kind, value, match_key in offered:
                mine = own.get("email_key") if kind == "email" else own.get("phone")
                if value and match_key and match_key != mine:
                    rows[lead_id, kind, match_key] = {
                        "lead_id": lead_id, "kind": kind, "value": value, "key": match_key,
                        "source": row.lead.source, "created_at": self.as_of,
                        "run_id": self.run_id,
                    }  # fmt: skip
        if rows:
            insert_ignore(self.session, LeadAlias, list(rows.values()), ["lead_id", "kind", "key"])

    def _stored(self, keys: set[str]) -> dict[str, _Stored]:
        """The leads already stored under these keys (a merged-away lead answers for its survivor).

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
        lookup = select(*_LOOKUP_COLUMNS)
        branches = []
        if emails:
            branches.append(
                joined_among(self.session, lookup, Lead.email_key, emails).where(_PERSONAL)
            )
        if roles:
            branches.append(lookup.where(among(self.session, Lead.email_key, sorted(roles)), _ROLE))
        if phones:
            branches.append(
                lookup.where(
                    Lead.email_key.is_(None), among(self.session, Lead.phone, sorted(phones))
                )
            )
        rows = sorted(
            self.session.execute(union_all(*branches) if len(branches) > 1 else branches[0]),
            key=operator.attrgetter("id"),
        )
        survivors = self._survivors({r.merged_into_id for r in rows if r.merged_into_id})
        found: dict[str, _Stored] = {}
        for r in rows:
            key = identity(r.email_key, r.phone, r.first_name, r.last_name, role=r.email_role)
            if key in keys and key not in found:
                found[key] = survivors.get(r.merged_into_id) or _Stored(r.id, _values(r))
        unseen = [e for e in emails if f"email:{e}" not in found]
        if unseen:
            aliased = dict(
                self.session.execute(
                    select(LeadAlias.key, LeadAlias.lead_id)
                    .where(LeadAlias.kind == "email", among(self.session, LeadAlias.key, unseen))
                    .order_by(LeadAlias.id.desc())
                )
                .tuples()
                .all()
            )
            leads = self._survivors(set(aliased.values()))
            for email, lead_id in aliased.items():
                if lead_id in leads:
                    found[f"email:{email}"] = leads[lead_id]
        return found

    def _survivors(self, ids: set[int]) -> dict[int, _Stored]:
        found: dict[int, _Stored] = {}
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
                    found[r.id] = _Stored(r.id, _values(r))
        for start, target in redirect.items():
            while target in redirect and redirect[target] != start:
                target = redirect[target]
            if target in found:
                found[start] = found[target]
        return found

    def _lead_row(self, lead: CleanLead) -> dict[str, Any]:
        # A lead exists from its created date on (the flows only see leads created by their
        # as_of); a row without one begins at the import.
        created = lead.created or self.as_of
        return {
            "email": lead.email, "email_key": lead.email_key, "email_role": lead.email_role,
            "phone": lead.phone, "phone_ext": lead.phone_ext,
            "company_key": lead.company_key, "website": lead.website,
            "industry": fit(Lead.industry, lead.industry), "employees": lead.employees,
            "field_sources": {},
            "first_name": fit(Lead.first_name, lead.first_name),
            "last_name": fit(Lead.last_name, lead.last_name),
            "company": fit(Lead.company, lead.company), "title": fit(Lead.title, lead.title),
            "country": lead.country, "source": lead.source, "budget": lead.budget,
            "authority": lead.authority, "need": lead.need, "timing": lead.timing,
            "tags": lead.tags, "status": self.enrolled_status if lead.email else LeadStatus.NEW,
            "status_changed_at": created,
            "created_at": created, "cycle_started_at": created, "created_run_id": self.run_id,
            "score": 0,
        }  # fmt: skip

    def _insert_leads(self, pending: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Insert the new leads; return {key: id} of those inserted (a raced address is not).

        Their ids are taken first and the rows staged, so that ``grades`` scores and grades
        them in SQL before the one INSERT that stores them: each lead is written once.
        """
        if not pending:
            return {}
        keys = list(pending)
        ids = reserve_ids(self.session, Lead, len(keys))
        rows = [{**pending[key], "id": lead_id} for key, lead_id in zip(keys, ids, strict=True)]
        picks = self._owners_for(rows)
        with staged(self.session, Lead, rows, "leads", name=self.stage_name) as stage:
            if self.grades is None:
                inserted = self._insert_staged(stage, list(rows[0]), None)
            else:
                with self.grades.over(self.session, stage, LeadSpan(ids[0], ids[-1])) as born:
                    inserted = self._insert_staged(stage, list(rows[0]), born)
                    born.record(self.session, lost=[i for i in ids if i not in inserted])
        if picks:
            # Each names a lead this import created: none can exist yet. A lead another writer
            # created first (not inserted) keeps counting against its pick's cap for the rest
            # of the import: one lead fewer for that rep, never one too many.
            made = {lead: picked for lead, picked in picks.items() if lead in inserted}
            note_decisions(
                self.session,
                assignment_decisions(made, self.as_of),
                run_id=self.run_id,
                as_of=self.as_of,
                new_keys=True,
            )
        return {key: i for key, i in zip(keys, ids, strict=True) if i in inserted}

    def _owners_for(self, rows: list[dict[str, Any]]) -> dict[int, tuple[int, Any] | str]:
        """Give the new leads their owners in the rows that create them, in id order (what the
        owners' round robins follow); return each lead's pick (see ``Assigner.pick``)."""
        if self.owners is None or not self.owners.reps:
            return {}
        picks: dict[int, tuple[int, Any] | str] = {}
        for row in rows:
            picked = picks[row["id"]] = self.owners.pick(row["country"])
            owned = not isinstance(picked, str)
            row["owner_id"] = picked[0] if owned else None
            row["owner_assigned_at"] = self.as_of if owned else None
        return picks

    def _insert_staged(
        self, stage: TableClause, names: list[str], born: StagedGrades | None
    ) -> set[int]:
        """Move the staged leads into ``leads``, graded when ``born`` is given; return the ids
        stored. A personal address is unique among leads (a partial unique index): a
        concurrent import that created the person first wins, and this row merges into theirs.
        """
        values: dict[str, Any] = {name: stage.c[name] for name in names}
        source: Any = stage
        if born is not None:
            values["score"] = born.score(stage.c.score)
            values["grade"] = born.grade(stage.c.grade)
            source = stage.outerjoin(born.rows, born.rows.c.id == stage.c.id)
        # WHERE: SQLite would read ON CONFLICT as the join's ON without one.
        query = select(*values.values()).select_from(source).where(true()).order_by(stage.c.id)
        statement = (
            dialect_insert(self.session, Lead)
            .from_select(list(values), query)
            .on_conflict_do_nothing(
                index_elements=["email_key"], index_where=text("NOT email_role")
            )
            .returning(table(Lead).c.id)
        )
        return set(self.session.scalars(statement))

    def _update_leads(self, updates: dict[int, dict[str, Any]]) -> None:
        changes = [{"id": lead_id, **values} for lead_id, values in updates.items() if values]
        if not changes:
            return
        for change in changes:
            for name in ("first_name", "last_name", "company", "title"):
                if name in change:
                    change[name] = fit(getattr(Lead, name), change[name])
        update_by_id(self.session, Lead, changes)

    def _keep_rows(
        self,
        batch: list[CleanRow],
        outcomes: list[ImportOutcome],
        filled: list[list[str]],
        lead_ids: dict[str, int],
        by_fuzzy: dict[int, Match],
    ) -> None:
        counts = self.result.counts
        import_rows = []
        row_leads = [lead_ids.get(row.key) if row.key else None for row in batch]
        for row, outcome, lead_id in zip(batch, outcomes, row_leads, strict=True):
            counts["rows"] += 1
            counts[outcome.value] += 1
            if self.keep_outcomes:
                self.result.outcomes.append(
                    Outcome(row.file, row.row_number, outcome, lead_id, row.lead.reasons)
                )
            import_rows.append(
                {
                    "run_id": self.run_id,
                    "kind": ImportKind.LEAD,
                    "file": self.file_names[row.file][0],
                    "row_number": row.row_number,
                    "line_number": row.line_number,
                    "raw": row.raw,
                    "outcome": outcome,
                    "lead_id": lead_id,
                    "reasons": row.lead.reasons,
                }
            )
        append_rows(self.session, ImportRow, import_rows, prepared=("raw",))
        decisions: list[NewDecision] = []
        for index, (row, outcome, names, lead_id) in enumerate(
            zip(batch, outcomes, filled, row_leads, strict=True)
        ):
            where = {"file": self.file_names[row.file][1], "row": row.row_number}
            # One decision per input row of the run: its file's place in the import, its row.
            row_key = f"{self.run_id}:{self.file_index[row.file]}:{row.row_number}"
            if index in by_fuzzy:
                match = by_fuzzy[index]
                decisions.append(
                    NewDecision(
                        dedupe_key=f"merge:{row_key}",
                        action=DecisionAction.MERGE,
                        rule="fuzzy",
                        lead_id=lead_id,
                        reason=match.reason,
                        facts={
                            **where,
                            "fields_taken": names,
                            "score": match.score,
                            "names": match.names,
                            "evidence": list(match.evidence),
                        },
                    )
                )
            elif outcome is ImportOutcome.MERGED:
                by_email = (row.key or "").startswith("email:")
                decisions.append(
                    NewDecision(
                        dedupe_key=f"merge:{row_key}",
                        action=DecisionAction.MERGE,
                        rule="exact_email" if by_email else "exact_phone_and_name",
                        lead_id=lead_id,
                        reason="same email" if by_email else "same phone and name",
                        facts={**where, "fields_taken": names},
                    )
                )
            elif outcome is ImportOutcome.REJECTED:
                decisions.append(
                    NewDecision(
                        dedupe_key=f"reject:{row_key}",
                        action=DecisionAction.REJECT,
                        rule="ingest",
                        reason="; ".join(row.lead.reasons),
                        facts={**where, "reasons": row.lead.reasons},
                    )
                )
        note_decisions(self.session, decisions, run_id=self.run_id, as_of=self.as_of)


def _person(ref: object, values: Mapping[str, Any]) -> Person:
    return Person(
        ref,
        values.get("first_name"),
        values.get("last_name"),
        values.get("company_key"),
        values.get("website"),
        values.get("email_key"),
        values.get("phone"),
    )


def _values(row: Any) -> dict[str, Any]:
    """A stored lead's values a merge may change, with where they came from."""
    values = {name: getattr(row, name) for name in FILLABLE}
    values.update(
        email_key=row.email_key, field_sources=row.field_sources, created_at=row.created_at
    )
    return values


def stored_outcomes(session: Session, run_id: int) -> Iterator[Outcome]:
    """An import's per-row outcomes, read back from the store in input order, streamed."""
    rows = session.execute(
        select(
            ImportRow.file, ImportRow.row_number, ImportRow.outcome, ImportRow.lead_id,
            ImportRow.reasons,
        )
        .where(ImportRow.run_id == run_id, ImportRow.kind == ImportKind.LEAD)
        .order_by(ImportRow.id)
        .execution_options(yield_per=10_000)
    )  # fmt: skip
    for row in rows:
        yield Outcome(row.file, row.row_number, row.outcome, row.lead_id, list(row.reasons))


def write_outcomes_csv(path: Path, outcomes: Iterable[Outcome], *, several_files: bool) -> None:
    """``row,outcome,lead_id,reasons`` (row = 1-based data row), plus ``file`` for several files."""
    several = several_files
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "outcome", "lead_id", "reasons", *(["file"] if several else [])])
        for o in outcomes:
            line = [o.row, o.outcome.value, "" if o.lead_id is None else o.lead_id,
                    "; ".join(o.reasons)]  # fmt: skip
            writer.writerow(line + ([o.file] if several else []))


def _room(held: set[int], leads: list[int], taken: Sequence[int] = ()) -> list[int]:
    """Of ``leads``, the new holders of a key worth storing: a key keeps its first
    ``MAX_BLOCK + 1`` holders (``held``: those stored; ``taken``: those this batch stores).

    One holder more than ``MAX_BLOCK`` makes a key crowded, and it stays crowded (leads are
    never deleted): the holders beyond would only be read back to be counted, and on a shared
    switchboard at a million leads that was most of the rows each batch read.
    """
    room = MAX_BLOCK + 1 - len(held) - len(taken)
    if not held and not taken and len(leads) <= room:
        return leads  # a key nobody holds yet: most of them
    kept = []
    for lead in sorted(leads):
        if room > 0 and lead not in held and lead not in taken:
            kept.append(lead)
            room -= 1
    return kept
