"""Reading and cleaning lead files in batches, in a second process when the files are large.

Cleaning (email-validator, phonenumbers) is the import's heaviest CPU work and needs nothing
from the store, while writing a batch needs the store and little CPU. With two cores they
overlap: a child process reads and cleans batch n+1 while this one writes batch n, so a large
import costs about its cleaning time rather than cleaning plus writing. Batches arrive in file
order either way, and the queue between the two is bounded, so memory stays flat.
"""

from __future__ import annotations

import json
import operator
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from tasks.ingest.matching import Person, ordered_block_keys
from tasks.ingest.normalise import CleanLead, clean_lead
from tasks.ingest.reader import IngestFileError, Record, read_records
from tasks.ingest.rows import fewer_collections, import_row_head, raw_json
from tasks.store.models import ImportRow, Lead
from tasks.store.upsert import copy_text, fit

BATCH = 5_000
# Below this much input a second process costs more to start (~1 s) than it saves.
PARALLEL_FROM_BYTES = 4_000_000


@dataclass(slots=True)
class CleanRow:
    """A row as the writer needs it: where it was, what it said, and what cleaning made of it.

    Whatever can be worked out from the row alone is worked out here, beside the cleaning: in
    a large import this runs in the second process, which has time to spare while the first
    one writes.
    """

    file: str
    row_number: int
    line_number: int
    raw: str  # every column as given, as the JSON text the store keeps (see raw_json)
    # Its import row's first fields as COPY text, for PostgreSQL (see ``import_row_head``).
    import_head: str
    lead: CleanLead
    key: str | None  # the exact dedupe identity; None for a rejected row
    # The fuzzy-matching block keys of the lead this row would create: a tuple, which crosses
    # the pipe four times faster than a set.
    blocks: tuple[int, ...]

    def __reduce__(self) -> tuple[type[CleanRow], tuple[Any, ...]]:
        return CleanRow, _row_fields(self)


# Rebuilt from their fields by the constructor: pickle's own way for a slots class sets
# each field through copyreg, and the writer unpickles a million rows while it writes.
_row_fields = operator.attrgetter(*(f.name for f in fields(CleanRow)))


def lead_blocks(lead: CleanLead) -> tuple[int, ...]:
    """The block keys of the lead a row would create, from its names as the store keeps them,
    in the same order in every process (see ``ordered_block_keys``)."""
    return ordered_block_keys(
        Person(
            None,
            fit(Lead.first_name, lead.first_name),
            fit(Lead.last_name, lead.last_name),
            lead.company_key,
            lead.website,
            lead.email_key,
            lead.phone,
        )
    )


def identity(
    email_key: str | None,
    phone: str | None,
    first: str | None,
    last: str | None,
    *,
    role: bool = False,
) -> str | None:
    """The exact dedupe key: the address's match key; without one, the phone with the name.

    A phone alone is not a person (colleagues share a switchboard), and neither is a role
    address (info@ is read by several people): each counts only together with the name.
    """
    name = f"{(first or '').casefold()} {(last or '').casefold()}"
    if email_key and role:
        return f"role:{email_key}:{name}"
    if email_key:
        return f"email:{email_key}"
    if phone:
        return f"phone:{phone}:{name}"
    return None


def clean_batches(
    paths: list[Path], encodings: dict[Path, str], columns: Mapping[str, str] | None = None
) -> Iterator[list[CleanRow]]:
    """The files' rows, cleaned, in batches of ``BATCH``, in file and row order."""
    batch: list[CleanRow] = []
    for path in paths:
        for record in read_records(path, "lead", encodings[path], columns):
            batch.append(_clean_row(str(path), record))
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _clean_row(file: str, record: Record) -> CleanRow:
    lead = clean_lead(record.fields)
    key = None if lead.rejected else identity(
        lead.email_key, lead.phone, lead.first_name, lead.last_name, role=lead.email_role
    )  # fmt: skip
    blocks = lead_blocks(lead) if key else ()
    raw = raw_json(record.raw)
    head = import_row_head(
        _stored_file(file), record.row_number, record.line_number, raw, lead.reasons
    )
    return CleanRow(file, record.row_number, record.line_number, raw, head, lead, key, blocks)


@cache
def _stored_file(file: str) -> str:
    """The file's name as import rows keep it, as COPY text."""
    return copy_text(fit(ImportRow.file, file) or "")


def cleaned(
    paths: list[Path],
    encodings: dict[Path, str],
    columns: Mapping[str, str] | None = None,
    *,
    parallel: bool | None = None,
) -> Iterator[list[CleanRow]]:
    """``clean_batches``, from a child process when ``parallel`` (None: when the input is large).

    The child is a plain ``python -m tasks.ingest.cleaning`` that pickles batches to its
    stdout: no multiprocessing start method to choose (fork is unsafe beside Prefect's threads,
    spawn re-runs the caller's main module), and the pipe's small buffer is the back pressure
    that keeps the child only a batch or two ahead. A child that dies says so; it never hangs.
    """
    if parallel is None:
        parallel = (os.cpu_count() or 1) > 1 and sum(
            p.stat().st_size for p in paths
        ) >= PARALLEL_FROM_BYTES
    if not parallel:
        yield from clean_batches(paths, encodings, columns)
        return
    job = json.dumps(
        {"files": [[str(path), encodings[path]] for path in paths], "columns": columns or {}}
    )
    # The child's stderr goes to a file: a pipe nobody reads could fill and stall it.
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "tasks.ingest.cleaning", job],
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd=_PROJECT_ROOT,
        )
        try:
            yield from _receive(child, errors)
        finally:
            if child.poll() is None:  # the writer failed or stopped early: no more cleaning
                child.kill()
            child.wait()
            if child.stdout:
                child.stdout.close()


def _receive(child: subprocess.Popen[bytes], errors: IO[bytes]) -> Iterator[list[CleanRow]]:
    """The child's batches, read ahead by a thread while this one writes.

    Read only on demand, a batch of several megabytes crossed the pipe (64 KiB at a time) just
    when the writer asked for it, and the writer waited while the two processes took turns.
    The reader thread takes it in while the writer waits on the store instead; its bounded
    queue still keeps the child only a few batches ahead.
    """
    assert child.stdout is not None
    items: queue.Queue[object] = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_ahead, args=(child.stdout, items, stop), name="cleaned-batches", daemon=True
    )
    reader.start()
    try:
        while True:
            item = items.get()
            if item is _STOPPED:
                child.wait()
                errors.seek(0)
                message = errors.read().decode(errors="replace").strip()[-2000:]
                raise RuntimeError(
                    f"the cleaning process stopped (exit code {child.returncode}): "
                    f"{message or 'no message'}"
                )
            if item is None:
                return
            if isinstance(item, _Failure):
                raise item.error()
            yield cast(list[CleanRow], item)
    finally:
        stop.set()
        if child.poll() is None:  # the writer failed or stopped early: no more cleaning
            child.kill()
        reader.join()


# Batches read ahead of the writer, at most (each holds BATCH rows).
READ_AHEAD = 2
# What the reader thread hands over when the child's output ends without its closing None.
_STOPPED = object()


def _read_ahead(stream: IO[bytes], items: queue.Queue[object], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            item: object = pickle.load(stream)
        except Exception:  # EOF or a batch cut short: the child died, _receive says how
            item = _STOPPED
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if item is None or item is _STOPPED or isinstance(item, _Failure):
            return


# The child must import ``tasks`` the way the parent did, whatever the working directory.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class _Failure:
    """An error met in the child, carried across as plain values (always unpicklable-safe)."""

    file: str | None
    line: int | None
    message: str

    def error(self) -> Exception:
        if self.file is not None:
            return IngestFileError(self.file, self.line, self.message)
        return RuntimeError(f"cleaning lead files failed: {self.message}")


def _produce(job: str, out: BinaryIO) -> None:
    spec = json.loads(job)
    paths = [(Path(path), encoding) for path, encoding in spec["files"]]
    try:
        with fewer_collections():  # batches of rows alive while the next is made
            for batch in clean_batches([p for p, _ in paths], dict(paths), spec["columns"]):
                pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump(None, out)
    except IngestFileError as exc:
        pickle.dump(_Failure(exc.file, exc.line, exc.message), out)
    except Exception as exc:
        pickle.dump(_Failure(None, None, f"{type(exc).__name__}: {exc}"), out)
    out.flush()


if __name__ == "__main__":
    # Run the module's own copy, not this __main__ one: the batches must unpickle as
    # tasks.ingest.cleaning.CleanRow in the parent.
    from tasks.ingest.cleaning import _produce as produce

    produce(sys.argv[1], sys.stdout.buffer)
