"""Prefect tasks for imports: one task per file set, one transaction; the whole import or nothing."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from sqlalchemy import select

from tasks.cadences.new_leads import NewLeadEnrolment
from tasks.grading import NewLeadGrades, grade_and_score
from tasks.ingest.crm import import_activities, import_opportunities
from tasks.ingest.leads import import_leads, stored_outcomes, write_outcomes_csv
from tasks.ingest.rows import fewer_collections
from tasks.owners import Assigner, sync_owners
from tasks.runs import finish_run, start_run
from tasks.stages import current_config
from tasks.store.db import session_scope
from tasks.store.models import ImportKind, ImportOutcome, ImportRow, RunKind


@task(name="import-leads", cache_policy=NONE, persist_result=False)
def import_leads_task(
    files: list[str], as_of: dt.datetime, encoding: str | None, outcomes: str | None
) -> dict[str, Any]:
    """Import, dedupe, assign an owner and enrol new leads in the new-lead cadences."""
    config = current_config()
    with fewer_collections(), session_scope() as session:
        run = start_run(session, RunKind.INGEST, as_of)
        sync_owners(session, config.owners)
        # New leads are created graded and owned: each is written once.
        born = NewLeadGrades(config, as_of, run.id)
        enrolling = any(c.enrol == "new_leads" for c in config.cadences.cadences.values())
        # New leads with an address are enrolled batch by batch as they are stored.
        enrolment = NewLeadEnrolment(config, as_of, run.id) if enrolling else None
        result = import_leads(
            session,
            [Path(f) for f in files],
            run_id=run.id,
            as_of=as_of,
            encoding=encoding,
            keep_outcomes=False,
            trust=config.ingest.source_trust,
            sources=config.ingest.sources,
            columns=config.ingest.columns,
            # They start as nurturing (what enrolling makes them), rather than rewritten after.
            enrolling=enrolling,
            grades=born,
            owners=Assigner(session, config.owners),
            enrolment=enrolment,
        )
        # The new leads were created graded; the leads rows merged into (stored ones, or new
        # ones a later row added to) are graded again: what they gained may change it.
        touched: list[int] = session.scalars(  # type: ignore[assignment]
            select(ImportRow.lead_id)
            .where(
                ImportRow.run_id == run.id,
                ImportRow.kind == ImportKind.LEAD,
                ImportRow.outcome == ImportOutcome.MERGED,
                ImportRow.lead_id.is_not(None),
            )
            .distinct()
        ).all()
        regraded = grade_and_score(session, config, as_of, run_id=run.id, lead_ids=touched)
        graded = dict(born.counts + Counter(regraded))
        graded.setdefault("scores_changed", 0)
        graded.setdefault("grades_changed", 0)
        counts = {
            **result.counts,
            "enrolled": enrolment.enrolled if enrolment else 0,
            **graded,
            "run_id": run.id,
        }
        finish_run(session, run, counts)
        if outcomes:
            write_outcomes_csv(
                Path(outcomes), stored_outcomes(session, run.id), several_files=len(files) > 1
            )
    return counts


@task(name="import-crm", cache_policy=NONE, persist_result=False)
def import_crm_task(kind: str, files: list[str], as_of: dt.datetime) -> dict[str, Any]:
    config = current_config()
    with session_scope() as session:
        run = start_run(session, RunKind.IMPORT, as_of)
        paths = [Path(f) for f in files]
        if kind == "opportunities":
            stages = [s.name for s in config.pipeline.stages]
            result = import_opportunities(
                session,
                paths,
                run_id=run.id,
                as_of=as_of,
                stages=stages,
                competitors=config.pipeline.competitors,
            )
        else:
            result = import_activities(
                session, paths, run_id=run.id, as_of=as_of, competitors=config.pipeline.competitors
            )
        counts = {**result.counts, "run_id": run.id}
        finish_run(session, run, counts)
    return counts
