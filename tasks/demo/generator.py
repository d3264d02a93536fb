"""A realistic synthetic book of business: lead exports, deals and activities, seeded and deterministic.

:func:`generate_book` writes the files the importers read, as each source exports them (HubSpot,
Salesforce, Pipedrive, a trade-show badge scanner, the CRM's deals and activity log), with the
mess real exports carry, and returns what it planted (:class:`Truth`) so tests can assert on it.

Only ``random.Random(seed)`` drives it: the same seed, size and dates give byte-identical files.
Every address lives under the reserved ``.example`` top-level domain (RFC 2606), so a demo run
with a real SendGrid key can never email a real person. Countries are ISO 3166 alpha-2 codes in
every file. ``pipedrive_persons.csv`` has no created-date column (the contract has none), so only
people created before ``start`` are exported there: they exist by the time the simulation starts.
A deal never predates its lead, so with leads at most 30 days old at ``start`` no deal has been
in its stage longer than that.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import unicodedata
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, ItemsView, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from dateutil.relativedelta import relativedelta

HUBSPOT_FILE = "hubspot_contacts.csv"
SALESFORCE_FILE = "salesforce_leads.csv"
PIPEDRIVE_FILE = "pipedrive_persons.csv"
TRADESHOW_FILE = "tradeshow_scans.jsonl"
OPPORTUNITIES_FILE = "opportunities.csv"
ACTIVITIES_FILE = "activities.csv"
LEAD_FILES = (HUBSPOT_FILE, SALESFORCE_FILE, PIPEDRIVE_FILE, TRADESHOW_FILE)
T = TypeVar("T")

HUBSPOT_HEADERS = (
    "Email", "First Name", "Last Name", "Phone Number", "Company Name", "Job Title",
    "Country/Region", "Original Source", "Create Date", "Budget", "Authority", "Need", "Timing",
)  # fmt: skip
SALESFORCE_HEADERS = (
    "Email Address", "Full Name", "Mobile Phone", "Company", "Title", "Country", "Lead Source",
    "Created Date",
)  # fmt: skip
PIPEDRIVE_HEADERS = ("Name", "Email", "Phone", "Organization", "Country", "Source")
TRADESHOW_KEYS = (
    "email", "first_name", "last_name", "phone", "company", "country", "source", "created",
)  # fmt: skip
OPPORTUNITY_HEADERS = (
    "Deal ID", "Email", "Deal Name", "Stage", "Stage Entered", "Create Date", "Amount", "Status",
    "Lost Reason", "Competitor", "Lost Notes", "Close Date",
)  # fmt: skip
ACTIVITY_HEADERS = (
    "Activity ID", "Email", "Deal ID", "Type", "Date", "Follow Up On", "Reason", "Competitor",
    "Notes",
)  # fmt: skip

# Mirrors config/pipeline.yaml (a test holds the two together): stage and rot limit in days.
STAGES: tuple[tuple[str, int], ...] = (
    ("discovery", 21),
    ("demo", 30),
    ("proposal", 30),
    ("negotiation", 45),
)
COMPETITORS: tuple[str, ...] = ("Acme CRM", "HubSpot", "Salesforce", "Pipedrive", "Zoho")
LOST_REASONS: tuple[str, ...] = (
    "no_budget", "bad_timing", "competitor", "no_authority", "no_need", "unresponsive",
    "contact_left", "out_of_business", "competitor_implemented", "other",
)  # fmt: skip

# --- what people are called, where they work, how their phones are written ------------------

NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("James", "Olivia", "Emily", "Michael", "Sarah", "David", "Jessica", "Daniel", "Hannah",
         "Ryan", "Megan", "Chris", "Laura", "Thomas", "Grace", "Liam", "Zoë", "Seán", "Siobhán",
         "Niamh", "Wei", "Yuki", "Chloe", "Noah"),
        ("Smith", "Johnson", "Williams", "Brown", "Taylor", "Wilson", "Davies", "O'Brien",
         "O'Connor", "MacDonald", "Murphy", "Walker", "Clarke", "Robinson", "Thompson", "Hughes",
         "Zhang", "Tanaka", "Nguyen", "Kim"),
    ),
    "de": (
        ("Jürgen", "Käthe", "Lukas", "Anna", "Björn", "Jörg", "Sören", "Lena", "Maximilian",
         "Felix", "Sophie", "Günter", "Ute", "Hannes", "Mia"),
        ("Müller", "Schröder", "Weiß", "Groß", "Schäfer", "Köhler", "Becker", "Hoffmann",
         "Wagner", "Krüger", "Fischer", "Neumann", "Schmidt", "Yilmaz"),
    ),
    "fr": (
        ("Hélène", "François", "Amélie", "Élodie", "Jérôme", "Gaëlle", "Loïc", "Céline", "Benoît",
         "Noémie", "Chloé", "Léa", "Théo", "Jean-Luc", "Anaïs"),
        ("Dubois", "Lefèvre", "Moreau", "Girard", "Rousseau", "Fournier", "Bérubé", "Lemaître",
         "Faure", "Chevalier", "Mercier", "Lambert", "Gauthier", "Benali"),
    ),
    "es": (
        ("José", "María", "Ángel", "Lucía", "Sofía", "Andrés", "Martín", "Íñigo", "Begoña",
         "Raúl", "Alejandro", "Inés", "Nuria", "Guadalupe", "Joaquín"),
        ("García", "Martínez", "López", "Sánchez", "Pérez", "Gómez", "Fernández", "Jiménez",
         "Muñoz", "Rodríguez", "Hernández", "Núñez", "Ibáñez", "Castillo", "de la Cruz"),
    ),
    "pt": (
        ("João", "Luís", "Ana", "Gonçalo", "Thiago", "Letícia", "Vinícius", "Lívia", "Mário",
         "Cauã", "Beatriz", "Conceição"),
        ("Silva", "Santos", "Oliveira", "Gonçalves", "Araújo", "Magalhães", "Simões", "Pereira",
         "Costa", "Ribeiro", "Carvalho", "de Souza"),
    ),
    "nl": (
        ("Daan", "Sjoerd", "Femke", "Anouk", "Bram", "Joris", "Maarten", "Lotte", "Sanne",
         "Thijs", "Eline"),
        ("de Vries", "van Dijk", "Bakker", "Janssen", "Visser", "Smit", "Meijer", "de Jong",
         "van den Berg", "Mulder"),
    ),
    "in": (
        ("Priya", "Arjun", "Aarav", "Ananya", "Rohan", "Kavya", "Vikram", "Sneha", "Rahul",
         "Deepika", "Sanjay"),
        ("Sharma", "Patel", "Iyer", "Reddy", "Gupta", "Nair", "Singh", "Kumar", "Mehta",
         "Banerjee"),
    ),
    "nordic": (
        ("Søren", "Åsa", "Bjørn", "Mårten", "Ingrid", "Freja"),
        ("Sørensen", "Ødegaard", "Åberg", "Lindqvist", "Nyström"),
    ),
    # Letters outside cp1252 (Ł, ř, ę): such people never land in the Pipedrive export.
    "pl": (
        ("Łukasz", "Małgorzata", "Wojciech", "Agnieszka", "Jiří", "Tomáš"),
        ("Wójcik", "Dvořák", "Kowalczyk", "Łączyński", "Nowak", "Węgrzyn"),
    ),
}  # fmt: skip
ALL_CULTURES = tuple(NAMES)

# code: (weight, the culture most people there are named from, legal suffixes)
COUNTRIES: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "US": (30, "en", ("Inc", "Inc.", "LLC", "Corp.")),
    "GB": (10, "en", ("Ltd", "Ltd.", "PLC")),
    "DE": (10, "de", ("GmbH", "AG", "GmbH & Co. KG")),
    "FR": (7, "fr", ("SA", "SAS", "SARL")),
    "ES": (6, "es", ("S.L.", "SA")),
    "BR": (7, "pt", ("Ltda.", "S.A.")),
    "MX": (6, "es", ("S.A. de C.V.", "S. de R.L.")),
    "CA": (6, "en", ("Inc", "Ltd")),
    "NL": (5, "nl", ("B.V.", "N.V.")),
    "AU": (6, "en", ("Pty Ltd",)),
    "IN": (7, "in", ("Pvt Ltd", "Ltd")),
}
COMPANY_STEMS = (
    "Northwind", "Blue Harbor", "Brightline", "Cedar & Stone", "Helix", "Ironbridge", "Lumen",
    "Meridian", "Orbital", "Pinecrest", "Quantix", "Redwood", "Solstice", "Tidewater", "Vantage",
    "Westfield", "Zenith", "Keystone", "Silver Birch", "Copperleaf", "Evergreen", "Foxglove",
    "Granite Peak", "Harborview", "Juniper", "Kestrel", "Larkspur", "Nimbus", "Oakridge",
    "Riverbend", "Summit", "Trailhead", "Wavecrest", "Baker, Lowe & Partners",
)  # fmt: skip
LOCAL_STEMS: dict[str, tuple[str, ...]] = {
    "DE": ("Müller", "Schäfer", "Nordlicht", "Bergmann", "Weißhaupt", "Alpenblick"),
    "FR": ("Lumière", "Bérard", "Côte Ouest", "Étoile", "Rivière"),
    "ES": ("Núñez", "Sol y Mar", "Peñalara", "Ibérica"),
    "MX": ("Azteca", "Sierra Madre", "Peña Blanca"),
    "BR": ("Araújo", "Ipê", "Paraná", "Atlântico"),
    "NL": ("Van Leeuwen", "Hollandse", "Zeeland"),
    "IN": ("Sundaram", "Ganga", "Vayu"),
    "GB": ("Whitcombe", "Thames", "Pennine"),
    "US": ("Hudson", "Lone Star", "Golden Gate"),
    "CA": ("Maple Leaf", "Laurentian"),
    "AU": ("Southern Cross", "Coral Coast"),
}
INDUSTRIES = (
    "Logistics", "Analytics", "Software", "Foods", "Health", "Energy", "Capital", "Robotics",
    "Media", "Labs", "Consulting", "Manufacturing", "Retail", "Systems",
)  # fmt: skip
TITLES = (
    "CEO", "CTO", "VP Sales", "Head of Marketing", "Marketing Manager", "Sales Operations Manager",
    "Founder", "Operations Director", "IT Manager", "Procurement Lead", "Account Executive",
    "Director of Growth", "Office Manager", "Revenue Operations Analyst", "Gerente Comercial",
    "Directeur Commercial", "Geschäftsführer", "",
)  # fmt: skip
PERSONAL_DOMAINS = ("gmail.example", "outlook.example", "yahoo.example", "icloud.example")
GB_MOBILE = ("7400", "7481", "7712", "7723", "7734", "7766", "7777", "7787", "7802", "7818",
             "7838", "7851", "7877", "7890", "7904", "7930", "7951", "7971", "7980")  # fmt: skip

SOURCES = {
    HUBSPOT_FILE: ("Organic Search", "Paid Search", "Referrals", "Webinar", "Direct Traffic",
                   "Social Media", "Email Marketing"),
    SALESFORCE_FILE: ("Trade Show", "Purchased List", "Live Chat", "Web", "Partner Referral"),
    PIPEDRIVE_FILE: ("Website Form", "Referral", "Webinar", "Live Chat"),
    TRADESHOW_FILE: ("trade_show",),
}  # fmt: skip
HOME_WEIGHTS = {HUBSPOT_FILE: 40, SALESFORCE_FILE: 25, PIPEDRIVE_FILE: 20, TRADESHOW_FILE: 15}

# Test rows any ops person would recognise; importers reject them.
TEST_ROWS = (
    ("test@example.com", "Test", "Test", "Test"),
    ("asdf@asdf.com", "asdf", "asdf", "asdf"),
    ("test123@test.com", "test", "user", ""),
    ("noreply@example.com", "Test", "Lead", "ACME TEST"),
)
INVALID_EMAILS = ("{local}@", "{local}@{host}", "{local} at {domain}", "{local}@@{domain}", "n/a")

# Interleaved so that even a small book gets competitor, no_need and out_of_business.
SAID_NO_REASONS = (
    "competitor",
    "no_need",
    "out_of_business",
    "no_budget",
    "competitor",
    "bad_timing",
    "",
    "competitor",
    "no_need",
    "no_authority",
    "competitor",
    "no_budget",
    "competitor_implemented",
    "competitor",
    "out_of_business",
    "contact_left",
    "no_need",
    "competitor",
    "bad_timing",
    "no_budget",
)
REASON_NOTES = {
    "competitor": "Going with {competitor}, they already use its marketing suite",
    "competitor_implemented": "Signed with {competitor} last quarter, rollout finished",
    "no_need": "Solved it in-house with spreadsheets",
    "out_of_business": "Company is winding down operations",
    "no_budget": "No budget this fiscal year",
    "bad_timing": "Not a priority until after the reorg",
    "no_authority": "Decision sits with HQ procurement",
    "contact_left": "Champion left the company",
    "unresponsive": "Went dark after the demo",
    "other": "Not interested, no reason given",
    "": "Not interested, thanks",
}
FOLLOWUP_NOTES = (
    "try me after Q2 budget",
    "try me after Q2 budget",
    "Call me back after the summer",
    "Budget freeze until next quarter, ping me then",
)
DEAL_PLANS = ("Team plan", "Pilot", "Enterprise rollout", "Sales team seats")


# --- the result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """What the generator planted. Row counts are data rows (headers excluded)."""

    people: int  # distinct real people: the leads an importer should end up with
    people_with_email: int
    phone_only: int  # invalid or missing email but a valid phone: accepted
    created_before_start: int  # people
    lead_rows: int
    rows_per_file: dict[str, int]
    cross_file_duplicates: int  # extra rows of a person found in another file, email case differs
    exact_duplicate_rows: int  # a row repeated verbatim in the same file
    test_rows: int  # test@example.com, "asdf": rejected
    unreachable_rows: int  # neither a usable email nor a phone: rejected
    odd_case_names: int  # rows with ALL-CAPS or all-lower names
    phone_extensions: int  # rows
    missing_company: int  # people
    budget_no: int  # people
    authority_no: int
    need_no: int
    deals: int
    deals_by_stage: dict[str, int]
    deals_by_status: dict[str, int]
    lost_by_reason: dict[str, int]  # deals already lost before start
    open_past_rot_at_start: int  # open deals already past their stage's rot limit at start
    deal_stories: dict[str, int]  # open deals: progress, missed_meetings, said_no, ...
    said_no_by_reason: dict[str, int]  # "" when the prospect gave none
    activities: int
    activities_by_type: dict[str, int]
    replied_leads: int  # people with at least one reply
    replied_twice: int  # people with two or more replies
    auto_reply_only_leads: int  # people whose only inbound mail was an out-of-office

    @property
    def rejected_rows(self) -> int:
        return self.test_rows + self.unreachable_rows

    @property
    def merged_rows(self) -> int:
        return self.cross_file_duplicates + self.exact_duplicate_rows

    def items(self) -> ItemsView[str, int]:
        """The headline counts, as a mapping's items: what the demo's story prints."""
        return {
            "people": self.people,
            "lead rows": self.lead_rows,
            "duplicate rows": self.merged_rows,
            "junk rows": self.rejected_rows,
            "phone-only people": self.phone_only,
            "deals": self.deals,
            "activities": self.activities,
        }.items()


@dataclass(frozen=True)
class Book:
    lead_files: list[Path]
    opportunities: Path
    activities: Path
    truth: Truth
    start: dt.date
    days: int

    @property
    def end(self) -> dt.date:
        """The first day after the simulated window."""
        return self.start + dt.timedelta(days=self.days)


# --- internal records ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Company:
    name: str
    domain: str
    country: str


@dataclass
class _Person:
    first: str
    last: str
    email: str | None  # canonical, lower case; None for phone-only people
    written_email: str  # as the home file has it
    phone: str
    company: _Company | None
    title: str
    country: str
    created: dt.date
    home: str = HUBSPOT_FILE
    bant: tuple[str, str, str, str] = ("", "", "", "")


@dataclass
class _Row:
    file: str
    email: str
    first: str
    last: str
    phone: str
    company: str
    title: str
    country: str
    source: str
    created: dt.date
    bant: tuple[str, str, str, str] = ("", "", "", "")
    person: _Person | None = None


@dataclass
class _Deal:
    deal_id: str
    person: _Person
    stage: str
    stage_entered: dt.date
    created: dt.date
    status: str = "open"
    lost_reason: str = ""
    competitor: str = ""
    close_date: dt.date | None = None
    story: str = ""

    @property
    def rots_on(self) -> dt.date:
        return self.stage_entered + dt.timedelta(dict(STAGES)[self.stage])


@dataclass
class _Activity:
    when: dt.datetime
    person: _Person
    kind: str
    deal_id: str = ""
    followup_on: dt.date | None = None
    reason: str = ""
    competitor: str = ""
    notes: str = ""


# --- entry point -----------------------------------------------------------------------------


def generate_book(
    directory: Path, *, seed: int = 7, leads: int = 1500, start: dt.date, days: int = 120
) -> Book:
    """Write a book of ``leads`` distinct people, their deals and ``days`` days of activity.

    People are created over the 30 days before ``start`` and the 60 after it; activities fall on
    business hours (UTC) in ``[start, start + days)``. Junk and duplicate rows come on top of
    ``leads``: see :class:`Truth`.
    """
    if leads < 50:
        raise ValueError(f"leads must be at least 50, got {leads}")
    if days < 14:
        raise ValueError(f"days must be at least 14, got {days}")
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    people = _people(rng, leads, start)
    rows, counts = _lead_rows(rng, people, start)
    calendar = _Calendar(rng, start, days)
    deals = _deals(rng, people, start, calendar)
    activities = _deal_activities(rng, deals, calendar) + _lead_activities(
        rng, people, deals, calendar
    )
    activities.sort(key=lambda a: (a.when, a.person.email or "", a.kind, a.deal_id))
    per_file = _write_lead_files(rng, directory, rows, counts)
    _write_opportunities(rng, directory / OPPORTUNITIES_FILE, deals)
    _write_activities(rng, directory / ACTIVITIES_FILE, activities)
    truth = _truth(people, counts, per_file, deals, activities, start)
    return Book(
        lead_files=[directory / name for name in LEAD_FILES],
        opportunities=directory / OPPORTUNITIES_FILE,
        activities=directory / ACTIVITIES_FILE,
        truth=truth,
        start=start,
        days=days,
    )


# --- people ----------------------------------------------------------------------------------


def _share(rng: random.Random, population: Sequence[T], rate: float, least: int = 1) -> list[T]:
    """An exact share of ``population`` (at least ``least``), in population order."""
    k = min(len(population), max(least, round(len(population) * rate)))
    picked = set(rng.sample(range(len(population)), k))
    return [item for i, item in enumerate(population) if i in picked]


# Letters NFKD does not take apart into a base letter and an accent.
_UNFOLDED: dict[str, str | int | None] = {
    "ß": "ss", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "æ": "ae", "œ": "oe",
}  # fmt: skip
_FOLD = str.maketrans(_UNFOLDED)


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _slug(text: str) -> str:
    return "".join(c for c in _ascii(text).lower() if c.isalnum())


def _pick_country(rng: random.Random) -> str:
    codes = list(COUNTRIES)
    return rng.choices(codes, weights=[COUNTRIES[c][0] for c in codes])[0]


def _companies(rng: random.Random, count: int) -> list[_Company]:
    companies: list[_Company] = []
    domains: set[str] = set()
    for _ in range(count):
        country = _pick_country(rng)
        stem = rng.choice(COMPANY_STEMS + LOCAL_STEMS[country] * 4)
        industry = rng.choice(INDUSTRIES) if rng.random() < 0.7 else ""
        legal = rng.choice(COUNTRIES[country][2])
        base = f"{stem} {industry}".strip()
        comma = "," if country in ("US", "CA") and rng.random() < 0.2 else ""
        domain = _slug(base)
        if domain in domains:
            domain = f"{domain}{country.lower()}"
        n = 2
        while domain in domains:
            domain, n = f"{_slug(base)}{n}", n + 1
        domains.add(domain)
        companies.append(_Company(f"{base}{comma} {legal}", f"{domain}.example", country))
    return companies


def _name(rng: random.Random, country: str) -> tuple[str, str]:
    culture = COUNTRIES[country][1] if rng.random() < 0.8 else rng.choice(ALL_CULTURES)
    if country == "CA" and rng.random() < 0.3:
        culture = "fr"
    firsts, lasts = NAMES[culture]
    return rng.choice(firsts), rng.choice(lasts)


def _email(
    rng: random.Random, first: str, last: str, company: _Company | None, taken: set[str]
) -> tuple[str, str, str]:
    f, surname = _slug(first), _slug(last)
    local = rng.choices(
        (f"{f}.{surname}", f"{f[0]}{surname}", f"{f}_{surname}", f"{f}{surname[0]}", f),
        weights=(60, 15, 10, 10, 5),
    )[0]
    personal = company is None or rng.random() < 0.08
    domain = rng.choice(PERSONAL_DOMAINS) if personal else company.domain  # type: ignore[union-attr]
    address, n = f"{local}@{domain}", 2
    while address in taken:
        address, n = f"{local}{n}@{domain}", n + 1
    taken.add(address)
    return local, domain, address


def _invalid_email(rng: random.Random, local: str, domain: str) -> str:
    host = domain.rsplit(".", 1)[0]
    return rng.choice(INVALID_EMAILS).format(local=local, host=host, domain=domain)


def _people(rng: random.Random, n: int, start: dt.date) -> list[_Person]:
    companies = _companies(rng, max(12, n // 3))
    indices = list(range(n))
    missing_company = set(_share(rng, indices, 0.04))
    phone_only = set(_share(rng, indices, 0.03))
    no_phone = set(_share(rng, indices, 0.12)) - phone_only
    taken: set[str] = set()
    # Two different people with one full name at one company would be one person to anyone
    # (and to fuzzy matching): the planted truth keeps namesakes at different companies.
    named: set[tuple[str, str, str | None]] = set()
    people = []
    for i in indices:
        company = None if i in missing_company else rng.choice(companies)
        country = company.country if company else _pick_country(rng)
        first, last = _name(rng, country)
        # Redrawn from a stream of its own, so the rest of the book stays as it was.
        redraw = random.Random(i)
        while company and (first, last, company.name) in named:
            first, last = _name(redraw, country)
        named.add((first, last, company.name if company else None))
        local, domain, address = _email(rng, first, last, company, taken)
        person = _Person(
            first=first,
            last=last,
            email=None if i in phone_only else address,
            written_email=_invalid_email(rng, local, domain) if i in phone_only else address,
            phone="" if i in no_phone else _phone(rng, country, international=i in phone_only),
            company=company,
            title=rng.choice(TITLES),
            country=country,
            created=start + dt.timedelta(days=rng.randrange(-30, 60)),
        )
        person.home = _home(rng, person, start)
        people.append(person)
    _plant_bant(rng, [p for p in people if p.home == HUBSPOT_FILE])
    return people


def _fits_pipedrive(person: _Person, start: dt.date) -> bool:
    text = " ".join((person.first, person.last, person.company.name if person.company else ""))
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return person.created < start


def _home(rng: random.Random, person: _Person, start: dt.date) -> str:
    files = [f for f in HOME_WEIGHTS if f != PIPEDRIVE_FILE or _fits_pipedrive(person, start)]
    return rng.choices(files, weights=[HOME_WEIGHTS[f] for f in files])[0]


def _plant_bant(rng: random.Random, hubspot_people: list[_Person]) -> None:
    budget_no = set(map(id, _share(rng, hubspot_people, 0.04)))
    authority_no = set(map(id, _share(rng, hubspot_people, 0.02)))
    need_no = set(map(id, _share(rng, hubspot_people, 0.03)))
    for p in hubspot_people:
        budget, authority, need = (
            "no" if id(p) in planted else rng.choices(("", "unknown", "yes"), (70, 18, yes))[0]
            for planted, yes in ((budget_no, 12), (authority_no, 10), (need_no, 12))
        )
        timing = rng.choices(("", "unknown", "this quarter", "next quarter", "next year"),
                             weights=(70, 12, 6, 8, 4))[0]  # fmt: skip
        p.bant = (budget, authority, need, timing)


# --- phones ----------------------------------------------------------------------------------


def _digits(rng: random.Random, k: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(k - 1))


def _phone(rng: random.Random, country: str, *, international: bool) -> str:
    """A valid number as people there write it, nationally or internationally."""
    national, intl = _PHONES[country](rng)
    return intl if international or rng.random() < 0.45 else national


def _nanp(area_codes: tuple[str, ...]) -> Callable[[random.Random], tuple[str, str]]:
    def make(rng: random.Random) -> tuple[str, str]:
        area = rng.choice(area_codes)
        if rng.random() < 0.2:  # the 555-01xx range set aside for fiction
            exchange, line = "555", "01" + _digits(rng, 2)
        else:
            exchange, line = _digits(rng, 3, "23456789"), _digits(rng, 4)
        national = rng.choice(
            (
                f"({area}) {exchange}-{line}",
                f"{area}-{exchange}-{line}",
                f"{area}.{exchange}.{line}",
            )
        )
        return national, f"+1 {area} {exchange} {line}"

    return make


def _gb(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        groups = ["20", "7946", "0" + _digits(rng, 3)] if rng.random() < 0.5 else [
            "20", _digits(rng, 4, "378"), _digits(rng, 4)]  # fmt: skip
    else:
        groups = [rng.choice(GB_MOBILE), _digits(rng, 6)]
    return "0" + " ".join(groups), "+44 " + " ".join(groups)


def _de(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.6:
        groups = [
            rng.choice(("30", "89", "40", "69")),
            _digits(rng, rng.choice((7, 8)), "23456789"),
        ]
    else:
        groups = [rng.choice(("151", "160", "170", "171", "172", "176")), _digits(rng, 8)]
    intl = rng.choice(("+49 ", "0049 ")) + " ".join(groups)
    return "0" + " ".join(groups), intl


def _fr(rng: random.Random) -> tuple[str, str]:
    # 0262, 059x, 0639 and 069x are overseas departments, not France by region.
    lead = rng.choice("1234567")
    second = rng.choice({"6": "1245", "7": "5678"}.get(lead, "12345"))
    pairs = [second + rng.choice("0123456789")] + [_digits(rng, 2) for _ in range(3)]
    rest = " ".join(pairs)
    return f"0{lead} {rest}", f"+33 {lead} {rest}"


def _es(rng: random.Random) -> tuple[str, str]:
    head = rng.choice(("91", "93", "6", "6"))
    number = head + _digits(rng, 9 - len(head))
    groups = f"{number[:3]} {number[3:6]} {number[6:]}"
    return groups, f"+34 {groups}"


def _br(rng: random.Random) -> tuple[str, str]:
    area = rng.choice(("11", "21", "31", "41", "51", "61", "71", "81"))
    if rng.random() < 0.6:
        local = f"9{rng.choice('6789')}{_digits(rng, 3)}-{_digits(rng, 4)}"
    else:
        local = f"{_digits(rng, 4, '2345')}-{_digits(rng, 4)}"
    return f"({area}) {local}", f"+55 {area} {local}"


def _mx(rng: random.Random) -> tuple[str, str]:
    groups = f"{rng.choice(('55', '33', '81'))} {_digits(rng, 4)} {_digits(rng, 4)}"
    return groups, f"+52 {groups}"


def _nl(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        area = rng.choice(("20", "10", "70", "30"))
        rest = f"{_digits(rng, 3, '23456789')} {_digits(rng, 4)}"
        return f"0{area} {rest}", f"+31 {area} {rest}"
    mobile = _digits(rng, 8, "12345")
    return f"06 {mobile}", f"+31 6 {mobile}"


def _au(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        area, first = rng.choice((("2", "9"), ("3", "9"), ("7", "3")))
        rest = f"{_digits(rng, 4, first)} {_digits(rng, 4)}"
        return f"(0{area}) {rest}", f"+61 {area} {rest}"
    rest = f"4{rng.choice('0123')}{_digits(rng, 1)} {_digits(rng, 3)} {_digits(rng, 3)}"
    return f"0{rest}", f"+61 {rest}"


def _in(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.6:
        rest = f"{_digits(rng, 5, '6789')} {_digits(rng, 5)}"
        return rest, f"+91 {rest}"
    area = rng.choice(("22", "11", "80", "44"))
    rest = f"{_digits(rng, 4, '23456')} {_digits(rng, 4)}"
    return f"0{area} {rest}", f"+91 {area} {rest}"


_PHONES = {
    "US": _nanp(("212", "213", "312", "415", "512", "617", "646", "702", "206", "303", "404")),
    "CA": _nanp(("416", "647", "604", "514", "403", "613", "902")),
    "GB": _gb,
    "DE": _de,
    "FR": _fr,
    "ES": _es,
    "BR": _br,
    "MX": _mx,
    "NL": _nl,
    "AU": _au,
    "IN": _in,
}


# --- lead rows -------------------------------------------------------------------------------


def _row(rng: random.Random, person: _Person, file: str, email: str, created: dt.date) -> _Row:
    return _Row(
        file=file,
        email=email,
        first=person.first,
        last=person.last,
        phone=person.phone,
        company=person.company.name if person.company else "",
        title=person.title,
        country=person.country,
        source=rng.choice(SOURCES[file]),
        created=created,
        bant=person.bant if file == HUBSPOT_FILE else ("", "", "", ""),
        person=person,
    )


def _case_variant(rng: random.Random, email: str) -> str:
    """The same address with different letter case (never identical to the lower-case one)."""
    local, domain = email.split("@")
    return rng.choice(
        (email.upper(), f"{'.'.join(w.title() for w in local.split('.'))}@{domain}",
         f"{local}@{domain.upper()}", f"{local.title()}@{domain.title()}")
    )  # fmt: skip


def _lead_rows(
    rng: random.Random, people: list[_Person], start: dt.date
) -> tuple[list[_Row], Counter[str]]:
    """One row per person in its home file, then the planted mess; counts what was planted."""
    counts: Counter[str] = Counter()
    rows = [_row(rng, p, p.home, p.written_email, p.created) for p in people]
    last_day = start + dt.timedelta(days=59)
    for person in _share(rng, [p for p in people if p.email], 0.06):
        others = [
            f
            for f in LEAD_FILES
            if f != person.home and (f != PIPEDRIVE_FILE or _fits_pipedrive(person, start))
        ]
        # Signed up again a little later; someone who existed before ``start`` still did. When
        # the first row is in Pipedrive, which has no date, this one tells when the lead began.
        later = person.created + dt.timedelta(days=rng.randrange(0, 21))
        created = min(later, start - dt.timedelta(1) if person.created < start else last_day)
        if person.home == PIPEDRIVE_FILE:
            created = person.created
        assert person.email is not None
        email = _case_variant(rng, person.email)
        rows.append(_row(rng, person, rng.choice(others), email, created))
        counts["cross_file_duplicates"] += 1
    for row in _share(rng, [r for r in rows if r.person and r.person.phone], 0.03):
        row.phone += f" x{_digits(rng, rng.choice((2, 3, 4)), '123456789')}"
        counts["phone_extensions"] += 1
    for row in _share(rng, rows, 0.06):
        change = str.upper if rng.random() < 0.65 else str.lower
        row.first, row.last = change(row.first), change(row.last)
        counts["odd_case_names"] += 1
    rows += _junk_rows(rng, people, start, counts)
    return rows, counts


def _junk_rows(
    rng: random.Random, people: list[_Person], start: dt.date, counts: Counter[str]
) -> list[_Row]:
    junk = []
    for i in range(max(2, round(len(people) * 0.01))):
        email, first, last, company = TEST_ROWS[i % len(TEST_ROWS)]
        file = rng.choice(LEAD_FILES)
        created = start + dt.timedelta(days=rng.randrange(-30, 0))
        junk.append(
            _Row(file, email, first, last, "", company, "", "US", SOURCES[file][0], created)
        )
        counts["test_rows"] += 1
    for person in _share(rng, people, 0.01):
        file = rng.choice((HUBSPOT_FILE, SALESFORCE_FILE, TRADESHOW_FILE))
        local = _slug(person.first) + "." + _slug(person.last)
        email = rng.choice(("", "n/a", f"{local}@", "-"))
        junk.append(_Row(file, email, person.first, person.last, rng.choice(("", "n/a")),
                         person.company.name if person.company else "", person.title,
                         person.country, rng.choice(SOURCES[file]), person.created))  # fmt: skip
        counts["unreachable_rows"] += 1
    return junk


def _render(row: _Row) -> list[str] | dict[str, str | None]:
    created = row.created.isoformat()
    if row.file == HUBSPOT_FILE:
        return [row.email, row.first, row.last, row.phone, row.company, row.title, row.country,
                row.source, created, *row.bant]  # fmt: skip
    if row.file == SALESFORCE_FILE:
        full = f"{row.first} {row.last}".strip()
        return [
            row.email,
            full,
            row.phone,
            row.company,
            row.title,
            row.country,
            row.source,
            created,
        ]
    if row.file == PIPEDRIVE_FILE:
        full = f"{row.first} {row.last}".strip()
        return [full, row.email, row.phone, row.company, row.country, row.source]
    values = (row.email, row.first, row.last, row.phone, row.company, row.country, row.source)
    return dict(zip(TRADESHOW_KEYS, [v or None for v in values] + [created], strict=True))


def _write_lead_files(
    rng: random.Random, directory: Path, rows: list[_Row], counts: Counter[str]
) -> dict[str, int]:
    per_file: dict[str, int] = {}
    for file in LEAD_FILES:
        mine = [r for r in rows if r.file == file]
        rng.shuffle(mine)
        if file != PIPEDRIVE_FILE:  # it has no date column: its export order is arbitrary
            mine.sort(key=attrgetter("created"))
        records = [_render(r) for r in mine]
        for record in _share(rng, [rec for r, rec in zip(mine, records, strict=True)
                                   if r.person and r.person.email], 0.02):  # fmt: skip
            records.insert(rng.randrange(len(records) + 1), record)
            counts["exact_duplicate_rows"] += 1
        per_file[file] = len(records)
        _write_records(directory / file, records)
    return per_file


def _write_records(path: Path, records: list) -> None:
    if path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8", newline="\n") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    encoding, delimiter, headers = {
        HUBSPOT_FILE: ("utf-8-sig", ",", HUBSPOT_HEADERS),
        SALESFORCE_FILE: ("utf-8", ",", SALESFORCE_HEADERS),
        PIPEDRIVE_FILE: ("cp1252", ";", PIPEDRIVE_HEADERS),
    }[path.name]
    _write_csv(path, headers, records, encoding=encoding, delimiter=delimiter)


def _write_csv(
    path: Path,
    headers: Sequence[str],
    records: Iterable[Sequence[str]],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> None:
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(headers)
        writer.writerows(records)


# --- deals -----------------------------------------------------------------------------------


def _deals(
    rng: random.Random, people: list[_Person], start: dt.date, calendar: _Calendar
) -> list[_Deal]:
    """About one deal per five people with an email, among the people who exist before ``start``.

    A deal never predates its lead: it is created, and enters its stage, on or after the lead's
    created date, so at ``start`` a deal has been in its stage for at most 30 days.
    """
    with_email = [p for p in people if p.email]
    eligible = [p for p in with_email if p.created < start]
    count = min(len(eligible), round(len(with_email) * 0.20))
    # Older leads are likelier to have a deal by now (weighted sampling without replacement).
    weight = {id(p): rng.random() ** (1 / (start - p.created).days) for p in eligible}
    ranked = sorted(eligible, key=lambda p: weight[id(p)], reverse=True)
    owners = sorted(ranked[:count], key=attrgetter("created"))
    statuses = ["won"] * round(count * 0.05) + ["lost"] * round(count * 0.08)
    statuses += ["open"] * (count - len(statuses))
    rng.shuffle(statuses)
    deals = []
    for i, (person, status) in enumerate(zip(owners, statuses, strict=True)):
        deal = _deal(rng, f"D-{i + 1:05d}", person, start)
        if status != "open":
            window = (start - deal.stage_entered).days
            deal.status = status
            deal.close_date = deal.stage_entered + dt.timedelta(rng.randrange(window))
        if status == "lost":
            deal.lost_reason = rng.choices(
                LOST_REASONS, weights=(14, 14, 16, 6, 8, 20, 5, 3, 6, 8)
            )[0]
            if deal.lost_reason in ("competitor", "competitor_implemented"):
                deal.competitor = rng.choice(COMPETITORS)
        deals.append(deal)
    _assign_stories(rng, [d for d in deals if d.status == "open"], calendar)
    return deals


def _deal(rng: random.Random, deal_id: str, person: _Person, start: dt.date) -> _Deal:
    """A deal as far along as its lead's age allows: a week-old lead is still in discovery."""
    lead_age = (start - person.created).days
    names = [s for s, _ in STAGES]
    furthest = min(len(names) - 1, lead_age // 6)
    index = rng.choices(range(furthest + 1), weights=(35, 30, 20, 15)[: furthest + 1])[0]
    stage, limit = STAGES[index]
    # Each earlier stage took at least a day. Most deals have time left before they rot; some
    # are stale, and a few discovery deals are past their limit already.
    most = lead_age - index
    fresh = min(most, limit - 3)
    in_stage = rng.randint(1, fresh) if rng.random() < 0.85 or fresh == most else (
        rng.randint(fresh + 1, most))  # fmt: skip
    entered = start - dt.timedelta(in_stage)
    created = entered if index == 0 else person.created + dt.timedelta(
        rng.randint(0, (entered - person.created).days - index))  # fmt: skip
    return _Deal(deal_id, person, stage, entered, created)


# Open-deal stories: share of the open deals, and business days the deal must have left before
# it rots for the story to play out first. The rest go silent and rot.
STORIES = (
    ("missed_meetings", 0.12, 8),
    ("said_no", 0.14, 2),
    ("named_followup", 0.09, 2),
    ("progress", 0.25, 1),
)


def _assign_stories(rng: random.Random, open_deals: list[_Deal], calendar: _Calendar) -> None:
    pool = rng.sample(open_deals, len(open_deals))
    for story, share, room in STORIES:
        fits = [d for d in pool if calendar.room(d) >= room][: round(len(open_deals) * share)]
        for deal in fits:
            deal.story = story
        pool = [d for d in pool if not d.story]
    for deal in pool:
        deal.story = "silent"


def _write_opportunities(rng: random.Random, path: Path, deals: list[_Deal]) -> None:
    records = []
    for deal in deals:
        person = deal.person
        assert person.email is not None
        who = person.company.name if person.company else f"{person.first} {person.last}"
        email = _case_variant(rng, person.email) if rng.random() < 0.05 else person.email
        notes = REASON_NOTES[deal.lost_reason].format(competitor=deal.competitor)
        records.append([
            deal.deal_id, email, f"{who} - {rng.choice(DEAL_PLANS)}", deal.stage,
            deal.stage_entered.isoformat(), deal.created.isoformat(),
            str(rng.randrange(20, 400) * 250),
            deal.status, deal.lost_reason, deal.competitor, notes if deal.lost_reason else "",
            deal.close_date.isoformat() if deal.close_date else "",
        ])  # fmt: skip
    _write_csv(path, OPPORTUNITY_HEADERS, records)


# --- activities ------------------------------------------------------------------------------


class _Calendar:
    """Business days of the simulated window, and moments in their business hours (UTC)."""

    def __init__(self, rng: random.Random, start: dt.date, days: int):
        self.rng = rng
        self.days = [d for d in (start + dt.timedelta(i) for i in range(days)) if d.weekday() < 5]

    def moment(self, day: dt.date) -> dt.datetime:
        minute = self.rng.randrange(9 * 60, 17 * 60)
        return dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=dt.UTC)

    def room(self, deal: _Deal) -> int:
        """Business days before the deal would rot (a day early, whichever way one rounds)."""
        return bisect_left(self.days, deal.rots_on - dt.timedelta(1))

    def between(self, first: dt.date, last: dt.date) -> list[dt.date]:
        return [d for d in self.days if first <= d <= last]

    def sequence(
        self, first: int, gaps: Sequence[int], *, last: int | None = None
    ) -> list[dt.datetime]:
        """Strictly later business days from index ``first``, squeezed to end by ``last``."""
        n = len(gaps) + 1
        last = len(self.days) - 1 if last is None else min(last, len(self.days) - 1)
        if last + 1 < n:
            raise ValueError(f"{n} business days do not fit before day {last}")
        index = max(0, min(first, last - (n - 1)))
        indices = [index]
        for k, gap in enumerate(gaps, start=1):
            index = min(index + gap, last - (n - 1 - k))
            indices.append(index)
        return [self.moment(self.days[i]) for i in indices]


def _deal_activities(
    rng: random.Random, deals: list[_Deal], calendar: _Calendar
) -> list[_Activity]:
    out: list[_Activity] = []
    said_no = [d for d in deals if d.story == "said_no"]
    reasons = {d.deal_id: SAID_NO_REASONS[i % len(SAID_NO_REASONS)] for i, d in enumerate(said_no)}
    for deal in deals:
        steps = _story_steps(rng, deal, reasons.get(deal.deal_id, "")) if deal.story else []
        if not steps:
            continue
        if deal.story == "silent":  # one unanswered touch in the first week, then nothing
            first, last = rng.randrange(5), None
        else:
            # The story's decisive steps land before the deal would rot; a progress story only
            # needs its first step there.
            room = calendar.room(deal)
            span = 1 if deal.story == "progress" else len(steps)
            first = rng.randrange(max(1, min(room - span + 1, len(calendar.days) // 3)))
            last = None if deal.story == "progress" else room - 1
        gaps = [rng.randint(2, 7) for _ in steps[1:]]
        for when, step in zip(calendar.sequence(first, gaps, last=last), steps, strict=True):
            step.when, step.deal_id = when, deal.deal_id
            if step.kind == "named_followup":
                step.followup_on = when.date() + relativedelta(months=rng.randint(1, 5))
            out.append(step)
    return out


def _story_steps(rng: random.Random, deal: _Deal, no_reason: str) -> list[_Activity]:
    """What happens to an open deal, in order; times are set by the caller."""

    def step(kind: str, **kw: Any) -> _Activity:
        return _Activity(dt.datetime.min, deal.person, kind, **kw)

    stages = [s for s, _ in STAGES]
    if deal.story == "progress":
        steps = [step("reply"), step("meeting_scheduled"), step("meeting_held")]
        at = stages.index(deal.stage)
        for nxt in stages[at + 1 : at + 1 + rng.choice((1, 1, 2))]:
            steps.append(step("stage_changed", notes=f"{stages[at]} -> {nxt}"))
            at = stages.index(nxt)
            if nxt != stages[-1]:
                steps += [step("meeting_scheduled"), step("meeting_held")]
        return steps
    if deal.story == "missed_meetings":
        steps = [step("meeting_scheduled"), step("meeting_held")] if rng.random() < 0.4 else []
        for _ in range(rng.choice((2, 2, 3))):
            steps += [step("meeting_scheduled"), step("meeting_missed", notes="No-show")]
        return steps
    if deal.story == "said_no":
        competitor = rng.choice(COMPETITORS) if no_reason.startswith("competitor") else ""
        notes = REASON_NOTES[no_reason].format(competitor=competitor)
        lead_in = [step(rng.choice(("call", "reply")))] if rng.random() < 0.5 else []
        return [*lead_in, step("said_no", reason=no_reason, competitor=competitor, notes=notes)]
    if deal.story == "named_followup":
        lead_in = [step("reply")] if rng.random() < 0.5 else []
        return [*lead_in, step("named_followup", notes=rng.choice(FOLLOWUP_NOTES))]
    # Silent: at most a call nobody answered or a note to self, then nothing; the deal rots.
    if rng.random() < 0.5:
        return [step(rng.choice(("call", "note")), notes="Left voicemail, no answer")]
    return []


def _lead_activities(
    rng: random.Random, people: list[_Person], deals: list[_Deal], calendar: _Calendar
) -> list[_Activity]:
    """Lead-level replies (2-40 days after creation) and out-of-office auto-replies."""
    with_open_deal = {id(d.person) for d in deals if d.status == "open"}
    with_email = [p for p in people if p.email]
    out: list[_Activity] = []

    def reply_days(p: _Person) -> list[dt.date]:
        return calendar.between(p.created + dt.timedelta(2), p.created + dt.timedelta(40))

    candidates = [p for p in with_email if id(p) not in with_open_deal and reply_days(p)]
    # Deal conversations add their own replies: about a quarter of people reply in all.
    k = min(len(candidates), round(len(with_email) * 0.20))
    repliers = rng.sample(candidates, k)
    for person in repliers:
        days = reply_days(person)
        first = rng.randrange(len(days))
        picked = [days[first]]
        if rng.random() < 0.2 and first + 1 < len(days):
            picked.append(days[rng.randrange(first + 1, len(days))])
        for day in picked:
            out.append(
                _Activity(calendar.moment(day), person, "reply", notes="Thanks, tell me more")
            )
    replied = {id(p) for p in repliers}
    quiet = [p for p in with_email if id(p) not in replied and p.created <= calendar.days[-1]]
    for person in rng.sample(quiet, min(len(quiet), round(len(with_email) * 0.05))):
        when = calendar.moment(rng.choice(calendar.between(person.created, calendar.days[-1])))
        back = (when + dt.timedelta(days=rng.randint(3, 14))).date()
        notes = f"Automatic reply: out of the office until {back.isoformat()}"
        out.append(_Activity(when, person, "auto_reply", notes=notes))
    return out


def _write_activities(rng: random.Random, path: Path, activities: list[_Activity]) -> None:
    records = []
    for i, a in enumerate(activities, start=1):
        assert a.person.email is not None
        email = _case_variant(rng, a.person.email) if rng.random() < 0.1 else a.person.email
        records.append([
            f"A-{i:06d}", email, a.deal_id, a.kind, a.when.isoformat(),
            a.followup_on.isoformat() if a.followup_on else "", a.reason, a.competitor, a.notes,
        ])  # fmt: skip
    _write_csv(path, ACTIVITY_HEADERS, records)


# --- what was planted ------------------------------------------------------------------------


def _truth(
    people: list[_Person],
    counts: Counter[str],
    per_file: dict[str, int],
    deals: list[_Deal],
    activities: list[_Activity],
    start: dt.date,
) -> Truth:
    replies = Counter(a.person.email for a in activities if a.kind == "reply")
    auto = {a.person.email for a in activities if a.kind == "auto_reply"}
    open_deals = [d for d in deals if d.status == "open"]
    limits = dict(STAGES)
    return Truth(
        people=len(people),
        people_with_email=sum(1 for p in people if p.email),
        phone_only=sum(1 for p in people if not p.email),
        created_before_start=sum(1 for p in people if p.created < start),
        lead_rows=sum(per_file.values()),
        rows_per_file=per_file,
        cross_file_duplicates=counts["cross_file_duplicates"],
        exact_duplicate_rows=counts["exact_duplicate_rows"],
        test_rows=counts["test_rows"],
        unreachable_rows=counts["unreachable_rows"],
        odd_case_names=counts["odd_case_names"],
        phone_extensions=counts["phone_extensions"],
        missing_company=sum(1 for p in people if p.company is None),
        budget_no=sum(1 for p in people if p.bant[0] == "no"),
        authority_no=sum(1 for p in people if p.bant[1] == "no"),
        need_no=sum(1 for p in people if p.bant[2] == "no"),
        deals=len(deals),
        deals_by_stage=dict(Counter(d.stage for d in deals)),
        deals_by_status=dict(Counter(d.status for d in deals)),
        lost_by_reason=dict(Counter(d.lost_reason for d in deals if d.status == "lost")),
        open_past_rot_at_start=sum(
            1 for d in open_deals if (start - d.stage_entered).days > limits[d.stage]
        ),
        deal_stories=dict(Counter(d.story for d in open_deals)),
        said_no_by_reason=dict(Counter(a.reason for a in activities if a.kind == "said_no")),
        activities=len(activities),
        activities_by_type=dict(Counter(a.kind for a in activities)),
        replied_leads=len(replies),
        replied_twice=sum(1 for n in replies.values() if n >= 2),
        auto_reply_only_leads=len(auto - set(replies)),
    )
