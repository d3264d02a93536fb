"""Recording automatic decisions: what, about whom, why, by which run, as of when; exactly once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from tasks.store.models import Decision, DecisionAction
from tasks.store.upsert import append_rows, fit, insert_ignore_returning


@dataclass(frozen=True)
class NewDecision:
    dedupe_key: str
    action: DecisionAction
    rule: str
    lead_id: int | None = None
    opportunity_id: int | None = None
    reason: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def record_decisions(
    session: Session, decisions: list[NewDecision], *, run_id: int | None, as_of: dt.datetime
) -> dict[str, int]:
    """Insert the decisions not yet recorded; return {dedupe_key: decision id} of the new ones.

    A decision whose key exists was already made (by this run or an earlier one) and is not
    acted on again: callers act only on the keys returned.
    """
    rows = _rows(decisions, run_id, as_of)
    if not rows:
        return {}
    # The keys come back with the ids: asking for them afterwards would name every new id in
    # one statement, which a store bounds (PostgreSQL: 65,535 parameters).
    inserted = insert_ignore_returning(
        session, Decision, rows, ["dedupe_key"], ["dedupe_key", "id"]
    )
    return {key: decision_id for key, decision_id in inserted}


def note_decisions(
    session: Session,
    decisions: list[NewDecision],
    *,
    run_id: int | None,
    as_of: dt.datetime,
    new_keys: bool = False,
) -> None:
    """``record_decisions`` for a caller that has already acted (an import's merges, an owner
    written): nothing comes back, which at a hundred thousand decisions is worth a second.

    ``new_keys``: no key can exist yet (each names this run, or a lead this run created, which
    no other transaction can see): the rows are appended as they are, without the staging and
    conflict check that cost a third of their time. A duplicate key still fails loudly.
    """
    rows = _rows(decisions, run_id, as_of)
    if rows and new_keys:
        append_rows(session, Decision, rows)
    elif rows:
        insert_ignore_returning(session, Decision, rows, ["dedupe_key"], [])


def _rows(
    decisions: list[NewDecision], run_id: int | None, as_of: dt.datetime
) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "dedupe_key": d.dedupe_key,
            "run_id": run_id,
            "as_of": as_of,
            "action": d.action,
            "rule": d.rule,
            "lead_id": d.lead_id,
            "opportunity_id": d.opportunity_id,
            "reason": fit(Decision.reason, d.reason),
            "facts": d.facts,
            "created_at": now,
        }
        for d in decisions
    ]
