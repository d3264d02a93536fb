import pytest

from tasks.rules.conditions import BoolOp, Compare, ConditionError, Not, facts_used, parse_condition


def test_parses_the_documented_shapes() -> None:
    assert parse_condition("unanswered_emails >= 5") == Compare("unanswered_emails", ">=", 5)
    parsed = parse_condition("owner_idle_days >= 100 and status in [working, nurturing]")
    assert parsed == BoolOp(
        "and",
        (Compare("owner_idle_days", ">=", 100), Compare("status", "in", ("working", "nurturing"))),
    )
    assert parse_condition("not grade == A") == Not(Compare("grade", "==", "A"))
    assert parse_condition("'vip' in tags") == Compare("tags", "contains", "vip")
    assert facts_used(parsed) == {"owner_idle_days", "status"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unanswerd_emails >= 5", "did you mean 'unanswered_emails'"),
        ("score >= 'high'", "whole number"),
        ("status > 3", "is text"),
        ("grade >= A", "compare it with ==, != or in"),
        ("__import__('os').system('true')", "unexpected"),
        ("1 < score < 5", "chained comparison"),
        ("score >= other", "expected a number"),
        ("status in working", "takes a list"),
        ("unanswered_emails >=", "cannot parse"),
        ("", "expected a condition"),
    ],
)
def test_rejects_with_a_message_that_says_what_is_expected(text: str, expected: str) -> None:
    with pytest.raises(ConditionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_condition(text)
