"""The daily flow end to end under a real (temporary) Prefect server, on both stores."""

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from flows.daily import backfill, daily
from tasks.config.loader import ConfigError
from tasks.store.models import Decision, FollowUp, Lead, LeadStatus, Opportunity, OutboxEmail, Run
from tests.builders import days, deal, lead, owner, sent_email

T0 = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)


def _counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (Decision, OutboxEmail, FollowUp, Opportunity)
        }


def _book(engine: Engine) -> None:
    with Session(engine) as s:
        rep = owner(s)
        quiet = lead(s, T0 - days(1), owner_id=rep.id)
        for i in range(5):
            sent_email(s, quiet.id, T0 + days(3 * i))
        stale = lead(s, T0 - days(40), owner_id=rep.id, status=LeadStatus.WORKING)
        deal(s, stale.id, "discovery", T0 - days(30))
        s.commit()


def test_running_the_same_day_twice_changes_nothing(engine: Engine) -> None:
    _book(engine)
    first = daily(as_of="2026-03-20")
    after_first = _counts(engine)
    second = daily(as_of="2026-03-20")

    assert _counts(engine) == after_first
    assert after_first["decisions"] >= 4  # disqualify, send, follow-up, close
    assert first["disqualification_rules"]["actions"]["disqualify"] == 1
    assert first["close_dead_deals"]["closed"] == {"unresponsive": 1}
    assert second["disqualification_rules"]["actions"] == {}
    assert second["close_dead_deals"]["closed"] == {}
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 2
        emails = s.scalars(select(OutboxEmail)).all()
        # 23:59 UTC on a Friday is evening in New York: what falls due then waits for Monday
        # morning, the recipient's business hours; nothing is recorded twice.
        assert emails and {e.status for e in emails} <= {"recorded", "queued"}
        waiting = [e.due_at for e in emails if e.status == "queued"]
        assert all(d > dt.datetime(2026, 3, 20, 23, 59, 59, tzinfo=dt.UTC) for d in waiting)


def test_dry_run_writes_nothing(engine: Engine) -> None:
    _book(engine)
    before = _counts(engine)
    result = daily(as_of="2026-03-20", dry_run=True)
    assert result["days"][0]["close_dead_deals"]["closed"] == {"unresponsive": 1}
    sample = result["days"][0]["sample"]
    assert sample and {"action", "rule", "lead_id", "reason"} == set(sample[0])
    assert any(d["action"] == "disqualify" for d in sample)
    assert _counts(engine) == before
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert s.scalar(select(Lead.status).where(Lead.email.like("person%")).limit(1)) is not None


def test_a_backfill_over_days_already_run_changes_nothing(engine: Engine) -> None:
    _book(engine)
    backfill(start="2026-03-16", end="2026-03-20", dry_run=False)
    after = _counts(engine)
    backfill(start="2026-03-16", end="2026-03-20", dry_run=False)
    assert _counts(engine) == after


def test_an_invalid_config_runs_nothing(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _book(engine)
    bad = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", bad)
    (bad / "rules.yaml").write_text(
        "rules:\n  - name: x\n    when: nonsense >= 1\n    then: [release_owner]\n"
    )
    monkeypatch.setenv("NURTURE_CONFIG_DIR", str(bad))
    before = _counts(engine)
    with pytest.raises(ConfigError, match=r"rules\.yaml, line 3"):
        daily(as_of="2026-03-20")
    assert _counts(engine) == before


@pytest.mark.parametrize("send_late", [False, True])
def test_a_backfill_sends_nothing_past_its_lateness_unless_told(
    engine: Engine, send_late: bool
) -> None:
    from tasks.store.models import EmailStatus

    with Session(engine) as s:
        person = lead(s, T0 - days(10))
        key = sent_email(s, person.id, T0 + days(1), status=EmailStatus.QUEUED).dedupe_key
        s.commit()
    backfill(start="2026-03-10", end="2026-03-10", dry_run=False, send_late=send_late)
    with Session(engine) as s:
        status = s.scalar(select(OutboxEmail.status).where(OutboxEmail.dedupe_key == key))
    assert status == ("recorded" if send_late else "skipped_late")
