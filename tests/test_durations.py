import pytest
from dateutil.relativedelta import relativedelta

from tasks.config.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("60 days", relativedelta(days=60)),
        ("1 day", relativedelta(days=1)),
        ("3 weeks", relativedelta(days=21)),
        ("4 months", relativedelta(months=4)),
        ("1 year 2 weeks", relativedelta(years=1, days=14)),
        (" 2 Months ", relativedelta(months=2)),
    ],
)
def test_human_durations(text: str, delta: relativedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["sixty days", "60", "60 dayz", "-3 days", "3 days ago", ""])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(DurationError, match="expected a duration such as '60 days'"):
        parse_duration(text)


def test_format_round_trips() -> None:
    assert parse_duration(format_duration(relativedelta(months=4, days=3))) == relativedelta(
        months=4, days=3
    )
