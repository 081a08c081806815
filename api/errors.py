"""Every error as an RFC 9457 problem detail (``application/problem+json``).

Routes raise :class:`Problem` (or FastAPI's ``HTTPException``); unknown paths, wrong methods,
validation failures and unexpected exceptions are turned into the same shape. No body ever
carries a stack trace or SQL. :func:`install` adds the handlers, a guard that refuses NUL and
control characters before any route (PostgreSQL refuses NUL in text), and the problem responses
to every operation of the OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Problem types of this API; plain HTTP errors use "about:blank" as RFC 9457 suggests.
TYPE_BASE = "urn:pantau:problem:"


class Problem(Exception):  # noqa: N818 (named for what it answers)
    """An error answered as a problem detail."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or _phrase(status)
        self.headers = headers
        self.errors = errors


def bad_request(detail: str, *, kind: str = "bad-request") -> Problem:
    return Problem(400, detail, kind=kind)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request | None,
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> Response:
    """The problem detail response itself (``instance``: the path, when there is no request)."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind if kind else "about:blank",
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    elif instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(
        request,
        exc.status,
        exc.detail,
        kind=exc.kind,
        title=exc.title,
        headers=exc.headers,
        errors=exc.errors,
    )


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(request, exc.status_code, detail, headers=headers)


def _clean(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error without the rejected input echoed whole (it may be huge)."""
    location = [str(part) for part in error.get("loc", ())]
    item: dict[str, Any] = {
        "location": location,
        "message": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }
    return item


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_clean(e) for e in exc.errors()]
    parts = [f"{'.'.join(e['location'])}: {e['message']}" for e in errors]
    return problem_response(
        request,
        422,
        "invalid request: " + "; ".join(parts),
        kind="validation",
        title="Invalid request",
        errors=errors,
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback for the operators; the client learns only that it failed.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request, 500, "the server failed to answer this request; it has been logged"
    )


async def _on_database(request: Request, exc: Exception) -> Response:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return problem_response(
            request,
            503,
            "the query took too long; ask for a shorter range or a coarser resolution",
            kind="query-timeout",
        )
    if isinstance(exc, psycopg.OperationalError):
        return problem_response(
            request,
            503,
            "the database is unavailable; retry shortly",
            kind="database-unavailable",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        # A deployment may serve the public from the read-only login (docs/deploy.md).
        return problem_response(
            request,
            403,
            "this API's database login may only read: operator changes go to an API that logs "
            "in as pantau_api",
            kind="read-only",
        )
    return await _on_unexpected(request, exc)


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def raw_path_of(scope: Scope) -> str:
    """The request's path as sent (still percent-encoded: safe to echo)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
    return raw.decode("latin-1")


class InputGuard:
    """Refuses a path or query with NUL or control characters, or bytes that are not UTF-8.

    Checked before routing, so no such text ever reaches a route or the database.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = self._reason(scope)
            if reason is not None:
                response = problem_response(
                    None, 400, reason, kind="bad-characters", instance=raw_path_of(scope)
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _reason(scope: Scope) -> str | None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        try:
            path = unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            return "the path is not valid UTF-8"
        if _has_control(path):
            return "the path contains NUL or control characters"
        query: bytes = scope.get("query_string", b"")
        try:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="utf-8",
                              errors="strict")  # fmt: skip
        except UnicodeDecodeError:
            return "the query string is not valid UTF-8"
        for name, value in pairs:
            if _has_control(name) or _has_control(value):
                return f"query parameter {name[:40]!r} contains NUL or control characters"
        return None


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem detail.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "URI of the problem type."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "instance": {"type": "string", "description": "Path of the request."},
        "errors": {
            "type": "array",
            "description": "Validation errors, one per bad parameter.",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "array", "items": {"type": "string"}},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

# Statuses every operation may answer with a problem detail.
COMMON_PROBLEMS = {
    "400": "Bad request (bad characters, range or page too large, bad cursor).",
    "404": "Not found.",
    "422": "A parameter failed validation.",
    "429": "Too many requests from this client; retry after `Retry-After` seconds.",
    "500": "Unexpected server error (logged).",
    "503": "The database is unavailable or busy; retry later.",
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    # FastAPI's own validation-error schemas describe a shape this API never sends.
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, description in COMMON_PROBLEMS.items():
                existing = responses.get(status)
                if existing is None or status == "422" or not existing.get("content"):
                    responses[status] = {
                        "description": (existing or {}).get("description") or description,
                        "content": content,
                    }
            if "405" not in responses:
                responses["405"] = {"description": "Method not allowed.", "content": content}
    return schema


def install(app: FastAPI) -> None:
    """Problem details for every error of ``app`` (see :func:`document_problems` for its
    OpenAPI document)."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_exception_handler(psycopg.Error, _on_database)
    app.add_middleware(InputGuard)
