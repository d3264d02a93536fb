"""Match keys and flags that decide who is the same person and what is flagged."""

import pytest

from tasks.ingest.normalise import (
    clean_lead,
    company_key,
    email_key,
    is_role_address,
    normalise_phone,
    website_domain,
)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("J.Doe+news@GoogleMail.com", "jdoe@gmail.com"),
        ("jdoe@gmail.com", "jdoe@gmail.com"),
        ("Ana.Silva+crm@Firm.example", "ana.silva@firm.example"),  # dots matter off Gmail
        ("+only@firm.example", "+only@firm.example"),  # a tag with nothing before it is the name
    ],
)
def test_email_match_key_folds_case_tags_and_gmail_dots(address: str, key: str) -> None:
    assert email_key(address) == key


def test_role_addresses_are_kept_and_flagged() -> None:
    assert is_role_address("Info@acme.example") and is_role_address("sales+eu@acme.example")
    assert not is_role_address("ines@acme.example")
    lead = clean_lead({"email": "sales@acme.example", "company": "Acme"})
    assert not lead.rejected and lead.email_role and lead.reasons == ["role address"]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ACME, Inc.", "acme"),
        ("Acme", "acme"),
        ("Müller GmbH & Co. KG", "muller"),
        ("Widgets Pty Ltd", "widgets"),
        ("Foo S.A. de C.V.", "foo"),
        ("腾讯 有限公司", "腾讯"),
        ("Johnson & Johnson", "johnsonandjohnson"),
        ("Co", "co"),  # a legal form alone is the name
    ],
)
def test_company_key_drops_legal_forms(name: str, key: str) -> None:
    assert company_key(name) == key


@pytest.mark.parametrize(
    ("site", "domain"),
    [
        ("https://www.shop.acme.co.uk/pricing", "acme.co.uk"),
        ("ACME.com", "acme.com"),
        ("http://münchen.de", "xn--mnchen-3ya.de"),
        ("not a website", None),
    ],
)
def test_website_registrable_domain_offline(site: str, domain: str | None) -> None:
    assert website_domain(site) == domain


def test_phone_extension_is_kept_apart_and_impossible_numbers_are_flagged() -> None:
    assert normalise_phone("+1 415 555 2671 ext. 45", None) == ("+14155552671", "45", None)
    lead = clean_lead({"email": "a@firm.example", "phone": "12345", "country": "US"})
    assert lead.phone is None and "invalid phone: not a possible number" in lead.reasons


def test_company_size_and_industry_are_read() -> None:
    lead = clean_lead({"email": "a@firm.example", "employees": "51-200", "industry": " SaaS "})
    assert (lead.employees, lead.industry) == (200, "SaaS")
    odd = clean_lead({"email": "a@firm.example", "employees": "lots"})
    assert odd.employees is None and "unreadable company size 'lots'" in odd.reasons
