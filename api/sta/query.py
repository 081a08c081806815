"""Reading entity sets: pages, counts, next links and expansions, in a few indexed queries.

A collection is one query (plus one for ``$count``); each ``$expand`` level is one more query
that takes every parent's page at once (``LATERAL`` over the parents' keys, each with its own
``LIMIT``), so a Datastreams page with ``$expand=Observations($top=1)`` costs two queries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from api.sta.compile import (
    Params,
    SortKey,
    after_token,
    column,
    compile_filter,
    keyset_ready,
    make_token,
    order_by,
    sort_keys,
)
from api.sta.model import ENTITY_SETS, EntitySet, Row
from api.sta.odata import Options, QueryError


@dataclass(frozen=True, slots=True)
class Paging:
    """Page sizes from the settings."""

    default_top: int
    max_top: int

    def top(self, options: Options) -> int:
        return min(self.default_top if options.top is None else options.top, self.max_top)


@dataclass(slots=True)
class Context:
    """One request: its connection, the service root and what its answer may still hold."""

    conn: psycopg.Connection[Any]
    base: str  # absolute URL of the service root, without a trailing slash
    paging: Paging
    # Entities the answer may still hold, expansions included: nested expansions multiply,
    # so each level's pages are cut to what is left (their @iot.nextLink leads on).
    budget: int = 0

    def __post_init__(self) -> None:
        self.budget = self.budget or self.paging.max_top


def self_link(ctx: Context, es: EntitySet, row: Row) -> str:
    key = es.id_of(row).replace("'", "''")
    return f"{ctx.base}/{es.name}('{quote(key, safe=':')}')"


def _conditions(
    es: EntitySet, equals: Row, options: Options, params: Params, keys: list[SortKey] | None
) -> list[sql.Composable]:
    conditions: list[sql.Composable] = [
        sql.SQL("{} = {}").format(column(name), params.add(value)) for name, value in equals.items()
    ]
    if options.filter is not None:
        conditions.append(compile_filter(options.filter, es, params))
    if keys is not None and options.skiptoken is not None:
        conditions.append(after_token(keys, options.skiptoken, params))
    return conditions


def _where(conditions: list[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)


def _parent_join(
    params: Params, rows: list[Row], pairs: tuple[tuple[str, str], ...]
) -> tuple[sql.Composed, list[sql.Composable]]:
    """``unnest(...) AS p(k0, .., ord)`` over the parents' join values, and the conditions
    tying a child to its parent."""
    arrays = [params.add([row[p] for row in rows], "text[]") for p, _ in pairs]
    names = [sql.Identifier(f"k{i}") for i in range(len(pairs))]
    parents = sql.SQL("unnest({}) WITH ORDINALITY AS p({}, ord)").format(
        sql.SQL(", ").join(arrays), sql.SQL(", ").join(names)
    )
    joins: list[sql.Composable] = [
        sql.SQL("{} = p.{}").format(column(child_col), key)
        for (_, child_col), key in zip(pairs, names, strict=True)
    ]
    return parents, joins


def _run(ctx: Context, query: sql.Composed, params: Params) -> list[Row]:
    try:
        with ctx.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            # Binary rows parse timestamps and floats several times faster than text, to the
            # same Python values for every type the sources select (text, float8, timestamptz,
            # boolean, bigint); a column of a type psycopg has no loader for would come as bytes.
            rows: list[Row] = cur.execute(query, params.values, binary=True).fetchall()
            return rows
    except psycopg.errors.DataError as error:
        # An overflow or an out-of-range value in a $filter: the request's fault, said plainly.
        raise QueryError(f"the query cannot be evaluated: {error.diag.message_primary}") from None


def _next_link(url: str, options: Options, top: int, keys: list[SortKey], last: Row | None) -> str:
    """The link to the page after ``last`` (None: to the first page, as asked)."""
    carried = {k: v for k, v in options.raw.items() if k not in {"$top", "$skip", "$skiptoken"}}
    carried["$top"] = str(top)
    if last is None:
        if options.skip:
            carried["$skip"] = str(options.skip)
    elif keyset_ready(keys):
        # The token continues after the last row shown, whatever $skip led there.
        carried["$skiptoken"] = make_token(keys, last)
    else:
        carried["$skip"] = str(options.skip + top)
    return url + "?" + urlencode(carried, quote_via=quote, safe="$(),':")


def collection(
    ctx: Context, es: EntitySet, *, equals: Row, options: Options, url: str
) -> dict[str, Any]:
    """A page of ``es`` restricted by ``equals``, as the JSON body of a collection."""
    top = ctx.paging.top(options)
    keys = sort_keys(es, options.orderby, set(equals))
    if options.skiptoken is not None and not keyset_ready(keys):
        raise QueryError("$skiptoken is not valid with this $orderby; follow @iot.nextLink")
    params = Params()
    where = _where(_conditions(es, equals, options, params, keys))
    query = sql.SQL("SELECT * FROM ({}) AS e{}{} LIMIT {} OFFSET {}").format(
        es.source, where, order_by(keys), params.add(top + 1), params.add(options.skip)
    )
    rows = _run(ctx, query, params) if top else []
    ctx.budget -= min(len(rows), top)
    body: dict[str, Any] = {}
    if options.count:
        count_params = Params()
        count_where = _where(_conditions(es, equals, options, count_params, None))
        counted = _run(
            ctx,
            sql.SQL("SELECT count(*) AS n FROM ({}) AS e{}").format(es.source, count_where),
            count_params,
        )
        body["@iot.count"] = counted[0]["n"]
    if len(rows) > top:
        rows = rows[:top]
        body["@iot.nextLink"] = _next_link(url, options, top, keys, rows[-1])
    body["value"] = render(ctx, es, rows, options)
    return body


def entity(ctx: Context, es: EntitySet, key: Row, options: Options) -> dict[str, Any] | None:
    """One entity by key, or None."""
    found = find(ctx, es, key)
    if found is None:
        return None
    return render(ctx, es, [found], options)[0]


def find(ctx: Context, es: EntitySet, key: Row) -> Row | None:
    params = Params()
    query = sql.SQL("SELECT * FROM ({}) AS e{}").format(
        es.source, _where(_conditions(es, key, Options(), params, None))
    )
    rows = _run(ctx, query, params)
    return rows[0] if rows else None


def render(ctx: Context, es: EntitySet, rows: list[Row], options: Options) -> list[dict[str, Any]]:
    """Entities with their links, expansions and ``$select``."""
    bodies: list[dict[str, Any]] = []
    for row in rows:
        link = self_link(ctx, es, row)
        body: dict[str, Any] = {"@iot.id": es.id_of(row), "@iot.selfLink": link}
        body.update(es.render(row))
        for name in es.navigation:
            body[f"{name}@iot.navigationLink"] = f"{link}/{name}"
        bodies.append(body)
    for item in options.expand:
        relation = es.navigation.get(item.name)
        if relation is None:
            raise QueryError(
                f"{es.name} have no navigation property {item.name[:60]!r}; "
                f"known: {', '.join(es.navigation)}"
            )
        _expand(ctx, es, rows, bodies, item.name, item.options)
    if options.select is not None:
        allowed = _selectable(es)
        unknown = [name for name in options.select if name not in allowed]
        if unknown:
            raise QueryError(
                f"$select names {unknown[0][:60]!r}, not a property of {es.name}; "
                f"known: {', '.join(sorted(allowed))}"
            )
        keep = {member for name in options.select for member in allowed[name]}
        keep |= {item.name for item in options.expand} | {
            f"{item.name}@iot.{suffix}"
            for item in options.expand
            for suffix in ("nextLink", "count")
        }
        bodies = [{k: v for k, v in body.items() if k in keep} for body in bodies]
    return bodies


def _selectable(es: EntitySet) -> dict[str, set[str]]:
    allowed = {name: {name} for name in es.fields}
    allowed["id"] = allowed["@iot.id"] = {"@iot.id"}
    allowed["@iot.selfLink"] = {"@iot.selfLink"}
    for name in es.navigation:
        allowed[name] = {f"{name}@iot.navigationLink"}
    return allowed


def _expand(
    ctx: Context,
    es: EntitySet,
    rows: list[Row],
    bodies: list[dict[str, Any]],
    name: str,
    options: Options,
) -> None:
    relation = es.navigation[name]
    child = ENTITY_SETS[relation.target]
    if relation.single and (options.top is not None or options.skip or options.orderby):
        raise QueryError(f"{name} is a single entity: $top, $skip and $orderby do not apply")
    wanted = ctx.paging.top(options)
    top = 1 if relation.single else min(wanted, max(ctx.budget, 0) // max(len(rows), 1))
    fixed = {child_col for _, child_col in relation.pairs}
    keys = sort_keys(child, options.orderby, fixed)
    if not rows or top == 0:
        children: dict[int, list[Row]] = {}
    else:
        params = Params()
        parents, joins = _parent_join(params, rows, relation.pairs)
        where = _where(_conditions(child, {}, options, params, keys) + joins)
        query = sql.SQL(
            "SELECT p.ord AS parent_ord, c.* FROM {} "
            "CROSS JOIN LATERAL (SELECT * FROM ({}) AS e{}{} LIMIT {} OFFSET {}) AS c"
        ).format(
            parents,
            child.source,
            where,
            order_by(keys),
            params.add(top + 1),
            params.add(options.skip),
        )
        children = defaultdict(list)
        for found in _run(ctx, query, params):
            children[found.pop("parent_ord") - 1].append(found)
    counts: dict[int, int] = {}
    if options.count and not relation.single and rows:
        counts = _expanded_counts(ctx, rows, relation.pairs, child, options)
    flat: list[Row] = []
    spans: list[tuple[int, int, bool]] = []
    for i in range(len(rows)):
        mine = children.get(i, [])
        more = len(mine) > top
        mine = mine[:top]
        spans.append((len(flat), len(flat) + len(mine), more))
        flat.extend(mine)
    ctx.budget -= len(flat)
    rendered = render(ctx, child, flat, options)
    for i, (body, (start, end, more)) in enumerate(zip(bodies, spans, strict=True)):
        if relation.single:
            body[name] = rendered[start] if end > start else None
            continue
        body[name] = rendered[start:end]
        if options.count:
            body[f"{name}@iot.count"] = counts.get(i, 0)
        url = f"{body['@iot.selfLink']}/{name}"
        if more:
            body[f"{name}@iot.nextLink"] = _next_link(url, options, top, keys, flat[end - 1])
        elif top == 0 < wanted:
            # Nothing fitted in this answer: the link fetches the page that was asked for.
            body[f"{name}@iot.nextLink"] = _next_link(url, options, wanted, keys, None)


def _expanded_counts(
    ctx: Context,
    rows: list[Row],
    pairs: tuple[tuple[str, str], ...],
    child: EntitySet,
    options: Options,
) -> dict[int, int]:
    params = Params()
    parents, joins = _parent_join(params, rows, pairs)
    where = _where(_conditions(child, {}, options, params, None) + joins)
    query = sql.SQL(
        "SELECT p.ord AS parent_ord, c.n FROM {} "
        "CROSS JOIN LATERAL (SELECT count(*) AS n FROM ({}) AS e{}) AS c"
    ).format(parents, child.source, where)
    return {found["parent_ord"] - 1: found["n"] for found in _run(ctx, query, params)}
