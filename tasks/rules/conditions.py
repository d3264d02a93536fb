"""The rule condition language: parsed with Python's own grammar, never evaluated.

``unanswered_emails >= 5 and status in [working, nurturing]`` is parsed by :mod:`ast` into a
small typed tree of our own (comparisons over known facts, ``and``/``or``/``not``), checked
against the documented facts and their types, and later compiled to SQL (see ``compile.py``).
No Python code from the config is ever executed.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from typing import Literal

FactType = Literal["int", "str", "list"]

# The documented facts a rule may test, with their types. See README, "Rule facts".
FACTS: dict[str, FactType] = {
    "unanswered_emails": "int",
    "emails_sent": "int",
    "days_since_last_reply": "int",
    "days_since_last_touch": "int",
    "owner_idle_days": "int",
    "missed_meetings": "int",
    "score": "int",
    "grade": "str",
    "status": "str",
    "source": "str",
    "country": "str",
    "tags": "list",
    "budget": "str",
    "authority": "str",
    "need": "str",
    "timing": "str",
}

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "not contains"]
Value = int | str | tuple[int | str, ...]

_OPS: dict[type[ast.cmpop], Op] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}


@dataclass(frozen=True)
class Compare:
    fact: str
    op: Op
    value: Value


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    operand: Condition


Condition = Compare | BoolOp | Not


class ConditionError(ValueError):
    """A condition that does not parse or does not type-check; the message says what is expected."""


def parse_condition(text: str) -> Condition:
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("expected a condition such as 'unanswered_emails >= 5'")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"cannot parse {text!r}: {exc.msg} at column {exc.offset}") from None
    return _convert(tree.body)


def facts_used(condition: Condition) -> set[str]:
    match condition:
        case Compare(fact=fact):
            return {fact}
        case BoolOp(operands=operands):
            return set().union(*(facts_used(o) for o in operands))
        case Not(operand=operand):
            return facts_used(operand)
    raise AssertionError(condition)


def _convert(node: ast.expr) -> Condition:
    if isinstance(node, ast.BoolOp):
        op: Literal["and", "or"] = "and" if isinstance(node.op, ast.And) else "or"
        return BoolOp(op, tuple(_convert(v) for v in node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Not(_convert(node.operand))
    if isinstance(node, ast.Compare):
        return _compare(node)
    raise ConditionError(
        f"unexpected {_describe(node)} at column {node.col_offset + 1}: a condition is "
        "comparisons of facts (e.g. 'score >= 40') joined with and / or / not"
    )


def _compare(node: ast.Compare) -> Condition:
    if len(node.ops) != 1:
        # 10 <= x < 20 reads well but hides an 'and'; make it explicit.
        raise ConditionError(
            f"chained comparison at column {node.col_offset + 1}: write it with 'and'"
        )
    op_type = type(node.ops[0])
    if op_type not in _OPS:
        raise ConditionError(f"operator not supported at column {node.col_offset + 1}")
    op = _OPS[op_type]
    left, right = node.left, node.comparators[0]
    # 'vip' in tags: membership in a list fact.
    if op in ("in", "not in") and isinstance(right, ast.Name) and FACTS.get(right.id) == "list":
        tag = _literal(left, bare_words=True)
        if not isinstance(tag, str):
            raise ConditionError(f"'{op} {right.id}' takes a text value, got {tag!r}")
        return Compare(right.id, "contains" if op == "in" else "not contains", tag)
    fact = _fact(left)
    kind = FACTS[fact]
    if kind == "list":
        raise ConditionError(f"'{fact}' is a list: test it as \"'value' in {fact}\"")
    value = _literal(right, bare_words=kind == "str")
    if op in ("in", "not in"):
        if not isinstance(value, tuple):
            raise ConditionError(f"'{fact} {op}' takes a list such as [a, b], got {value!r}")
        for item in value:
            _check_type(fact, kind, item)
    else:
        if isinstance(value, tuple):
            raise ConditionError(f"'{fact} {op}' takes one value, not a list")
        _check_type(fact, kind, value)
        if kind == "str" and op not in ("==", "!="):
            raise ConditionError(f"'{fact}' is text: compare it with ==, != or in, not {op}")
    return Compare(fact, op, value)


def _fact(node: ast.expr) -> str:
    if not isinstance(node, ast.Name):
        raise ConditionError(
            f"expected a fact name on the left at column {node.col_offset + 1}, "
            f"got {_describe(node)}"
        )
    if node.id not in FACTS:
        close = difflib.get_close_matches(node.id, FACTS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConditionError(
            f"unknown fact '{node.id}'{hint} (known facts: {', '.join(sorted(FACTS))})"
        )
    return node.id


def _literal(node: ast.expr, *, bare_words: bool) -> Value:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | str):
        if isinstance(node.value, bool):
            raise ConditionError("true/false are not values here: use yes / no text")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand, bare_words=False)
        if isinstance(inner, int):
            return -inner
    if bare_words and isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = tuple(_literal(e, bare_words=True) for e in node.elts)
        if any(isinstance(i, tuple) for i in items):
            raise ConditionError("lists cannot be nested")
        return items  # type: ignore[return-value]
    if isinstance(node, ast.Name) and node.id in FACTS:
        raise ConditionError(f"compare a fact with a value, not with another fact ('{node.id}')")
    raise ConditionError(
        f"expected a number, a word or a list at column {node.col_offset + 1}, "
        f"got {_describe(node)}"
    )


def _check_type(fact: str, kind: FactType, value: int | str) -> None:
    if kind == "int" and not isinstance(value, int):
        raise ConditionError(f"'{fact}' is a whole number, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ConditionError(f"'{fact}' is text, got {value!r}")


def _describe(node: ast.AST) -> str:
    try:
        return f"'{ast.unparse(node)}'"
    except Exception:  # pragma: no cover - unparse handles every expression we can parse
        return type(node).__name__
