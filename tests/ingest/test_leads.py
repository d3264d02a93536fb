"""Lead import on a real store: aliases, encodings, rejects with reasons, exact dedupe."""

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.ingest.leads import import_leads
from tasks.ingest.normalise import clean_lead
from tasks.ingest.reader import IngestFileError, detect_encoding, read_records
from tasks.runs import start_run
from tasks.store.models import Decision, ImportRow, Lead, LeadAlias, RunKind

AS_OF = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_exports_as_people_have_them(tmp_path: Path) -> None:
    hubspot = write(tmp_path / "h.csv", "\ufeffEmail,First Name,Last Name,Phone Number,Country/Region,Original Source\n"
                    "ana@acme.example,ANA,SILVA,(415) 555-0134 x12,US,Paid Search\n")  # fmt: skip
    pipedrive = write(tmp_path / "p.csv", "Name;Email;Phone;Organization;Country\n"
                      "Jürgen Weiß;jw@firma.example;030 1234567;Firma GmbH;Deutschland\n", "cp1252")  # fmt: skip
    assert detect_encoding(hubspot) == "utf-8-sig" and detect_encoding(pipedrive) == "cp1252"
    [h] = read_records(hubspot, "lead")
    [p] = read_records(pipedrive, "lead")
    ana, jurgen = clean_lead(h.fields), clean_lead(p.fields)
    assert (ana.first_name, ana.last_name, ana.phone, ana.source) == (
        "Ana",
        "Silva",
        "+14155550134",
        "paid_search",
    )
    assert (jurgen.first_name, jurgen.last_name, jurgen.country) == ("Jürgen", "Weiß", "DE")
    assert jurgen.phone == "+49301234567" and jurgen.company == "Firma GmbH"


def test_rejects_keep_every_reason_and_partial_problems_are_flags() -> None:
    nothing = clean_lead({"email": "not-an-email", "phone": "12", "first_name": "Bo"})
    assert nothing.rejected and nothing.reasons[0] == "no reachable contact"
    assert any(r.startswith("invalid email") for r in nothing.reasons)
    assert any(r.startswith("invalid phone") for r in nothing.reasons)
    assert clean_lead({"email": "test@example.com"}).reasons == ["test row"]
    partial = clean_lead({"email": "ok@firm.example", "phone": "999", "country": "US"})
    assert not partial.rejected
    assert partial.reasons == ["invalid phone: not a possible number", "missing company"]


def test_dedupe_in_the_batch_and_against_the_store_and_reimport(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    first = write(tmp_path / "a.csv", "Email,Full Name,Company\n"
                  "Mia@Firm.example,Mia Wong,Firm\nmia@firm.example,Mia Wong,\nnobody,No One,\n")  # fmt: skip
    result = import_leads(session, [first], run_id=run_id, as_of=AS_OF)
    assert result.counts == {"rows": 3, "accepted": 1, "merged": 1, "rejected": 1}
    assert [o.outcome.value for o in result.outcomes] == ["accepted", "merged", "rejected"]
    # A re-import is its own run (the import task starts one per call).
    again_run = start_run(session, RunKind.INGEST, AS_OF).id
    again = import_leads(session, [first], run_id=again_run, as_of=AS_OF)
    assert again.counts == {"rows": 3, "accepted": 0, "merged": 2, "rejected": 1}
    assert session.scalar(select(func.count()).select_from(Lead)) == 1
    assert session.scalar(select(func.count()).select_from(ImportRow)) == 6  # nothing is lost
    merges = session.scalars(select(Decision.action).where(Decision.action == "merge")).all()
    assert len(merges) == 3


def test_a_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", 'Email,Name\na@b.example,A\n"b@c.example",B,extra\n')
    with pytest.raises(IngestFileError, match=r"bad\.csv, line 3: 3 fields where the header has 2"):
        list(read_records(bad, "lead"))
    no_contact = write(tmp_path / "cols.csv", "Name,Company\nA,B\n")
    with pytest.raises(IngestFileError, match=r"cols\.csv, line 1: no email or phone column"):
        list(read_records(no_contact, "lead"))
    jsonl = write(tmp_path / "x.jsonl", '{"email": "a@b.example"}\n[1, 2]\n')
    with pytest.raises(IngestFileError, match=r"x\.jsonl, line 2: expected a JSON object"):
        list(read_records(jsonl, "lead"))


def test_a_role_address_is_one_lead_per_person_reading_it(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    shared = write(tmp_path / "role.csv", "Email,First Name,Last Name\n"
                   "info@acme.example,Ana,Silva\nINFO@acme.example,Bo,Berg\n"
                   "info@acme.example,Ana,Silva\n")  # fmt: skip
    result = import_leads(session, [shared], run_id=run_id, as_of=AS_OF)
    assert result.counts == {"rows": 3, "accepted": 2, "merged": 1, "rejected": 0}
    leads = session.scalars(select(Lead).order_by(Lead.id)).all()
    assert [(lead.first_name, lead.email_role) for lead in leads] == [("Ana", True), ("Bo", True)]


def test_a_merged_row_leaves_its_other_phone_as_an_alias_and_aliases_find_the_lead(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    first = write(tmp_path / "a.csv", "Email,Name,Phone,Country\n"
                  "kim@firm.example,Kim Lee,+1 415 555 0101,US\n")  # fmt: skip
    import_leads(session, [first], run_id=run_id, as_of=AS_OF)
    kim = session.scalars(select(Lead)).one()
    # The same person, found by address, with a second number: kept, not dropped.
    second = write(tmp_path / "b.csv", "Email,Name,Phone,Country\n"
                   "KIM@firm.example,Kim Lee,+1 415 555 0199,US\n")  # fmt: skip
    import_leads(
        session, [second], run_id=start_run(session, RunKind.INGEST, AS_OF).id, as_of=AS_OF
    )
    aliases = session.scalars(select(LeadAlias)).all()
    assert [(a.lead_id, a.kind, a.value) for a in aliases] == [(kim.id, "phone", "+14155550199")]
    # An address merged into Kim earlier (say by the fuzzy matcher) finds her again.
    session.add(LeadAlias(lead_id=kim.id, kind="email", value="kim.lee@gmail.com",
                          key="kimlee@gmail.com", created_at=AS_OF))  # fmt: skip
    third = write(tmp_path / "c.csv", "Email,Name\nKim.Lee+promo@gmail.com,Kim Lee\n")
    again = import_leads(
        session, [third], run_id=start_run(session, RunKind.INGEST, AS_OF).id, as_of=AS_OF
    )
    assert again.counts["merged"] == 1 and again.outcomes[0].lead_id == kim.id
    assert session.scalar(select(func.count()).select_from(Lead)) == 1


@pytest.mark.parametrize("parallel", [False, True], ids=["inline", "child-process"])
def test_the_config_maps_further_headers(
    session: Session, run_id: int, tmp_path: Path, parallel: bool
) -> None:
    odd = write(tmp_path / "odd.csv", "Work E-mail Address;Employer Web Site;Full Name\n"
                "kim@firm.example;https://www.firm.example/about;Kim Lee\n")  # fmt: skip
    columns = {"Work E-mail Address": "email", "Employer Web Site": "website"}
    result = import_leads(
        session, [odd], run_id=run_id, as_of=AS_OF, columns=columns, parallel=parallel
    )
    assert result.counts["accepted"] == 1
    kim = session.scalars(select(Lead)).one()
    assert (kim.email_key, kim.website, kim.first_name) == (
        "kim@firm.example",
        "firm.example",
        "Kim",
    )


def test_other_names_of_a_source_are_the_source(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    from tasks.config.models import Ingest

    sources = Ingest.model_validate(
        {"sources": {"Referrals": "referral", "Word of Mouth": "referral"}}
    ).sources
    file = write(tmp_path / "s.csv", "Email,Lead Source\na@x.example,Referrals\nb@x.example,word-of-mouth\n"
                 "c@x.example,Webinar\n")  # fmt: skip
    import_leads(session, [file], run_id=run_id, as_of=AS_OF, sources=sources)
    got = dict(session.execute(select(Lead.email_key, Lead.source)).tuples().all())
    assert got == {"a@x.example": "referral", "b@x.example": "referral", "c@x.example": "webinar"}
