"""Import lead files: every row kept with its outcome; duplicates merged, never lost.

Every file's encoding and header are checked before anything is written, then the files are
cleaned (in a second process when large, see ``cleaning.py``) and judged batch by batch
(``lead_writer.py``), each batch written with set-based SQL while the next is judged
(``lead_writes.py``). The caller owns the transaction and commits it once: nothing here
commits, and an error anywhere leaves nothing written once the caller rolls back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.ingest.cleaning import cleaned
from tasks.ingest.lead_writer import LeadWriter
from tasks.ingest.outcomes import LeadImportResult, Outcome, stored_outcomes, write_outcomes_csv
from tasks.ingest.reader import read_records, resolve_encoding
from tasks.store.models import ImportKind, ImportRow

if TYPE_CHECKING:
    from tasks.cadences.new_leads import NewLeadEnrolment
    from tasks.grading import NewLeadGrades
    from tasks.owners import Assigner

__all__ = ["LeadImportResult", "Outcome", "import_leads", "stored_outcomes", "write_outcomes_csv"]

# pg_advisory_xact_lock key of lead imports (any constant no other lock of ours uses).
IMPORT_LOCK = 0x4E55_0002


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
    enrolment: NewLeadEnrolment | None = None,
) -> LeadImportResult:
    """Import lead files into the caller's transaction, streaming them batch by batch.

    Every file's encoding and header are checked before anything is written; then the files are
    read, cleaned and written batch by batch, never held in memory. A malformed line further
    down raises ``IngestFileError`` with its file and line, and the caller, who owns the one
    transaction and commits nothing before the end, rolls it all back. ``keep_outcomes=False``
    keeps no per-row outcome in memory either (a million-row import): read them back with
    ``stored_outcomes``. Large files are cleaned in a second process while this one writes
    (``parallel``). ``enrolling``: the caller enrols every new lead that has an address in the
    new-lead cadences, in this transaction; such a lead is created ``nurturing`` (what
    enrolling makes it) rather than rewritten right after. ``grades``: new leads are created
    scored and graded (their first grades recorded), not graded by an UPDATE afterwards;
    ``owners``: likewise with their owners; ``enrolment``: each batch's new leads that have
    an address are enrolled in the new-lead cadences as they are stored.

    Two imports at once take turns (``_one_import_at_a_time``): the second finds the people
    the first created once it has committed, and merges into them.
    """
    paths = [Path(f) for f in files]
    encodings = {path: _check_file(path, encoding, columns) for path in paths}
    _one_import_at_a_time(session)
    _first_import_of(session, run_id)
    result = LeadImportResult()
    writer = LeadWriter(
        session,
        run_id,
        as_of,
        paths,
        result,
        keep_outcomes=keep_outcomes,
        trust=trust,
        sources=sources,
        enrolling=enrolling,
        grades=grades,
        owners=owners,
        enrolment=enrolment,
    )
    try:
        for batch in cleaned(paths, encodings, columns, parallel=parallel):
            writer.write(batch)
        writer.finish()
    except BaseException:
        writer.abandon()  # the statements' thread is idle before the caller rolls back
        raise
    session.flush()
    return result


def _one_import_at_a_time(session: Session) -> None:
    """Two imports of the same people at once would each find nobody and each create them; the
    second's insert then fails on the unique address. On PostgreSQL a transaction-level
    advisory lock makes the second wait for the first to commit (its reads then see what the
    first created); SQLite's write lock (BEGIN IMMEDIATE) already does."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(IMPORT_LOCK)))


def _first_import_of(session: Session, run_id: int) -> None:
    """An import's decisions and rows are keyed by its run and its rows' places, and written
    without a check for keys that exist: a second import in the same run would collide."""
    seen = session.scalar(
        select(ImportRow.id)
        .where(ImportRow.run_id == run_id, ImportRow.kind == ImportKind.LEAD)
        .limit(1)
    )
    if seen is not None:
        raise ValueError(
            f"run {run_id} has imported leads already: each import is a run of its own"
        )


def _check_file(path: Path, encoding: str | None, columns: Mapping[str, str] | None) -> str:
    """The file's encoding (the whole file is scanned for it), once its header reads well."""
    chosen = resolve_encoding(path, encoding)
    next(iter(read_records(path, "lead", chosen, columns)), None)
    return chosen
