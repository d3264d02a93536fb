"""Importing lead files into a real store: outcomes, exact dedupe and merge, nothing lost."""

from __future__ import annotations

import csv
import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tasks.demo.generator import generate_book
from tasks.ingest import cleaning, lead_writes
from tasks.ingest import leads as lead_import
from tasks.ingest.lead_lookup import Lookup
from tasks.ingest.leads import import_leads, stored_outcomes, write_outcomes_csv
from tasks.ingest.reader import IngestFileError
from tasks.runs import start_run
from tasks.stages import current_config
from tasks.store.models import (
    Decision,
    DecisionAction,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    LeadStatus,
    RunKind,
)
from tests import builders
from tests.ingest.conftest import AS_OF, FIXTURES

FILES = [FIXTURES / name for name in ("hubspot_contacts.csv", "salesforce_leads.csv",
                                      "pipedrive_persons.csv", "tradeshow_scans.jsonl")]  # fmt: skip
UTC = dt.UTC


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def by_email(session: Session, key: str) -> Lead:
    lead = session.scalar(select(Lead).where(Lead.email_key == key))
    assert lead is not None, key
    return lead


def new_run(session: Session, as_of: dt.datetime = AS_OF) -> int:
    return builders.run(session, as_of)


@pytest.mark.parametrize("batch", [5_000, 3], ids=["one-batch", "batches-of-3"])
def test_four_exports_become_eight_people(
    session: Session, run_id: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches put duplicates in later batches than their first row: same outcome.
    monkeypatch.setattr(cleaning, "BATCH", batch)
    result = import_leads(session, FILES, run_id=run_id, as_of=AS_OF)
    session.commit()

    assert result.counts == {"rows": 14, "accepted": 8, "merged": 4, "rejected": 2}
    assert count(session, Lead) == 8 and len(result.new_lead_ids) == 8
    assert sorted(result.new_lead_ids) == sorted(session.scalars(select(Lead.id)))
    outcome = {(Path(o.file).name, o.row): o.outcome.value for o in result.outcomes}
    assert outcome == {
        ("hubspot_contacts.csv", 1): "accepted", ("hubspot_contacts.csv", 2): "accepted",
        ("hubspot_contacts.csv", 3): "rejected", ("hubspot_contacts.csv", 4): "accepted",
        ("salesforce_leads.csv", 1): "merged", ("salesforce_leads.csv", 2): "accepted",
        ("salesforce_leads.csv", 3): "rejected", ("salesforce_leads.csv", 4): "accepted",
        ("pipedrive_persons.csv", 1): "accepted", ("pipedrive_persons.csv", 2): "accepted",
        ("pipedrive_persons.csv", 3): "merged", ("tradeshow_scans.jsonl", 1): "accepted",
        ("tradeshow_scans.jsonl", 2): "merged", ("tradeshow_scans.jsonl", 3): "merged",
    }  # fmt: skip

    ana = by_email(session, "ana.silva@acme.example")
    assert (ana.first_name, ana.last_name, ana.phone, ana.country) == ("Ana", "Silva", "+14155550134", "US")  # fmt: skip
    assert (ana.source, ana.status, ana.created_run_id) == ("paid_search", LeadStatus.NEW, run_id)
    assert (ana.budget, ana.authority, ana.need, ana.timing) == ("yes", "unknown", "yes", None)
    assert ana.created_at == ana.status_changed_at == dt.datetime(2026, 2, 10, tzinfo=UTC)

    # Survivorship with no source ranked above another: the newer row (Salesforce, 20 Feb)
    # wins each field it has; the lead's source stays the one it came from first.
    mia = by_email(session, "mia.wong@globex.example")
    assert mia.email == "Mia.Wong@globex.example"
    assert (mia.phone, mia.company, mia.title, mia.source) == ("+447911123456", "Globex Ltd", "Chief Technology Officer", "organic_search")  # fmt: skip
    assert mia.field_sources["company"] == ["trade_show", "2026-02-20T00:00:00+00:00"]
    assert mia.created_at == dt.datetime(2026, 2, 12, 9, 30, tzinfo=UTC)

    sean = by_email(session, "sean.obrien@hooli.example")
    assert (sean.first_name, sean.last_name, sean.phone, sean.country) == ("Sean", "O'Brien", None, "IE")  # fmt: skip
    kevin = by_email(session, "kevin.mcdonald@initech.example")
    assert (kevin.first_name, kevin.last_name) == ("Kevin", "McDonald")
    jose = by_email(session, "jose@empresa.example")
    assert (jose.company, jose.country, jose.phone) == ("Empresa, S.A. de C.V.", "MX", "+525512345678")  # fmt: skip
    # Pipedrive has no created column; the trade-show row of the same person tells the date.
    jurgen = by_email(session, "jw@firma.example")
    assert (jurgen.first_name, jurgen.last_name) == ("Jürgen", "Weiß")
    assert jurgen.created_at == jurgen.cycle_started_at == dt.datetime(2026, 1, 15, tzinfo=UTC)

    # A lead with a phone and no usable address, found again by phone and name.
    [priya] = session.scalars(select(Lead).where(Lead.email_key.is_(None))).all()
    assert (priya.first_name, priya.phone, priya.email) == ("Priya", "+919876543210", None)
    assert priya.tags == ["vip", "apac"] and priya.source == "partner_referral"


def test_every_row_is_kept_with_file_line_raw_and_reasons(session: Session, run_id: int) -> None:
    import_leads(session, FILES, run_id=run_id, as_of=AS_OF)
    rows = session.scalars(select(ImportRow).order_by(ImportRow.id)).all()
    assert len(rows) == 14
    assert {r.kind for r in rows} == {ImportKind.LEAD} and {r.run_id for r in rows} == {run_id}
    test_row = rows[2]
    assert (test_row.file, test_row.row_number, test_row.line_number) == (str(FILES[0]), 3, 4)
    assert (test_row.outcome, test_row.lead_id, test_row.reasons) == (ImportOutcome.REJECTED, None, ["test row"])  # fmt: skip
    assert test_row.raw["Record ID"] == "103"  # unknown columns survive in the raw record
    unreachable = rows[6]
    assert unreachable.reasons == ["no reachable contact", "no email or phone given"]
    sean = rows[5]
    assert sean.outcome is ImportOutcome.ACCEPTED and sean.reasons[0].startswith("invalid phone")
    merged = rows[4]
    assert merged.outcome is ImportOutcome.MERGED
    assert merged.lead_id == by_email(session, "mia.wong@globex.example").id
    jsonl_row = rows[11]
    assert (jsonl_row.row_number, jsonl_row.line_number) == (1, 1)
    assert jsonl_row.raw["badge"] == {"id": 7}


def test_import_rows_keep_tabs_backslashes_and_line_breaks_as_given(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    """PostgreSQL takes import rows as COPY text made by the cleaning: every character its
    text format escapes survives, in the raw record, the file's name and the reasons."""
    odd = 'tab\there, back\\slash \\N, two\nlines\r\n, form\ffeed\v\b, "quoted", ünïcode'
    path = tmp_path / "odd\tname\\.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["Email", "First Name", "Notes"])
        out.writerow(["ana@odd.example", "Ana", odd])
        out.writerow(["not an address", "Bo\\b", "\\"])
    result = import_leads(session, [path], run_id=run_id, as_of=AS_OF, parallel=True)
    assert result.counts == {"rows": 2, "accepted": 1, "merged": 0, "rejected": 1}
    rows = session.scalars(select(ImportRow).order_by(ImportRow.id)).all()
    ana = by_email(session, "ana@odd.example")
    assert [(r.file, r.row_number, r.line_number, r.outcome, r.lead_id) for r in rows] == [
        (str(path), 1, 2, ImportOutcome.ACCEPTED, ana.id),
        (str(path), 2, 5, ImportOutcome.REJECTED, None),  # the notes took lines 2 to 4
    ]
    assert rows[0].raw == {"Email": "ana@odd.example", "First Name": "Ana", "Notes": odd}
    assert rows[1].raw == {"Email": "not an address", "First Name": "Bo\\b", "Notes": "\\"}
    assert rows[1].reasons and rows[1].reasons[0] == "no reachable contact"
    assert {(r.run_id, r.kind) for r in rows} == {(run_id, ImportKind.LEAD)}


def test_merges_and_rejections_are_decisions(session: Session, run_id: int) -> None:
    import_leads(session, FILES, run_id=run_id, as_of=AS_OF)
    rows = {(Path(r.file).name, r.row_number): r for r in session.scalars(select(ImportRow))}
    decisions = session.scalars(select(Decision).order_by(Decision.id)).all()
    merges = [d for d in decisions if d.action is DecisionAction.MERGE]
    rejects = [d for d in decisions if d.action is DecisionAction.REJECT]
    assert len(merges) == 4 and len(rejects) == 2 and len(decisions) == 6
    for d in merges:
        row = rows[d.facts["file"], d.facts["row"]]
        assert row.outcome is ImportOutcome.MERGED and d.lead_id == row.lead_id
        assert (d.run_id, d.as_of) == (run_id, AS_OF)
    assert sorted(d.rule for d in merges) == ["exact_email"] * 3 + ["exact_phone_and_name"]
    mia_merge = next(d for d in merges if d.facts["file"] == "salesforce_leads.csv")
    assert mia_merge.facts["fields_taken"] == ["phone", "company", "title"]
    for d in rejects:
        row = rows[d.facts["file"], d.facts["row"]]
        assert row.outcome is ImportOutcome.REJECTED and d.rule == "ingest"
        assert d.reason == "; ".join(row.reasons)


def test_reimport_creates_nothing_and_changes_nothing(session: Session, run_id: int) -> None:
    import_leads(session, FILES, run_id=run_id, as_of=AS_OF)
    session.commit()
    before = {lead.id: (lead.phone, lead.company, lead.created_at, lead.tags)
              for lead in session.scalars(select(Lead))}  # fmt: skip
    later = AS_OF + dt.timedelta(days=1)
    again = import_leads(session, FILES, run_id=new_run(session, later), as_of=later)
    session.commit()
    assert again.counts == {"rows": 14, "accepted": 0, "merged": 12, "rejected": 2}
    assert again.new_lead_ids == []
    after = {lead.id: (lead.phone, lead.company, lead.created_at, lead.tags)
             for lead in session.scalars(select(Lead))}  # fmt: skip
    assert after == before
    assert count(session, ImportRow) == 28  # nothing is lost, the second time either


def test_a_file_merges_into_leads_already_in_the_store(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    stored = Lead(
        email="Kim@firm.example", email_key="kim@firm.example", first_name="Kim", source="unknown",
        status=LeadStatus.WORKING, status_changed_at=AS_OF, created_at=AS_OF, tags=[],
    )  # fmt: skip
    session.add(stored)
    session.commit()
    path = tmp_path / "more.csv"
    path.write_text(
        "Email,First Name,Last Name,Company,Lead Source,Create Date\n"
        "KIM@Firm.example,Kimberly,Lee,Firm,Webinar,2025-01-01\n"
        "new@firm.example,New,Person,Firm,Webinar,\n"
    )
    result = import_leads(session, [path], run_id=run_id, as_of=AS_OF)
    assert result.counts == {"rows": 2, "accepted": 1, "merged": 1, "rejected": 0}
    session.refresh(stored)
    # Empty fields filled, the existing name and the lead's history kept.
    assert (stored.first_name, stored.last_name, stored.company, stored.source) == ("Kim", "Lee", "Firm", "webinar")  # fmt: skip
    assert (stored.status, stored.created_at) == (LeadStatus.WORKING, AS_OF)
    assert result.outcomes[0].lead_id == stored.id
    fresh = by_email(session, "new@firm.example")
    assert fresh.created_at == AS_OF  # no created date: the lead begins at the import


def test_a_structural_error_in_any_file_writes_nothing(session: Session, run_id: int) -> None:
    with pytest.raises(IngestFileError) as caught:
        import_leads(session, [*FILES, FIXTURES / "malformed.csv"], run_id=run_id, as_of=AS_OF)
    assert "malformed.csv, line 5" in str(caught.value)
    # The caller's transaction (the import task's) is rolled back whole: the good files before
    # the bad one leave nothing behind.
    session.rollback()
    assert (count(session, Lead), count(session, ImportRow), count(session, Decision)) == (0, 0, 0)


def test_outcomes_csv(session: Session, run_id: int, tmp_path: Path) -> None:
    one = import_leads(session, FILES[:1], run_id=run_id, as_of=AS_OF, keep_outcomes=False)
    assert one.outcomes == []  # a million-row import keeps none in memory
    out = tmp_path / "out.csv"
    write_outcomes_csv(out, stored_outcomes(session, run_id), several_files=False)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["row", "outcome", "lead_id", "reasons"]
    assert [r[:2] for r in rows[1:]] == [["1", "accepted"], ["2", "accepted"], ["3", "rejected"], ["4", "accepted"]]  # fmt: skip
    assert rows[3][2:] == ["", "test row"]
    assert rows[1][3] == "unreadable timing answer 'maybe' (expected yes, no or unknown)"
    second_run = start_run(session, RunKind.INGEST, AS_OF).id
    several = import_leads(session, FILES, run_id=second_run, as_of=AS_OF)
    assert list(stored_outcomes(session, second_run)) == several.outcomes
    write_outcomes_csv(out, several.outcomes, several_files=True)
    header, *body = list(csv.reader(out.open()))
    assert header == ["row", "outcome", "lead_id", "reasons", "file"] and len(body) == 14


def test_a_second_import_at_once_waits_and_merges_into_the_first_ones_leads(
    engine: Engine, run_id: int, tmp_path: Path
) -> None:
    path = tmp_path / "race.csv"
    path.write_text("Email,First Name,Phone,Country\nrace@acme.example,Rae,020 7946 0958,GB\n")
    later = tmp_path / "later.csv"
    later.write_text("Email,First Name,Company,Country\nRACE@acme.example,Rae,Acme,GB\n")
    first = sessionmaker(engine)()
    assert import_leads(first, [path], run_id=run_id, as_of=AS_OF).counts["accepted"] == 1
    second: dict[str, object] = {}

    def import_again() -> None:
        with sessionmaker(engine)() as session:
            second["result"] = import_leads(session, [later], run_id=new_run(session), as_of=AS_OF)
            session.commit()

    rival = threading.Thread(target=import_again)
    rival.start()
    rival.join(timeout=1.5)
    assert rival.is_alive()  # waiting for the first import's transaction
    first.commit()
    first.close()
    rival.join(timeout=30)
    result = second["result"]
    assert isinstance(result, lead_import.LeadImportResult)
    assert result.counts == {"rows": 1, "accepted": 0, "merged": 1, "rejected": 0}
    with sessionmaker(engine)() as session:
        (lead,) = session.scalars(select(Lead)).all()
        assert (lead.first_name, lead.phone, lead.company) == ("Rae", "+442079460958", "Acme")


def test_a_lead_written_behind_the_imports_back_fails_it_whole(
    session: Session, run_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer outside Nurture that stores a person between the import's lookup and its
    insert is not merged over silently: the import fails and leaves nothing."""
    path = tmp_path / "race.csv"
    path.write_text(
        "Email,First Name,Phone,Country\nrace@acme.example,Rae,020 7946 0958,GB\n"
        "other@acme.example,Otto,,GB\n"
    )
    rival = Lead(email="race@acme.example", email_key="race@acme.example", source="web",
                 status_changed_at=AS_OF, created_at=AS_OF, tags=[])  # fmt: skip
    session.add(rival)
    session.commit()
    # The rival's row lands after our lookup: the lookup is made to miss it.
    monkeypatch.setattr(Lookup, "stored", lambda self, keys, leads=None: {})
    with pytest.raises(IntegrityError):
        import_leads(session, [path], run_id=run_id, as_of=AS_OF)
    session.rollback()
    assert count(session, Lead) == 1 and count(session, ImportRow) == 0
    assert count(session, Decision) == 0


def test_a_run_imports_leads_once(session: Session, run_id: int) -> None:
    """Its merges and rejections are keyed by the run and their rows' places and written
    without a check for existing keys: a second import in the run is refused before it writes."""
    import_leads(session, FILES[:1], run_id=run_id, as_of=AS_OF)
    rows, decisions = count(session, ImportRow), count(session, Decision)
    with pytest.raises(ValueError, match=f"run {run_id} has imported leads already"):
        import_leads(session, FILES[1:], run_id=run_id, as_of=AS_OF)
    assert (count(session, ImportRow), count(session, Decision)) == (rows, decisions)


def test_the_demo_book_imports_to_what_was_planted(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    book = generate_book(tmp_path, seed=11, leads=150, start=AS_OF.date(), days=14)
    truth = book.truth
    result = import_leads(session, book.lead_files, run_id=run_id, as_of=AS_OF)
    assert result.counts == {
        "rows": truth.lead_rows,
        "accepted": truth.people,
        "merged": truth.merged_rows,
        "rejected": truth.rejected_rows,
    }
    phone_only = session.scalar(
        select(func.count()).select_from(Lead).where(Lead.email_key.is_(None))
    )
    assert phone_only == truth.phone_only
    again = import_leads(session, book.lead_files, run_id=new_run(session), as_of=AS_OF)
    assert again.counts["accepted"] == 0 and count(session, Lead) == truth.people


def test_cleaning_in_a_second_process_gives_the_same_import(session: Session, run_id: int) -> None:
    inline = import_leads(session, FILES, run_id=run_id, as_of=AS_OF, parallel=False)
    session.rollback()
    beside = import_leads(session, FILES, run_id=run_id, as_of=AS_OF, parallel=True)
    assert beside.counts == inline.counts
    # Lead ids aside (a rolled-back PostgreSQL sequence does not go back), row for row the same.
    assert [(o.file, o.row, o.outcome, o.reasons) for o in beside.outcomes] == [
        (o.file, o.row, o.outcome, o.reasons) for o in inline.outcomes
    ]


def test_an_error_met_by_the_cleaning_process_is_raised_with_its_file_and_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Email,First Name\na@b.example,Ann\nc@d.example,Cy,extra\n")
    with pytest.raises(IngestFileError, match=r"bad.csv, line 3: 3 fields where the header has 2"):
        list(cleaning.cleaned([bad], {bad: "utf-8"}, parallel=True))


def test_a_more_trusted_source_keeps_its_values_and_aliases_keep_the_rest(
    session: Session, run_id: int
) -> None:
    import_leads(session, FILES, run_id=run_id, as_of=AS_OF, trust=["organic_search"])
    mia = by_email(session, "mia.wong@globex.example")
    # HubSpot's organic-search row is trusted above the trade show's: its values stand, and
    # the trade show fills only what it lacked.
    assert (mia.phone, mia.company, mia.title) == ("+447911123456", "Globex", "CTO")
    assert set(mia.field_sources) == {"phone"}


def test_the_import_task_creates_leads_with_an_address_nurturing_and_enrolled(
    engine: Any, tmp_path: Path
) -> None:
    """A new lead with an address goes into the new-lead cadences, so the task creates it
    nurturing (not new, then rewritten); a lead with only a phone stays new and unenrolled."""
    from zoneinfo import ZoneInfo

    from tasks.cadences.enrolment import first_due
    from tasks.ingest_tasks import import_leads_task
    from tasks.store.models import CadenceEnrolment, EnrolmentStatus

    file = tmp_path / "leads.csv"
    file.write_text(
        "Email,First Name,Last Name,Phone,Country\n"
        "ana@acme.example,Ana,Silva,,PT\n"
        ",Bo,Berg,+46 8 123 456 78,SE\n",
        encoding="utf-8",
    )
    counts = import_leads_task.fn([str(file)], AS_OF, None, None)
    assert (counts["accepted"], counts["enrolled"]) == (2, 1)
    with Session(engine) as session:
        status = {n: s for n, s in session.execute(select(Lead.first_name, Lead.status))}
        enrolled = session.scalars(select(CadenceEnrolment)).all()
        ana = session.scalar(select(Lead.id).where(Lead.first_name == "Ana"))
    assert status == {"Ana": LeadStatus.NURTURING, "Bo": LeadStatus.NEW}
    assert [e.lead_id for e in enrolled] == [ana]
    # Enrolled from the import, first step at 10:00 in Lisbon on the step's day, steps frozen.
    config = current_config()
    cadence = next(c for c in config.cadences.cadences.values() if c.enrol == "new_leads")
    (one,) = enrolled
    assert (one.status, one.next_step, one.enrolled_at) == (EnrolmentStatus.ACTIVE, 0, AS_OF)
    assert one.steps == cadence.snapshot()
    assert one.next_due_at == first_due(
        AS_OF,
        cadence,
        config.sending,
        config.cadences.holidays_for(None),
        ZoneInfo("Europe/Lisbon"),
    )


def test_the_import_task_times_each_new_leads_first_step_in_the_leads_own_zone(
    engine: Any, tmp_path: Path
) -> None:
    """From its phone when that names one zone, else from its country."""
    from zoneinfo import ZoneInfo

    from tasks.cadences.enrolment import first_due
    from tasks.ingest_tasks import import_leads_task
    from tasks.store.models import CadenceEnrolment

    file = tmp_path / "leads.csv"
    file.write_text(
        "Email,First Name,Last Name,Phone,Country\n"
        "sal@acme.example,Sal,Ortiz,+1 415 555 0100,US\n"
        "ny@acme.example,Nia,York,,US\n"
        "kai@acme.example,Kai,Berg,,DE\n",
        encoding="utf-8",
    )
    import_leads_task.fn([str(file)], AS_OF, None, None)
    with Session(engine) as session:
        due = {
            name: at
            for name, at in session.execute(
                select(Lead.first_name, CadenceEnrolment.next_due_at).join(
                    CadenceEnrolment, CadenceEnrolment.lead_id == Lead.id
                )
            )
        }
    config = current_config()
    assert config.sending.send_time_local is not None
    cadence = next(c for c in config.cadences.cadences.values() if c.enrol == "new_leads")
    holidays = config.cadences.holidays_for(None)
    expected = {
        name: first_due(AS_OF, cadence, config.sending, holidays, ZoneInfo(zone))
        for name, zone in (
            ("Sal", "America/Los_Angeles"),
            ("Nia", "America/New_York"),
            ("Kai", "Europe/Berlin"),
        )
    }
    assert due == expected
    assert len(set(due.values())) == 3


def test_a_later_rows_date_or_phone_times_an_enrolled_new_lead_again(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New leads are enrolled batch by batch as they are stored; a row in a later batch that
    dates an undated lead, or gives one a phone in another zone, times its first step again,
    as if it had been enrolled when the import ended."""
    from zoneinfo import ZoneInfo

    from tasks.cadences.enrolment import first_due
    from tasks.ingest_tasks import import_leads_task
    from tasks.store.models import CadenceEnrolment

    monkeypatch.setattr(cleaning, "BATCH", 2)
    later = AS_OF + dt.timedelta(days=9)
    file = tmp_path / "leads.csv"
    file.write_text(
        "Email,First Name,Last Name,Phone,Country,Create Date\n"
        "una@acme.example,Una,Dated,,US,\n"  # undated: starts at the import
        "pia@acme.example,Pia,Phoned,,US,2026-01-05\n"  # New York, from the country
        "x@other.example,Xi,Other,,GB,2026-01-05\n"
        "y@other.example,Yu,Other,,GB,2026-01-05\n"
        f"una@acme.example,Una,Dated,,US,{later.date()}\n"
        "pia@acme.example,Pia,Phoned,+1 415 555 0100,US,2026-01-05\n",  # Los Angeles
        encoding="utf-8",
    )
    counts = import_leads_task.fn([str(file)], AS_OF, None, None)
    assert (counts["accepted"], counts["merged"], counts["enrolled"]) == (4, 2, 4)
    with Session(engine) as session:
        timed = {
            name: (start, due)
            for name, start, due in session.execute(
                select(
                    Lead.first_name, CadenceEnrolment.enrolled_at, CadenceEnrolment.next_due_at
                ).join(CadenceEnrolment, CadenceEnrolment.lead_id == Lead.id)
            )
        }
    config = current_config()
    cadence = next(c for c in config.cadences.cadences.values() if c.enrol == "new_leads")
    holidays = config.cadences.holidays_for(None)
    start = dt.datetime.combine(later.date(), dt.time(), tzinfo=dt.UTC)
    una = first_due(start, cadence, config.sending, holidays, ZoneInfo("America/New_York"))
    pia = first_due(AS_OF, cadence, config.sending, holidays, ZoneInfo("America/Los_Angeles"))
    assert timed["Una"] == (start, una)
    assert timed["Pia"] == (AS_OF, pia)


def test_postgresqls_planner_is_told_of_the_leads_an_import_creates_as_they_double(
    session: Session, run_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the import's transaction autovacuum cannot see its rows: the import has them
    analysed itself, so lookups into a table it grew from nothing are planned for its size."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite's planner keeps no statistics of this kind")
    monkeypatch.setattr(lead_writes, "INFORM_PLANNER_FROM", 2)
    monkeypatch.setattr(cleaning, "BATCH", 2)

    def known_rows() -> float:
        return float(session.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'leads'")))

    before = known_rows()
    import_leads(session, FILES, run_id=run_id, as_of=AS_OF)
    created = count(session, Lead)
    # Told at 2 leads, then at each doubling: it knows at least half of what is there.
    assert before <= 0 < created / 2 <= known_rows() <= created
