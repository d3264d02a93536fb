"""The schema of marketing's YAML under ``config/``: one pydantic model per file.

Field names are the YAML keys. Every model forbids unknown keys so a typo is an error with a
line number, not a silently ignored setting.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from dateutil.relativedelta import relativedelta
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import BeforeValidator

from tasks.config.durations import format_duration, parse_duration
from tasks.rules.conditions import Condition, parse_condition
from tasks.store.models import LostReason


def _duration(value: Any) -> relativedelta:
    if isinstance(value, relativedelta):
        return value
    return parse_duration(value)


def _condition(value: Any) -> Condition:
    if isinstance(value, str):
        return parse_condition(value)
    raise ValueError("expected a condition such as 'unanswered_emails >= 5'")


Duration = Annotated[
    relativedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(\d+\s*(day|week|month|year)s?\s*)+$"}),
]
ConditionText = Annotated[
    Condition,
    BeforeValidator(_condition),
    WithJsonSchema({"type": "string", "description": "e.g. unanswered_emails >= 5"}),
]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


# --- pipeline.yaml ---------------------------------------------------------------------------


class Stage(Strict):
    name: Name
    rot_after: Duration = Field(description="A deal in this stage with no progress for this long")


class ExitEmail(Strict):
    template: Name
    not_for: list[LostReason] = Field(default_factory=list)


class DeadDeals(Strict):
    missed_meetings: int = Field(2, ge=1, description="Missed meetings that close a deal")
    rot_reason: LostReason = LostReason.UNRESPONSIVE
    missed_meetings_reason: LostReason = LostReason.UNRESPONSIVE
    said_no_default_reason: LostReason = LostReason.OTHER
    grace_period: Duration = Field(default_factory=lambda: relativedelta(days=7))
    no_activity_after: Duration | None = Field(
        None,
        description="A deal with no activity at all for this long is closed, whatever its stage",
    )
    warn_owner_before: Duration | None = Field(
        None,
        description="Warn the owner this long before a deal rots (a decision and a report line)",
    )
    exit_email: ExitEmail


class Pipeline(Strict):
    stages: list[Stage] = Field(min_length=1)
    dead_deals: DeadDeals
    competitors: list[str] = Field(default_factory=list)

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, stages: list[Stage]) -> list[Stage]:
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique, repeated: {', '.join(dupes)}")
        return stages

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


# --- followups.yaml --------------------------------------------------------------------------


class Reopen(Strict):
    template: Name
    cadence: Name


class FollowUps(Strict):
    default_delay: Duration
    per_reason: dict[LostReason, Duration] = Field(default_factory=dict)
    never_for: list[LostReason] = Field(default_factory=list)
    holidays: list[dt.date] = Field(default_factory=list)
    reopen: Reopen
    whats_new: list[str] = Field(default_factory=list)

    def delay_for(self, reason: LostReason | None) -> relativedelta:
        return self.per_reason.get(reason, self.default_delay) if reason else self.default_delay


# --- rules.yaml ------------------------------------------------------------------------------

# Dates a rule can follow up on, as their facts are documented in the README ("Rule facts").
DATE_FACTS = ("named_followup_date",)


class FollowUpWhen(Strict):
    """When a rule's follow-up falls due: on a date fact, else after a delay (either may be absent).

    Written as one phrase: ``60 days``, ``named_followup_date``, or
    ``named_followup_date or 4 months`` (the date the prospect named, else four months).
    """

    on: str | None = None
    after: relativedelta | None = None

    @model_validator(mode="before")
    @classmethod
    def _phrase(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        parts = [p.strip() for p in value.split(" or ")]
        if len(parts) > 2 or not all(parts):
            raise ValueError(_FOLLOW_UP_SHAPES)
        on = parts[0] if parts[0] in DATE_FACTS else None
        rest = parts[1:] if on else parts
        if on is None and len(parts) == 2:
            raise ValueError(f"unknown date fact {parts[0]!r}; {_FOLLOW_UP_SHAPES}")
        if on is None and rest and not _looks_like_duration(rest[0]):
            raise ValueError(f"unknown date fact {rest[0]!r}; {_FOLLOW_UP_SHAPES}")
        return {"on": on, "after": _duration(rest[0]) if rest else None}

    def due_on(self, as_of: dt.date, named: dt.date | None) -> tuple[dt.date, str] | None:
        """The day to follow up and its basis, or None when neither the date nor a delay applies.

        A named date already passed is no date: the delay (if any) applies instead.
        """
        if self.on and named and named > as_of:
            return named, self.on
        if self.after is not None:
            return as_of + self.after, "rule_delay"
        return None

    def __str__(self) -> str:
        parts = [p for p in (self.on, self.after and format_duration(self.after)) if p]
        return " or ".join(parts)


_FOLLOW_UP_SHAPES = (
    "expected a duration ('60 days'), a date fact (" + ", ".join(DATE_FACTS) + "), or both "
    "as 'named_followup_date or 4 months'"
)


def _looks_like_duration(text: str) -> bool:
    return text[:1].isdigit()


FollowUpPhrase = Annotated[
    FollowUpWhen,
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"type": "string", "description": "e.g. 60 days | named_followup_date or 4 months"}
    ),
]


def _action_schema(schema: dict[str, Any]) -> None:
    # As written in YAML: a bare word for the flag actions, else an object with one key.
    obj = dict(schema)
    obj["minProperties"] = obj["maxProperties"] = 1
    schema.clear()
    schema["anyOf"] = [{"enum": ["release_owner", "exit_cadences"]}, obj]


class Action(Strict):
    """One prescribed action; exactly one key is set, as in ``- disqualify: unresponsive``."""

    model_config = ConfigDict(json_schema_extra=_action_schema)

    disqualify: LostReason | None = None
    send: Name | None = None
    follow_up: FollowUpPhrase | None = None
    release_owner: bool | None = None
    exit_cadences: bool | None = None
    tag: Name | None = None
    set_grade: Literal["A", "B", "C", "D"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_word(cls, value: Any) -> Any:
        # `then: [release_owner]` reads better than `then: [{release_owner: true}]`.
        if value in ("release_owner", "exit_cadences"):
            return {value: True}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        if len(self.model_fields_set) != 1:
            raise ValueError(
                "each action sets exactly one of: disqualify, send, follow_up, release_owner, "
                "exit_cadences, tag, set_grade"
            )
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_fields_set))


class Rule(Strict):
    name: Name
    when: ConditionText
    then: list[Action] = Field(min_length=1)
    enabled: bool = True
    description: str | None = None


class Rules(Strict):
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[Rule]) -> list[Rule]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(dupes)}")
        return rules


# --- cadences.yaml ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessDays:
    """A wait counted in business days: weekends and the recipient's holidays do not count."""

    days: int

    def __str__(self) -> str:
        return f"{self.days} business day{'s' if self.days != 1 else ''}"


def _wait(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s+business\s+days?\s*", value, re.IGNORECASE)
        if match:
            return BusinessDays(int(match.group(1)))
    return _duration(value)


def _show_wait(value: relativedelta | BusinessDays) -> str:
    return str(value) if isinstance(value, BusinessDays) else format_duration(value)


Wait = Annotated[
    relativedelta | BusinessDays,
    BeforeValidator(_wait),
    PlainSerializer(_show_wait, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*((\d+\s*(day|week|month|year)s?\s*)+|\d+\s+business\s+days?)\s*$",
            "examples": ["4 days", "3 business days", "1 month"],
        }
    ),
]


class Step(Strict):
    wait: Wait = Field(
        default_factory=relativedelta,
        description="Time after the previous step (or after enrolment); "
        "ignored in a cadence with a schedule",
    )
    template: Name
    window: BusinessHours | None = Field(
        default=None,
        description="This step's own send window in the recipient's zone, instead of "
        "sending.yaml's business_hours (e.g. mornings only)",
    )


def _rrule(value: Any) -> Any:
    from dateutil.rrule import rrulestr

    if not isinstance(value, str):
        raise ValueError("expected an RRULE such as 'FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2'")
    try:
        rrulestr(value, dtstart=dt.datetime(2026, 1, 1))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a valid RRULE ({exc})") from None
    return value


class Cadence(Strict):
    """A sequence of emails. Every cadence ends for a lead who replies, unsubscribes, bounces, is
    disqualified or becomes a customer; these add exits of its own."""

    description: str | None = None
    enrol: Literal["new_leads", "reopened", "audience", "manual"] = "manual"
    audience: ConditionText | None = Field(
        default=None,
        description="enrol: audience - who is enrolled each day, a condition over lead facts "
        "(status, grade, source, country, tags, timing, ...)",
    )
    reenrol: Literal["once", "if_not_active", "anytime"] = Field(
        default="if_not_active",
        description="Audience enrolment: once ever, again once not active, or anytime",
    )
    min_gap: Duration = Field(
        default_factory=relativedelta,
        description="Audience enrolment: at least this long since the lead's last enrolment ended",
    )
    exclusive: bool = Field(
        default=False, description="A lead is in at most one exclusive cadence at a time"
    )
    schedule: Annotated[str, BeforeValidator(_rrule)] | None = Field(
        default=None,
        description="An RRULE: step k goes out at the rule's k-th occurrence after enrolment "
        "(waits ignored), e.g. FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2",
    )
    steps: list[Step] = Field(min_length=1)
    catch_up: Literal["next_step", "latest"] = Field(
        default="next_step",
        description="An enrolment found overdue (a paused cadence, a run that did not happen): "
        "send its next step (next_step) or skip to the latest step whose time has come (latest); "
        "either way one email, and the step after waits its full interval",
    )
    exit_on_meeting_booked: bool = Field(
        default=False, description="End for a lead once a meeting is booked with them"
    )
    exit_on_stage: Name | None = Field(
        default=None, description="End once the lead has a deal in this stage or a later one"
    )
    on_change: Literal["finish_started", "next_step"] = Field(
        default="finish_started",
        description="When this cadence is edited, leads already in it finish the version they "
        "started (finish_started) or take the new one from their next step (next_step)",
    )

    def snapshot(self) -> list[dict[str, Any]]:
        return [step.model_dump(mode="json") for step in self.steps]

    @model_validator(mode="after")
    def _audience_when_needed(self) -> Cadence:
        if self.enrol == "audience" and self.audience is None:
            raise ValueError("enrol: audience needs an audience condition")
        if self.audience is not None and self.enrol != "audience":
            raise ValueError("an audience is only read with enrol: audience")
        return self


class Caps(Strict):
    """Limits across every cadence: a step that would break one waits a day."""

    per_lead_per_week: int | None = Field(
        default=None, ge=1, description="Emails a lead gets in any 7 days, all cadences together"
    )
    per_domain_per_day: int | None = Field(
        default=None, ge=1, description="Cadence emails to one recipient domain per day"
    )
    per_owner_per_day: int | None = Field(
        default=None, ge=1, description="Cadence emails sent in one owner's name per day"
    )


class Cadences(Strict):
    cadences: dict[Name, Cadence]
    # Days that are not business days, for waits in business days: per country (ISO code), and
    # ``default`` for recipients of any other country or none.
    holidays: dict[str, list[dt.date]] = Field(default_factory=dict)
    caps: Caps = Field(default_factory=Caps)

    def exclusive_except(self, name: str) -> list[str]:
        """The exclusive cadences other than ``name``."""
        return [n for n, c in self.cadences.items() if c.exclusive and n != name]

    def holidays_for(self, country: str | None) -> list[dt.date]:
        if country and country.upper() in self.holidays:
            return self.holidays[country.upper()]
        return self.holidays.get("default", [])


# --- sending.yaml ----------------------------------------------------------------------------


WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


class BusinessHours(Strict):
    """When email may reach a recipient, in their own time zone."""

    start: dt.time = dt.time(0, 0)
    end: dt.time = dt.time(23, 59, 59)
    days: Annotated[
        list[int],
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "items": {"enum": list(WEEKDAYS)},
                "description": "Days of the week: mon ... sun",
            }
        ),
    ] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7], min_length=1)

    @field_validator("days", mode="before")
    @classmethod
    def _day_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            names = [str(v).strip().lower()[:3] for v in value]
            unknown = [v for v, n in zip(value, names, strict=True) if n not in WEEKDAYS]
            if unknown:
                raise ValueError(f"unknown day(s) {unknown}: use mon, tue, wed, thu, fri, sat, sun")
            return sorted({WEEKDAYS[n] for n in names})
        return value

    @model_validator(mode="after")
    def _opens_before_it_closes(self) -> BusinessHours:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class Sending(Strict):
    from_email: str
    from_name: str
    reply_to: str | None = None
    postal_address: str = Field(min_length=5)
    unsubscribe_url: str
    send_hour_utc: int = Field(14, ge=0, le=23, description="Hour of day cadence emails are due")
    send_time_local: dt.time | None = Field(
        default=None,
        description="Time of day cadence emails are due in the recipient's own zone (DST "
        "kept: 10:00 stays 10:00); instead of send_hour_utc",
    )
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    default_timezone: str = Field(
        "UTC", description="A recipient's time zone when neither phone nor country tells"
    )
    max_per_second: float | None = Field(
        default=None, gt=0, description="Most emails handed to SendGrid per second; none: no cap"
    )
    lateness: Duration = Field(
        default_factory=lambda: relativedelta(days=2),
        description="An email this long past due is skipped (skipped_late), never sent late",
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/Berlin)") from None
        return value


# --- owners.yaml -----------------------------------------------------------------------------


Region = Annotated[str, Field(min_length=1, max_length=64)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Strategy = Literal["by_region", "round_robin"]


def _round_robin_only() -> list[Strategy]:
    return ["round_robin"]


class OwnerEntry(Strict):
    name: str
    email: str
    region: Region | None = None
    max_open_leads: int | None = Field(
        default=None, ge=1, description="This rep's cap, instead of assignment.max_open_leads"
    )


class Assignment(Strict):
    """How a lead without an owner gets one; a lead that has an owner always keeps it.

    ``strategy`` lists the pools to try, in order: ``by_region`` (the active reps of the region
    the lead's country belongs to) and ``round_robin`` (every active rep). Each pool is a round
    robin that remembers its place; a rep at their cap of open leads is skipped.
    """

    strategy: list[Strategy] = Field(default_factory=_round_robin_only, min_length=1)
    regions: dict[Region, list[CountryCode]] = Field(
        default_factory=dict, description="Region -> the countries (ISO codes) it covers"
    )
    max_open_leads: int | None = Field(
        default=None,
        ge=1,
        description="Open leads (new, working, nurturing, qualified) a rep may own",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_word(cls, value: Any) -> Any:
        # `assignment: round_robin` (the older form) is a strategy list of one.
        if isinstance(value, str):
            return {"strategy": [value]}
        return value

    @field_validator("strategy")
    @classmethod
    def _unique_strategies(cls, strategy: list[str]) -> list[str]:
        if len(set(strategy)) != len(strategy):
            raise ValueError("each strategy may be listed once")
        return strategy

    @field_validator("regions")
    @classmethod
    def _one_region_per_country(cls, regions: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for region, countries in regions.items():
            for country in countries:
                if country in seen and seen[country] != region:
                    raise ValueError(f"{country} is in both {seen[country]} and {region}")
                seen[country] = region
        return regions

    @model_validator(mode="after")
    def _regions_for_by_region(self) -> Assignment:
        if "by_region" in self.strategy and not self.regions:
            raise ValueError("strategy by_region needs regions: {REGION: [country codes]}")
        return self

    def region_of(self, country: str | None) -> str | None:
        if not country:
            return None
        return next((r for r, codes in self.regions.items() if country.upper() in codes), None)


class Owners(Strict):
    assignment: Assignment = Field(default_factory=Assignment)
    owners: list[OwnerEntry] = Field(min_length=1)

    def region_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Reps whose region is not one of ``assignment.regions``: (location, message)."""
        if not self.assignment.regions:
            return []
        known = ", ".join(sorted(self.assignment.regions))
        return [
            (("owners", i, "region"), f"unknown region '{o.region}' (assignment.regions: {known})")
            for i, o in enumerate(self.owners)
            if o.region is not None and o.region not in self.assignment.regions
        ]


# --- grading.yaml ----------------------------------------------------------------------------

Grade = Literal["A", "B", "C", "D"]
# Lead fields whose presence earns completeness points.
CompletenessField = Literal[
    "email", "phone", "first_name", "last_name", "company", "title", "website", "industry",
    "employees", "country",
]  # fmt: skip


class GradeRule(Strict):
    grade: Grade
    when: ConditionText
    description: str | None = None


class PointsIf(Strict):
    """Points when the lead's value is one of ``values`` (text compared case-blind)."""

    points: int = Field(ge=-100, le=100)
    values: list[str] = Field(min_length=1)


class CountryPoints(Strict):
    """Points when the lead's country (ISO code) is one of ``values``."""

    points: int = Field(ge=-100, le=100)
    values: list[CountryCode] = Field(min_length=1)


class SizeBand(Strict):
    """Points for a company of ``min`` to ``max`` employees (both included; no max: no bound)."""

    min: int = Field(default=0, ge=0)
    max: int | None = Field(default=None, ge=0)
    points: int = Field(ge=-100, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> SizeBand:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class TitlePoints(Strict):
    """Points when the title holds one of ``keywords`` as whole words (seniority)."""

    points: int = Field(ge=-100, le=100)
    keywords: list[Annotated[str, Field(pattern=r"^\w+( \w+)*$")]] = Field(min_length=1)


class Fit(Strict):
    """Fit to the ideal customer profile."""

    countries: CountryPoints | None = None
    industries: PointsIf | None = None
    sizes: list[SizeBand] = Field(default_factory=list, description="The first band that holds")
    titles: TitlePoints | None = None


class Engagement(Strict):
    """Points that fade: each is worth half as much one ``half_life`` later."""

    half_life: Duration = Field(default_factory=lambda: relativedelta(days=30))
    reply: int = Field(default=0, ge=-100, le=100, description="For a real reply today")
    touch: int = Field(
        default=0, ge=-100, le=100, description="For the latest touch, either way, today"
    )
    unanswered_email: int = Field(
        default=0, ge=-100, le=100, description="For each unanswered email"
    )

    @field_validator("half_life")
    @classmethod
    def _positive(cls, value: relativedelta) -> relativedelta:
        if value == relativedelta():
            raise ValueError("half_life must be longer than 0 days")
        return value


class Score(Strict):
    """A score of 0-100: the sum of these points, clamped."""

    source: dict[Name, int] = Field(default_factory=dict, description="Points per lead source")
    other_sources: int = Field(default=0, description="Points for a source not listed")
    completeness: dict[CompletenessField, int] = Field(default_factory=dict)
    fit: Fit = Field(default_factory=Fit)
    engagement: Engagement = Field(default_factory=Engagement)


class Grading(Strict):
    # Ordered: the first grade whose condition holds wins, else ``default``.
    grades: list[GradeRule] = Field(default_factory=list)
    default: Grade = "C"
    score: Score = Field(default_factory=Score)


# --- ingest.yaml -----------------------------------------------------------------------------

LeadField = Literal[
    "email", "first_name", "last_name", "full_name", "phone", "company", "title", "website",
    "industry", "employees", "country", "source", "created", "budget", "authority", "need",
    "timing", "tags",
]  # fmt: skip


class Ingest(Strict):
    columns: dict[str, LeadField] = Field(
        default_factory=dict,
        description="Headers of your exports -> Nurture fields, beyond the built-in aliases",
    )
    source_trust: list[Name] = Field(
        default_factory=list,
        description="Lead sources, most trusted first: whose values win when rows merge",
    )
    sources: dict[str, Name] = Field(
        default_factory=dict,
        description="Other names of a lead source -> the source (as written in your exports)",
    )

    @field_validator("sources")
    @classmethod
    def _slugged(cls, sources: dict[str, str]) -> dict[str, str]:
        from tasks.ingest.normalise import source_slug

        # Written as exports spell them ("Referrals", "Word of mouth"); matched as slugs.
        return {source_slug(other): source for other, source in sources.items()}


# --- the whole directory ---------------------------------------------------------------------

# file name -> (model, key in NurtureConfig)
FILES: dict[str, type[Strict]] = {
    "pipeline.yaml": Pipeline,
    "followups.yaml": FollowUps,
    "rules.yaml": Rules,
    "cadences.yaml": Cadences,
    "sending.yaml": Sending,
    "owners.yaml": Owners,
    "ingest.yaml": Ingest,
    "grading.yaml": Grading,
}


# Step names BusinessHours, defined with sending.yaml's models further down.
Step.model_rebuild()
