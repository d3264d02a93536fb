"""New leads are created scored and graded, by the same SQL as grading, and written once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tasks.grading import GRADING, grade_and_score
from tasks.ingest import cleaning
from tasks.stages import current_config
from tasks.store.db import get_engine
from tasks.store.models import Decision, DecisionAction, Lead
from tests.ingest.conftest import AS_OF

HEADER = "Company,Email,First Name,Last Name,Title,Industry,Employees,Country,Lead Source,Budget,Authority,Need,Timing\n"  # fmt: skip
# One lead per grade of the shipped grading.yaml, and scores from every part of the score.
ROWS = [
    ",ann@a.example,Ann,Alder,CEO,Software,120,US,Referral,yes,yes,yes,yes",  # A
    ",ben@b.example,Ben,Birch,,Retail,5,PT,Purchased List,no,,,",  # D
    ",cy@c.example,Cy,Cedar,VP Sales,Analytics,400,DE,Trade Show,yes,,yes,",  # B
    ",di@d.example,Di,Dale,,,,,,,,,",  # C, the default
    "Elm Freight,ed@e.example,Ed,Elm,Head of Ops,Logistics,2000,GB,Partner Referral,,,,",  # B: score >= 70
]


def _grades(session: Session) -> dict[str, tuple[str | None, int]]:
    rows = session.execute(select(Lead.first_name, Lead.grade, Lead.score)).tuples()
    return {name: (grade, score) for name, grade, score in rows}


def _first_grades(session: Session) -> dict[int, Decision]:
    return {
        d.lead_id: d
        for d in session.scalars(
            select(Decision).where(
                Decision.action == DecisionAction.SET_GRADE, Decision.rule == GRADING
            )
        )
        if d.lead_id is not None
    }


def test_new_leads_are_created_graded_as_grading_grades_them(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grading them again afterwards changes nothing, each has its first grade recorded, and
    no lead is written twice."""
    from tasks.ingest_tasks import import_leads_task

    monkeypatch.setattr(cleaning, "BATCH", 2)  # several batches, each graded on its own
    file = tmp_path / "leads.csv"
    file.write_text(HEADER + "\n".join(ROWS) + "\n", encoding="utf-8")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    task_engine = get_engine()  # the task's own, not the fixture's: it sees the statements
    event.listen(task_engine, "before_cursor_execute", seen)
    try:
        counts = import_leads_task.fn([str(file)], AS_OF, None, None)
    finally:
        event.remove(task_engine, "before_cursor_execute", seen)
    assert [s for s in statements if s.lstrip().upper().startswith("INSERT INTO LEADS")]
    assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE LEADS")]
    with Session(engine) as session:
        born = _grades(session)
        assert {name: grade for name, (grade, _) in born.items()} == {
            "Ann": "A", "Ben": "D", "Cy": "B", "Di": "C", "Ed": "B",
        }  # fmt: skip
        assert born["Ed"][1] >= 70 and born["Ann"][1] > born["Cy"][1] > born["Di"][1] > 0
        again = grade_and_score(session, current_config(), AS_OF, run_id=None)
        assert again == {"scores_changed": 0, "grades_changed": 0}
        assert _grades(session) == born
        decisions = _first_grades(session)
        ids = dict(session.execute(select(Lead.first_name, Lead.id)).tuples().all())
        for name, (grade, score) in born.items():
            first = decisions[ids[name]]
            assert first.dedupe_key == f"grade:{ids[name]}:new"
            assert (first.reason, first.facts["from"], first.facts["to"]) == (grade, None, grade)
            assert first.facts["score"] == score
    assert (counts["grades_changed"], counts["scores_changed"]) == (5, 5)
    assert (counts["to_A"], counts["to_B"], counts["to_C"], counts["to_D"]) == (1, 2, 1, 1)


def test_a_later_row_that_changes_a_new_leads_grade_is_recorded_as_well(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lead created C in the first batch; a later batch's row tells its need and budget: the
    lead ends B, with both decisions, its first grade and the change."""
    from tasks.ingest_tasks import import_leads_task

    monkeypatch.setattr(cleaning, "BATCH", 2)
    file = tmp_path / "leads.csv"
    file.write_text(
        HEADER
        + ",di@d.example,Di,Dale,,,,,,,,,\n"
        + ",fay@f.example,Fay,Fir,,,,,,,,,\n"
        + ",di@d.example,Di,Dale,,,,,,yes,,yes,\n",
        encoding="utf-8",
    )
    counts = import_leads_task.fn([str(file)], AS_OF, None, None)
    with Session(engine) as session:
        di = session.scalars(select(Lead).where(Lead.first_name == "Di")).one()
        assert di.grade == "B"
        made = session.scalars(
            select(Decision)
            .where(Decision.lead_id == di.id, Decision.action == DecisionAction.SET_GRADE)
            .order_by(Decision.id)
        ).all()
    assert [(d.dedupe_key, d.facts["from"], d.facts["to"]) for d in made] == [
        (f"grade:{di.id}:new", None, "C"),
        (f"grade:{di.id}:{AS_OF.isoformat()}", "C", "B"),
    ]
    assert (counts["grades_changed"], counts["to_C"], counts["to_B"]) == (3, 2, 1)


def test_each_batch_grades_its_new_leads_by_the_statement_the_first_batch_compiled(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One table name per import for the staged and the graded rows: the statements that make
    and read them are compiled by the first batch and taken from the cache after."""
    from sqlalchemy.engine.default import CACHE_HIT

    from tasks.ingest_tasks import import_leads_task

    monkeypatch.setattr(cleaning, "BATCH", 1)
    file = tmp_path / "leads.csv"
    file.write_text(HEADER + "\n".join(ROWS) + "\n", encoding="utf-8")
    made: list[bool] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        if statement.startswith("CREATE TEMP TABLE _kept_born"):
            made.append(context.cache_hit is CACHE_HIT)

    task_engine = get_engine()
    event.listen(task_engine, "before_cursor_execute", seen)
    try:
        import_leads_task.fn([str(file)], AS_OF, None, None)
    finally:
        event.remove(task_engine, "before_cursor_execute", seen)
    assert made == [False] + [True] * (len(ROWS) - 1)
