"""Normalise one lead row: email, phone, names, country, source. Each distinct value once.

email-validator and phonenumbers each manage about 20k values a second; exports repeat values
(countries, sources, the same person in several files), so every function is memoised.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

COUNTRY_NAMES = {
    "uk": "GB",
    "unitedkingdom": "GB",
    "greatbritain": "GB",
    "england": "GB",
    "gb": "GB",
    "us": "US",
    "usa": "US",
    "unitedstates": "US",
    "unitedstatesofamerica": "US",
    "america": "US",
    "de": "DE",
    "germany": "DE",
    "deutschland": "DE",
    "fr": "FR",
    "france": "FR",
    "es": "ES",
    "spain": "ES",
    "espana": "ES",
    "br": "BR",
    "brazil": "BR",
    "brasil": "BR",
    "mx": "MX",
    "mexico": "MX",
    "ca": "CA",
    "canada": "CA",
    "nl": "NL",
    "netherlands": "NL",
    "holland": "NL",
    "nederland": "NL",
    "au": "AU",
    "australia": "AU",
    "in": "IN",
    "india": "IN",
    "it": "IT",
    "italy": "IT",
    "italia": "IT",
    "pt": "PT",
    "portugal": "PT",
    "ie": "IE",
    "ireland": "IE",
    "be": "BE",
    "belgium": "BE",
    "ch": "CH",
    "switzerland": "CH",
    "schweiz": "CH",
    "at": "AT",
    "austria": "AT",
    "osterreich": "AT",
    "se": "SE",
    "sweden": "SE",
    "jp": "JP",
    "japan": "JP",
    "cn": "CN",
    "china": "CN",
    "sg": "SG",
    "singapore": "SG",
}
TEST_DOMAINS = {
    "example.com",
    "example.org",
    "example.net",
    "test.com",
    "mailinator.com",
    "asdf.com",
}
TEST_WORDS = {"test", "testing", "asdf", "qwerty", "xxx", "foo", "dummy", "sample"}
BANT = {"yes": "yes", "y": "yes", "true": "yes", "no": "no", "n": "no", "false": "no",
        "unknown": None, "": None}  # fmt: skip


@dataclass
class CleanLead:
    email: str | None = None
    email_key: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    title: str | None = None
    country: str | None = None
    source: str = "unknown"
    budget: str | None = None
    authority: str | None = None
    need: str | None = None
    timing: str | None = None
    tags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # flags on an accepted row, or why rejected
    rejected: bool = False


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return re.sub(r"[^a-z0-9]", "", "".join(c for c in decomposed if not unicodedata.combining(c)))


@lru_cache(maxsize=1024)
def country_code(value: str) -> str | None:
    return COUNTRY_NAMES.get(_fold(value)) or (
        value.upper() if re.fullmatch(r"[A-Za-z]{2}", value) else None
    )


@lru_cache(maxsize=200_000)
def normalise_email(value: str) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, the reason it is not an address)."""
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return None, f"invalid email: {exc}"
    return result.normalized, None


@lru_cache(maxsize=200_000)
def normalise_phone(value: str, region: str | None) -> tuple[str | None, str | None]:
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException as exc:
        return None, f"invalid phone: {exc}"
    if not phonenumbers.is_valid_number(number):
        return None, "invalid phone: not a possible number"
    # The extension (x123) is kept apart by phonenumbers; E.164 carries only the line.
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


@lru_cache(maxsize=200_000)
def tidy_name(value: str) -> str:
    text = " ".join(unicodedata.normalize("NFC", value).split())
    if text.isupper() or text.islower():
        # Only repair case when the value has none: "DE LA CRUZ" -> "De La Cruz", not "McDonald".
        text = re.sub(r"(^|[\s'\-])(\w)", lambda m: m.group(1) + m.group(2).upper(), text.lower())
    return text


@lru_cache(maxsize=1024)
def source_slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.casefold()).strip("_") or "unknown"


def _is_test_row(email: str | None, first: str | None, last: str | None) -> bool:
    if email:
        local, _, domain = email.casefold().partition("@")
        if domain in TEST_DOMAINS or local in TEST_WORDS:
            return True
    names = {(_fold(first or "")), _fold(last or "")} - {""}
    return bool(names) and names <= TEST_WORDS


def clean_lead(fields: dict[str, str]) -> CleanLead:
    lead = CleanLead()
    first, last = fields.get("first_name"), fields.get("last_name")
    if not first and not last and (full := fields.get("full_name")):
        parts = full.split()
        first, last = parts[0], " ".join(parts[1:]) or None
    lead.first_name = tidy_name(first) if first else None
    lead.last_name = tidy_name(last) if last else None
    lead.company = " ".join(fields["company"].split()) if fields.get("company") else None
    lead.title = fields.get("title")
    lead.country = country_code(fields["country"]) if fields.get("country") else None
    lead.source = source_slug(fields.get("source", ""))
    for answer in ("budget", "authority", "need", "timing"):
        raw = fields.get(answer, "").strip().casefold()
        if raw in BANT:
            setattr(lead, answer, BANT[raw])
        else:
            lead.reasons.append(f"unreadable {answer} answer {fields[answer]!r}")
    lead.tags = sorted({t.strip() for t in re.split(r"[;,]", fields.get("tags", "")) if t.strip()})
    problems = []
    if raw_email := fields.get("email"):
        lead.email, problem = normalise_email(raw_email)
        lead.email_key = lead.email.casefold() if lead.email else None
        if problem:
            problems.append(problem)
    if raw_phone := fields.get("phone"):
        lead.phone, problem = normalise_phone(raw_phone, lead.country)
        if problem:
            problems.append(problem)
    if not lead.company:
        lead.reasons.append("missing company")
    if _is_test_row(lead.email or raw_email, lead.first_name, lead.last_name):
        lead.rejected = True
        lead.reasons = ["test row", *problems]
    elif not lead.email and not lead.phone:
        lead.rejected = True
        lead.reasons = ["no reachable contact", *(problems or ["no email or phone given"])]
    else:
        lead.reasons = problems + lead.reasons
    return lead
