"""`pantau grafana push` against an HTTP server that answers as Grafana's HTTP API does.

The server keeps data sources, folders and dashboards like Grafana and refuses what Grafana
refuses (wrong credentials, an existing uid created again, a dashboard in a missing folder, an
update without a version or ``overwrite``, a boolean flag sent as a string), and it records
every request, so the tests check the paths, methods and bodies the command sends, and that a
second push changes nothing.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from pantau.cli.app import app
from pantau.cli.grafana import GRAFANA_DIR, load_bundle
from pantau.db.migrate import Mode
from pantau.settings import get_settings
from pantau.tools.scratch import temporary_database

USER, PASSWORD, TOKEN = "admin", "s3cret", "glsa_test_token"
READER_PASSWORD = "reader-pw"
API_URL = "http://pantau.example:8123"


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}


@dataclass
class FakeGrafana:
    """Grafana's state and rules for the endpoints `pantau grafana push` may use."""

    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    next_id: int = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def handle(self, method: str, path: str, body: Any) -> Any:
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["api", "datasources", "uid", uid]:
                source = self.datasources.get(uid) or _raise(
                    HTTPStatus.NOT_FOUND, "Data source not found"
                )
                shown = {k: v for k, v in source.items() if k != "secureJsonData"}
                return shown | {"secureJsonFields": {k: True for k in source["secureJsonData"]}}
            case "POST", ["api", "datasources"]:
                self._check_datasource(body)
                if body.get("uid") in self.datasources or any(
                    s["name"] == body["name"] for s in self.datasources.values()
                ):
                    raise ApiError(
                        HTTPStatus.CONFLICT, "data source with the same name already exists"
                    )
                source = {**body, "id": self._id(), "version": 1, "orgId": 1}
                self.datasources[body["uid"]] = source
                return {
                    "datasource": source,
                    "id": source["id"],
                    "message": "Datasource added",
                    "name": body["name"],
                }
            case "PUT", ["api", "datasources", "uid", uid]:
                old = self.datasources.get(uid) or _raise(
                    HTTPStatus.NOT_FOUND, "Data source not found"
                )
                self._check_datasource(body)
                source = {
                    **body,
                    "uid": uid,
                    "id": old["id"],
                    "version": old["version"] + 1,
                    "orgId": 1,
                }
                self.datasources[uid] = source
                return {
                    "datasource": source,
                    "id": source["id"],
                    "message": "Datasource updated",
                    "name": body["name"],
                }
            case "GET", ["api", "folders", uid]:
                return self.folders.get(uid) or _raise(HTTPStatus.NOT_FOUND, "folder not found")
            case "POST", ["api", "folders"]:
                if not body.get("title"):
                    raise ApiError(HTTPStatus.BAD_REQUEST, "folder title cannot be empty")
                if body.get("uid") in self.folders:
                    raise ApiError(HTTPStatus.CONFLICT, "a folder with the same uid already exists")
                if any(f["title"] == body["title"] for f in self.folders.values()):
                    raise ApiError(
                        HTTPStatus.CONFLICT, "a folder with the same name already exists"
                    )
                folder = {
                    "id": self._id(),
                    "uid": body["uid"],
                    "title": body["title"],
                    "version": 1,
                }
                self.folders[body["uid"]] = folder
                return folder
            case "PUT", ["api", "folders", uid]:
                folder = self.folders.get(uid) or _raise(HTTPStatus.NOT_FOUND, "folder not found")
                if not body.get("overwrite") and body.get("version") != folder["version"]:
                    raise ApiError(
                        HTTPStatus.PRECONDITION_FAILED,
                        "the folder has been changed by someone else",
                    )
                folder.update(title=body["title"], version=folder["version"] + 1)
                return folder
            case "GET", ["api", "dashboards", "uid", uid]:
                saved = self.dashboards.get(uid) or _raise(
                    HTTPStatus.NOT_FOUND, "Dashboard not found"
                )
                return copy.deepcopy(saved)
            case "POST", ["api", "dashboards", "db"]:
                return self._save_dashboard(body)
        raise ApiError(HTTPStatus.NOT_FOUND, f"no route {method} {path}")

    @staticmethod
    def _check_datasource(body: dict[str, Any]) -> None:
        for key in ("name", "type", "access", "url"):
            if not body.get(key):
                raise ApiError(HTTPStatus.BAD_REQUEST, f"bad request data: {key} is required")
        if body["access"] not in {"proxy", "direct"}:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad request data: access")
        # The PostgreSQL plugin decodes jsonData into a struct: a string flag breaks it.
        if not isinstance(body.get("jsonData", {}).get("timescaledb", False), bool):
            raise ApiError(HTTPStatus.BAD_REQUEST, "jsonData.timescaledb must be a boolean")

    def _save_dashboard(self, body: dict[str, Any]) -> dict[str, Any]:
        dashboard = body.get("dashboard")
        if not isinstance(dashboard, dict) or not dashboard.get("title"):
            raise ApiError(HTTPStatus.BAD_REQUEST, "Dashboard title cannot be empty")
        uid = dashboard.get("uid")
        if not uid or len(uid) > 40:
            raise ApiError(HTTPStatus.BAD_REQUEST, "Dashboard uid is invalid")
        folder_uid = body.get("folderUid")
        if folder_uid not in self.folders:
            raise ApiError(HTTPStatus.BAD_REQUEST, "folder not found")
        existing = self.dashboards.get(uid)
        if dashboard.get("id") is not None and (
            existing is None or existing["dashboard"]["id"] != dashboard["id"]
        ):
            raise ApiError(HTTPStatus.NOT_FOUND, "Dashboard not found")
        if existing is not None and not body.get("overwrite"):
            raise ApiError(
                HTTPStatus.PRECONDITION_FAILED, "version-mismatch", status="version-mismatch"
            )
        for other_uid, other in self.dashboards.items():
            same_place = other["meta"]["folderUid"] == folder_uid
            if (
                other_uid != uid
                and same_place
                and other["dashboard"]["title"] == dashboard["title"]
            ):
                raise ApiError(HTTPStatus.PRECONDITION_FAILED, "name-exists", status="name-exists")
        version = 1 if existing is None else existing["dashboard"]["version"] + 1
        ident = self._id() if existing is None else existing["dashboard"]["id"]
        saved = {**copy.deepcopy(dashboard), "id": ident, "version": version}
        folder = self.folders[folder_uid]
        self.dashboards[uid] = {
            "dashboard": saved,
            "meta": {"folderUid": folder_uid, "folderTitle": folder["title"], "version": version},
        }
        return {
            "id": ident,
            "uid": uid,
            "status": "success",
            "version": version,
            "url": f"/d/{uid}",
        }

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.requests if m != "GET"]


def _raise(status: HTTPStatus, message: str) -> Any:
    raise ApiError(status, message)


def _authorised(header: str | None) -> bool:
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return header in {basic, f"Bearer {TOKEN}"}


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    """The fake Grafana and its base URL without credentials."""
    state = FakeGrafana()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                if not _authorised(self.headers.get("Authorization")):
                    raise ApiError(HTTPStatus.UNAUTHORIZED, "Unauthorized")
                body = None
                if self.command in {"POST", "PUT"}:
                    if not self.headers.get("Content-Type", "").startswith("application/json"):
                        raise ApiError(HTTPStatus.BAD_REQUEST, "expected application/json")
                    body = json.loads(raw)
                with lock:
                    state.requests.append((self.command, self.path, body))
                    result = state.handle(self.command, self.path, body)
                status, payload = HTTPStatus.OK, result
            except ApiError as error:
                status, payload = error.status, error.body
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client_installed() -> None:
    pytest.importorskip(
        "grafana_client",
        reason="the optional `grafana` extra is not installed "
        "(URLLIB3_NO_OVERRIDE=true pip install --no-binary urllib3-future -e '.[grafana]')",
    )


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No PANTAU_ setting or running stack from outside; settings rebuilt for each command."""
    for name in list(os.environ):
        if name.startswith("PANTAU_") or name == "GRAFANA_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PANTAU_READONLY_PASSWORD", READER_PASSWORD)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _push(
    base: str, db_url: str, *extra: str, credentials: str = f"{USER}:{PASSWORD}@"
) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app,
        ["grafana", "push", "--url", f"http://{credentials}{base}", "--database-url", db_url,
         "--api-url", API_URL, *extra],
    )  # fmt: skip
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr


def test_first_push_creates_datasource_folders_and_dashboards(
    client_installed: None, cli_env: pytest.MonkeyPatch, grafana: tuple[FakeGrafana, str],
    db_url: str, db_mode: Mode,
) -> None:  # fmt: skip
    state, base = grafana
    code, out = _push(base, db_url)
    assert code == 0, out
    bundle = load_bundle(GRAFANA_DIR)

    (source,) = state.datasources.values()
    params = conninfo_to_dict(db_url)
    assert source["uid"] == "pantau" and source["type"] == "grafana-postgresql-datasource"
    assert source["url"] == f"{params['host']}:{params.get('port', 5432)}"
    assert source["user"] == "pantau_reader"
    assert source["secureJsonData"] == {"password": READER_PASSWORD}
    assert source["jsonData"]["database"] == params["dbname"]
    assert source["jsonData"]["timescaledb"] is (db_mode is Mode.TIMESCALEDB)

    assert {uid: f["title"] for uid, f in state.folders.items()} == {
        f.uid: f.title for f in bundle.folders
    }
    expected = {d["uid"]: f.uid for f in bundle.folders for d in f.dashboards}
    assert {uid: d["meta"]["folderUid"] for uid, d in state.dashboards.items()} == expected
    city = state.dashboards["pantau-city"]["dashboard"]
    layers = [layer for p in city["panels"] for layer in p.get("options", {}).get("layers", [])]
    assert [layer["config"]["src"] for layer in layers if layer["type"] == "geojson"] == [
        f"{API_URL}/city/kecamatan"
    ]
    # Order: the data source, then each folder before its dashboards; every dashboard POST
    # creates (id null) and overwrites by uid.
    writes = state.writes()
    assert writes[0] == ("POST", "/api/datasources")
    for method, path, body in state.requests:
        if path == "/api/dashboards/db":
            assert method == "POST" and body["dashboard"]["id"] is None and body["overwrite"]
            assert body["folderUid"] == expected[body["dashboard"]["uid"]]
    assert len([w for w in writes if w == ("POST", "/api/dashboards/db")]) == len(expected)


def test_second_push_changes_nothing(
    client_installed: None, cli_env: pytest.MonkeyPatch, grafana: tuple[FakeGrafana, str],
    db_url: str,
) -> None:  # fmt: skip
    state, base = grafana
    assert _push(base, db_url)[0] == 0
    before = copy.deepcopy((state.folders, state.dashboards))
    source_before = {k: v for k, v in state.datasources["pantau"].items() if k != "version"}
    state.requests.clear()

    code, out = _push(base, db_url)
    assert code == 0, out
    # Only the data source is written again (Grafana never shows its password to compare),
    # with the same content; folders and dashboards are read and left alone.
    assert state.writes() == [("PUT", "/api/datasources/uid/pantau")]
    assert {k: v for k, v in state.datasources["pantau"].items() if k != "version"} == source_before
    assert (state.folders, state.dashboards) == before
    assert "1 change(s)" in out


def test_push_overwrites_what_was_changed_in_grafana(
    client_installed: None, cli_env: pytest.MonkeyPatch, grafana: tuple[FakeGrafana, str],
    db_url: str,
) -> None:  # fmt: skip
    state, base = grafana
    assert _push(base, db_url)[0] == 0
    # Someone edits a dashboard in the UI and renames a folder.
    state.dashboards["pantau-flood"]["dashboard"]["title"] = "edited"
    state.dashboards["pantau-flood"]["dashboard"]["version"] += 1
    state.folders["pantau-platform"].update(title="renamed", version=2)
    state.requests.clear()

    code, out = _push(base, db_url)
    assert code == 0, out
    assert state.dashboards["pantau-flood"]["dashboard"]["title"] == "Flood — rivers and gauges"
    assert state.folders["pantau-platform"]["title"] == "Pantau — Platform"
    assert sorted(state.writes()) == [
        ("POST", "/api/dashboards/db"),
        ("PUT", "/api/datasources/uid/pantau"),
        ("PUT", "/api/folders/pantau-platform"),
    ]
    (folder_body,) = [
        b for m, p, b in state.requests if p == "/api/folders/pantau-platform" and m == "PUT"
    ]
    assert folder_body == {"title": "Pantau — Platform", "overwrite": True}


def test_token_and_database_address(
    client_installed: None, cli_env: pytest.MonkeyPatch, grafana: tuple[FakeGrafana, str],
    db_url: str,
) -> None:  # fmt: skip
    state, base = grafana
    cli_env.setenv("GRAFANA_TOKEN", TOKEN)
    code, out = _push(base, db_url, "--database-address", "db.internal:6543", credentials="")
    assert code == 0, out
    assert state.datasources["pantau"]["url"] == "db.internal:6543"


def test_refusals_are_clear_errors(
    client_installed: None, cli_env: pytest.MonkeyPatch, grafana: tuple[FakeGrafana, str],
    db_url: str, admin_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    state, base = grafana
    code, out = _push(base, db_url, credentials="admin:wrong@")
    assert code == 1 and "Unauthorized" in out
    assert not state.datasources

    with temporary_database(admin_url, prefix="pantau_grafana_push") as unmigrated:
        code, out = _push(base, unmigrated)
    assert code == 2 and "pantau db migrate" in out, "an unmigrated database has no mode"

    code, out = _push("", db_url, credentials="")
    assert code == 2 and "--url must be" in out

    code, out = _push(base, db_url, "--grafana-dir", str(tmp_path))
    assert code == 2 and "--grafana-dir" in out

    cli_env.delenv("PANTAU_READONLY_PASSWORD")
    code, out = _push(base, db_url)
    assert code == 2 and "PANTAU_READONLY_PASSWORD" in out
    assert not state.requests, "nothing is sent before the inputs are complete"


def test_missing_extra_says_how_to_install_it(cli_env: pytest.MonkeyPatch, db_url: str) -> None:
    # Imports fail as if the extra were not installed (loaded submodules included).
    for name in ["grafana_client", *(m for m in sys.modules if m.startswith("grafana_client."))]:
        cli_env.setitem(sys.modules, name, None)
    code, out = _push("127.0.0.1:9", db_url)
    assert code == 2
    assert "pantau[grafana]" in out and "URLLIB3_NO_OVERRIDE=true" in out
