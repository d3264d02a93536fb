"""Condition episodes: a rule acts when its condition starts to hold for a lead, not every day.

Each run compares the leads a rule's condition holds for with the rule's open episodes: a lead
without one opens an episode (and the rule acts), a lead with one is left alone, and an open
episode whose lead no longer matches is closed. When the condition later holds again (five new
unanswered emails after a re-engagement, an owner idle again after reassignment), that is a new
episode and the rule acts again.

The episode's start (the as_of that opened it) is part of every decision key the rule writes,
so rerunning a day, or a backfill over days already run, finds the decisions made and does
nothing new; the one open episode per rule and lead is a unique index, so two concurrent runs
cannot both open one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tasks.spans import LeadSpan, within
from tasks.store.models import RuleEpisode
from tasks.store.upsert import among, id_slices, insert_ignore

# Episodes inserted per statement (a multi-row INSERT binds five parameters per row).
SLICE = 5_000


def step_episodes(
    session: Session,
    rule: str,
    matched: Sequence[int],
    as_of: dt.datetime,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> dict[int, dt.datetime]:
    """Open and close the rule's episodes for this run; return {lead: start} of those begun now.

    ``matched`` is every lead the condition holds for in ``span``: only that span's episodes are
    compared with it. A worker doing one span must never close another span's episodes (that
    span's worker would then open them again, and the rule would act twice).
    """
    open_now = set(
        session.scalars(
            select(RuleEpisode.lead_id).where(
                RuleEpisode.rule == rule,
                RuleEpisode.ended_at.is_(None),
                within(span, RuleEpisode.lead_id),
            )
        )
    )
    holding = set(matched)
    _close(session, rule, sorted(open_now - holding), as_of)
    begun = sorted(holding - open_now)
    rows = [
        {"rule": rule, "lead_id": lead, "started_at": as_of, "ended_at": None, "run_id": run_id}
        for lead in begun
    ]
    for start in range(0, len(rows), SLICE):
        insert_ignore(
            session,
            RuleEpisode,
            rows[start : start + SLICE],
            ["rule", "lead_id"],
            where=text("ended_at IS NULL"),
        )
    return dict.fromkeys(begun, as_of)


def _close(session: Session, rule: str, leads: list[int], as_of: dt.datetime) -> None:
    for ids in id_slices(session, leads):
        session.execute(
            update(RuleEpisode)
            .where(
                RuleEpisode.rule == rule,
                RuleEpisode.ended_at.is_(None),
                among(session, RuleEpisode.lead_id, ids),
            )
            .values(ended_at=as_of)
            .execution_options(synchronize_session=False)
        )
