"""Grade (A-D) and score (0-100) leads from ``grading.yaml``, set-based, on either store.

The score is computed entirely in SQL: source, completeness, fit to the ideal customer profile
and engagement that halves every half-life. The grade is one ``CASE`` compiled from the ordered
grade conditions (the rule condition language, so ``score`` and every rule fact can be tested),
over the score just computed. Each grade change is recorded as a decision by one
``INSERT ... SELECT`` (read back to Python only when a grade reads a days fact), then scores and
grades are written by one ``UPDATE leads ... FROM (facts)``. Score changes are not recorded: they
happen every day for every engaged lead.

Conversion by lead source (``source_conversion``) turns into suggested source weights for the
report; ``grading.yaml`` stays authoritative (ops copy a suggestion in when they agree).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    Table,
    TableClause,
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
    type_coerce,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors

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
    Decision,
    DecisionAction,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
    RuleEpisode,
)
from tasks.store.upsert import among, dialect_insert, id_slices, kept, table, temp_name

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

    A grade condition reads today's score. Counts: ``scores_changed``, ``grades_changed`` and
    ``to_A`` ... ``to_D`` (grade changes by new grade).
    """
    wanted = None if lead_ids is None else sorted(set(lead_ids))
    if wanted == []:
        return {"scores_changed": 0, "grades_changed": 0}
    pinned_by = sorted(r.name for r in config.rules.rules if any(a.set_grade for a in r.then))
    if session.get_bind().dialect.name == "sqlite":
        _ensure_sqlite_power(session)
    scores = 0
    changes: Counter[str] = Counter()
    for scope, bounds in _scopes(session, wanted, as_of, span):
        scored, regraded = _score_and_grade(
            session, config.grading, as_of, run_id, scope, bounds, pinned_by
        )
        scores += scored
        changes.update(regraded)
    counts = {"scores_changed": scores, "grades_changed": sum(changes.values())}
    return counts | {f"to_{g}": n for g, n in sorted(changes.items())}


def _scopes(
    session: Session, wanted: Sequence[int] | None, as_of: dt.datetime, span: LeadSpan | None
) -> Iterator[tuple[ColumnElement[bool], LeadSpan | None]]:
    """WHERE clauses over ``leads``: in play as of ``as_of``, in as few id slices as the store
    allows; each with the span of ids it can touch, which bounds the facts read for it."""
    in_play = and_(
        Lead.merged_into_id.is_(None),
        Lead.status.in_(IN_PLAY),
        Lead.created_at <= as_of,
        within(span, Lead.id),
    )
    if wanted is None:
        yield in_play, span
        return
    for part in id_slices(session, wanted):
        bounds = LeadSpan(part[0], part[-1])  # ``wanted`` is sorted
        yield and_(in_play, among(session, Lead.id, part)), bounds


# --- score -----------------------------------------------------------------------------------


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
        # No store reuses the title's words across the keywords: each LIKE cleans the title
        # again. A lead without a title (most of an import) skips all of them.
        titled = and_(Lead.title.is_not(None), Lead.title != "")
        parts.append(case((and_(titled, hit), fit.titles.points), else_=0))
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


# --- score and grade -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Graded:
    """Each lead of a scope with its new score and grade, as SQL over one inner query.

    ``inner`` holds the facts the grades read, with ``score`` the score just computed (so a
    grade condition reads today's score), and the lead's stored ``old_score`` and
    ``current_grade``; ``regrade`` holds when the grade changes (never while pinned).
    """

    inner: Any
    used: list[str]
    new: ColumnElement[Any]
    rule: ColumnElement[Any]
    regrade: ColumnElement[bool]


def _score_and_grade(
    session: Session,
    grading: Grading,
    as_of: dt.datetime,
    run_id: int | None,
    scope: ColumnElement[bool],
    bounds: LeadSpan | None,
    pinned_by: Sequence[str],
) -> tuple[int, dict[str, int]]:
    """Record the scope's grade changes, then write its scores and grades in one UPDATE.

    Returns how many scores changed and {new grade: leads}. One UPDATE rather than one for the
    scores and one per grade: each rewrites every changed lead, and an import changes all of
    its new leads.
    """
    computed = _graded(session, grading, as_of, scope, bounds, pinned_by)
    # Scores and facts are computed once, into a temporary table, for the three statements
    # below: the score alone (a dozen CASEs, the title's words) costs more than reading it.
    with kept(session, _as_rows(computed), "graded") as rows:
        graded = _Graded(rows, computed.used, rows.c.new_grade, rows.c.rule, rows.c.regrade)
        _record_changes(session, graded, as_of, run_id)
        scores, changes = _counts(session, graded)
        session.execute(
            update(Lead)
            .where(Lead.id == rows.c.id, or_(Lead.score != rows.c.score, graded.regrade))
            .values(score=rows.c.score, grade=case((graded.regrade, graded.new), else_=Lead.grade))
            .execution_options(synchronize_session=False)
        )
    return scores, changes


def _as_rows(graded: _Graded) -> Select[Any]:
    inner = graded.inner
    facts = [inner.c[name] for name in graded.used if name != "score"]
    return select(
        inner.c.id,
        inner.c.score,
        inner.c.old_score,
        inner.c.current_grade,
        graded.new.label("new_grade"),
        graded.rule.label("rule"),
        graded.regrade.label("regrade"),
        *facts,
    )


def _graded(
    session: Session,
    grading: Grading,
    as_of: dt.datetime,
    scope: ColumnElement[bool],
    bounds: LeadSpan | None,
    pinned_by: Sequence[str],
) -> _Graded:
    dialect = session.get_bind().dialect.name
    facts = FactSet(as_of, dialect, bounds)
    used = sorted(set().union(*(facts_used(g.when) for g in grading.grades)))
    # Built before select_facts: it joins exactly the aggregates these expressions used.
    total = score_expression(grading.score, facts, dialect)
    extra: list[Any] = [
        total.label("score"),
        Lead.score.label("old_score"),
        Lead.grade.label("current_grade"),
    ]
    if pinned_by:
        # A grade a rule set (set_grade) holds while that rule's condition episode is open.
        pinned = exists().where(
            RuleEpisode.lead_id == Lead.id,
            RuleEpisode.rule.in_(pinned_by),
            RuleEpisode.ended_at.is_(None),
        )
        extra.append(pinned.label("pinned"))
    others = [name for name in used if name != "score"]
    inner = facts.select_facts(others, *extra).where(scope).subquery("graded")
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
    regrade: ColumnElement[bool] = or_(current.is_(None), current != new)
    if pinned_by:
        regrade = and_(~inner.c.pinned, regrade)
    return _Graded(inner, used, new, rule, regrade)


def _counts(session: Session, graded: _Graded) -> tuple[int, dict[str, int]]:
    inner = graded.inner
    marked = select(
        case((graded.regrade, graded.new), else_=None).label("to"),
        case((inner.c.score != inner.c.old_score, 1), else_=0).label("rescored"),
    ).subquery("marked")
    scores = 0
    changes: dict[str, int] = {}
    rows = session.execute(
        select(marked.c.to, func.count(), func.sum(marked.c.rescored)).group_by(marked.c.to)
    ).tuples()
    for to, leads, rescored in rows:
        scores += int(rescored or 0)
        if to is not None:
            changes[to] = int(leads)
    return scores, changes


def _record_changes(
    session: Session,
    graded: _Graded,
    as_of: dt.datetime,
    run_id: int | None,
    *,
    first: bool = False,
) -> None:
    """A decision for each grade change: in one INSERT ... SELECT when every fact the grades
    read is a plain value; otherwise (days facts: whole days, exactly as Python counts them)
    read back and recorded in batches. ``first``: the leads' first grades (see
    ``NewLeadGrades``)."""
    if all(name in SQL_DISPLAYABLE for name in graded.used):
        _insert_changes(session, graded, as_of, run_id, first=first)
        return
    for batch in _grade_changes(session, graded, as_of):
        record_decisions(
            session, [_decision(c, as_of, first=first) for c in batch], run_id=run_id, as_of=as_of
        )


def _key_tail(as_of: dt.datetime, *, first: bool) -> str:
    """What follows ``grade:<lead>`` in a grade decision's key: the day it was made, or, for a
    lead's first grade, ``new``. A lead is created once, so its first grade never shares a key
    with a later one, even a change a later row of the same import makes."""
    return "new" if first else as_of.isoformat()


# Facts whose stored value is how people read them, so SQL can put them in a decision as is.
SQL_DISPLAYABLE = frozenset(
    {"score", "grade", "status", "source", "country", "tags", "budget", "authority", "need",
     "timing", "unanswered_emails", "emails_sent", "missed_meetings"}
)  # fmt: skip


def _insert_changes(
    session: Session, graded: _Graded, as_of: dt.datetime, run_id: int | None, *, first: bool
) -> None:
    """The grade decisions as one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: the same
    rows ``_decision`` makes, without a round trip through Python for each lead."""
    dialect = session.get_bind().dialect.name
    inner = graded.inner
    by = case(
        (graded.rule == 0, literal("default", String)),
        else_=literal("grades[", String) + cast(graded.rule - 1, String) + literal("]", String),
    )
    pairs: list[tuple[str, ColumnElement[Any]]] = [
        ("from", inner.c.current_grade),
        ("to", graded.new),
        ("by", by),
    ]
    for name in graded.used:
        value = inner.c[name]
        if name == "tags" and dialect == "sqlite":
            value = func.json(value)  # the stored list, not its text
        pairs.append((name, value))
    build = func.json_build_object if dialect == "postgresql" else func.json_object
    facts = build(*(part for key, value in pairs for part in (literal(key, String), value)))
    now = dt.datetime.now(dt.UTC)
    rows = (
        select(
            literal("grade:", String)
            + cast(inner.c.id, String)
            + literal(f":{_key_tail(as_of, first=first)}", String),
            literal(run_id, Integer),
            literal(as_of, Decision.as_of.type),
            literal(DecisionAction.SET_GRADE, Decision.action.type),
            literal(GRADING, String),
            inner.c.id,
            graded.new,
            type_coerce(facts, JSON),
            literal(now, Decision.created_at.type),
        )
        .where(graded.regrade)
        .order_by(inner.c.id)
    )
    names = ["dedupe_key", "run_id", "as_of", "action", "rule", "lead_id", "reason", "facts",
             "created_at"]  # fmt: skip
    insert = dialect_insert(session, Decision).from_select(names, rows)
    # A lead's first grade is made once, by the transaction that creates the lead: no other
    # can hold its key, and the conflict check would only cost its time.
    if not first:
        insert = insert.on_conflict_do_nothing(index_elements=["dedupe_key"])
    session.execute(insert)


@dataclass(frozen=True)
class _Change:
    lead_id: int
    old: str | None
    new: str
    rule: int  # 1-based index into grades; 0 for the default
    facts: dict[str, Any]


def _grade_changes(
    session: Session, graded: _Graded, as_of: dt.datetime
) -> Iterator[list[_Change]]:
    inner = graded.inner
    query = (
        select(inner.c.id, inner.c.current_grade, graded.new.label("new_grade"))
        .add_columns(graded.rule.label("rule"), *(inner.c[name] for name in graded.used))
        .where(graded.regrade)
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
                {name: fact_for_display(name, getattr(row, name), as_of) for name in graded.used},
            )
            for row in rows
        ]


def _decision(change: _Change, as_of: dt.datetime, *, first: bool = False) -> NewDecision:
    return NewDecision(
        dedupe_key=f"grade:{change.lead_id}:{_key_tail(as_of, first=first)}",
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


# --- new leads, graded before they are written ---------------------------------------------


@dataclass
class NewLeadGrades:
    """Scores and grades for leads an import is about to create, from their staged rows.

    The same SQL as ``grade_and_score`` with the staged table in place of ``leads``: every
    fact a new lead has (no emails, activities or episodes yet: its ids are new) comes out as
    it would once stored. Each new lead is then written once, graded, instead of inserted and
    rewritten by an UPDATE, which cost an import as much as the insert did. ``counts``: what
    ``grade_and_score`` returns, summed over the batches.
    """

    config: NurtureConfig
    as_of: dt.datetime
    run_id: int | None
    counts: Counter[str] = field(default_factory=Counter)
    # One name for every batch's graded rows: the statements that read them compile once.
    table_name: str = field(default_factory=lambda: temp_name("kept_born"))

    @contextmanager
    def over(self, session: Session, stage: TableClause, span: LeadSpan) -> Iterator[StagedGrades]:
        """The staged leads' scores and grades (ids in ``span``), for the INSERT that stores
        them; ``record`` then records their first grades."""
        if session.get_bind().dialect.name == "sqlite":
            _ensure_sqlite_power(session)
        pinned_by = sorted(
            r.name for r in self.config.rules.rules if any(a.set_grade for a in r.then)
        )
        scope = next(_scopes(session, None, self.as_of, span))[0]
        computed = _graded(session, self.config.grading, self.as_of, scope, span, pinned_by)
        query = _on_stage(_as_rows(computed), stage)
        with kept(session, query, "born", name=self.table_name) as rows:
            graded = _Graded(rows, computed.used, rows.c.new_grade, rows.c.rule, rows.c.regrade)
            yield StagedGrades(self, graded)


@dataclass(frozen=True)
class StagedGrades:
    grades: NewLeadGrades
    graded: _Graded

    @property
    def rows(self) -> Any:
        return self.graded.inner

    def score(self, staged: ColumnElement[Any]) -> ColumnElement[Any]:
        """The new lead's score (a lead out of play keeps its staged one)."""
        return func.coalesce(self.rows.c.score, staged)

    def grade(self, staged: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((self.graded.regrade, self.graded.new), else_=staged)

    def record(self, session: Session, lost: Sequence[int]) -> None:
        """Record the first grades of the leads stored (``lost``: ids of staged leads another
        writer created first, which are not) and count them."""
        grades = self.grades
        if lost:
            session.execute(self.rows.delete().where(self.rows.c.id.in_(list(lost))))
        _record_changes(session, self.graded, grades.as_of, grades.run_id, first=True)
        scores, changes = _counts(session, self.graded)
        grades.counts["scores_changed"] += scores
        grades.counts.update({f"to_{g}": n for g, n in changes.items()})
        grades.counts["grades_changed"] += sum(changes.values())


def _on_stage(query: Select[Any], stage: TableClause) -> Select[Any]:
    """``query`` with every reference to ``leads`` (its columns, FROM and JOIN targets, ORM
    annotated or not) made to the staged table, whose columns are named the same."""
    leads = table(Lead)

    def swap(element: Any, **_: Any) -> Any:
        if isinstance(element, Table) and element._deannotate() is leads:
            return stage
        owner = getattr(element, "table", None)
        if isinstance(owner, Table) and owner._deannotate() is leads and element.name in stage.c:
            return stage.c[element.name]
        return None

    return visitors.replacement_traverse(query, {}, swap)  # type: ignore[return-value]


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
