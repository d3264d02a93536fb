"""What the rules would do as of a moment, without writing anything; and why a lead was acted on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.rules.engine import Match, apply_rules, find_matches
from tasks.store.models import Decision


@dataclass
class RulePreview:
    name: str
    enabled: bool
    matches: int
    acted_on: int
    sample: list[Match] = field(default_factory=list)


def preview_rules(
    session: Session, config: NurtureConfig, as_of: dt.datetime, *, sample: int = 5
) -> list[RulePreview]:
    """Every rule's hits as of ``as_of``. The caller's session must be rolled back after.

    Enabled rules are applied in order exactly as the daily run would (so a lead disqualified by
    one is not counted again by a later one); disabled ones show whom they would hit on their own.
    """
    previews = []
    for rule in config.rules.rules:
        matches = find_matches(session, rule, as_of)
        previews.append(RulePreview(rule.name, rule.enabled, len(matches), 0, matches[:sample]))
    summary = apply_rules(session, config, as_of, run_id=None)
    for preview in previews:
        if preview.enabled:
            preview.acted_on = summary.fired.get(preview.name, 0)
    return previews


def explain_lead(session: Session, lead_id: int) -> list[dict[str, Any]]:
    """Every decision about a lead, oldest first, with its rule, facts and run."""
    rows = session.scalars(
        select(Decision).where(Decision.lead_id == lead_id).order_by(Decision.as_of, Decision.id)
    )
    return [
        {
            "as_of": d.as_of.isoformat(),
            "action": d.action.value,
            "rule": d.rule,
            "reason": d.reason,
            "facts": d.facts,
            "opportunity_id": d.opportunity_id,
            "run_id": d.run_id,
        }
        for d in rows
    ]
