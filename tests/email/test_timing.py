"""Business hours in the recipient's own time zone, and the send-rate cap (no waiting)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.config.models import BusinessHours
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.pacing import RateLimiter
from tasks.email.senders import SendGridSender
from tasks.email.sending import send_due_emails
from tasks.email.timing import recipient_zone, within_hours
from tasks.store.models import OutboxEmail
from tests.email.support import T0, QueueEmails, add_lead
from tests.fake_sendgrid import FakeSendGrid

OFFICE = BusinessHours.model_validate(
    {"start": "09:00", "end": "17:30", "days": ["Mon", "tue", "WED", "thu", "fri"]}
)
UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_the_zone_comes_from_the_phone_then_the_country_then_config() -> None:
    assert recipient_zone("+14155550134", "US", "UTC") == ZoneInfo("America/Los_Angeles")
    assert recipient_zone(None, "de", "UTC") == ZoneInfo("Europe/Berlin")
    assert recipient_zone("+15555", None, "Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    # A number spread over several zones (a US toll-free) says nothing; the country does.
    assert recipient_zone("+18005550100", "GB", "UTC") == ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("due", "zone", "expected"),
    [
        (at(2026, 3, 2, 14), "America/New_York", at(2026, 3, 2, 14)),  # Monday 9:00 EST: inside
        (at(2026, 3, 2, 13, 59), "America/New_York", at(2026, 3, 2, 14)),  # 8:59: wait a minute
        (at(2026, 3, 2, 23), "America/New_York", at(2026, 3, 3, 14)),  # 18:00: next morning
        (
            at(2026, 3, 6, 23),
            "America/New_York",
            at(2026, 3, 9, 13),
        ),  # Friday evening: Monday, now EDT
        (at(2026, 3, 7, 12), "Europe/Berlin", at(2026, 3, 9, 8)),  # Saturday: Monday 9:00 CET
        (
            at(2026, 3, 29, 6),
            "Europe/Berlin",
            at(2026, 3, 30, 7),
        ),  # Sunday of the change: 9:00 CEST
        (at(2026, 3, 2, 22), "Australia/Sydney", at(2026, 3, 2, 22)),  # Tuesday 9:00 AEDT
    ],
)
def test_an_email_waits_for_business_hours_in_the_recipients_zone(
    due: dt.datetime, zone: str, expected: dt.datetime
) -> None:
    moved = within_hours(due, ZoneInfo(zone), OFFICE)
    assert moved == expected
    local = moved.astimezone(ZoneInfo(zone))
    assert local.isoweekday() <= 5 and dt.time(9) <= local.time() < dt.time(17, 30)


def test_business_hours_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown day"):
        BusinessHours.model_validate({"days": ["mon", "funday"]})
    with pytest.raises(ValueError, match="must be after start"):
        BusinessHours.model_validate({"start": "18:00", "end": "09:00"})


def test_enqueued_emails_are_due_in_the_recipients_hours(
    session: Session, config: NurtureConfig
) -> None:
    berlin = add_lead(session, phone="+493012345678", country="DE")
    sydney = add_lead(session, country="AU")
    saturday_noon = at(2026, 3, 7, 12)
    enqueue_emails(session, config, [QueuedEmail(f"t:{lead.id}", lead.id, "welcome", {}, saturday_noon)
                                     for lead in (berlin, sydney)], run_id=None, as_of=T0)  # fmt: skip
    due = dict(session.execute(select(OutboxEmail.lead_id, OutboxEmail.due_at)).tuples().all())
    assert due == {berlin.id: at(2026, 3, 9, 8), sydney.id: at(2026, 3, 8, 22)}  # Mon 9:00 local


def test_the_rate_limiter_paces_without_waiting_for_real() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(25):
        limiter.wait()
    # A burst of one second's worth (10), then one every 0.1 s.
    assert len(slept) == 15 and all(s == pytest.approx(0.1) for s in slept)
    assert now[0] == pytest.approx(1.5)
    unlimited = RateLimiter(None, clock=lambda: 0.0, sleep=sleep)
    unlimited.wait()
    assert len(slept) == 15


def test_a_send_run_keeps_to_the_configured_rate(
    engine: Engine, config: NurtureConfig, queue_emails: QueueEmails, sendgrid_server: FakeSendGrid
) -> None:
    queue_emails(12)
    slow = config.sending.model_copy(update={"max_per_second": 4.0})
    paced = dataclasses.replace(config, sending=slow)
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    sender = SendGridSender(sendgrid_server.api_key, host=sendgrid_server.host, timeout=2.0)
    summary = send_due_emails(
        engine, sender, as_of=T0, config=paced, clock=lambda: now[0], sleep=sleep
    )
    assert summary.sent == 12 and len(sendgrid_server.accepted) == 12
    assert sum(slept) == pytest.approx((12 - 4) / 4.0)  # a 4-email burst, then 4 a second


def test_backoff_doubles_is_capped_and_jittered() -> None:
    import random

    from tasks.email.sending import BACKOFF_BASE, BACKOFF_CAP, backoff

    rng = random.Random(7)
    waits = [[backoff(n, rng) for _ in range(200)] for n in (1, 2, 3, 10)]
    for n, seen in zip((1, 2, 3, 10), waits, strict=True):
        base = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (n - 1))
        assert base * 0.5 <= min(seen) and max(seen) <= base * 1.5
        assert max(seen) - min(seen) > base * 0.5  # spread: workers do not return in step


def test_the_configured_lateness_decides_what_is_skipped_late(
    engine: Engine, config: NurtureConfig, queue_emails: QueueEmails
) -> None:
    from dateutil.relativedelta import relativedelta

    from tasks.email.senders import OutboxOnlySender

    queue_emails(1)  # due at T0
    three_days_on = T0 + dt.timedelta(days=3)
    lenient = config.sending.model_copy(update={"lateness": relativedelta(weeks=1)})
    dry = send_due_emails(engine, OutboxOnlySender(), as_of=three_days_on, dry_run=True,
                          config=dataclasses.replace(config, sending=lenient))  # fmt: skip
    assert (dry.recorded, dry.skipped_late) == (1, 0)
    strict = send_due_emails(engine, OutboxOnlySender(), as_of=three_days_on, config=config)
    assert (strict.recorded, strict.skipped_late) == (0, 1)  # sending.yaml: 2 days
