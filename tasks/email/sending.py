"""Send due emails exactly once: claim, hand over one at a time, send, record; never resend blindly.

    queued -> claimed -> sending -> sent | failed | queued (retryable, up to MAX_ATTEMPTS)
    claimed -> queued (released, or taken back from a dead run)
    queued -> suppressed | skipped_late | recorded (outbox only)

A run claims a batch (``claimed`` with its own token) and commits. Just before each HTTP call it
hands that one email over (``sending``, attempts + 1, only if its claim still stands) and
commits. SendGrid has no idempotency key, so a row found in ``sending`` (a crash between the call
and the record) may or may not have gone out: it is left alone and counted as
``needs_reconcile``, to be settled from the webhook's ``processed`` event, which carries our
``nurture_email_id``. A crash (even SIGKILL) therefore leaves at most one email in doubt; the
rest of its batch is still ``claimed``, never handed over, and a later run takes it back once
the claim is older than the lease. Taking back is safe whatever the lease: a slow run whose
claim was taken back finds its token gone at hand-over and sends nothing.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tasks.config.loader import NurtureConfig, load_config
from tasks.config.models import Sending
from tasks.email.outbox import unsubscribe_url
from tasks.email.pacing import RateLimiter
from tasks.email.senders import EmailSender, OutgoingMessage, SendResult
from tasks.email.tokens import reply_address
from tasks.store.models import EmailStatus, Lead, LeadAlias, OutboxEmail, Suppression
from tasks.store.upsert import rowcount

MAX_ATTEMPTS = 5
# A claim older than this is taken to belong to a dead run and its rows go back to the queue.
CLAIM_LEASE = dt.timedelta(minutes=15)
# A 429 whose limit resets sooner than this is waited out; a longer one stops the run.
MAX_RATE_LIMIT_PAUSE = 30.0
# Retryable failures in a row before the run stops: the API is down, so the rest would only
# burn attempts (and, when it hangs, a full timeout each).
MAX_FAILURES_IN_A_ROW = 3
# Backoff after a 5xx or a timeout, before the next email: BASE, 2 x BASE, ... up to CAP.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0
# Answers that concern the account (bad key, unverified sender), not the email: every other
# email would get the same, so the run stops and the email keeps its attempt.
ACCOUNT_ERRORS = (401, 403)
SAMPLE = 10


@dataclass
class SendSummary:
    """Rows per resulting status. In a dry run, what would happen; nothing was written."""

    sent: int = 0
    recorded: int = 0
    failed: int = 0
    #: Claimed but back in the queue for a later run (retryable failure, or the run stopped).
    queued: int = 0
    suppressed: int = 0
    skipped_late: int = 0
    #: Found in ``sending`` at the start: outcome unknown, never resent here.
    needs_reconcile: int = 0
    #: Claimed by a run that died before handing them over: back in the queue.
    taken_back: int = 0
    dry_run: bool = False
    #: Dry run: the first emails that would be handed to the sender, in send order.
    would_send_ids: list[int] = field(default_factory=list)
    #: Why the run stopped before the queue was empty (account error, outage, rate limit).
    stopped: str | None = None


@dataclass
class Claimed:
    id: int
    dedupe_key: str
    to_email: str
    subject: str
    body_text: str
    body_html: str
    due_at: dt.datetime
    attempts: int
    template_id: str | None = None
    template_data: dict[str, Any] | None = None


def send_due_emails(
    engine: Engine,
    sender: EmailSender,
    *,
    as_of: dt.datetime,
    config: NurtureConfig | None = None,
    lateness: dt.timedelta | None = None,
    batch_size: int = 500,
    dry_run: bool = False,
    lease: dt.timedelta = CLAIM_LEASE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SendSummary:
    """Hand every email due at ``as_of`` to ``sender`` at most once; see the module docstring."""
    factory = sessionmaker(engine, expire_on_commit=False)
    summary = SendSummary(dry_run=dry_run)
    if lateness is None:
        # sending.yaml's, measured back from as_of (a month is a calendar month).
        late_from = (config or load_config()).sending.lateness
        lateness = as_of - (as_of - late_from)
    with factory() as session:
        summary.needs_reconcile = _count(session, OutboxEmail.status == EmailStatus.SENDING)
        if dry_run:
            _preview(session, sender, as_of, lateness, summary)
            return summary
    if sender.records_only:
        while _record_batch(factory, as_of, lateness, batch_size, summary):
            pass
        return summary
    sending = (config or load_config()).sending
    # One bucket for the whole run, across batches: the cap is per second, not per batch.
    limiter = RateLimiter(sending.max_per_second, clock=clock, sleep=sleep)
    after: tuple[dt.datetime, int] | None = None
    while summary.stopped is None:
        token = secrets.token_hex(16)
        batch = _claim(factory, as_of, lateness, batch_size, after, summary, token, lease)
        if not batch:
            break
        # Walk forward: a row requeued by this run is not claimed again until the next run.
        after = (batch[-1].due_at, batch[-1].id)
        _deliver(factory, sender, sending, batch, as_of, summary, token, limiter, sleep)
    return summary


# --- which rows ---------------------------------------------------------------------------


def _due(as_of: dt.datetime) -> ColumnElement[bool]:
    return and_(OutboxEmail.status == EmailStatus.QUEUED, OutboxEmail.due_at <= as_of)


def _suppressed() -> ColumnElement[bool]:
    # The lead's address now, any other address it was seen with (a merged copy's suppression
    # applies to the merged lead), and the address the email was rendered for.
    return or_(
        OutboxEmail.lead_id.in_(
            select(Lead.id).join(Suppression, Suppression.email_key == Lead.email_key)
        ),
        OutboxEmail.lead_id.in_(
            select(LeadAlias.lead_id)
            .join(Suppression, Suppression.email_key == LeadAlias.key)
            .where(LeadAlias.kind == "email")
        ),
        func.lower(OutboxEmail.to_email).in_(select(Suppression.email_key)),
    )


def _late(as_of: dt.datetime, lateness: dt.timedelta) -> ColumnElement[bool]:
    return OutboxEmail.due_at < as_of - lateness


def _next_ids(
    as_of: dt.datetime, batch_size: int, after: tuple[dt.datetime, int] | None
) -> Select[tuple[int]]:
    query = (
        select(OutboxEmail.id)
        .where(_due(as_of))
        .order_by(OutboxEmail.due_at, OutboxEmail.id)
        .limit(batch_size)
    )
    if after is not None:
        due_at, last_id = after
        query = query.where(
            or_(
                OutboxEmail.due_at > due_at,
                and_(OutboxEmail.due_at == due_at, OutboxEmail.id > last_id),
            )
        )
    return query


def _count(session: Session, *where: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count(OutboxEmail.id)).where(*where)) or 0


# --- one short transaction per batch ---------------------------------------------------------


def _settle_unsendable(
    session: Session, as_of: dt.datetime, lateness: dt.timedelta, summary: SendSummary
) -> None:
    """Suppressed (checked at send time, not only at enqueue) first, then too late."""
    for status, condition in (
        (EmailStatus.SUPPRESSED, _suppressed()),
        (EmailStatus.SKIPPED_LATE, _late(as_of, lateness)),
    ):
        result = session.execute(
            update(OutboxEmail)
            .where(_due(as_of), condition)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )
        setattr(summary, status.value, getattr(summary, status.value) + rowcount(result))


def _batch_filter(
    session: Session, as_of: dt.datetime, batch_size: int, after: tuple[dt.datetime, int] | None
) -> ColumnElement[bool]:
    ids = _next_ids(as_of, batch_size, after)
    if session.get_bind().dialect.name == "postgresql":
        # Concurrent workers each lock their own batch; the rows stay locked until commit.
        locked = list(session.scalars(ids.with_for_update(skip_locked=True)))
        return OutboxEmail.id.in_(locked)
    # SQLite: one UPDATE; the database's single write lock keeps concurrent claims apart.
    return OutboxEmail.id.in_(ids)


def _claim(
    factory: sessionmaker[Session],
    as_of: dt.datetime,
    lateness: dt.timedelta,
    batch_size: int,
    after: tuple[dt.datetime, int] | None,
    summary: SendSummary,
    token: str,
    lease: dt.timedelta,
) -> list[Claimed]:
    """Claim the next batch under ``token`` and commit, before any HTTP call."""
    now = dt.datetime.now(dt.UTC)
    with factory() as session, session.begin():
        # Claims of dead runs first: their rows were never handed over, so they go back.
        taken_back = session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.status == EmailStatus.CLAIMED, OutboxEmail.claimed_at < now - lease)
            .values(status=EmailStatus.QUEUED, claim=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
        summary.taken_back += rowcount(taken_back)
        _settle_unsendable(session, as_of, lateness, summary)
        rows = session.execute(
            update(OutboxEmail)
            .where(_batch_filter(session, as_of, batch_size, after), _due(as_of))
            .values(status=EmailStatus.CLAIMED, claim=token, claimed_at=now)
            .returning(
                OutboxEmail.id,
                OutboxEmail.dedupe_key,
                OutboxEmail.to_email,
                OutboxEmail.subject,
                OutboxEmail.body_text,
                OutboxEmail.body_html,
                OutboxEmail.due_at,
                OutboxEmail.attempts,
                OutboxEmail.template_id,
                OutboxEmail.template_data,
            )
            .execution_options(synchronize_session=False)
        )
        claimed = [Claimed(*row) for row in rows]
    # RETURNING order is unspecified; send in due order.
    return sorted(claimed, key=lambda c: (c.due_at, c.id))


def _record_batch(
    factory: sessionmaker[Session],
    as_of: dt.datetime,
    lateness: dt.timedelta,
    batch_size: int,
    summary: SendSummary,
) -> int:
    """Outbox only: one set-based UPDATE per batch, no per-row work."""
    with factory() as session, session.begin():
        _settle_unsendable(session, as_of, lateness, summary)
        result = session.execute(
            update(OutboxEmail)
            .where(_batch_filter(session, as_of, batch_size, None), _due(as_of))
            .values(status=EmailStatus.RECORDED, sent_at=as_of)
            .execution_options(synchronize_session=False)
        )
    summary.recorded += rowcount(result)
    return rowcount(result)


def _preview(
    session: Session,
    sender: EmailSender,
    as_of: dt.datetime,
    lateness: dt.timedelta,
    summary: SendSummary,
) -> None:
    """Dry run: the same predicates as a real run, read only."""
    due, suppressed, late = _due(as_of), _suppressed(), _late(as_of, lateness)
    summary.suppressed = _count(session, due, suppressed)
    summary.skipped_late = _count(session, due, ~suppressed, late)
    ready = (due, ~suppressed, ~late)
    n = _count(session, *ready)
    if sender.records_only:
        summary.recorded = n
    else:
        summary.sent = n
    first = select(OutboxEmail.id).where(*ready).order_by(OutboxEmail.due_at, OutboxEmail.id)
    summary.would_send_ids = list(session.scalars(first.limit(SAMPLE)))


# --- sending a claimed batch -------------------------------------------------------------------


def _deliver(
    factory: sessionmaker[Session],
    sender: EmailSender,
    sending: Sending,
    batch: list[Claimed],
    as_of: dt.datetime,
    summary: SendSummary,
    token: str,
    limiter: RateLimiter,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    pending = list(batch)
    failures_in_a_row = 0
    # The last email's result, written in the same commit as the next hand-over: one commit per
    # email instead of two. Still at most one email in doubt at any moment: the one just sent.
    unrecorded: tuple[Claimed, SendResult] | None = None
    try:
        while pending and summary.stopped is None:
            email = pending.pop(0)
            limiter.wait()  # before the hand-over: a paused email is still only claimed
            handed = _hand_over(factory, email, token, unrecorded, as_of, summary)
            unrecorded = None
            if not handed:
                continue  # our claim was taken back (we were too slow): someone else has it
            # If send() raises, this row stays ``sending``: whether it left is unknown.
            result = sender.send(_message(email, sending))
            unrecorded = (email, result)
            unanswered = result.retryable or result.maybe_sent
            failures_in_a_row = failures_in_a_row + 1 if unanswered else 0
            if unanswered or result.retry_after is not None:
                _record(factory, email, result, as_of, summary)  # before any pause or stop
                unrecorded = None
            summary.stopped = _pace(result, failures_in_a_row, sleep)
    finally:
        if unrecorded is not None:
            _record(factory, *unrecorded, as_of, summary)
        # Claimed but never handed to the sender: safe to put back, and not an attempt.
        _release(factory, [email.id for email in pending], summary, token)


def _hand_over(
    factory: sessionmaker[Session],
    email: Claimed,
    token: str,
    previous: tuple[Claimed, SendResult] | None = None,
    as_of: dt.datetime | None = None,
    summary: SendSummary | None = None,
) -> bool:
    """``claimed`` -> ``sending`` (attempts + 1), committed, if our claim still stands; the
    previous email's result is written in the same transaction."""
    with factory() as session, session.begin():
        if previous is not None and as_of is not None and summary is not None:
            _write_result(session, *previous, as_of, summary)
        result = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.id == email.id,
                OutboxEmail.status == EmailStatus.CLAIMED,
                OutboxEmail.claim == token,
            )
            .values(status=EmailStatus.SENDING, attempts=OutboxEmail.attempts + 1, claim=None)
            .execution_options(synchronize_session=False)
        )
    if rowcount(result) != 1:
        return False
    email.attempts += 1
    return True


def _message(email: Claimed, sending: Sending) -> OutgoingMessage:
    return OutgoingMessage(
        email_id=email.id,
        dedupe_key=email.dedupe_key,
        to_email=email.to_email,
        from_email=sending.from_email,
        from_name=sending.from_name,
        reply_to=reply_address(sending.reply_to, email.dedupe_key),
        subject=email.subject,
        text=email.body_text,
        html=email.body_html,
        unsubscribe_url=unsubscribe_url(sending, email.dedupe_key),
        template_id=email.template_id,
        template_data=email.template_data,
    )


def outcome(result: SendResult, attempts: int) -> dict[str, Any]:
    """The columns to write for a send's result (``attempts`` already counts this one)."""
    if result.ok:
        return {"status": EmailStatus.SENT, "message_id": result.message_id, "error": None}
    if result.maybe_sent:
        # Exactly-once beats at-least-once: left in ``sending`` for the webhook to reconcile.
        return {"status": EmailStatus.SENDING, "error": result.error}
    if result.status in ACCOUNT_ERRORS:
        return {
            "status": EmailStatus.QUEUED,
            "error": result.error,
            "attempts": OutboxEmail.attempts - 1,
        }
    if result.retryable and attempts < MAX_ATTEMPTS:
        return {"status": EmailStatus.QUEUED, "error": result.error}
    return {"status": EmailStatus.FAILED, "error": result.error}


def _record(
    factory: sessionmaker[Session],
    email: Claimed,
    result: SendResult,
    as_of: dt.datetime,
    summary: SendSummary,
) -> None:
    with factory() as session, session.begin():
        _write_result(session, email, result, as_of, summary)


def _write_result(
    session: Session, email: Claimed, result: SendResult, as_of: dt.datetime, summary: SendSummary
) -> None:
    values = outcome(result, email.attempts)
    if result.ok:
        values["sent_at"] = as_of
    session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == email.id, OutboxEmail.status == EmailStatus.SENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if values["status"] is EmailStatus.SENDING:
        summary.needs_reconcile += 1
    else:
        status = values["status"].value
        setattr(summary, status, getattr(summary, status) + 1)


def _pace(
    result: SendResult, failures_in_a_row: int, sleep: Callable[[float], None] = time.sleep
) -> str | None:
    """Wait out a short rate limit, back off after a failure; say why the run must stop."""
    if result.status in ACCOUNT_ERRORS:
        return f"SendGrid refused the account: {result.error}"
    if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
        return f"{failures_in_a_row} retryable failures in a row, last: {result.error}"
    if result.retry_after is not None:
        if result.retry_after > MAX_RATE_LIMIT_PAUSE:
            return f"rate limited for {result.retry_after:.0f} s"
        sleep(result.retry_after)
    elif failures_in_a_row:
        sleep(backoff(failures_in_a_row))
    return None


def backoff(failures_in_a_row: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after a 5xx or a timeout: doubling, capped, jittered (0.5x-1.5x) so that
    several workers hit by one outage do not all come back at the same instant."""
    base = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures_in_a_row - 1))
    return base * (0.5 + (rng or random).random())


def _release(
    factory: sessionmaker[Session], ids: list[int], summary: SendSummary, token: str
) -> None:
    if not ids:
        return
    with factory() as session, session.begin():
        result = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.id.in_(ids),
                OutboxEmail.status == EmailStatus.CLAIMED,
                OutboxEmail.claim == token,
            )
            .values(status=EmailStatus.QUEUED, claim=None, claimed_at=None)
            .execution_options(synchronize_session=False)
        )
    summary.queued += rowcount(result)
