"""The synthetic book: deterministic, in the sources' exact formats, and what it plants is true."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
import pytest
from dateutil.relativedelta import relativedelta
from email_validator import EmailNotValidError, validate_email

from tasks.config.loader import NurtureConfig
from tasks.demo.generator import (
    ACTIVITIES_FILE,
    COMPETITORS,
    HUBSPOT_FILE,
    LEAD_FILES,
    LOST_REASONS,
    OPPORTUNITIES_FILE,
    PIPEDRIVE_FILE,
    SALESFORCE_FILE,
    STAGES,
    TRADESHOW_FILE,
    Book,
    generate_book,
)
from tasks.store.models import ActivityKind, LostReason

START = dt.date(2026, 3, 2)
DAYS = 120
TEST_EMAILS = {"test@example.com", "asdf@asdf.com", "test123@test.com", "noreply@example.com"}
DEAL_KINDS = {
    "meeting_scheduled",
    "meeting_held",
    "meeting_missed",
    "said_no",
    "named_followup",
    "stage_changed",
}
PROGRESS = {"reply", "meeting_held", "stage_changed"}


# The demo's own size, and a small book in a short window that squeezes every story in.
SIZES = [(7, 1500, DAYS), (11, 300, 30)]


@pytest.fixture(scope="module", params=SIZES, ids=lambda p: f"seed{p[0]}-{p[1]}leads-{p[2]}days")
def book(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Book:
    seed, leads, days = request.param
    return generate_book(
        tmp_path_factory.mktemp("book"), seed=seed, leads=leads, start=START, days=days
    )


# --- reading the files back with nothing but the standard library ---------------------------


@dataclass(frozen=True)
class LeadRow:
    file: str
    email: str
    name: str
    phone: str
    company: str
    country: str
    created: str  # "" in Pipedrive, which has no date column
    bant: tuple[str, str, str, str] = ("", "", "", "")


def _csv(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> tuple[list[str], list]:
    with path.open(encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def read_leads(directory: Path) -> list[LeadRow]:
    rows = []
    _, hubspot = _csv(directory / HUBSPOT_FILE, "utf-8-sig")
    for r in hubspot:
        rows.append(
            LeadRow(HUBSPOT_FILE, r["Email"], f"{r['First Name']} {r['Last Name']}",
                    r["Phone Number"], r["Company Name"], r["Country/Region"], r["Create Date"],
                    (r["Budget"], r["Authority"], r["Need"], r["Timing"]))
        )  # fmt: skip
    _, salesforce = _csv(directory / SALESFORCE_FILE)
    for r in salesforce:
        rows.append(
            LeadRow(SALESFORCE_FILE, r["Email Address"], r["Full Name"], r["Mobile Phone"],
                    r["Company"], r["Country"], r["Created Date"])
        )  # fmt: skip
    _, pipedrive = _csv(directory / PIPEDRIVE_FILE, "cp1252", ";")
    for r in pipedrive:
        rows.append(
            LeadRow(PIPEDRIVE_FILE, r["Email"], r["Name"], r["Phone"], r["Organization"],
                    r["Country"], "")
        )  # fmt: skip
    for line in (directory / TRADESHOW_FILE).read_text("utf-8").splitlines():
        r = json.loads(line)
        rows.append(
            LeadRow(TRADESHOW_FILE, r["email"] or "", f"{r['first_name']} {r['last_name']}",
                    r["phone"] or "", r["company"] or "", r["country"], r["created"])
        )  # fmt: skip
    return rows


def valid_email(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def valid_phone(phone: str, country: str) -> bool:
    try:
        number = phonenumbers.parse(phone, country)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def people_of(rows: list[LeadRow]) -> dict[str, list[LeadRow]]:
    """Real people (test and unreachable rows left out), keyed by email, else by phone."""
    people: dict[str, list[LeadRow]] = defaultdict(list)
    for row in rows:
        if row.email.casefold() in TEST_EMAILS:
            continue
        if valid_email(row.email):
            people[row.email.casefold()].append(row)
        elif valid_phone(row.phone, row.country):
            people[f"phone:{row.phone}"].append(row)
    return people


# --- determinism and formats -----------------------------------------------------------------


def _files(book: Book) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in [*book.lead_files, book.opportunities, book.activities]}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path):
    first = generate_book(tmp_path / "first", seed=7, start=START, days=DAYS)
    again = generate_book(tmp_path / "again", seed=7, start=START, days=DAYS)
    other = generate_book(tmp_path / "other", seed=8, start=START, days=DAYS)
    files = _files(first)
    assert set(files) == {*LEAD_FILES, OPPORTUNITIES_FILE, ACTIVITIES_FILE}
    assert _files(again) == files
    assert again.truth == first.truth
    different = _files(other)
    assert all(different[name] != files[name] for name in files)


def test_each_source_has_its_headers_delimiter_and_encoding(book: Book):
    directory = book.opportunities.parent
    hubspot = (directory / HUBSPOT_FILE).read_bytes()
    assert hubspot.startswith(b"\xef\xbb\xbfEmail,First Name,Last Name,Phone Number,")
    header, _ = _csv(directory / HUBSPOT_FILE, "utf-8-sig")
    assert header == [
        "Email", "First Name", "Last Name", "Phone Number", "Company Name", "Job Title",
        "Country/Region", "Original Source", "Create Date", "Budget", "Authority", "Need", "Timing",
    ]  # fmt: skip
    salesforce = (directory / SALESFORCE_FILE).read_bytes()
    assert not salesforce.startswith(b"\xef\xbb\xbf")
    salesforce.decode("utf-8")
    assert _csv(directory / SALESFORCE_FILE)[0] == [
        "Email Address", "Full Name", "Mobile Phone", "Company", "Title", "Country",
        "Lead Source", "Created Date",
    ]  # fmt: skip
    pipedrive = (directory / PIPEDRIVE_FILE).read_bytes()
    assert pipedrive.startswith(b"Name;Email;Phone;Organization;Country;Source\r\n")
    assert re.search(rb"[\xc0-\xff]", pipedrive), "accented names as single Latin-1 bytes"
    with pytest.raises(UnicodeDecodeError):
        pipedrive.decode("utf-8")
    assert all(c.isalpha() for c in pipedrive.decode("cp1252") if ord(c) > 127)
    for line in (directory / TRADESHOW_FILE).read_text("utf-8").splitlines():
        record = json.loads(line)
        assert list(record) == [
            "email", "first_name", "last_name", "phone", "company", "country", "source", "created",
        ]  # fmt: skip
        assert record["source"] == "trade_show"
    assert _csv(book.opportunities)[0] == [
        "Deal ID", "Email", "Deal Name", "Stage", "Stage Entered", "Create Date", "Amount",
        "Status", "Lost Reason", "Competitor", "Lost Notes", "Close Date",
    ]  # fmt: skip
    assert _csv(book.activities)[0] == [
        "Activity ID", "Email", "Deal ID", "Type", "Date", "Follow Up On", "Reason",
        "Competitor", "Notes",
    ]  # fmt: skip


def test_constants_mirror_the_config_and_the_schema(config: NurtureConfig):
    assert [(s.name, s.rot_after) for s in config.pipeline.stages] == [
        (name, relativedelta(days=days)) for name, days in STAGES
    ]
    assert tuple(config.pipeline.competitors) == COMPETITORS
    assert tuple(r.value for r in LostReason) == LOST_REASONS


def test_a_book_of_1500_is_generated_well_under_a_second(tmp_path: Path):
    timings = []
    for attempt in range(2):
        started = time.perf_counter()
        generate_book(tmp_path / str(attempt), leads=1500, start=START, days=DAYS)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.5


def test_too_small_a_book_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="leads must be at least 50"):
        generate_book(tmp_path, leads=10, start=START)
    with pytest.raises(ValueError, match="days must be at least 14"):
        generate_book(tmp_path, days=5, start=START)


# --- leads: the planted mess is there, and counted right -------------------------------------


def test_lead_counts_in_truth_match_the_files(book: Book):
    truth = book.truth
    rows = read_leads(book.opportunities.parent)
    per_file = Counter(r.file for r in rows)
    assert dict(per_file) == truth.rows_per_file
    assert len(rows) == truth.lead_rows == truth.people + truth.merged_rows + truth.rejected_rows

    assert sum(r.email.casefold() in TEST_EMAILS for r in rows) == truth.test_rows >= 2
    unreachable = [
        r
        for r in rows
        if r.email.casefold() not in TEST_EMAILS
        and not valid_email(r.email)
        and not valid_phone(r.phone, r.country)
    ]
    assert len(unreachable) == truth.unreachable_rows > 0

    people = people_of(rows)
    assert len(people) == truth.people
    phone_only = [key for key in people if key.startswith("phone:")]
    assert len(phone_only) == truth.phone_only > 0
    assert all(len(people[key]) == 1 for key in phone_only)

    exact = sum(len(group) - len(set(group)) for group in people.values())
    assert exact == truth.exact_duplicate_rows > 0
    cross = 0
    for group in people.values():
        files = {r.file for r in group}
        cross += len(files) - 1
        if len(files) > 1:
            spellings = {r.email for r in group}
            assert len(spellings) == 2, "a person found in another file: same address, other case"
    assert cross == truth.cross_file_duplicates > 0

    missing = sum(1 for group in people.values() if not group[0].company)
    assert missing == truth.missing_company > 0
    distinct = {r for group in people.values() for r in group}
    odd = [r for r in distinct if r.name.isupper() or r.name.islower()]
    assert len(odd) == truth.odd_case_names > 0
    extensions = [r for r in distinct if re.search(r" x\d{2,4}$", r.phone)]
    assert len(extensions) == truth.phone_extensions > 0


def test_lead_values_are_realistic_and_safe(book: Book):
    rows = read_leads(book.opportunities.parent)
    earliest, latest = START - dt.timedelta(days=30), START + dt.timedelta(days=60)
    for row in rows:
        if row.created:
            assert earliest <= dt.date.fromisoformat(row.created) < latest
        if row.phone and row.phone != "n/a":
            number = phonenumbers.parse(row.phone, row.country)
            assert phonenumbers.is_valid_number(number), row.phone
            assert phonenumbers.region_code_for_number(number) == row.country, row.phone
        if valid_email(row.email) and row.email.casefold() not in TEST_EMAILS:
            # A demo run with a real SendGrid key must never reach a real person.
            assert row.email.casefold().endswith(".example"), row.email
    phones = [r.phone for r in rows]
    assert any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", p) for p in phones)
    assert any(p.startswith("+44 20 ") for p in phones)
    assert any(p.startswith("0049 ") for p in phones)
    assert {r.country for r in rows} >= {"US", "GB", "DE", "FR", "ES", "BR", "MX", "CA", "NL",
                                         "AU", "IN"}  # fmt: skip
    if book.truth.people >= 1000:  # variety only shows in a book of some size
        companies = {r.company for r in rows}
        for suffix in ("Inc", "LLC", "Ltd", "GmbH", "SA", "S.L."):
            assert any(f" {suffix}" in c for c in companies), suffix
    created_after_start = {r.email.casefold() for r in rows if r.created >= START.isoformat()}
    assert created_after_start, "the book keeps arriving during the simulation"


def test_bant_answers_are_mostly_unknown_with_a_few_planted_noes(book: Book):
    truth = book.truth
    _, hubspot = _csv(book.opportunities.parent / HUBSPOT_FILE, "utf-8-sig")
    # One per person: exact duplicate rows are identical, and nobody else is twice in HubSpot.
    distinct = {tuple(r.values()): r for r in hubspot if r["Email"].casefold() not in TEST_EMAILS}
    real = list(distinct.values())
    for column, planted, rate in (("Budget", truth.budget_no, 0.04),
                                  ("Authority", truth.authority_no, 0.02),
                                  ("Need", truth.need_no, 0.03)):  # fmt: skip
        noes = sum(1 for r in real if r[column] == "no")
        assert noes == planted
        assert noes == pytest.approx(rate * len(real), abs=2)
        assert sum(1 for r in real if r[column] in ("", "unknown")) > 0.7 * len(real)


# --- deals ----------------------------------------------------------------------------------


def test_deals_belong_to_leads_that_exist_before_start(book: Book):
    truth = book.truth
    rows = read_leads(book.opportunities.parent)
    people = people_of(rows)
    _, deals = _csv(book.opportunities)
    assert len(deals) == truth.deals == len({d["Deal ID"] for d in deals})
    assert len({d["Email"].casefold() for d in deals}) == len(deals), "one deal per person"
    with_email = [k for k in people if not k.startswith("phone:")]
    assert len(deals) == pytest.approx(0.2 * len(with_email), abs=2)
    for deal in deals:
        group = people[deal["Email"].casefold()]
        dated = [r.created for r in group if r.created]
        # Pipedrive has no created date: the generator only puts people existing by then there.
        assert min(dated) < START.isoformat() if dated else group[0].file == PIPEDRIVE_FILE
        # A deal never predates its lead.
        assert not dated or min(dated) <= deal["Create Date"] <= deal["Stage Entered"]


def test_deal_fields_are_consistent(book: Book):
    truth = book.truth
    _, deals = _csv(book.opportunities)
    limits = dict(STAGES)
    past_rot = 0
    for d in deals:
        entered = dt.date.fromisoformat(d["Stage Entered"])
        assert START - dt.timedelta(days=40) <= entered < START
        assert dt.date.fromisoformat(d["Create Date"]) <= entered
        assert d["Stage"] in limits
        assert int(d["Amount"]) > 0
        assert d["Status"] in ("open", "won", "lost")
        if d["Status"] == "lost":
            assert d["Lost Reason"] in LOST_REASONS
            assert d["Lost Notes"]
        else:
            assert d["Lost Reason"] == d["Competitor"] == d["Lost Notes"] == ""
        if d["Lost Reason"] in ("competitor", "competitor_implemented"):
            assert d["Competitor"] in COMPETITORS
        if d["Status"] == "open":
            assert d["Close Date"] == ""
            past_rot += (START - entered).days > limits[d["Stage"]]
        else:
            assert entered <= dt.date.fromisoformat(d["Close Date"]) < START
    assert Counter(d["Stage"] for d in deals) == truth.deals_by_stage
    assert Counter(d["Status"] for d in deals) == truth.deals_by_status
    assert truth.deals_by_status["open"] > 0.8 * len(deals)
    assert truth.deals_by_status["won"] > 0 and truth.deals_by_status["lost"] > 0
    lost = Counter(d["Lost Reason"] for d in deals if d["Status"] == "lost")
    assert lost == truth.lost_by_reason
    assert past_rot == truth.open_past_rot_at_start
    assert past_rot < 0.25 * truth.deals_by_status["open"], "some, not most, already rotten"
    assert past_rot > 0 or truth.deals < 100


# --- activities -----------------------------------------------------------------------------


def test_every_activity_belongs_to_a_lead_and_falls_in_the_window(book: Book):
    people = people_of(read_leads(book.opportunities.parent))
    _, deals = _csv(book.opportunities)
    deal_email = {d["Deal ID"]: d["Email"].casefold() for d in deals}
    _, activities = _csv(book.activities)
    assert [a["Activity ID"] for a in activities] == [
        f"A-{i:06d}" for i in range(1, len(activities) + 1)
    ]
    kinds = {k.value for k in ActivityKind}
    end = dt.datetime.combine(book.end, dt.time(), tzinfo=dt.UTC)
    begin = dt.datetime.combine(START, dt.time(), tzinfo=dt.UTC)
    previous = begin
    for a in activities:
        assert a["Email"].casefold() in people
        assert a["Type"] in kinds
        when = dt.datetime.fromisoformat(a["Date"])
        assert when.utcoffset() == dt.timedelta(0)
        assert begin <= when < end
        assert when.weekday() < 5 and 9 <= when.hour < 17
        assert when >= previous, "the log is in time order"
        previous = when
        if a["Type"] in DEAL_KINDS:
            assert a["Deal ID"], a
        if a["Type"] == "auto_reply":
            assert a["Deal ID"] == ""
        if a["Deal ID"]:
            assert deal_email[a["Deal ID"]] == a["Email"].casefold()
    assert any(a["Email"] != a["Email"].lower() for a in activities), "some in another case"
    assert any(a["Type"] == "reply" and not a["Deal ID"] for a in activities)
    assert any(a["Type"] == "reply" and a["Deal ID"] for a in activities)


def test_replies_and_auto_replies_have_realistic_proportions(book: Book):
    truth = book.truth
    rows = read_leads(book.opportunities.parent)
    created: dict[str, dt.date] = {}
    for r in rows:
        if r.created and valid_email(r.email):
            day = dt.date.fromisoformat(r.created)
            created[r.email.casefold()] = min(day, created.get(r.email.casefold(), day))
    _, activities = _csv(book.activities)
    replies = Counter(a["Email"].casefold() for a in activities if a["Type"] == "reply")
    auto = {a["Email"].casefold() for a in activities if a["Type"] == "auto_reply"}
    assert Counter(a["Type"] for a in activities) == truth.activities_by_type
    assert len(activities) == truth.activities
    assert len(replies) == truth.replied_leads
    assert sum(1 for n in replies.values() if n > 1) == truth.replied_twice > 0
    assert len(auto - set(replies)) == truth.auto_reply_only_leads
    assert 0.2 < truth.replied_leads / truth.people < 0.3
    assert 0.03 < truth.auto_reply_only_leads / truth.people < 0.07
    for a in activities:
        if a["Type"] == "reply" and not a["Deal ID"] and a["Email"].casefold() in created:
            age = dt.datetime.fromisoformat(a["Date"]).date() - created[a["Email"].casefold()]
            assert dt.timedelta(days=2) <= age <= dt.timedelta(days=40)


def test_deal_stories_play_out_before_the_deals_would_rot(book: Book):
    truth = book.truth
    _, deals = _csv(book.opportunities)
    _, activities = _csv(book.activities)
    by_deal: dict[str, list[dict]] = defaultdict(list)
    for a in activities:
        if a["Deal ID"]:
            by_deal[a["Deal ID"]].append(a)
    limits = dict(STAGES)
    stories: Counter[str] = Counter()
    for deal in deals:
        log = by_deal[deal["Deal ID"]]
        if deal["Status"] != "open":
            assert not log, "closed deals have no new activity"
            continue
        rots = dt.date.fromisoformat(deal["Stage Entered"]) + dt.timedelta(limits[deal["Stage"]])
        missed_in_a_row = 0
        for a in log:
            if a["Type"] == "meeting_held":
                missed_in_a_row = 0
            missed_in_a_row += a["Type"] == "meeting_missed"
            if missed_in_a_row == 2 and a["Type"] == "meeting_missed":
                assert day(a) < rots
                stories["missed_meetings"] += 1
            if a["Type"] == "said_no":
                assert day(a) < rots
                assert a["Reason"] == "" or a["Reason"] in LOST_REASONS
                assert a["Notes"]
                if a["Reason"] in ("competitor", "competitor_implemented"):
                    assert a["Competitor"] in COMPETITORS
                else:
                    assert a["Competitor"] == ""
                stories["said_no"] += 1
            if a["Type"] == "named_followup":
                assert day(a) < rots
                later = dt.date.fromisoformat(a["Follow Up On"])
                assert day(a) + relativedelta(months=1) <= later <= day(a) + relativedelta(months=5)
                stories["named_followup"] += 1
        first_progress = next((a for a in log if a["Type"] in PROGRESS), None)
        if first_progress and not stories_ended(log):
            assert day(first_progress) < rots
            stories["progress"] += 1
        if not log or all(a["Type"] in ("call", "note") for a in log):
            stories["silent"] += 1
    assert stories == truth.deal_stories
    assert all(stories[s] > 0 for s in ("progress", "missed_meetings", "said_no", "silent"))
    said_no = Counter(a["Reason"] for a in activities if a["Type"] == "said_no")
    assert said_no == truth.said_no_by_reason
    assert {"competitor", "no_need", "out_of_business"} <= set(said_no)
    notes = [a["Notes"] for a in activities if a["Type"] == "named_followup"]
    assert "try me after Q2 budget" in notes


def day(activity: dict) -> dt.date:
    return dt.datetime.fromisoformat(activity["Date"]).date()


def stories_ended(log: list[dict]) -> bool:
    """A deal whose story is a no, a named follow-up or missed meetings (not plain progress)."""
    return any(a["Type"] in ("said_no", "named_followup", "meeting_missed") for a in log)


def test_truth_reads_as_a_mapping_of_headline_counts(book: Book):
    headline = dict(book.truth.items())
    assert headline["people"] == book.truth.people
    assert headline["lead rows"] == book.truth.lead_rows
    assert headline["duplicate rows"] == book.truth.merged_rows
    assert headline["junk rows"] == book.truth.rejected_rows
    assert book.end == START + dt.timedelta(days=book.days)
