"""Reading and cleaning lead files in batches, in a second process when the files are large.

Cleaning (email-validator, phonenumbers) is the import's heaviest CPU work and needs nothing
from the store, while writing a batch needs the store and little CPU. With two cores they
overlap: a child process reads and cleans batch n+1 while this one writes batch n, so a large
import costs about its cleaning time rather than cleaning plus writing. Batches arrive in file
order either way, and the queue between the two is bounded, so memory stays flat.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.ingest.normalise import CleanLead, clean_lead
from tasks.ingest.reader import IngestFileError, Record, read_records

BATCH = 5_000
# Below this much input a second process costs more to start (~1 s) than it saves.
PARALLEL_FROM_BYTES = 4_000_000
# Batches cleaned ahead of the writer: enough to keep both busy, few enough to bound memory.
AHEAD = 3


@dataclass(slots=True)
class CleanRow:
    file: str
    record: Record
    lead: CleanLead
    key: str | None  # the exact dedupe identity; None for a rejected row


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


def clean_batches(paths: list[Path], encodings: dict[Path, str]) -> Iterator[list[CleanRow]]:
    """The files' rows, cleaned, in batches of ``BATCH``, in file and row order."""
    batch: list[CleanRow] = []
    for path in paths:
        for record in read_records(path, "lead", encodings[path]):
            lead = clean_lead(record.fields)
            key = None if lead.rejected else identity(
                lead.email_key, lead.phone, lead.first_name, lead.last_name, role=lead.email_role
            )  # fmt: skip
            batch.append(CleanRow(str(path), record, lead, key))
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def cleaned(
    paths: list[Path], encodings: dict[Path, str], *, parallel: bool | None = None
) -> Iterator[list[CleanRow]]:
    """``clean_batches``, from a child process when ``parallel`` (None: when the input is large)."""
    if parallel is None:
        parallel = (os.cpu_count() or 1) > 1 and sum(
            p.stat().st_size for p in paths
        ) >= PARALLEL_FROM_BYTES
    if not parallel:
        yield from clean_batches(paths, encodings)
        return
    # spawn, not fork: the parent may hold threads (Prefect's) and open store connections.
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue(maxsize=AHEAD)
    child = context.Process(
        target=_produce, args=(paths, encodings, queue), name="nurture-clean", daemon=True
    )
    child.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                break
            if isinstance(item, _Failure):
                raise item.error()
            yield item
        child.join()
    finally:
        if child.is_alive():  # the writer failed or stopped early: the cleaner is not needed
            child.terminate()
            child.join()


@dataclass(frozen=True)
class _Failure:
    """An error raised in the child, carried across as plain values (always picklable)."""

    file: str | None
    line: int | None
    message: str

    def error(self) -> Exception:
        if self.file is not None:
            return IngestFileError(self.file, self.line, self.message)
        return RuntimeError(f"cleaning lead files failed: {self.message}")


def _produce(paths: list[Path], encodings: dict[Path, str], queue: Any) -> None:
    try:
        for batch in clean_batches(paths, encodings):
            queue.put(batch)
        queue.put(None)
    except IngestFileError as exc:
        queue.put(_Failure(exc.file, exc.line, exc.message))
    except Exception as exc:
        queue.put(_Failure(None, None, f"{type(exc).__name__}: {exc}"))
