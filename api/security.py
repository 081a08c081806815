"""The operator key: header `X-API-Key`, checked against the stored digests (api.keys)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyHeader

from api.deps import ConnDep
from api.errors import PROBLEM_JSON
from api.keys import Operator, check_key

# auto_error=False: a missing key is answered below, as problem details like every error.
api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="OperatorKey",
    description="An operator key made with `pantau keys add NAME`.",
    auto_error=False,
)

# Keys longer than this are not keys (and are not worth hashing).
_MAX_KEY_CHARS = 200


def problem_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries of statuses answered with a problem detail."""
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        status: {"description": text, "content": content} for status, text in descriptions.items()
    }


AUTH_RESPONSES = problem_responses(
    {401: "No key, or a key that is not known", 403: "The key was revoked"}
)


def require_operator(
    conn: ConnDep, key: Annotated[str | None, Security(api_key_header)]
) -> Operator:
    """The operator whose key came with the request; 401 without a valid key, 403 if revoked."""
    challenge = {"WWW-Authenticate": 'APIKey header="X-API-Key"'}
    if not key:
        raise HTTPException(401, "an operator key is needed in the X-API-Key header", challenge)
    if len(key) > _MAX_KEY_CHARS:
        raise HTTPException(401, "unknown API key", challenge)
    checked = check_key(conn, key)
    if checked.revoked:
        raise HTTPException(403, "this API key was revoked")
    if checked.operator is None:
        raise HTTPException(401, "unknown API key", challenge)
    return checked.operator


OperatorDep = Annotated[Operator, Depends(require_operator)]
