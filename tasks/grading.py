"""Grade (A-D) and score (0-100) leads from ``grading.yaml``, set-based, on either store.

The score is one ``UPDATE leads ... FROM (facts)`` computed entirely in SQL: source, completeness,
fit to the ideal customer profile and engagement that halves every half-life. The grade is one
``CASE`` compiled from the ordered grade conditions (the rule condition language, so ``score``
and every rule fact can be tested); only leads whose grade changes come back to Python, to be
recorded as decisions, then written with one UPDATE per grade. Score changes are not recorded:
they happen every day for every engaged lead.

Conversion by lead source (``source_conversion``) turns into suggested source weights for the
report; ``grading.yaml`` stays authoritative (ops copy a suggestion in when they agree).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    extract,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.config.models import Engagement, Fit, Grading, Score
from tasks.decisions import NewDecision, record_decisions
from tasks.rules.compile import compile_condition
from tasks.rules.conditions import facts_used
from tasks.rules.engine import ComputedFacts
from tasks.rules.facts import FactSet, fact_for_display
from tasks.spans import LeadSpan, within
from tasks.store.models import (
    IN_PLAY,
    DecisionAction,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
    RuleEpisode,
)
from tasks.store.upsert import among, id_slices, rowcount

# The decisions' rule name: tells grading's own grade changes from a rule's ``set_grade``.
GRADING = "grading"
# Changed grades read back per round trip: decisions are recorded per batch, not all at once.
CHANGE_BATCH = 20_000
SECONDS_PER_DAY = 86_400.0


def grade_and_score(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    *,
    run_id: int | None,
    lead_ids: Iterable[int] | None = None,
    span: LeadSpan | None = None,
) -> dict[str, int]:
    """Score, then grade, the leads in play (``lead_ids``, ``span``: only those); return counts.

    Scoring comes first so a grade condition reads today's score. Counts: ``scores_changed``,
    ``grades_changed`` and ``to_A`` ... ``to_D`` (grade changes by new grade).
    """
    wanted = None if lead_ids is None else sorted(set(lead_ids))
    if wanted == []:
        return {"scores_changed": 0, "grades_changed": 0}
    grading = config.grading
    pinned_by = sorted(r.name for r in config.rules.rules if any(a.set_grade for a in r.then))
    scores = 0
    changes: dict[str, list[int]] = {}
    for scope in _scopes(session, wanted, as_of, span):
        scores += _score(session, grading.score, as_of, scope)
    for scope in _scopes(session, wanted, as_of, span):
        for grade, ids in _grade(session, grading, as_of, run_id, scope, pinned_by).items():
            changes.setdefault(grade, []).extend(ids)
    for grade, ids in changes.items():
        for part in id_slices(session, ids):
            session.execute(
                update(Lead)
                .where(among(session, Lead.id, part))
                .values(grade=grade)
                .execution_options(synchronize_session=False)
            )
    counts = {"scores_changed": scores, "grades_changed": sum(len(v) for v in changes.values())}
    return counts | {f"to_{g}": len(ids) for g, ids in sorted(changes.items())}


def _scopes(
    session: Session, wanted: Sequence[int] | None, as_of: dt.datetime, span: LeadSpan | None
) -> Iterator[ColumnElement[bool]]:
    """WHERE clauses over ``leads``: in play as of ``as_of``, in as few id slices as the store allows."""
    in_play = and_(
        Lead.merged_into_id.is_(None),
        Lead.status.in_(IN_PLAY),
        Lead.created_at <= as_of,
        within(span, Lead.id),
    )
    if wanted is None:
        yield in_play
        return
    for part in id_slices(session, wanted):
        yield and_(in_play, among(session, Lead.id, part))


# --- score -----------------------------------------------------------------------------------


def _score(session: Session, score: Score, as_of: dt.datetime, scope: ColumnElement[bool]) -> int:
    """One UPDATE of the leads whose score changes; returns how many."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        _ensure_sqlite_power(session)
    facts = FactSet(as_of, dialect)
    # Built before select_facts: it joins exactly the aggregates these expressions used.
    total = score_expression(score, facts, dialect)
    computed = facts.select_facts([], total.label("new_score")).where(scope).subquery("scored")
    result = session.execute(
        update(Lead)
        .where(Lead.id == computed.c.id, Lead.score != computed.c.new_score)
        .values(score=computed.c.new_score)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def score_expression(score: Score, facts: FactSet, dialect: str) -> ColumnElement[Any]:
    """The lead's score as SQL: the sum of every component, clamped to 0-100, rounded."""
    parts: list[ColumnElement[Any]] = [_source_points(score)]
    parts += [_present(field, points) for field, points in score.completeness.items() if points]
    parts += _fit_points(score.fit)
    parts += _engagement_points(score.engagement, facts, dialect)
    total: ColumnElement[Any] = cast(literal(0.0), Float)
    for part in parts:
        total = total + part
    return _round(dialect, _clamp(dialect, total))


def _source_points(score: Score) -> ColumnElement[Any]:
    if not score.source:
        return literal(score.other_sources)
    return case(score.source, value=Lead.source, else_=score.other_sources)


def _present(field: str, points: int) -> ColumnElement[Any]:
    column = getattr(Lead, field)
    given = column.is_not(None)
    if isinstance(column.type, String):
        given = and_(given, column != "")
    return case((given, points), else_=0)


def _fit_points(fit: Fit) -> list[ColumnElement[Any]]:
    parts: list[ColumnElement[Any]] = []
    if fit.countries:
        parts.append(case((Lead.country.in_(fit.countries.values), fit.countries.points), else_=0))
    if fit.industries:
        folded = [v.lower() for v in fit.industries.values]
        parts.append(case((func.lower(Lead.industry).in_(folded), fit.industries.points), else_=0))
    if fit.sizes:
        bands = [
            (
                and_(Lead.employees >= band.min, Lead.employees <= band.max)
                if band.max is not None
                else Lead.employees >= band.min,
                band.points,
            )
            for band in fit.sizes
        ]
        parts.append(case(*bands, else_=0))
    if fit.titles:
        words = _title_words()
        hit = or_(false(), *(words.like(f"% {k.lower()} %") for k in fit.titles.keywords))
        parts.append(case((hit, fit.titles.points), else_=0))
    return parts


def _title_words() -> ColumnElement[str]:
    """The title lower-cased, punctuation as spaces, padded: ``% vp %`` then matches the word
    (``cto`` must not match inside ``director``). SQLite's lower() folds ASCII letters only."""
    text: ColumnElement[Any] = func.lower(func.coalesce(Lead.title, ""))
    for mark in (",", ".", "/", "-", "&", "(", ")", ":", ";"):
        text = func.replace(text, mark, " ")
    return literal(" ") + text + literal(" ")


def _engagement_points(
    engagement: Engagement, facts: FactSet, dialect: str
) -> list[ColumnElement[Any]]:
    parts: list[ColumnElement[Any]] = []
    probe = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    half_days = (probe - (probe - engagement.half_life)).total_seconds() / SECONDS_PER_DAY
    for points, at in (
        (engagement.reply, facts.value("days_since_last_reply")),
        (engagement.touch, facts.value("days_since_last_touch")),
    ):
        if points:
            # Never happened: NULL age, no points.
            decay = _power_half(_age_days(dialect, facts.as_of, at) / half_days)
            parts.append(func.coalesce(points * decay, 0.0))
    if engagement.unanswered_email:
        parts.append(engagement.unanswered_email * facts.value("unanswered_emails"))
    return parts


def _age_days(dialect: str, as_of: dt.datetime, at: ColumnElement[Any]) -> ColumnElement[Any]:
    """Days (fractional) from ``at`` to ``as_of``; both stores keep naive UTC timestamps."""
    moment = literal(as_of, Lead.created_at.type)
    if dialect == "postgresql":
        return cast(extract("epoch", moment - at), Float) / SECONDS_PER_DAY
    return func.julianday(moment) - func.julianday(at)


def _power_half(exponent: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.power(cast(literal(0.5), Float), exponent)


def _clamp(dialect: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.least(func.greatest(value, 0.0), 100.0)
    # SQLite's scalar min()/max() with several arguments.
    return func.max(func.min(value, 100.0), 0.0)


def _round(dialect: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """Half up, the same on both stores (value >= 0): PostgreSQL's round() and its cast to
    integer round half to even, SQLite's cast truncates."""
    if dialect == "postgresql":
        return cast(func.floor(value + 0.5), Integer)
    return cast(value + 0.5, Integer)


def _ensure_sqlite_power(session: Session) -> None:
    """SQLite builds without its math functions lack power(): lend it Python's."""
    driver: Any = session.connection().connection.driver_connection
    try:
        driver.execute("SELECT power(0.5, 1.0)").fetchone()
    except sqlite3.OperationalError:
        driver.create_function("power", 2, _pow, deterministic=True)


def _pow(base: float | None, exponent: float | None) -> float | None:
    if base is None or exponent is None:
        return None
    return float(base) ** float(exponent)


# --- grade -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    lead_id: int
    old: str | None
    new: str
    rule: int  # 1-based index into grades; 0 for the default
    facts: dict[str, Any]


def _grade(
    session: Session,
    grading: Grading,
    as_of: dt.datetime,
    run_id: int | None,
    scope: ColumnElement[bool],
    pinned_by: Sequence[str],
) -> dict[str, list[int]]:
    """Record the grade changes in ``scope`` as decisions; return {new grade: lead ids}."""
    out: dict[str, list[int]] = {}
    for batch in _grade_changes(session, grading, as_of, scope, pinned_by):
        record_decisions(session, [_decision(c, as_of) for c in batch], run_id=run_id, as_of=as_of)
        for change in batch:
            out.setdefault(change.new, []).append(change.lead_id)
    return out


def _grade_changes(
    session: Session,
    grading: Grading,
    as_of: dt.datetime,
    scope: ColumnElement[bool],
    pinned_by: Sequence[str],
) -> Iterator[list[_Change]]:
    facts = FactSet(as_of, session.get_bind().dialect.name)
    used = sorted(set().union(*(facts_used(g.when) for g in grading.grades)))
    # A grade a rule set (set_grade) holds while that rule's condition episode is open.
    pinned = exists().where(
        RuleEpisode.lead_id == Lead.id,
        RuleEpisode.rule.in_(pinned_by),
        RuleEpisode.ended_at.is_(None),
    )
    where = and_(scope, ~pinned) if pinned_by else scope
    inner = (
        facts.select_facts(used, Lead.grade.label("current_grade"))
        .where(where)
        .subquery("grade_facts")
    )
    source = ComputedFacts(facts, inner)
    holds = [compile_condition(g.when, source) for g in grading.grades]
    new: ColumnElement[Any] = literal(grading.default, String)
    rule: ColumnElement[Any] = literal(0, Integer)
    if holds:  # a CASE needs at least one WHEN
        new = case(
            *((h, g.grade) for h, g in zip(holds, grading.grades, strict=True)),
            else_=grading.default,
        )
        rule = case(*((h, i) for i, h in enumerate(holds, 1)), else_=0)
    current = inner.c.current_grade
    query = (
        select(inner.c.id, current, new.label("new_grade"), rule.label("rule"))
        .add_columns(*(inner.c[name] for name in used))
        .where(or_(current.is_(None), current != new))
        .order_by(inner.c.id)
    )
    # Streamed: only decisions are written while it is read, the grades themselves after.
    result = session.execute(query.execution_options(yield_per=CHANGE_BATCH))
    for rows in result.partitions():
        yield [
            _Change(
                row.id,
                row.current_grade,
                row.new_grade,
                row.rule,
                {name: fact_for_display(name, getattr(row, name), as_of) for name in used},
            )
            for row in rows
        ]


def _decision(change: _Change, as_of: dt.datetime) -> NewDecision:
    return NewDecision(
        dedupe_key=f"grade:{change.lead_id}:{as_of.isoformat()}",
        action=DecisionAction.SET_GRADE,
        rule=GRADING,
        lead_id=change.lead_id,
        reason=change.new,
        facts={
            "from": change.old,
            "to": change.new,
            "by": f"grades[{change.rule - 1}]" if change.rule else "default",
            **change.facts,
        },
    )


# --- conversion by source --------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConversion:
    source: str
    leads: int
    converted: int  # became customers, or won an opportunity

    @property
    def rate(self) -> float:
        return self.converted / self.leads if self.leads else 0.0


def source_conversion(session: Session, as_of: dt.datetime | None) -> list[SourceConversion]:
    """Leads per source (created by ``as_of``; None: all) and how many converted, by source."""
    won = exists().where(
        Opportunity.lead_id == Lead.id,
        Opportunity.status == OpportunityStatus.WON,
        *([Opportunity.closed_at <= as_of] if as_of is not None else []),
    )
    converted = or_(Lead.status == LeadStatus.CUSTOMER, won)
    query = (
        select(Lead.source, func.count(), func.count(case((converted, Lead.id))))
        .where(Lead.merged_into_id.is_(None))
        .group_by(Lead.source)
        .order_by(Lead.source)
    )
    if as_of is not None:
        query = query.where(Lead.created_at <= as_of)
    return [SourceConversion(s, int(n), int(c)) for s, n, c in session.execute(query).tuples()]


def suggested_source_weights(
    rows: Sequence[SourceConversion], *, top_points: int = 20, prior_leads: float = 50.0
) -> dict[str, int]:
    """Source weights from conversion: the best source gets ``top_points``, the rest in proportion.

    Each rate is a Bayesian average pulled toward the overall rate by ``prior_leads`` imaginary
    leads, so a source with five leads and one sale does not outrank one with thousands.
    """
    total = sum(r.leads for r in rows)
    if not total:
        return {}
    overall = sum(r.converted for r in rows) / total
    smoothed = {
        r.source: (r.converted + prior_leads * overall) / (r.leads + prior_leads) for r in rows
    }
    best = max(smoothed.values())
    if best <= 0:
        return {source: 0 for source in smoothed}
    return {source: round(top_points * rate / best) for source, rate in smoothed.items()}
