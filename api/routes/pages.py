"""The live city page and the control page, and the files they load.

Everything the pages need is served from the package (no CDN), so they work with no internet;
the JavaScript libraries are pinned copies from the npm registry (api/web/package.json).
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from api.deps import SettingsDep

router = APIRouter(tags=["pages"])

WEB = Path(__file__).resolve().parent.parent / "web"
STATIC = WEB / "static"
# Pinned libraries never change under the same name; the page's own files may, on upgrade.
_VENDOR_CACHE = "public, max-age=86400"
_OWN_CACHE = "public, max-age=60"


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(
        (WEB / name).read_text(encoding="utf-8"), headers={"Cache-Control": _OWN_CACHE}
    )


@router.get(
    "/",
    response_class=HTMLResponse,
    summary="Live status page of the city (Indonesian, with an English switch)",
)
def city_page() -> HTMLResponse:
    return _page("index.html")


# The control page's link to Alertmanager (its UI, where operators see and silence
# notifications), shown only where PANTAU_NOTIFY__ALERTMANAGER_EXTERNAL_URL says where it is.
_NOTIFICATIONS = '<p id="notifications" hidden><a id="alertmanager-link" href=""'


@router.get(
    "/control",
    response_class=HTMLResponse,
    summary="Control page for operators: acknowledge alerts, offline sensors, rejections",
)
def control_page(settings: SettingsDep) -> HTMLResponse:
    page = _page("control.html")
    url = settings.notify.alertmanager_external_url
    if url is None:
        return page
    link = f'<p id="notifications"><a id="alertmanager-link" href="{html.escape(url)}/#/alerts"'
    body = bytes(page.body).decode("utf-8").replace(_NOTIFICATIONS, link, 1)
    return HTMLResponse(body, headers={"Cache-Control": _OWN_CACHE})


@router.get("/static/{path:path}", include_in_schema=False)
def static_file(path: str) -> FileResponse:
    """A file of the pages, never one outside the static folder."""
    target = STATIC / "missing" if "\0" in path else (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file():
        raise HTTPException(status_code=404, detail=f"no static file {path!r}")
    cache = _VENDOR_CACHE if target.is_relative_to(STATIC / "vendor") else _OWN_CACHE
    return FileResponse(target, headers={"Cache-Control": cache})
