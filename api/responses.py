"""Pre-serialised JSON answers with validators, so that pollers get 304 Not Modified, the
answers the answer cache serves again by URL, and downloads no client can stall."""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from fastapi import Request, Response
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Body:
    """A serialised answer, its entity tag and, when worth it, its gzip form (made once)."""

    content: bytes
    etag: str
    gzipped: bytes | None

    @classmethod
    def of(cls, value: Any) -> Body:
        content = orjson.dumps(value)
        etag = '"' + hashlib.blake2b(content, digest_size=12).hexdigest() + '"'
        # Cached answers are compressed once here, not once per client by the middleware; at
        # level 1, as this runs on the event loop: most of level 6's saving at half its time.
        zipped = gzip.compress(content, compresslevel=1, mtime=0) if len(content) > 1024 else None
        return cls(content, etag, zipped)

    @property
    def nbytes(self) -> int:
        """What the answer holds in memory."""
        return len(self.content) + len(self.gzipped or b"")


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer to one URL, kept in the answer cache under :func:`answer_key`, so that
    :class:`api.middleware.CachedAnswers` serves the same question again before routing."""

    body: Body
    max_age_s: float
    media_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    # The route that made it: the metrics label a cached answer with its route too.
    route: Any = None

    @property
    def nbytes(self) -> int:
        return self.body.nbytes

    def response(self, request: Request) -> Response:
        response = cached_json(
            request, self.body, max_age_s=self.max_age_s, media_type=self.media_type
        )
        for name, value in self.headers:
            response.headers[name] = value
        return response


def answer_key(request: Request) -> tuple[str, str]:
    """The cache key of the answer to ``request``'s URL: scheme, host, path and query, because
    answers hold absolute links."""
    return ("answer", str(request.url))


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def cached_json(
    request: Request, body: Body, *, max_age_s: float, media_type: str = JSON
) -> Response:
    """``body`` with ``ETag`` and ``Cache-Control``; 304 when the client holds it already."""
    headers = {
        "ETag": body.etag,
        "Cache-Control": f"public, max-age={max(0, math.ceil(max_age_s))}",
    }
    if _matches(request.headers.get("if-none-match"), body.etag):
        return Response(status_code=304, headers=headers)
    if body.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(body.gzipped, media_type=media_type, headers=headers)
    return Response(body.content, media_type=media_type, headers=headers)


def json_response(
    value: Any, *, media_type: str = JSON, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(value), media_type=media_type, headers=headers)


class DownloadResponse(StreamingResponse):
    """A streamed download that no client can stall: a part it does not take within
    ``send_timeout_s`` ends the download (the server then closes the connection, so the client
    sees a cut-off file, never a complete-looking one), and however it ends, ``close``, which
    frees what feeds it (a database connection), runs in a worker thread."""

    def __init__(
        self,
        content: Iterable[bytes],
        *,
        send_timeout_s: float,
        close: Callable[[], None],
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.send_timeout_s = send_timeout_s
        self.close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded(message: Message) -> None:
            with anyio.fail_after(self.send_timeout_s):
                await send(message)

        try:
            await super().__call__(scope, receive, bounded)
        except TimeoutError:
            log.warning(
                "a download's client took more than %g s to take its next part: cut off",
                self.send_timeout_s,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.close)
