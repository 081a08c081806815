"""OGC SensorThings API v1.1, read-only subset, under /sta/v1.1.

The entity sets, their mapping onto Pantau's registry and readings, and the query options live
in :mod:`api.sta`; this module only declares the HTTP routes (one per entity set, entity and
navigation property) so that each appears in the OpenAPI document with its response model.
Entity sets, entities and navigation properties are answered from the API's short-lived answer
cache (with an ``ETag``), so a repeated request within the cache period costs no query.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from api.cache import TtlCache
from api.deps import ConnDep, SettingsDep
from api.pools import connection
from api.responses import Answer, Body, answer_key
from api.sta import query
from api.sta.model import ENTITY_SETS, EntitySet, Row
from api.sta.odata import KNOWN_OPTIONS, MAX_OPTION_CHARS, Options, QueryError, parse_options
from api.sta.schemas import COLLECTION_MODELS, ENTITY_MODELS, LandingPage
from pantau.settings import Settings

PREFIX = "/sta/v1.1"
router = APIRouter(prefix=PREFIX, tags=["SensorThings"])

CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
]
# Bigger numbers than this cannot be meant; refusing them keeps OFFSET within bigint.
_LARGEST = 999_999_999_999
_NOT_MODIFIED = {"description": "Not modified since the `ETag` sent in `If-None-Match`."}


async def sta_options(
    request: Request,
    top: Annotated[
        int | None,
        Query(
            alias="$top",
            ge=0,
            le=_LARGEST,
            description="Page size; the server caps it and then adds `@iot.nextLink`.",
        ),
    ] = None,
    skip: Annotated[
        int | None, Query(alias="$skip", ge=0, le=_LARGEST, description="Entities to skip.")
    ] = None,
    count: Annotated[
        bool | None, Query(alias="$count", description="Add `@iot.count`, the total.")
    ] = None,
    filter_: Annotated[
        str | None,
        Query(
            alias="$filter",
            max_length=MAX_OPTION_CHARS,
            description="OData condition on properties, e.g. "
            "`phenomenonTime ge 2026-11-01T00:00:00Z and result gt 1.5`.",
        ),
    ] = None,
    orderby: Annotated[
        str | None,
        Query(
            alias="$orderby",
            max_length=MAX_OPTION_CHARS,
            description="`property [asc|desc]`, comma-separated.",
        ),
    ] = None,
    select: Annotated[
        str | None,
        Query(
            alias="$select",
            max_length=MAX_OPTION_CHARS,
            description="Members to return, comma-separated.",
        ),
    ] = None,
    expand: Annotated[
        str | None,
        Query(
            alias="$expand",
            max_length=MAX_OPTION_CHARS,
            description="Related entities to include, with their own options in "
            "parentheses separated by `;`.",
        ),
    ] = None,
    skiptoken: Annotated[
        str | None,
        Query(
            alias="$skiptoken",
            max_length=MAX_OPTION_CHARS,
            description="Opaque position set by `@iot.nextLink`.",
        ),
    ] = None,
) -> Options:
    """The request's query options, parsed (a malformed one is a 400 naming the problem)."""
    unknown = [k for k in request.query_params if k.startswith("$") and k not in KNOWN_OPTIONS]
    if unknown:
        raise HTTPException(400, f"unknown query option {unknown[0][:40]!r}")
    given: dict[str, Any] = {
        "$top": top,
        "$skip": skip,
        "$count": count,
        "$filter": filter_,
        "$orderby": orderby,
        "$select": select,
        "$expand": expand,
        "$skiptoken": skiptoken,
    }
    raw = {
        k: (("true" if v else "false") if isinstance(v, bool) else str(v))
        for k, v in given.items()
        if v is not None
    }
    try:
        return parse_options(raw)
    except QueryError as error:
        raise HTTPException(400, str(error)) from None


OptionsDep = Annotated[Options, Depends(sta_options)]
EntityId = Annotated[str, Path(description="The entity's id, quoted: `'fg-welang-1'`.")]
# An id of each entity set in the documentation (a sensor of the Kabupaten Pasuruan city file).
EXAMPLE_IDS = {
    "Things": "'fg-welang-1'",
    "Locations": "'fg-welang-1'",
    "HistoricalLocations": "'fg-welang-1'",
    "FeaturesOfInterest": "'fg-welang-1'",
    "Datastreams": "'fg-welang-1:water_level'",
    "Sensors": "'flood_gauge'",
    "ObservedProperties": "'water_level'",
    "Observations": "'fg-welang-1:water_level:1793491200000000'",
}


def _with_example(es: EntitySet, route: Callable[..., Any]) -> Callable[..., Any]:
    """The route, its id parameter documented with an id of its own entity set."""
    route.__annotations__["entity_id"] = Annotated[
        str,
        Path(
            description=f"The {es.singular}'s id, quoted as OData requires.",
            examples=[EXAMPLE_IDS[es.name]],
        ),
    ]
    return route


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _context(request: Request, conn: Any, settings: Any) -> query.Context:
    base = str(request.base_url).rstrip("/") + PREFIX
    paging = query.Paging(default_top=settings.api.sta_page_size, max_top=settings.api.sta_max_top)
    return query.Context(conn=conn, base=base, paging=paging)


async def _cached(
    request: Request, settings: Settings, work: Callable[[query.Context], Any]
) -> Response:
    """The answer ``work`` makes, kept in the API's answer cache for the cache period; a pooled
    connection is taken only to make it. Errors are raised, never kept."""

    def load() -> Answer:
        with connection(request.app.state.pool, settings.api.pool_timeout_s) as conn:
            try:
                value = work(_context(request, conn, settings))
            except QueryError as error:
                raise HTTPException(400, str(error)) from None
        # Serialised (and compressed) after the connection is back in the pool.
        return Answer(
            Body.of(value), max_age_s=settings.api.cache_ttl_s, route=request.scope.get("route")
        )

    cache: TtlCache = request.app.state.cache
    answer: Answer = await cache.aget(answer_key(request), load)
    return answer.response(request)


def _one(ctx: query.Context, es: EntitySet, key: Row, options: Options, *, missing: str) -> Any:
    """One entity, or a 404 saying ``missing``."""
    found = query.entity(ctx, es, key, options)
    if found is None:
        raise HTTPException(404, missing)
    return found


def _key(es: EntitySet, entity_id: str) -> Row:
    key = es.parse_id(entity_id)
    if key is None:
        raise HTTPException(
            404, f"no {es.singular} {entity_id[:80]}; ids are quoted, as in {es.name}('...')"
        )
    return key


def _found(ctx: query.Context, es: EntitySet, entity_id: str) -> Row:
    row = query.find(ctx, es, _key(es, entity_id))
    if row is None:
        raise HTTPException(404, f"no {es.singular} {entity_id[:80]}")
    return row


@router.get("", response_model=LandingPage, summary="SensorThings service root")
def landing(request: Request) -> Response:
    base = str(request.base_url).rstrip("/") + PREFIX
    return _json(
        {
            "value": [{"name": name, "url": f"{base}/{name}"} for name in ENTITY_SETS],
            "serverSettings": {"conformance": CONFORMANCE},
        }
    )


def _collection_route(es: EntitySet) -> Callable[..., Any]:
    async def route(request: Request, settings: SettingsDep, options: OptionsDep) -> Response:
        def work(ctx: query.Context) -> Any:
            url = f"{ctx.base}/{es.name}"
            return query.collection(ctx, es, equals={}, options=options, url=url)

        return await _cached(request, settings, work)

    return route


def _entity_route(es: EntitySet) -> Callable[..., Any]:
    async def route(
        request: Request, settings: SettingsDep, entity_id: EntityId, options: OptionsDep
    ) -> Response:
        key = _key(es, entity_id)
        missing = f"no {es.singular} {entity_id[:80]}"
        return await _cached(
            request, settings, lambda ctx: _one(ctx, es, key, options, missing=missing)
        )

    return route


def _navigation_route(es: EntitySet, name: str) -> Callable[..., Any]:
    relation = es.navigation[name]
    target = ENTITY_SETS[relation.target]

    async def route(
        request: Request, settings: SettingsDep, entity_id: EntityId, options: OptionsDep
    ) -> Response:
        def work(ctx: query.Context) -> Any:
            parent = _found(ctx, es, entity_id)
            equals = {child: parent[col] for col, child in relation.pairs}
            if not relation.single:
                url = f"{query.self_link(ctx, es, parent)}/{name}"
                return query.collection(ctx, target, equals=equals, options=options, url=url)
            missing = f"{es.singular} {entity_id[:80]} has no {name}"
            return _one(ctx, target, equals, options, missing=missing)

        return await _cached(request, settings, work)

    return route


def _property_routes(es: EntitySet) -> tuple[Callable[..., Response], Callable[..., Response]]:
    """``/Things('x')/name`` (``{"name": ...}``) and ``/Things('x')/name/$value`` (the bare
    value as text)."""
    members = enum.Enum(f"{es.singular}Property", {f: f for f in es.fields}, type=str)  # type: ignore[misc]

    def value_of(request: Request, conn: Any, settings: Any, entity_id: str, member: str) -> Any:
        ctx = _context(request, conn, settings)
        body = es.render(_found(ctx, es, entity_id))
        if member not in body:
            raise HTTPException(404, f"{es.singular} {entity_id[:80]} has no {member}")
        return body[member]

    def route(
        request: Request,
        conn: ConnDep,
        settings: SettingsDep,
        entity_id: EntityId,
        member: members,
    ) -> Response:
        name = member.value
        return _json({name: value_of(request, conn, settings, entity_id, name)})

    def raw(
        request: Request,
        conn: ConnDep,
        settings: SettingsDep,
        entity_id: EntityId,
        member: members,
    ) -> Response:
        value = value_of(request, conn, settings, entity_id, member.value)
        if isinstance(value, dict | list):
            return _json(value)
        return Response(str(value), media_type="text/plain")

    # A local type: given as an object, since annotations here are strings.
    route.__annotations__["member"] = raw.__annotations__["member"] = members
    return route, raw


def _links(es: EntitySet) -> dict[str, Any]:
    """OpenAPI links from a page to its first entity and that entity's navigation properties
    (a bare id is accepted as well as a quoted one), so that fuzzers reach stored data."""
    first = {"entity_id": "$response.body#/value/0/@iot.id"}
    links = {f"get{es.singular}": {"operationId": f"sta_get_{es.singular}", "parameters": first}}
    for name in es.navigation:
        links[f"get{name}"] = {"operationId": f"sta_{es.singular}_{name}", "parameters": first}
    return links


def _register() -> None:
    for es in ENTITY_SETS.values():
        router.add_api_route(
            f"/{es.name}",
            _collection_route(es),
            methods=["GET"],
            response_model=COLLECTION_MODELS[es.name],
            summary=f"{es.name}: a page",
            operation_id=f"sta_list_{es.name}",
            responses={200: {"links": _links(es)}, 304: _NOT_MODIFIED},
        )
        router.add_api_route(
            f"/{es.name}({{entity_id}})",
            _with_example(es, _entity_route(es)),
            methods=["GET"],
            response_model=ENTITY_MODELS[es.name],
            summary=f"One {es.singular}",
            operation_id=f"sta_get_{es.singular}",
            responses={304: _NOT_MODIFIED, 404: {"description": f"No such {es.singular}."}},
        )
        for name, relation in es.navigation.items():
            target = ENTITY_SETS[relation.target]
            model = ENTITY_MODELS if relation.single else COLLECTION_MODELS
            router.add_api_route(
                f"/{es.name}({{entity_id}})/{name}",
                _with_example(es, _navigation_route(es, name)),
                methods=["GET"],
                response_model=model[target.name],
                summary=f"The {name} of one {es.singular}",
                operation_id=f"sta_{es.singular}_{name}",
                responses={304: _NOT_MODIFIED, 404: {"description": f"No such {es.singular}."}},
            )
    # Property paths last: a navigation property of the same place is matched first.
    for es in ENTITY_SETS.values():
        route, raw = _property_routes(es)
        router.add_api_route(
            f"/{es.name}({{entity_id}})/{{member}}",
            _with_example(es, route),
            methods=["GET"],
            response_model=dict[str, Any],
            summary=f"One property of one {es.singular}",
            operation_id=f"sta_{es.singular}_property",
            responses={404: {"description": f"No such {es.singular}."}},
        )
        router.add_api_route(
            f"/{es.name}({{entity_id}})/{{member}}/$value",
            _with_example(es, raw),
            methods=["GET"],
            summary=f"One property of one {es.singular}, bare",
            operation_id=f"sta_{es.singular}_property_value",
            response_class=Response,
            responses={
                200: {
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}},
                    }
                },
                404: {"description": f"No such {es.singular}."},
            },
        )


_register()
