"""Compile a parsed condition to a SQLAlchemy WHERE clause over ``leads``."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import ColumnElement, String, and_, cast, false, not_, or_, true

from tasks.rules.conditions import BoolOp, Compare, Condition, Not
from tasks.rules.facts import DAYS_FACTS


class FactSource(Protocol):
    """Where a condition reads its facts: SQL expressions, or columns of a query computing them."""

    def value(self, fact: str) -> Any: ...

    def days_bound(self, days: int) -> dt.datetime: ...


def compile_condition(condition: Condition, facts: FactSource) -> ColumnElement[bool]:
    match condition:
        case BoolOp(op="and", operands=operands):
            return and_(true(), *(compile_condition(o, facts) for o in operands))
        case BoolOp(op="or", operands=operands):
            return or_(false(), *(compile_condition(o, facts) for o in operands))
        case Not(operand=operand):
            return not_(compile_condition(operand, facts))
        case Compare(fact=fact, op=op, value=value):
            if fact in DAYS_FACTS:
                return _days(facts, fact, op, value)
            return _compare(facts.value(fact), op, value)
    raise AssertionError(condition)


def _compare(column: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    if op == "contains":
        # Tags are a JSON list: match the quoted element in its text form (same on both stores).
        return cast(column, String).like(f'%"{value}"%')
    if op == "not contains":
        return not_(cast(column, String).like(f'%"{value}"%'))
    if op == "in":
        return column.in_(list(value))
    if op == "not in":
        return column.not_in(list(value))
    return {
        "==": column == value,
        "!=": column != value,
        "<": column < value,
        "<=": column <= value,
        ">": column > value,
        ">=": column >= value,
    }[op]


def _days(facts: FactSource, fact: str, op: str, value: Any) -> ColumnElement[bool]:
    """``days_since_x OP n`` as a comparison of the timestamp x with ``as_of - n days``.

    With whole days d = floor((as_of - x) / 1 day): d >= n  <=>  x <= as_of - n days.
    A NULL timestamp (it never happened) satisfies no comparison, as in SQL.
    """
    at = facts.value(fact)

    def at_least(n: int) -> ColumnElement[bool]:
        return at <= facts.days_bound(n)

    if op in ("in", "not in"):
        clauses = [and_(at_least(n), not_(at_least(n + 1))) for n in value]
        either = or_(false(), *clauses)
        return either if op == "in" else and_(at.is_not(None), not_(either))
    return {
        ">=": lambda: at_least(value),
        ">": lambda: at_least(value + 1),
        "<": lambda: and_(at.is_not(None), not_(at_least(value))),
        "<=": lambda: and_(at.is_not(None), not_(at_least(value + 1))),
        "==": lambda: and_(at_least(value), not_(at_least(value + 1))),
        "!=": lambda: and_(at.is_not(None), not_(and_(at_least(value), not_(at_least(value + 1))))),
    }[op]()
