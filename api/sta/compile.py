"""OData syntax trees to parameterised SQL compositions over one entity set's source.

Property names resolve to the entity set's known columns (quoted identifiers), literals become
placeholders with explicit casts, functions come from a fixed table: no text of the request
ever reaches the SQL itself. Type errors (a time compared with a number) are refused here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from psycopg import sql

from api.sta.model import EntitySet, Property, PropType, Row, from_micros, micros
from api.sta.odata import ARITHMETIC, Binary, Call, Lit, Node, Not, Order, Prop, QueryError

_CASTS: dict[PropType, str] = {
    "string": "text",
    "number": "float8",
    "datetime": "timestamptz",
    "boolean": "boolean",
}
_OPERATORS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "datetime": "a date-time",
    "boolean": "a condition",
    "null": "null",
}


@dataclass(slots=True)
class Params:
    """Named query parameters collected while composing."""

    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any, cast: str | None = None) -> sql.Composable:
        name = f"p{len(self.values)}"
        self.values[name] = value
        placeholder = sql.Placeholder(name)
        if cast is None:
            return placeholder
        return sql.SQL("{}::{}").format(placeholder, sql.SQL(cast))


@dataclass(frozen=True, slots=True)
class Typed:
    sql: sql.Composable
    type: PropType | None  # None: the null literal
    nullable: bool


def column(name: str) -> sql.Composable:
    return sql.Identifier("e", name)


def resolve(es: EntitySet, path: str) -> Property:
    """The property ``path`` of the entity set, or a 400 naming those that exist."""
    found = es.properties.get(path)
    if found is None:
        names = ", ".join(sorted(p for p in es.properties if p != "@iot.id"))
        raise QueryError(f"{es.name} have no property {path[:60]!r}; known: {names}")
    return found


def compile_filter(node: Node, es: EntitySet, params: Params) -> sql.Composable:
    """The WHERE condition of a ``$filter``."""
    typed = _compile(node, es, params)
    if typed.type != "boolean":
        raise QueryError(
            f"$filter must be a condition (true or false), not {_TYPE_NAMES[typed.type or 'null']}"
        )
    return _definite(typed)


def _definite(typed: Typed) -> sql.Composable:
    # OData has two-valued logic: a comparison with a missing value is false, also under `not`.
    if typed.nullable:
        return sql.SQL("coalesce({}, false)").format(typed.sql)
    return typed.sql


def _describe(node: Node) -> str:
    if isinstance(node, Prop):
        return node.path
    if isinstance(node, Lit):
        return (
            repr(node.value)[:40]
            if not isinstance(node.value, datetime)
            else node.value.isoformat()
        )
    if isinstance(node, Call):
        return f"{node.name}(...)"
    return "the expression"


def _compile(node: Node, es: EntitySet, params: Params) -> Typed:
    if isinstance(node, Lit):
        value = node.value
        if value is None:
            return Typed(sql.SQL("NULL"), None, True)
        if isinstance(value, bool):
            return Typed(sql.SQL("true" if value else "false"), "boolean", False)
        if isinstance(value, float):
            return Typed(params.add(value, "float8"), "number", False)
        if isinstance(value, datetime):
            return Typed(params.add(value, "timestamptz"), "datetime", False)
        return Typed(params.add(value, "text"), "string", False)
    if isinstance(node, Prop):
        prop = resolve(es, node.path)
        return Typed(column(prop.column), prop.type, prop.nullable)
    if isinstance(node, Not):
        inner = _compile(node.operand, es, params)
        if inner.type != "boolean":
            raise QueryError("'not' applies to a condition")
        return Typed(sql.SQL("(NOT {})").format(_definite(inner)), "boolean", False)
    if isinstance(node, Call):
        return _call(node, es, params)
    left, right = _compile(node.left, es, params), _compile(node.right, es, params)
    if node.op in {"and", "or"}:
        if left.type != "boolean" or right.type != "boolean":
            raise QueryError(f"'{node.op}' joins conditions, such as result gt 1")
        joined = sql.SQL("({} {} {})").format(
            _definite(left), sql.SQL(node.op.upper()), _definite(right)
        )
        return Typed(joined, "boolean", False)
    if node.op in ARITHMETIC:
        return _arithmetic(node, left, right)
    return _comparison(node, left, right)


def _comparison(node: Binary, left: Typed, right: Typed) -> Typed:
    if left.type is None or right.type is None:
        if node.op not in {"eq", "ne"}:
            raise QueryError(f"null can only be compared with eq or ne, not {node.op}")
        if left.type is None and right.type is None:
            return Typed(sql.SQL("true" if node.op == "eq" else "false"), "boolean", False)
        operand = left if right.type is None else right
        test = "IS NULL" if node.op == "eq" else "IS NOT NULL"
        return Typed(sql.SQL("({} {})").format(operand.sql, sql.SQL(test)), "boolean", False)
    if left.type != right.type:
        raise QueryError(
            f"cannot compare {_describe(node.left)} ({_TYPE_NAMES[left.type]}) with "
            f"{_describe(node.right)} ({_TYPE_NAMES[right.type]})"
        )
    if left.type == "boolean" and node.op not in {"eq", "ne"}:
        raise QueryError(f"conditions can only be compared with eq or ne, not {node.op}")
    nullable = left.nullable or right.nullable
    if node.op == "ne" and nullable:
        # A missing value differs from any value.
        return Typed(
            sql.SQL("({} IS DISTINCT FROM {})").format(left.sql, right.sql), "boolean", False
        )
    compared = sql.SQL("({} {} {})").format(left.sql, sql.SQL(_OPERATORS[node.op]), right.sql)
    return Typed(compared, "boolean", nullable)


def _arithmetic(node: Binary, left: Typed, right: Typed) -> Typed:
    if left.type != "number" or right.type != "number":
        raise QueryError(f"'{node.op}' works on numbers only")
    a, b = left.sql, right.sql
    nullable = left.nullable or right.nullable
    # Division by zero gives no value (the comparison is then false) instead of an error.
    expressions = {
        "add": sql.SQL("({} + {})").format(a, b),
        "sub": sql.SQL("({} - {})").format(a, b),
        "mul": sql.SQL("({} * {})").format(a, b),
        "div": sql.SQL("({} / nullif({}, 0))").format(a, b),
        "mod": sql.SQL("({0} - {1} * trunc({0} / nullif({1}, 0)))").format(a, b),
    }
    return Typed(expressions[node.op], "number", nullable or node.op in {"div", "mod"})


# name -> (argument types, result type, SQL template with {0}, {1} for the arguments)
_FUNCTIONS: dict[str, tuple[tuple[PropType, ...], PropType, str]] = {
    "startswith": (("string", "string"), "boolean", "starts_with({0}, {1})"),
    "endswith": (("string", "string"), "boolean", "(right({0}, length({1})) = {1})"),
    "substringof": (("string", "string"), "boolean", "(strpos({1}, {0}) > 0)"),
    "contains": (("string", "string"), "boolean", "(strpos({0}, {1}) > 0)"),
    "tolower": (("string",), "string", "lower({0})"),
    "toupper": (("string",), "string", "upper({0})"),
    "trim": (("string",), "string", "btrim({0})"),
    "length": (("string",), "number", "length({0})::float8"),
    "year": (("datetime",), "number", "extract(year FROM {0} AT TIME ZONE 'UTC')::float8"),
    "month": (("datetime",), "number", "extract(month FROM {0} AT TIME ZONE 'UTC')::float8"),
    "day": (("datetime",), "number", "extract(day FROM {0} AT TIME ZONE 'UTC')::float8"),
    "hour": (("datetime",), "number", "extract(hour FROM {0} AT TIME ZONE 'UTC')::float8"),
    "minute": (("datetime",), "number", "extract(minute FROM {0} AT TIME ZONE 'UTC')::float8"),
    "second": (("datetime",), "number", "floor(extract(second FROM {0}))::float8"),
    "round": (("number",), "number", "round({0})"),
    "floor": (("number",), "number", "floor({0})"),
    "ceiling": (("number",), "number", "ceil({0})"),
    "now": ((), "datetime", "now()"),
}


def _call(node: Call, es: EntitySet, params: Params) -> Typed:
    spec = _FUNCTIONS.get(node.name)
    if spec is None:
        raise QueryError(
            f"function {node.name[:40]!r} is not supported; supported: {', '.join(sorted(_FUNCTIONS))}"
        )
    arg_types, result, template = spec
    if len(node.args) != len(arg_types):
        raise QueryError(f"{node.name} takes {len(arg_types)} argument(s), not {len(node.args)}")
    args = [_compile(arg, es, params) for arg in node.args]
    for position, (arg, wanted) in enumerate(zip(args, arg_types, strict=True), start=1):
        if arg.type != wanted:
            raise QueryError(
                f"argument {position} of {node.name} must be {_TYPE_NAMES[wanted]}, "
                f"not {_TYPE_NAMES[arg.type or 'null']}"
            )
    composed = sql.SQL(template).format(*(arg.sql for arg in args))
    return Typed(composed, result, any(arg.nullable for arg in args))


# ---------------------------------------------------------------------------------------------
# Ordering and keyset paging


@dataclass(frozen=True, slots=True)
class SortKey:
    column: str
    type: PropType
    nullable: bool
    descending: bool


def sort_keys(es: EntitySet, orderby: list[Order], fixed: set[str]) -> list[SortKey]:
    """``$orderby``, then the key columns not fixed by the request: a total order.

    Columns fixed by equality (the Datastream of ``Datastreams(x)/Observations``) are left out,
    so ordering by time walks the readings' key index.
    """
    keys: list[SortKey] = []
    seen: set[str] = set()
    for order in orderby:
        prop = resolve(es, order.path)
        if prop.type == "boolean":
            raise QueryError(f"cannot order by {order.path!r}")
        if prop.column not in seen and prop.column not in fixed:
            keys.append(SortKey(prop.column, prop.type, prop.nullable, order.descending))
            seen.add(prop.column)
    types = {p.column: p.type for p in es.properties.values()}
    for name in es.key:
        if name not in seen and name not in fixed:
            keys.append(SortKey(name, types.get(name, "string"), False, False))
            seen.add(name)
    return keys


def order_by(keys: list[SortKey]) -> sql.Composable:
    if not keys:
        return sql.SQL("")
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(
        sql.SQL("{} {}").format(column(k.column), sql.SQL("DESC" if k.descending else "ASC"))
        for k in keys
    )


def keyset_ready(keys: list[SortKey]) -> bool:
    """Keyset paging needs values on every sort key (NULLs have no place in a comparison)."""
    return bool(keys) and not any(k.nullable for k in keys)


def make_token(keys: list[SortKey], row: Row) -> str:
    """An opaque ``$skiptoken``: the sort-key values of the last row of a page."""
    values = [micros(row[k.column]) if k.type == "datetime" else row[k.column] for k in keys]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def after_token(keys: list[SortKey], token: str, params: Params) -> sql.Composable:
    """Rows after the token's position in the sort order."""
    problem = QueryError("$skiptoken is not valid here; follow @iot.nextLink as given")
    try:
        values = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise problem from None
    if not isinstance(values, list) or len(values) != len(keys):
        raise problem
    placeholders = [
        params.add(_token_value(key, value, problem), _CASTS[key.type])
        for key, value in zip(keys, values, strict=True)
    ]
    if len({k.descending for k in keys}) == 1:
        # One direction: a row comparison, which an index on the same columns can serve.
        op = sql.SQL("<" if keys[0].descending else ">")
        return sql.SQL("(({}) {} ({}))").format(
            sql.SQL(", ").join(column(k.column) for k in keys),
            op,
            sql.SQL(", ").join(placeholders),
        )
    alternatives: list[sql.Composable] = []
    for i, key in enumerate(keys):
        equal = [
            sql.SQL("{} = {}").format(column(k.column), placeholders[j])
            for j, k in enumerate(keys[:i])
        ]
        op = sql.SQL("<" if key.descending else ">")
        beyond = sql.SQL("{} {} {}").format(column(key.column), op, placeholders[i])
        alternatives.append(sql.SQL("({})").format(sql.SQL(" AND ").join([*equal, beyond])))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(alternatives))


def _token_value(key: SortKey, value: Any, problem: QueryError) -> Any:
    """A token's value for ``key``, checked against the key's type."""
    if key.type == "datetime":
        if not isinstance(value, int) or isinstance(value, bool):
            raise problem
        try:
            return from_micros(value)
        except OverflowError:
            raise problem from None
    if key.type == "number":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise problem
        return float(value)
    if not isinstance(value, str):
        raise problem
    return value
