"""Judging batches of cleaned lead rows: exact and fuzzy duplicates, new leads, their owners.

Batches are judged in order, each against the store and against what the batches before it
made. The store's statements run in a thread of their own (``InOrder``), in this order:

    read(1), read(2), write(1), read(3), write(2), ...

so that batch n+1 is judged in Python while batch n's rows are written, rather than the two
taking turns. Batch n+1's reads ran before batch n's writes, so what batch n wrote is added to
them from memory (``Recent``): the leads it created and the values it gave the leads it
touched, and the block keys it gave them beyond the key log.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session

from tasks.decisions import NewDecision
from tasks.ingest.cleaning import CleanRow
from tasks.ingest.keylog import KeyLog
from tasks.ingest.lead_lookup import Candidate, Found, Lookup, Stored, candidate
from tasks.ingest.lead_writes import VERDICT, BatchStore, BatchWrites
from tasks.ingest.matching import (
    MAX_BLOCK,
    Match,
    Person,
    block_keys,
    census_key,
    match_blocks,
)
from tasks.ingest.normalise import CleanLead
from tasks.ingest.outcomes import LeadImportResult, Outcome
from tasks.ingest.survivorship import FILLABLE, Provenance, dated, fill, fillable
from tasks.owners import Verdict, verdict
from tasks.store.in_order import InOrder
from tasks.store.models import (
    DecisionAction,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    LeadMatchKey,
    LeadStatus,
)
from tasks.store.upsert import COPY_NULL, append_int_columns, copy_value, fit

if TYPE_CHECKING:
    from tasks.cadences.new_leads import NewLeadEnrolment
    from tasks.grading import NewLeadGrades
    from tasks.owners import Assigner

# Block keys stored per COPY when an import ends: bounds the rows made in Python at once.
KEYS_PER_WRITE = 100_000
# What a new lead's first cadence step is timed by: its start and its zone.
RETIMING = frozenset({"created_at", "phone", "country"})


@dataclass
class Recent:
    """What the batch judged last wrote, which the next batch's reads ran too early to see."""

    by_key: dict[str, Stored] = field(default_factory=dict)  # exact key -> its lead
    by_id: dict[int, Stored] = field(default_factory=dict)  # the leads it created or touched
    match_keys: dict[int, set[int]] = field(default_factory=dict)  # block key -> new holders

    def add_to(self, found: Found, keys: set[str], wanted: set[int]) -> None:
        """Bring ``found`` up to date: the leads and values from memory, the block keys'
        new holders counted (one can make a key crowded)."""
        by_id = self.by_id
        stored = found.stored
        for key, lead in stored.items():
            if lead.id in by_id:
                stored[key] = by_id[lead.id]
        for key in keys & self.by_key.keys():
            stored[key] = self.by_key[key]
        # Every lead of the last batch, as the candidate the store cannot show yet (only those
        # holding one of this batch's keys are ever compared).
        found.leads.update(by_id)
        found.candidates.update(
            (lead_id, candidate(lead.values)) for lead_id, lead in by_id.items()
        )
        for block, leads in self.match_keys.items():
            if block in wanted and block not in found.crowded:
                holders = found.holders[block] = found.holders.get(block, set()) | leads
                if len(holders) > MAX_BLOCK:
                    found.crowded.add(block)
                    del found.holders[block]


class LeadWriter:
    """Judges batches in order and hands their writes to the store's thread."""

    def __init__(
        self,
        session: Session,
        run_id: int,
        as_of: dt.datetime,
        paths: list[Path],
        result: LeadImportResult,
        *,
        keep_outcomes: bool,
        enrolling: bool = False,
        trust: Sequence[str] = (),
        sources: Mapping[str, str] | None = None,
        grades: NewLeadGrades | None = None,
        owners: Assigner | None = None,
        enrolment: NewLeadEnrolment | None = None,
    ) -> None:
        self.session, self.run_id, self.as_of = session, run_id, as_of
        self.enrolment = enrolment
        # This import's new leads that a later row dated, or gave a phone or a country: their
        # enrolments are timed again when the import ends (see ``NewLeadEnrolment``).
        self.retimed: set[int] = set()
        self.owners = owners
        if owners is not None:
            owners.ready()  # its pools read their places now, not from this thread later
        # "referrals" and "word_of_mouth" are "referral": one source for trust, score, reports.
        self.sources = dict(sources or {})
        self.keep_outcomes = keep_outcomes
        # Updating every new lead's status after the insert rewrote each row and its indexes.
        self.enrolled_status = LeadStatus.NURTURING if enrolling else LeadStatus.NEW
        self.trust = {source: rank for rank, source in enumerate(trust)}
        self.file_index = {str(path): index for index, path in enumerate(paths, 1)}
        # Each file's name as import rows keep it, and as decisions show it: made once per file.
        self.file_names = {str(p): (fit(ImportRow.file, str(p)) or "", p.name) for p in paths}
        # PostgreSQL takes import rows as COPY text: the cleaning wrote each one's first fields
        # (``CleanRow.import_head``), and these end it, by outcome.
        dialect = session.get_bind().dialect
        self.import_tails: dict[ImportOutcome, str] | None = None
        if dialect.name == "postgresql":
            run_and_kind = f"{run_id}\t{copy_value(ImportRow.kind, ImportKind.LEAD, dialect)}\t"
            self.import_tails = {
                outcome: f"{run_and_kind}{copy_value(ImportRow.outcome, outcome, dialect)}\t"
                for outcome in ImportOutcome
            }
        self.result = result
        # Leads this import created without a date: a later row of the same person that has one
        # tells when the lead began (a Pipedrive export has no created column).
        self.undated: set[int] = set()
        # The block keys of the leads this import created: stored by ``finish``.
        self.keys = KeyLog()
        self.recent = Recent()
        self.ids: deque[int] = deque()  # reserved for the leads still to be created
        self.lookup = Lookup(session)
        # What the new leads' assignment decisions say, by index (see ``_owners_for``): only
        # ever appended to, so the store's thread reads it safely.
        self.verdicts: list[Verdict] = []
        self.verdict_index: dict[Verdict, int] = {}
        self.store = BatchStore(session, run_id, as_of, grades, self.verdicts, enrolment)
        self.statements = InOrder("lead-import-statements")
        self.unwritten: BatchWrites | None = None  # the last batch's, handed over after reads

    def write(self, batch: list[CleanRow]) -> None:
        """Judge a batch; its rows are written while the next one is judged (or by ``finish``)."""
        if self.sources:
            for row in batch:
                row.lead.source = self.sources.get(row.lead.source, row.lead.source)
        keys = {row.key for row in batch if row.key}
        wanted = sorted({k for row in batch for k in row.blocks})
        logged, log_crowded = self.keys.holders(wanted, full=MAX_BLOCK + 1)
        phones = {census_key(row.lead.phone) for row in batch if row.key and row.lead.phone}
        reads = self.statements.submit(
            self.lookup.read, keys, wanted, logged, log_crowded, len(keys) - len(self.ids), phones
        )
        if self.unwritten is not None:
            self.statements.submit(self.store.write, self.unwritten)
            self.unwritten = None
        found = reads.result()
        self.ids.extend(found.ids)
        blocks = set(wanted)
        self.recent.add_to(found, keys, blocks)
        self.unwritten = self._judge(batch, found, blocks)

    def finish(self) -> None:
        """Write what is left; then the block keys of the leads this import created, in key
        order: they are hashes, and keys inserted at random places in the index cost twice
        what the same keys walked in order did."""
        if self.unwritten is not None:
            self.statements.submit(self.store.write, self.unwritten)
            self.unwritten = None
        self.statements.close()
        for keys, leads in self.keys.drain(KEYS_PER_WRITE):
            append_int_columns(self.session, LeadMatchKey, ["key", "lead_id"], [keys, leads])
        if self.enrolment is not None and self.retimed:
            self.enrolment.retime(self.session, self.lookup.new_leads(sorted(self.retimed)))

    def abandon(self) -> None:
        """Stop: nothing more is written (the caller rolls the transaction back)."""
        self.statements.abandon()

    def _judge(self, batch: list[CleanRow], found: Found, wanted: set[int]) -> BatchWrites:
        known = found.stored
        pending: dict[str, dict[str, Any]] = {}  # key -> the lead row this batch inserts
        pending_undated: set[str] = set()
        creators: dict[str, int] = {}  # key -> index of the row that creates it
        updates: dict[int, dict[str, Any]] = {}
        outcomes: list[ImportOutcome] = []
        filled: list[list[str]] = []
        aliases: list[tuple[str, CleanRow]] = []  # (the lead's key, the row seen with it)
        refilled: set[str] = set()  # pending keys a later row of the batch filled fields of
        for index, row in enumerate(batch):
            key = row.key
            if key is None:
                outcomes.append(ImportOutcome.REJECTED)
                filled.append([])
            elif key in known:
                stored = known[key]
                into = updates.setdefault(stored.id, {})
                names = fill(stored.values, _incoming(row), into, self._origin(row), self.trust)
                aliases.append((key, row))
                if stored.id in self.undated and row.lead.created:
                    dated(into, row.lead.created)
                    self.undated.discard(stored.id)
                    names.append("created_at")
                self._retime(stored, names)
                outcomes.append(ImportOutcome.MERGED)
                filled.append(names)
            elif key in pending:
                target = pending[key]
                names = fill(target, _incoming(row), target, self._origin(row), self.trust)
                if names:
                    refilled.add(key)
                aliases.append((key, row))
                if key in pending_undated and row.lead.created:
                    dated(target, row.lead.created)
                    pending_undated.discard(key)
                    names.append("created_at")
                outcomes.append(ImportOutcome.MERGED)
                filled.append(names)
            else:
                pending[key] = self._lead_row(row.lead)
                if row.lead.created is None:
                    pending_undated.add(key)
                creators[key] = index
                outcomes.append(ImportOutcome.ACCEPTED)
                filled.append([])

        # Each new person's block keys, made once: to find candidates, then to be stored. Those
        # of a row alone came with it; a person whose later rows filled in fields has new ones.
        blocks: dict[str, Collection[int]] = {
            key: block_keys(_person(key, row)) if key in refilled else batch[creators[key]].blocks
            for key, row in pending.items()
        }
        unread = {k for own in blocks.values() for k in own} - wanted
        if unread:
            self._read_more(found, sorted(unread))
        holders, crowded = found.holders, found.crowded
        fuzzy = self._fuzzy(pending, creators, blocks, holders, crowded, found.candidates)
        self._read_in_full(found, {j for j, _ in fuzzy.values() if isinstance(j, int)})
        redirect: dict[str, str] = {}  # absorbed pending key -> the pending key it joined
        by_fuzzy: dict[int, Match] = {}  # row index -> the match that merged it
        # (the lead's key, the row's block keys)
        absorbed_keys: list[tuple[str, Collection[int]]] = []
        for key, (joined, match) in sorted(fuzzy.items(), key=lambda kv: creators[kv[0]]):
            index = creators[key]
            row = batch[index]
            incoming = pending.pop(key)
            pending_undated.discard(key)
            if isinstance(joined, int):
                survivor = known[key] = found.leads[joined]
                into = updates.setdefault(joined, {})
                filled[index] = fill(survivor.values, incoming, into, self._origin(row), self.trust)
                self._retime(survivor, filled[index])
            else:
                redirect[key] = joined
                target = pending[joined]
                filled[index] = fill(target, incoming, target, self._origin(row), self.trust)
            outcomes[index] = ImportOutcome.MERGED
            by_fuzzy[index] = match
            aliases.append((key, row))
            absorbed_keys.append((key, blocks[key]))

        writes = BatchWrites()
        created = self._create(pending, writes)
        for key, lead_id in created.items():
            known[key] = Stored(lead_id, pending[key])
            if key in pending_undated:
                self.undated.add(lead_id)
        for key, joined in redirect.items():
            known[key] = known[joined]
        self.result.new_lead_ids.extend(created.values())
        writes.created_so_far = len(self.result.new_lead_ids)
        # Copies: the next batch fills these leads' values while this one's are written.
        writes.updates = [
            {"id": lead_id, **values} for lead_id, values in updates.items() if values
        ]
        lead_ids = {k: s.id for k, s in known.items()}
        writes.aliases = self._aliases(aliases, lead_ids, pending, known, redirect)
        writes.match_keys = self._match_keys(
            created, blocks, absorbed_keys, lead_ids, holders, crowded
        )
        self._rows(writes, batch, outcomes, filled, lead_ids, by_fuzzy)
        extra: dict[int, set[int]] = defaultdict(set)
        for block, lead in writes.match_keys:
            extra[block].add(lead)
        self.recent = Recent(known, {lead.id: lead for lead in known.values()}, dict(extra))
        return writes

    def _read_more(self, found: Found, keys: list[int]) -> None:
        """Holders and candidates of block keys the batch's reads did not ask for (a person's
        later rows gave it new ones): read now, after the writes before them."""
        logged, log_crowded = self.keys.holders(keys, full=MAX_BLOCK + 1)
        holders, crowded = self.statements.call(self.lookup.holders, keys, logged, log_crowded)
        found.holders.update(holders)
        found.crowded.update(crowded)
        wanted = {lead for leads in holders.values() for lead in leads} - found.candidates.keys()
        if wanted:
            found.candidates.update(self.statements.call(self.lookup.candidates, wanted))

    def _read_in_full(self, found: Found, ids: set[int]) -> None:
        """The stored leads fuzzy matches merge into, with every value a merge may fill: read
        now (after the writes before them) unless this batch or the last read them already."""
        unread = sorted(ids - found.leads.keys())
        if unread:
            self.statements.call(self.lookup.values, unread, found.leads)

    def _retime(self, lead: Stored, taken: list[str]) -> None:
        """Note a lead of this import whose enrolment's timing ``taken`` may change."""
        if lead.values.get("created_run_id") == self.run_id and not RETIMING.isdisjoint(taken):
            self.retimed.add(lead.id)

    def _origin(self, row: CleanRow) -> Provenance:
        return Provenance(row.lead.source, row.lead.created or self.as_of)

    def _fuzzy(
        self,
        pending: dict[str, dict[str, Any]],
        creators: dict[str, int],
        blocks: Mapping[str, Collection[int]],
        holders: dict[int, set[int]],
        crowded: set[int],
        candidates: Mapping[int, Candidate],
    ) -> dict[str, tuple[int | str, Match]]:
        """The new people of this batch who are someone else: {their key: (who, the match)}.

        "Who" is a stored lead's id, or the key of an earlier new person of this batch. Candidates
        are the holders of the batch's block keys (``lead_match_keys`` and the key log); a key
        held by more than ``MAX_BLOCK`` leads is crowded and not followed. Matches are taken
        best first; the stored lead, else the earlier row, survives. A row that would join two
        stored leads joins the better match only: two stored leads are never merged by a third
        party.
        """
        if not any(blocks.values()):
            return {}
        # Everyone on a number is counted (crowding), never a candidate for that alone.
        census = {census_key(row["phone"]) for row in pending.values() if row.get("phone")}
        # The candidates that share a block with this batch; leads merged away are none (the
        # lookup leaves them out).
        held_leads = {
            lead
            for key, leads in holders.items()
            if key not in crowded and key not in census
            for lead in leads
        }
        phones = [candidates[lead][5] for lead in held_leads if lead in candidates]

        def known(lead: object) -> Person | None:
            values = candidates.get(lead)  # type: ignore[call-overload]
            return Person(lead, *values) if values is not None else None

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
        shares: dict[object, list[int]] = {}
        for pending_key, row in pending.items():
            useful = [k for k in blocks[pending_key] if k in held or shared[k] > 1]
            if useful:
                people.append(_person(pending_key, row))
                shares[pending_key] = useful
        matches = match_blocks(people, shares, holders, known, phones, crowded=crowded)
        for match in matches:
            a, b = root(match.a), root(match.b)
            if a == b or (isinstance(a, int) and isinstance(b, int)):
                continue
            survivor, absorbed = (a, b) if earlier(a, b) else (b, a)
            parent[absorbed] = (survivor, match)
        found: dict[str, tuple[int | str, Match]] = {}
        for ref, (_, match) in parent.items():
            final = root(ref)
            found[str(ref)] = (final if isinstance(final, int) else str(final), match)
        return found

    def _create(self, pending: dict[str, dict[str, Any]], writes: BatchWrites) -> dict[str, int]:
        """Give the new leads their ids and owners; return {key: id}."""
        keys = list(pending)
        ids = [self.ids.popleft() for _ in keys]
        rows = [{**pending[key], "id": lead_id} for key, lead_id in zip(keys, ids, strict=True)]
        self._owners_for(rows)
        writes.new_leads = rows
        return dict(zip(keys, ids, strict=True))

    def _owners_for(self, rows: list[dict[str, Any]]) -> None:
        """Give the new leads their owners in the rows that create them, in id order (what the
        owners' round robins follow), and say what each one's decision will say: the index of
        its verdict in ``verdicts`` (a handful, whatever the number of leads)."""
        if self.owners is None or not self.owners.reps:
            return
        known = self.verdict_index
        for row in rows:
            picked = self.owners.pick(row["country"])
            owned = not isinstance(picked, str)
            row["owner_id"] = picked[0] if owned else None
            row["owner_assigned_at"] = self.as_of if owned else None
            said = verdict(picked)
            if said not in known:
                known[said] = len(self.verdicts)
                self.verdicts.append(said)
            row[VERDICT] = known[said]

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

    def _match_keys(
        self,
        created: dict[str, int],
        blocks: Mapping[str, Collection[int]],
        absorbed: list[tuple[str, Collection[int]]],
        lead_ids: dict[str, int],
        holders: dict[int, set[int]],
        crowded: set[int],
    ) -> list[tuple[int, int]]:
        """Block keys of the new leads, and of the rows merged by fuzzy match into a lead (its
        other spellings: the next row spelled that way finds it too); ``holders`` and
        ``crowded``: what the batch's keys held before it. The new leads' keys go to the key
        log, stored at the end; the absorbed rows' keys (held by leads that may be stored) are
        returned, to be stored with the batch. A key keeps its first ``MAX_BLOCK + 1`` holders
        (see ``_room``)."""
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
        return extra

    def _aliases(
        self,
        seen: list[tuple[str, CleanRow]],
        lead_ids: dict[str, int],
        pending: dict[str, dict[str, Any]],
        known: dict[str, Stored],
        redirect: dict[str, str],
    ) -> list[dict[str, Any]]:
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
        return list(rows.values())

    def _rows(
        self,
        writes: BatchWrites,
        batch: list[CleanRow],
        outcomes: list[ImportOutcome],
        filled: list[list[str]],
        lead_ids: dict[str, int],
        by_fuzzy: dict[int, Match],
    ) -> None:
        """Each input row as kept, with its outcome, and the decision about it (a merge or a
        rejection; an accepted row's lead is the decision)."""
        counts = self.result.counts
        row_leads = [lead_ids.get(row.key) if row.key else None for row in batch]
        counts["rows"] += len(batch)
        for outcome, many in Counter(outcomes).items():
            counts[outcome.value] += many
        rows = list(zip(batch, outcomes, row_leads, strict=True))
        if self.keep_outcomes:
            self.result.outcomes.extend(
                Outcome(row.file, row.row_number, outcome, lead_id, row.lead.reasons)
                for row, outcome, lead_id in rows
            )
        tails = self.import_tails
        if tails is not None:
            writes.import_lines = [
                f"{row.import_head}{tails[outcome]}{COPY_NULL if lead_id is None else lead_id}\n"
                for row, outcome, lead_id in rows
            ]
        else:
            writes.import_rows = [
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
                for row, outcome, lead_id in rows
            ]
        decisions: list[NewDecision] = writes.decisions
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


def _incoming(row: CleanRow) -> dict[str, Any]:
    """The row's values a merge may take (made only for a row that merges)."""
    return dict(zip(FILLABLE, fillable(row.lead), strict=True))


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
