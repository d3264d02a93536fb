"""A day's stages cut into batches that any number of workers share, claimed in the store.

A daily run is planned as batches. Stages whose work is confined to each lead (grading, the
disqualification rules) are cut into ranges of lead ids; stages whose work spans leads (cadence
caps per recipient domain and owner, deals, follow-ups) are one batch each. Workers - threads of
one flow run, Dask workers, or flow runs on other machines joining the day - then loop: claim the
first pending batch with ``FOR UPDATE SKIP LOCKED``, do its work and mark it done, in one
transaction. So a batch is done exactly once: two workers never take the same rows, and a worker
that dies rolls back its work with its claim. No batch starts while an earlier stage still has
one pending, so the stages keep their order.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import ColumnElement, Engine, exists, func, insert, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.spans import LeadSpan
from tasks.store.db import session_scope
from tasks.store.models import Lead, Run, StageBatch

# Leads per batch of a per-lead stage: big enough that a batch's statements amortise their
# planning and its task's overhead, small enough that two workers share the day evenly.
BATCH_LEADS = 10_000
# At most this many ranges per stage: a range's fixed costs (statements planned, rule episodes
# compared, and until a range's facts were read for its own leads only, the whole store's facts)
# add up; at a million leads a hundred ranges of 10,000 cost twice one pass (measured then).
MAX_RANGES = 8
# How long a worker waits before looking again when every pending batch is another's.
POLL_SECONDS = 0.05


class StageWork(Protocol):
    def __call__(
        self,
        session: Session,
        config: NurtureConfig,
        as_of: dt.datetime,
        run_id: int | None,
        span: LeadSpan | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Claimed:
    id: int
    stage: str
    span: LeadSpan | None


WAIT: Literal["wait"] = "wait"


def plan_day(
    session: Session,
    run_id: int,
    stages: Mapping[str, bool],
    *,
    batch_leads: int = BATCH_LEADS,
) -> int:
    """Write the run's batches: ``stages`` maps each stage, in order, to whether it is cut into
    lead-id ranges of at least ``batch_leads`` ids, and at most ``MAX_RANGES`` of them. Returns
    the number of batches."""
    if batch_leads < 1:
        raise ValueError(f"batch_leads must be at least 1, not {batch_leads}")
    low, high = session.execute(select(func.min(Lead.id), func.max(Lead.id))).one()
    rows: list[dict[str, Any]] = []
    for seq, (stage, per_lead) in enumerate(stages.items()):
        if not per_lead or low is None:
            rows.append({"run_id": run_id, "seq": seq, "stage": stage, "lo": None, "hi": None})
            continue
        size = max(batch_leads, -(-(high - low + 1) // MAX_RANGES))
        starts = range(low, high + 1, size)
        for start in starts:
            last = start == starts[-1]
            end = None if last else start + size - 1
            rows.append({"run_id": run_id, "seq": seq, "stage": stage, "lo": start, "hi": end})
    session.execute(insert(StageBatch), [row | {"counts": {}} for row in rows])
    return len(rows)


def claim_next(session: Session, run_id: int) -> Claimed | Literal["wait"] | None:
    """The next batch this worker may do, locked until its transaction ends; ``WAIT`` when every
    pending batch is another worker's or behind an unfinished stage; None when the day is done."""
    pending = _pending(run_id)
    batch = session.execute(
        select(StageBatch.id, StageBatch.seq, StageBatch.stage, StageBatch.lo, StageBatch.hi)
        .where(*pending)
        .order_by(StageBatch.seq, StageBatch.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if batch is None:
        return WAIT if has_pending(session, run_id) else None
    if session.scalar(select(exists().where(*pending, StageBatch.seq < batch.seq))):
        return WAIT  # an earlier stage is still being worked on: its results come first
    span = None if batch.lo is None else LeadSpan(batch.lo, batch.hi)
    return Claimed(batch.id, batch.stage, span)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def work_day(
    engine: Engine,
    run_id: int,
    stages: Mapping[str, StageWork],
    config: NurtureConfig,
    *,
    worker: str | None = None,
    poll: float = POLL_SECONDS,
    on_batch: Callable[[str], None] | None = None,
) -> list[int]:
    """Do the run's batches until none is left; return the ids of those this worker did.

    Each batch is claimed, done and marked done in one transaction, so a failure leaves it
    pending for the next worker (or the next attempt) with nothing of it written.
    """
    worker = worker or worker_name()
    with session_scope(engine=engine, dry_run=True) as session:
        as_of = session.scalars(select(Run.as_of).where(Run.id == run_id)).one()
    done: list[int] = []
    while True:
        with session_scope(engine=engine) as session:
            claim = claim_next(session, run_id)
            if claim is None:
                return done
            if isinstance(claim, Claimed):
                counts = stages[claim.stage](session, config, as_of, run_id, claim.span)
                batch = session.get(StageBatch, claim.id)
                assert batch is not None
                batch.done_at, batch.worker, batch.counts = dt.datetime.now(dt.UTC), worker, counts
                done.append(claim.id)
        if not isinstance(claim, Claimed):
            time.sleep(poll)
        elif on_batch is not None:
            on_batch(claim.stage)


def stage_counts(session: Session, run_id: int) -> dict[str, dict[str, Any]]:
    """Each stage's counts: its batches' counts added up (numbers summed, dicts merged)."""
    totals: dict[str, dict[str, Any]] = {}
    rows = session.execute(
        select(StageBatch.stage, StageBatch.counts)
        .where(StageBatch.run_id == run_id)
        .order_by(StageBatch.seq, StageBatch.id)
    ).tuples()
    for stage, counts in rows:
        totals[stage] = add_counts(totals.get(stage, {}), counts or {})
    return totals


def add_counts(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    total = dict(a)
    for key, value in b.items():
        held = total.get(key)
        if isinstance(value, Mapping):
            total[key] = add_counts(held if isinstance(held, Mapping) else {}, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = (held or 0) + value
        elif isinstance(value, list):
            total[key] = [*(held or []), *value]
        else:
            total[key] = value
    return total


def _pending(run_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return StageBatch.run_id == run_id, StageBatch.done_at.is_(None)


def has_pending(session: Session, run_id: int) -> bool:
    """Whether the run has a batch not yet done (claimed by a worker or not)."""
    return bool(session.scalar(select(exists().where(*_pending(run_id)))))


def open_day(session: Session) -> int | None:
    """The latest planned run, if it still has batches pending: the day a worker joining now
    should help with. An older run left unfinished (its flow run crashed) is never joined
    implicitly: its day is past, and a rerun of that day plans batches of its own."""
    latest = session.scalar(select(func.max(StageBatch.run_id)))
    if latest is None or not has_pending(session, latest):
        return None
    return int(latest)
