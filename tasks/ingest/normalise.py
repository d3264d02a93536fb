"""Normalise one lead row: email, phone, names, country, source, BANT. Each distinct value once.

email-validator and phonenumbers each manage about 20k values a second; exports repeat values
(countries, sources, the same person in several files), so every function is memoised.
No DNS is ever asked: an address is judged by its syntax alone.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
import unicodedata
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from tasks.ingest.dates import parse_moment

# Folded names and codes people write for a country, beyond the English and local names that
# phonenumbers carries for every region (see ``_country_names``).
COUNTRY_ALIASES = {
    "uk": "GB", "greatbritain": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
    "britain": "GB", "gbr": "GB",
    "us": "US", "usa": "US", "america": "US", "unitedstatesofamerica": "US",
    "deu": "DE", "ger": "DE", "fra": "FR", "esp": "ES", "bra": "BR", "mex": "MX", "can": "CA",
    "nld": "NL", "holland": "NL", "nederland": "NL", "aus": "AU", "ind": "IN", "bharat": "IN",
    "ita": "IT", "prt": "PT", "irl": "IE", "che": "CH", "schweiz": "CH", "suisse": "CH",
    "osterreich": "AT", "belgie": "BE", "belgique": "BE", "espana": "ES", "brasil": "BR",
    "mexico": "MX", "deutschland": "DE", "uae": "AE", "korea": "KR", "southkorea": "KR",
    "russia": "RU", "czechia": "CZ", "czechrepublic": "CZ", "turkey": "TR", "turkiye": "TR",
}  # fmt: skip
TEST_DOMAINS = frozenset({
    "example.com", "example.org", "example.net", "test.com", "test.org", "mailinator.com",
    "asdf.com", "fake.com", "dummy.com", "guerrillamail.com", "yopmail.com",
})  # fmt: skip
TEST_LOCAL = re.compile(r"(test|testing|tester|asdf\w*|qwerty|example|dummy|fake|sample)\d*")
TEST_NAMES = frozenset({"test", "testing", "asdf", "qwerty", "example", "dummy", "fake", "xxx"})
# Values people put in a cell to say "none": not an attempt at an address or a number.
PLACEHOLDERS = frozenset({"", "na", "n/a", "none", "null", "nil", "-", "--", "?", "unknown", "tbd"})
BANT_ANSWERS = {"yes": "yes", "y": "yes", "true": "yes", "no": "no", "n": "no", "false": "no",
                "unknown": "unknown", "unsure": "unknown", "?": "unknown"}  # fmt: skip
BANT_FIELDS = ("budget", "authority", "need", "timing")
HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "herr", "frau"})
# Mailboxes of a function rather than a person: kept, flagged, never enough alone to merge.
ROLE_LOCALS = frozenset({
    "info", "sales", "admin", "administrator", "support", "contact", "hello", "office",
    "marketing", "billing", "accounts", "accounting", "finance", "team", "hr", "jobs", "careers",
    "enquiries", "inquiries", "enquiry", "help", "service", "customerservice", "webmaster",
    "postmaster", "noreply", "no-reply", "mail", "general", "reception", "orders", "press",
    "media", "legal", "privacy", "security", "it", "purchasing", "procurement", "partners",
})  # fmt: skip
# Providers that ignore dots in the local part: j.doe@ and jdoe@ are one mailbox.
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
# Legal forms dropped from a company's match key (folded; multi-word forms as one token).
LEGAL_SUFFIXES = frozenset({
    "inc", "incorporated", "llc", "llp", "lp", "ltd", "limited", "co", "corp", "corporation",
    "company", "plc", "gmbh", "ag", "kg", "gmbhcokg", "ug", "sa", "sas", "sarl", "sl", "srl",
    "spa", "bv", "nv", "oy", "ab", "as", "aps", "kk", "pte", "pty", "ptyltd", "sro", "zoo",
    "spzoo", "kft", "doo", "ooo", "ltda", "sac", "sadecv", "cv", "group", "holding",
    "holdings", "有限公司", "株式会社", "合同会社", "有限会社",
})  # fmt: skip


@dataclass(slots=True)
class CleanLead:
    email: str | None = None
    email_key: str | None = None
    email_role: bool = False  # info@, sales@: a function's mailbox, not a person's
    phone: str | None = None
    phone_ext: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    company_key: str | None = None
    website: str | None = None  # the registrable domain
    industry: str | None = None
    employees: int | None = None
    title: str | None = None
    country: str | None = None
    source: str = "unknown"
    created: dt.datetime | None = None
    budget: str | None = None
    authority: str | None = None
    need: str | None = None
    timing: str | None = None
    tags: list[str] = field(default_factory=list)
    # Why the row was rejected, or the flags on an accepted row.
    reasons: list[str] = field(default_factory=list)
    rejected: bool = False

    def __reduce__(self) -> tuple[type[CleanLead], tuple[Any, ...]]:
        # The constructor rebuilds it: see cleaning.CleanRow.
        return CleanLead, _lead_fields(self)


_lead_fields = operator.attrgetter(*(f.name for f in fields(CleanLead)))


def fold(text: str) -> str:
    """Lower case, accents and punctuation gone: "España" and "espana" are the same country."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return re.sub(r"[^a-z0-9]", "", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _blank(value: str | None) -> bool:
    return value is None or value.strip().casefold() in PLACEHOLDERS


@cache
def _country_names() -> dict[str, str]:
    from phonenumbers.geodata.locale import LOCALE_DATA

    names: dict[str, str] = {}
    for language in ("en", "de", "fr", "es", "pt", "nl", "it"):
        for region, localised in LOCALE_DATA.items():
            if region not in phonenumbers.SUPPORTED_REGIONS:
                continue
            name = localised.get(language)
            while name and name.startswith("*"):  # "*en": same as the English name
                name = localised.get(name[1:])
            if name:
                names.setdefault(fold(name), region)
    return names


@lru_cache(maxsize=4096)
def country_code(value: str) -> str | None:
    """ISO 3166 alpha-2 for a code or a common name ("UK", "Deutschland", "México"), else None."""
    key = fold(value)
    if key in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[key]
    if len(key) == 2 and key.upper() in phonenumbers.SUPPORTED_REGIONS:
        return key.upper()
    return _country_names().get(key)


@lru_cache(maxsize=200_000)
def normalise_email(value: str) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, why it is not an address). Syntax only, no DNS."""
    text = value.strip().removeprefix("mailto:").strip("<> ")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        return None, f"invalid email: {exc}"
    return result.normalized, None


@lru_cache(maxsize=200_000)
def email_key(address: str) -> str:
    """The match key of an address: case folded, ``+tag`` dropped, Gmail's dots ignored.

    ``J.Doe+news@GoogleMail.com`` and ``jdoe@gmail.com`` reach the same mailbox, so they are
    one person; the address as given is kept apart, for sending.
    """
    local, _, domain = address.casefold().rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        domain = DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"


def is_role_address(address: str) -> bool:
    local = address.casefold().rpartition("@")[0].split("+", 1)[0]
    return local in ROLE_LOCALS or local.replace(".", "").replace("_", "") in ROLE_LOCALS


@lru_cache(maxsize=200_000)
def company_key(name: str) -> str | None:
    """A company's match key: folded, legal forms dropped ("ACME, Inc." and "Acme" match)."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = re.sub(
        r"\b(s\.?\s?a\.?\s?de\s?c\.?\s?v|sp\.?\s?z\s?o\.?\s?o|pty\.?\s?ltd|gmbh\s?&\s?co\.?\s?kg)\b\.?",
        " ",
        text,
    )
    # Dotted initials are one word: "S.A." is "sa", "B.V" is "bv", "L.L.C." is "llc".
    text = re.sub(r"\b\w(?:\.\w\b)+\.?", lambda m: m.group(0).replace(".", ""), text)
    text = text.replace("&", " and ")
    words = [fold(w) or w for w in re.split(r"[\s,.()/\-]+", text) if w]
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    for suffix in ("有限公司", "株式会社", "合同会社", "有限会社"):
        words = [w.replace(suffix, "") or w for w in words]
    key = "".join(words)
    return key or None


@cache
def _domains() -> Any:
    import tldextract

    # The public suffix list snapshot shipped inside tldextract: never fetched, never cached.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=200_000)
def website_domain(value: str) -> str | None:
    """The registrable domain of a website ("https://www.shop.acme.co.uk/x" -> "acme.co.uk")."""
    text = value.strip().casefold()
    if not text or " " in text:
        return None
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text).split("/", 1)[0].split("@")[-1]
    host = host.split(":", 1)[0].strip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    parts = _domains()(host)
    if parts.suffix:
        return str(parts.top_domain_under_public_suffix) or None
    # A suffix the list does not know (a reserved or brand-new TLD): the last two labels.
    labels = [label for label in host.split(".") if label]
    return ".".join(labels[-2:]) if len(labels) >= 2 else None


def _employees(value: str | None) -> int | None:
    """ "250", "1,000", "51-200" (the upper bound), "10k" as a head count."""
    text = (value or "").strip().casefold().replace(",", "").replace(" ", "")
    match = re.fullmatch(r"(?:\d+-)?(\d+)(k?)\+?", text)
    if not match:
        return None
    return int(match.group(1)) * (1000 if match.group(2) else 1)


@lru_cache(maxsize=200_000)
def normalise_phone(value: str, region: str | None) -> tuple[str | None, str | None, str | None]:
    """(E.164, extension, None) or (None, None, why not). ``region`` reads numbers without +code."""
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            return None, None, "invalid phone: no country code and no country to read it in"
        return None, None, f"invalid phone: {exc.args[0] if exc.args else exc}"
    if not phonenumbers.is_valid_number(number):
        return None, None, "invalid phone: not a possible number"
    # An extension ("x123", "ext. 45") is kept apart: E.164 carries only the line.
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, number.extension or None, None


def _capitalise(word: str) -> str:
    if not word:
        return word
    if len(word) > 2 and word.startswith("mc"):
        return "Mc" + word[2].upper() + word[3:]
    return word[0].upper() + word[1:]


@lru_cache(maxsize=200_000)
def tidy_name(value: str) -> str:
    """Trimmed, NFC, single spaces; case repaired only when the value has none (ALL or all)."""
    text = " ".join(unicodedata.normalize("NFC", value).split())
    if text.isupper() or text.islower():
        # "O'BRIEN" -> "O'Brien", "mcdonald" -> "McDonald", "anne-marie" -> "Anne-Marie".
        # str.title would also capitalise after digits and inside "d'Artagnan"-like words.
        text = re.sub(r"[^\s'’\-]+", lambda m: _capitalise(m.group(0)), text.lower())
    return text


def split_full_name(full: str) -> tuple[str | None, str | None]:
    """ "Ana Silva" -> (Ana, Silva); "Silva, Ana" -> (Ana, Silva); honorifics dropped."""
    if "," in full:
        last, _, first = full.partition(",")
        return first.strip() or None, last.strip() or None
    parts = full.split()
    while len(parts) > 1 and fold(parts[0]) in HONORIFICS:
        parts = parts[1:]
    if not parts:
        return None, None
    # First token is the given name; the rest ("van Beethoven", "da Silva Santos") the family's.
    return parts[0], " ".join(parts[1:]) or None


@lru_cache(maxsize=4096)
def source_slug(value: str) -> str:
    """ "Trade Show" -> "trade_show"; nothing given -> "unknown"."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", plain).strip("_")[:64] or "unknown"


def _tidy_text(value: str | None) -> str | None:
    if _blank(value):
        return None
    return " ".join(unicodedata.normalize("NFC", value or "").split())


def is_test_row(email: str | None, first: str | None, last: str | None) -> bool:
    """Someone trying the form out: test@…, asdf@…, example.com, a person named "Test"."""
    if email and "@" in email:
        local, _, domain = email.casefold().rpartition("@")
        local = local.split("+", 1)[0]
        if _is_test_domain(domain) or TEST_LOCAL.fullmatch(local):
            return True
    return any(name and _is_test_name(name) for name in (first, last))


# Asked of every row, and a file's rows share a few thousand names and domains: each is
# worked out once (folding a name was a tenth of cleaning a row).
@lru_cache(maxsize=1 << 16)
def _is_test_name(name: str) -> bool:
    return fold(name) in TEST_NAMES


@lru_cache(maxsize=1 << 16)
def _is_test_domain(domain: str) -> bool:
    return domain in TEST_DOMAINS or any(domain.endswith("." + d) for d in TEST_DOMAINS)


def clean_lead(fields: dict[str, str]) -> CleanLead:
    """Judge one row: rejected (with every reason) or accepted (with flags for what is missing)."""
    lead = CleanLead()
    flags: list[str] = []
    problems: list[str] = []  # the contact details that were given but are unusable

    first, last = fields.get("first_name"), fields.get("last_name")
    if _blank(first) and _blank(last) and not _blank(full := fields.get("full_name")):
        first, last = split_full_name(full or "")
    lead.first_name = tidy_name(first) if first and not _blank(first) else None
    lead.last_name = tidy_name(last) if last and not _blank(last) else None
    lead.company = _tidy_text(fields.get("company"))
    lead.company_key = company_key(lead.company) if lead.company else None
    lead.title = _tidy_text(fields.get("title"))
    lead.industry = _tidy_text(fields.get("industry"))
    if raw_size := _tidy_text(fields.get("employees")):
        lead.employees = _employees(raw_size)
        if lead.employees is None:
            flags.append(f"unreadable company size {raw_size!r}")
    if raw_site := _tidy_text(fields.get("website")):
        lead.website = website_domain(raw_site)
        if lead.website is None:
            flags.append(f"unreadable website {raw_site!r}")
    if raw_country := _tidy_text(fields.get("country")):
        lead.country = country_code(raw_country)
        if lead.country is None:
            flags.append(f"unknown country {raw_country!r}")
    lead.source = source_slug(fields.get("source", ""))
    if raw_created := fields.get("created"):
        lead.created = parse_moment(raw_created)
        if lead.created is None:
            flags.append(f"unreadable created date {raw_created!r}")
    for answer in BANT_FIELDS:
        raw = fields.get(answer, "").strip()
        if not raw:
            continue
        setattr(lead, answer, BANT_ANSWERS.get(raw.casefold()))
        if getattr(lead, answer) is None:
            flags.append(f"unreadable {answer} answer {raw!r} (expected yes, no or unknown)")
    tags = (t.strip() for t in re.split(r"[;,]", fields.get("tags", "")))
    lead.tags = list(dict.fromkeys(t for t in tags if t))

    raw_email = fields.get("email")
    if not _blank(raw_email):
        lead.email, problem = normalise_email(raw_email or "")
        if lead.email:
            lead.email_key = email_key(lead.email)
            lead.email_role = is_role_address(lead.email)
            if lead.email_role:
                flags.append("role address")
        if problem:
            problems.append(problem)
    raw_phone = fields.get("phone")
    if not _blank(raw_phone):
        lead.phone, lead.phone_ext, problem = normalise_phone(raw_phone or "", lead.country)
        if problem:
            problems.append(problem)
    if not lead.company:
        flags.append("missing company")

    rejections = []
    if is_test_row(lead.email or raw_email, lead.first_name, lead.last_name):
        rejections.append("test row")
    if not lead.email and not lead.phone:
        rejections.append("no reachable contact")
        if not problems:
            problems.append("no email or phone given")
    lead.rejected = bool(rejections)
    # A rejected row says everything that made it unusable; an accepted one what to fix later.
    lead.reasons = rejections + problems if lead.rejected else problems + flags
    return lead
