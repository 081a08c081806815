"""Grafana's PostgreSQL query expansion, reimplemented so dashboard SQL can be run in tests.

It follows Grafana's server-side code (``pkg/tsdb/sqleng`` then the PostgreSQL data source's
macro engine): first the plain replacements of ``$__interval_ms``, ``$__interval``,
``$__unixEpochFrom()`` and ``$__unixEpochTo()``, then every ``$__name(args)`` whose arguments
contain no ``)``. Dashboard variables are substituted before that, as Grafana's front end does
for SQL data sources (``SqlDatasource.interpolateVariable``): a multi-value or "All" variable as
a comma-separated list of quoted strings, a single-value variable as its bare text (with quotes
doubled). The interval of a panel is the time range over its width in pixels, rounded to a
"nice" step as Grafana's ``rangeutil.calculateInterval`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}
_CALENDAR_UNITS = {
    "d": timedelta(days=1),
    "w": timedelta(days=7),
    "M": timedelta(days=30),
    "y": timedelta(days=365),
}
_FILL_KEYWORDS = {"NULL", "previous"}


class MacroError(ValueError):
    """A query uses a macro Grafana does not know, or with wrong arguments."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryContext:
    """What Grafana knows when it runs a panel query."""

    time_from: datetime
    time_to: datetime
    interval: timedelta
    timescaledb: bool
    # A list: a multi-value (or "All") variable's values; a str: a single-value variable's.
    variables: Mapping[str, Sequence[str] | str]


def format_interval(interval: timedelta) -> str:
    """``$__interval``: the interval in its largest whole unit (90 s is ``1m``)."""
    units = (
        ("y", timedelta(days=365)),
        ("d", timedelta(days=1)),
        ("h", timedelta(hours=1)),
        ("m", timedelta(minutes=1)),
        ("s", timedelta(seconds=1)),
        ("ms", timedelta(milliseconds=1)),
    )
    for suffix, unit in units:
        if interval >= unit:
            return f"{interval // unit}{suffix}"
    return "1ms"


def parse_interval(text: str) -> timedelta:
    """An interval argument such as ``5m``, ``1h30m`` or ``2d`` (Grafana's gtime rules)."""
    calendar = re.fullmatch(r"(\d+)([dwMy])", text)
    if calendar:
        return int(calendar.group(1)) * _CALENDAR_UNITS[calendar.group(2)]
    if text == "0":
        return timedelta(0)
    position, total = 0, timedelta(0)
    for part in _GO_DURATION_PART.finditer(text):
        if part.start() != position:
            break
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        position = part.end()
    if position == 0 or position != len(text):
        raise MacroError(f"error parsing interval {text}")
    return total


def _go_number(value: float) -> str:
    # Go's %v of a float64: integral values without a decimal point.
    return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)


def _rfc3339(moment: datetime) -> str:
    # Go's time.RFC3339Nano in UTC: fraction without trailing zeros, "Z".
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _epoch_ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


# Grafana's nice interval steps (roundInterval in rangeutil and gtime): an interval up to the
# bound (seconds) becomes the step beside it; beyond the last, one year.
_ROUNDING: tuple[tuple[float, float], ...] = (
    (0.015, 0.01),
    (0.035, 0.02),
    (0.075, 0.05),
    (0.15, 0.1),
    (0.35, 0.2),
    (0.75, 0.5),
    (1.5, 1),
    (3.5, 2),
    (7.5, 5),
    (12.5, 10),
    (17.5, 15),
    (25, 20),
    (45, 30),
    (90, 60),
    (210, 120),
    (450, 300),
    (750, 600),
    (1050, 900),
    (1500, 1200),
    (2700, 1800),
    (5400, 3600),
    (9000, 7200),
    (16200, 10800),
    (32400, 21600),
    (86400, 43200),
    (172800, 86400),
    (604800, 86400),
    (1814400, 604800),
    (3628800 - 1e-9, 2592000),
)


def panel_interval(
    time_from: datetime, time_to: datetime, *, width_px: int = 1000, minimum_s: float = 0
) -> timedelta:
    """``$__interval`` of a panel ``width_px`` wide showing the range (at least ``minimum_s``)."""
    raw = max((time_to - time_from).total_seconds() / width_px, minimum_s)
    for bound, step in _ROUNDING:
        if raw <= bound:
            return timedelta(seconds=max(step, minimum_s))
    return timedelta(days=365)


def _quoted(values: Sequence[str]) -> str:
    return ",".join("'" + value.replace("'", "''") + "'" for value in values)


def substitute_variables(sql: str, variables: Mapping[str, Sequence[str] | str]) -> str:
    """Replace ``$name``, ``${name}`` and ``${name:sqlstring}`` as Grafana's SQL data sources do.

    A list (multi-value or "All" variable) becomes a quoted, comma-separated list; a str
    (single-value variable) is inserted as it is, with single quotes doubled.
    """
    # Longest names first, so that `$sensor` never eats the start of `$sensors`.
    for name in sorted(variables, key=len, reverse=True):
        values = variables[name]
        if isinstance(values, str):
            text = values.replace("'", "''")
            listed = _quoted([values])
        else:
            text = listed = _quoted(values)
        sql = sql.replace("${" + name + ":sqlstring}", listed)
        sql = sql.replace("${" + name + "}", text)
        sql = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _, t=text: t, sql)
    return sql


def variable_names(text: str) -> set[str]:
    """Names of the dashboard variables a text refers to (Grafana's own ``$__...`` left out)."""
    found = re.findall(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)", text)
    return {name for pair in found for name in pair if name and not name.startswith("__")}


def _group_seconds(name: str, args: list[str]) -> float:
    if len(args) < 2:
        raise MacroError(f"macro {name} needs time column and interval and optional fill value")
    seconds = parse_interval(args[1].strip("'")).total_seconds()
    if len(args) == 3:
        fill = args[2]
        if fill not in _FILL_KEYWORDS:
            try:
                float(fill)
            except ValueError:
                raise MacroError(f"error parsing fill value {fill}") from None
    return seconds


def _evaluate(name: str, args: list[str], ctx: QueryContext) -> str:
    needs_column = {
        "__time",
        "__timeEpoch",
        "__timeFilter",
        "__unixEpochFilter",
        "__unixEpochNanoFilter",
    }
    if name in needs_column and not args:
        raise MacroError(f"missing time column argument for macro {name}")
    if name.startswith("__unixEpoch"):
        return _unix_epoch_macro(name, args, ctx)
    match name:
        case "__time":
            return f'{args[0]} AS "time"'
        case "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(ctx.time_from)}' AND '{_rfc3339(ctx.time_to)}'"
        case "__timeFrom":
            return f"'{_rfc3339(ctx.time_from)}'"
        case "__timeTo":
            return f"'{_rfc3339(ctx.time_to)}'"
        case "__timeGroup":
            seconds = _group_seconds(name, args)
            if ctx.timescaledb:
                return f"time_bucket('{seconds:.3f}s',{args[0]})"
            step = _go_number(seconds)
            return f"floor(extract(epoch from {args[0]})/{step})*{step}"
        case "__timeGroupAlias":
            return _evaluate("__timeGroup", args, ctx) + ' AS "time"'
        case _:
            raise MacroError(f'unknown macro "{name}"')


def _unix_epoch_macro(name: str, args: list[str], ctx: QueryContext) -> str:
    """The macros on a column of epoch seconds (or nanoseconds)."""
    match name:
        case "__unixEpochFilter":
            return f"{args[0]} >= {_epoch(ctx.time_from)} AND {args[0]} <= {_epoch(ctx.time_to)}"
        case "__unixEpochNanoFilter":
            return (
                f"{args[0]} >= {_epoch_ns(ctx.time_from)} AND {args[0]} <= {_epoch_ns(ctx.time_to)}"
            )
        case "__unixEpochNanoFrom":
            return str(_epoch_ns(ctx.time_from))
        case "__unixEpochNanoTo":
            return str(_epoch_ns(ctx.time_to))
        case "__unixEpochGroup":
            step = _go_number(_group_seconds(name, args))
            return f"floor(({args[0]})/{step})*{step}"
        case "__unixEpochGroupAlias":
            return _evaluate("__unixEpochGroup", args, ctx) + ' AS "time"'
        case _:
            raise MacroError(f'unknown macro "{name}"')


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL Grafana would send to PostgreSQL for this query; raises MacroError like Grafana."""
    sql = substitute_variables(sql, ctx.variables)
    sql = sql.replace("$__interval_ms", str(ctx.interval // timedelta(milliseconds=1)))
    sql = sql.replace("$__interval", format_interval(ctx.interval))
    sql = sql.replace("$__unixEpochFrom()", str(_epoch(ctx.time_from)))
    sql = sql.replace("$__unixEpochTo()", str(_epoch(ctx.time_to)))
    original = sql
    errors: list[MacroError] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        # Grafana's compatibility rule: `$__timeGroup(...)` directly followed by a comma is
        # taken as the aliased form (it looks for the first occurrence of the same text).
        if name == "__timeGroup":
            index = original.find(match.group(0))
            if index >= 0:
                end = index + len(match.group(0))
                if end < len(original) and original[end] == ",":
                    name = "__timeGroupAlias"
        args = [arg.strip(" ") for arg in match.group(2).split(",")]
        try:
            return _evaluate(name, args, ctx)
        except MacroError as error:
            errors.append(error)
            return "macro_error()"

    sql = _MACRO.sub(replace, sql)
    if errors:
        raise errors[0]
    return sql
