"""Normalising one lead row: what is fixed, what is flagged, what is rejected and why."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.ingest.dates import parse_day, parse_moment
from tasks.ingest.normalise import (
    clean_lead,
    country_code,
    normalise_email,
    normalise_phone,
    source_slug,
    split_full_name,
    tidy_name,
)


def test_email_is_normalised_and_keyed_exactly() -> None:
    lead = clean_lead({"email": " Ana.Silva@ACME.Example ", "company": "Acme"})
    assert lead.email == "Ana.Silva@acme.example"  # the domain is lower-cased, the local part kept
    assert lead.email_key == "ana.silva@acme.example"
    assert lead.reasons == []
    address, problem = normalise_email("ana@@acme.example")
    assert address is None and problem is not None and problem.startswith("invalid email: ")


def test_email_normalisation_is_memoised() -> None:
    normalise_email.cache_clear()
    for _ in range(3):
        clean_lead({"email": "memo@acme.example"})
    info = normalise_email.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize(
    ("country", "phone", "code", "e164"),
    [
        ("UK", "020 7946 0958", "GB", "+442079460958"),
        ("Great Britain", "020 7946 0958", "GB", "+442079460958"),
        ("United States", "(415) 555-0134 x12", "US", "+14155550134"),
        ("USA", "415.555.0134", "US", "+14155550134"),
        ("Deutschland", "030 1234567", "DE", "+49301234567"),
        ("México", "55 1234 5678", "MX", "+525512345678"),
        ("Brasil", "(11) 91234-5678", "BR", "+5511912345678"),
        ("España", "912 34 56 78", "ES", "+34912345678"),
        ("India", "098765 43210", "IN", "+919876543210"),
        ("fr", "01 23 45 67 89", "FR", "+33123456789"),
        ("Narnia", "+49 30 1234567", None, "+49301234567"),
    ],
)
def test_phone_to_e164_read_in_the_leads_country(
    country: str, phone: str, code: str | None, e164: str
) -> None:
    lead = clean_lead(
        {"email": "p@acme.example", "company": "Acme", "country": country, "phone": phone}
    )
    assert (lead.country, lead.phone) == (code, e164)
    assert country_code(country) == code


def test_impossible_phone_is_a_flag_when_the_email_is_good() -> None:
    lead = clean_lead({"email": "ok@firm.example", "phone": "999", "country": "US"})
    assert not lead.rejected and lead.phone is None
    assert lead.reasons == ["invalid phone: not a possible number", "missing company"]
    assert normalise_phone("+44 7700 900123", None) == (
        None,
        None,
        "invalid phone: not a possible number",
    )


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("ANA", "Ana"),
        ("mcdonald", "McDonald"),
        ("O'BRIEN", "O'Brien"),
        ("anne-marie", "Anne-Marie"),
        ("  Mary   Ann  ", "Mary Ann"),
        ("McDonald", "McDonald"),  # mixed case is the person's own: left alone
        ("van der Berg", "van der Berg"),
        ("Jose\u0301", "José"),  # NFC: one code point for é
    ],
)
def test_names_are_tidied_and_case_repaired_only_when_caseless(raw: str, tidy: str) -> None:
    assert tidy_name(raw) == tidy


def test_full_name_is_split_when_first_and_last_are_absent() -> None:
    assert split_full_name("Ana Silva") == ("Ana", "Silva")
    assert split_full_name("Silva, Ana") == ("Ana", "Silva")
    assert split_full_name("Dr. Ludwig van Beethoven") == ("Ludwig", "van Beethoven")
    lead = clean_lead({"email": "a@x.example", "full_name": "SEAN O'BRIEN"})
    assert (lead.first_name, lead.last_name) == ("Sean", "O'Brien")
    given = clean_lead({"email": "a@x.example", "full_name": "Ana Silva", "first_name": "Anna"})
    assert (given.first_name, given.last_name) == ("Anna", None)


def test_source_slug_and_default() -> None:
    assert source_slug("Trade Show") == "trade_show"
    assert source_slug("Référence / Partner") == "reference_partner"
    assert clean_lead({"email": "a@x.example"}).source == "unknown"


def test_bant_answers_and_tags() -> None:
    lead = clean_lead(
        {"email": "a@x.example", "company": "X", "budget": "YES", "authority": "Unknown",
         "need": "no", "timing": "maybe", "tags": "vip; apac,vip ,"}
    )  # fmt: skip
    assert (lead.budget, lead.authority, lead.need, lead.timing) == ("yes", "unknown", "no", None)
    assert lead.reasons == ["unreadable timing answer 'maybe' (expected yes, no or unknown)"]
    assert lead.tags == ["vip", "apac"]


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "test@example.com"},
        {"email": "asdf@asdf.com", "first_name": "asdf"},
        {"email": "test123@test.com", "first_name": "test", "last_name": "user"},
        {"email": "someone@mailinator.com", "first_name": "Real", "last_name": "Name"},
        {"email": "real.person@acme.example", "first_name": "Test", "last_name": "Lead"},
        {"email": "qa+signup@sub.example.com"},
    ],
)
def test_test_rows_are_rejected(fields: dict[str, str]) -> None:
    lead = clean_lead(fields)
    assert lead.rejected and lead.reasons[0] == "test row"


def test_a_row_without_reachable_contact_keeps_every_reason() -> None:
    lead = clean_lead({"email": "ana at acme.example", "phone": "12", "first_name": "Ana",
                       "country": "PT", "budget": "perhaps"})  # fmt: skip
    assert lead.rejected
    assert lead.reasons[0] == "no reachable contact"
    assert lead.reasons[1].startswith("invalid email: ")
    assert lead.reasons[2].startswith("invalid phone: ")
    assert len(lead.reasons) == 3  # flags such as "missing company" only matter on a kept row
    nothing = clean_lead({"email": "n/a", "phone": "-", "first_name": "Bo"})
    assert nothing.reasons == ["no reachable contact", "no email or phone given"]
    both = clean_lead({"email": "test@example.com", "phone": "n/a"})
    assert both.reasons == ["test row"]
    test_and_unreachable = clean_lead({"email": "broken@", "first_name": "Test"})
    assert test_and_unreachable.reasons[:2] == ["test row", "no reachable contact"]


def test_phone_only_lead_is_accepted_with_a_flag() -> None:
    lead = clean_lead({"email": "not-an-email", "phone": "+351 912 345 678", "company": "Acme"})
    assert not lead.rejected and lead.email_key is None and lead.phone == "+351912345678"
    assert len(lead.reasons) == 1 and lead.reasons[0].startswith("invalid email: ")


def test_dates_are_utc() -> None:
    assert parse_moment("2026-02-10") == dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
    assert parse_moment("2026-02-12T09:30:00") == dt.datetime(2026, 2, 12, 9, 30, tzinfo=dt.UTC)
    assert parse_moment("2026-02-12T09:30:00+02:00") == dt.datetime(2026, 2, 12, 7, 30, tzinfo=dt.UTC)  # fmt: skip
    assert parse_moment("02/03/2026") == dt.datetime(2026, 2, 3, tzinfo=dt.UTC)  # month first
    assert parse_moment("March 5, 2026 2pm") == dt.datetime(2026, 3, 5, 14, tzinfo=dt.UTC)
    # Incomplete values are refused, not completed from today's date.
    assert parse_moment("March") is None and parse_moment("n/a") is None
    assert parse_day("2026-06-01") == dt.date(2026, 6, 1)
    lead = clean_lead({"email": "a@x.example", "company": "X", "created": "someday"})
    assert lead.created is None and lead.reasons == ["unreadable created date 'someday'"]
