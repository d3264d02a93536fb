"""The HTML report: one self-contained page whose charts headless Chromium actually draws."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from tasks.reports.html import render_html
from tasks.reports.summary import pipeline_summary
from tasks.store.models import ClosedBy, LeadStatus, LostReason, OpportunityStatus
from tests.builders import deal, lead, sent_email

T = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def a_pipeline(session: Session) -> None:
    for status, n in ((LeadStatus.NURTURING, 4), (LeadStatus.WORKING, 2), (LeadStatus.CUSTOMER, 1)):
        for _ in range(n):
            person = lead(session, T - dt.timedelta(days=40), status=status)
            sent_email(session, person.id, T - dt.timedelta(days=3))
    for reason in (LostReason.NO_BUDGET, LostReason.NO_BUDGET, LostReason.COMPETITOR):
        person = lead(session, T - dt.timedelta(days=60))
        lost = deal(session, person.id, "demo", T - dt.timedelta(days=30), status=OpportunityStatus.LOST,
                    lost_reason=reason, closed_at=T - dt.timedelta(days=2))  # fmt: skip
        lost.closed_by = ClosedBy.PERSON
        if reason is LostReason.COMPETITOR:
            lost.competitor = "Pipedrive"
    winner = lead(session, T - dt.timedelta(days=60))
    deal(session, winner.id, "proposal", T - dt.timedelta(days=20), status=OpportunityStatus.WON,
         closed_at=T - dt.timedelta(days=1))  # fmt: skip
    session.flush()


def test_the_page_is_self_contained_and_escapes_what_it_shows(session: Session) -> None:
    a_pipeline(session)
    page = render_html(pipeline_summary(session), generated=T)
    assert (
        "<script src" not in page
        and "<link" not in page
        and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    )
    assert page.count('class="bar"') >= 4
    assert "no budget" in page and "Win rate" in page and "25%" in page  # 1 won of 4 closed
    odd = render_html({"lost_to_competitors": {"<b>Acme</b>": 2}}, generated=T)
    assert "<b>Acme</b>" not in odd and "&lt;b&gt;Acme&lt;/b&gt;" in odd


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("NURTURE_REQUIRE_CHROMIUM"),
    reason="Debian's chromium is not installed (.ci/run installs it and requires this test)",
)
def test_headless_chromium_draws_every_chart(session: Session, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "NURTURE_REQUIRE_CHROMIUM is set but chromium is not installed"
    a_pipeline(session)
    page = render_html(pipeline_summary(session), generated=T)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    result = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    drawn = re.search(r'data-bars-drawn="(\d+)"', result.stdout)
    assert drawn is not None, result.stdout[:500]
    assert int(drawn.group(1)) == page.count('class="bar"') >= 4


def test_velocity_and_what_needs_attention(session: Session) -> None:
    from tasks.store.models import (
        Decision,
        DecisionAction,
        EmailStatus,
        ImportKind,
        ImportOutcome,
        ImportRow,
        Run,
        RunKind,
    )

    a_pipeline(session)
    open_deal = lead(session, T - dt.timedelta(days=60))
    deal(session, open_deal.id, "demo", T - dt.timedelta(days=10))
    waiting = lead(session, T - dt.timedelta(days=5))
    run = Run(kind=RunKind.INGEST, as_of=T, started_at=T, counts={})
    session.add(run)
    session.flush()
    session.add_all([
        ImportRow(run_id=run.id, kind=ImportKind.LEAD, file="f.csv", row_number=n, line_number=n + 1, raw={},
                  outcome=ImportOutcome.REJECTED, reasons=reasons)
        for n, reasons in enumerate([["no reachable contact", "invalid email: x"], ["test row"], ["no reachable contact"]], 1)
    ])  # fmt: skip
    session.add(Decision(dedupe_key="u:1", action=DecisionAction.ASSIGN_OWNER, rule="unassigned",
                         lead_id=waiting.id, reason="all owners at capacity", facts={}, as_of=T,
                         created_at=T))  # fmt: skip
    sent_email(session, waiting.id, T, status=EmailStatus.FAILED)
    session.flush()
    summary = pipeline_summary(session, now=T)
    assert summary["time_in_stage"] == {"demo": {"open_deals": 1, "avg_days": 10.0}}
    assert set(summary["days_to_close"]) == {"won", "lost"}
    assert summary["days_to_close"]["lost"] == 28.0  # opened 30 days before, closed 2 before T
    assert summary["needs_attention"] == {
        "rejected_rows_by_reason": {"no reachable contact": 2, "invalid email": 1, "test row": 1},
        "emails_failed": 1,
        "leads_waiting_for_an_owner": 1,
    }
    page = render_html(summary, generated=T)
    assert "Needs attention" in page and "Days in the current stage" in page
