"""`pantau grafana push`: Pantau's data source, folders and dashboards into a running Grafana.

The same files provision the compose stack's Grafana (``grafana/``): the data source template,
the providers (one folder each, with a fixed uid) and the dashboards. Pushing is idempotent:
everything is addressed by its uid, and a folder or dashboard that already matches is left
alone. The data source is always written, because Grafana never returns its password to compare.

The Grafana client (``grafana-client``) is an optional extra, imported only here and only when
pushing: its HTTP stack must not change what the rest of Pantau imports.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import urlsplit

import psycopg
import typer
import yaml
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console

from pantau.cli.common import adopt_stack, running_stack
from pantau.db.migrate import Mode, current_mode
from pantau.settings import Settings, SettingsError, get_settings

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "grafana"
# Where the compose file mounts grafana/dashboards in the Grafana container; the providers'
# paths are below it.
DASHBOARD_MOUNT = PurePosixPath("/etc/grafana/dashboards")
KECAMATAN_LAYER = "/city/kecamatan"
INSTALL_HINT = (
    "`pantau grafana push` needs the optional `grafana` extra: "
    "URLLIB3_NO_OVERRIDE=true pip install --no-binary urllib3-future 'pantau[grafana]' "
    "(see docs/dashboards.md)"
)

app = typer.Typer(
    help="Grafana: Pantau's data source, folders and dashboards.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


def _error(message: str) -> None:
    # No markup: messages hold brackets (`pantau[grafana]`) and URLs; no wrapping either.
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)


class GrafanaFilesError(ValueError):
    """The grafana/ directory is missing or does not hold what Pantau ships there."""


@dataclass(frozen=True, slots=True)
class Folder:
    uid: str
    title: str
    dashboards: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Bundle:
    """What the files describe: the data source template and the folders with dashboards."""

    datasource: dict[str, Any]
    folders: tuple[Folder, ...]


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise GrafanaFilesError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise GrafanaFilesError(f"{path}: expected a mapping")
    return data


def load_bundle(directory: Path = GRAFANA_DIR) -> Bundle:
    """Read the provisioning files and dashboards under ``directory`` (grafana/)."""
    provisioning = directory / "provisioning"
    if not provisioning.is_dir():
        raise GrafanaFilesError(
            f"no Grafana provisioning files under {directory}: pass --grafana-dir, the grafana/ "
            "directory of a Pantau checkout"
        )
    sources = _yaml(provisioning / "datasources" / "pantau.yaml").get("datasources") or []
    if len(sources) != 1:
        raise GrafanaFilesError(f"{provisioning}: expected exactly one data source")
    folders = []
    for provider in _yaml(provisioning / "dashboards" / "pantau.yaml").get("providers") or []:
        try:
            relative = PurePosixPath(provider["options"]["path"]).relative_to(DASHBOARD_MOUNT)
            uid, title = str(provider["folderUid"]), str(provider["folder"])
        except (KeyError, TypeError, ValueError) as error:
            raise GrafanaFilesError(f"dashboard provider {provider!r}: {error}") from None
        files = sorted((directory / "dashboards" / relative).glob("*.json"))
        try:
            dashboards = tuple(json.loads(f.read_text(encoding="utf-8")) for f in files)
        except (OSError, ValueError) as error:
            raise GrafanaFilesError(f"{directory / 'dashboards' / relative}: {error}") from None
        folders.append(Folder(uid=uid, title=title, dashboards=dashboards))
    if not folders:
        raise GrafanaFilesError(f"{provisioning}: no dashboard providers")
    return Bundle(datasource=dict(sources[0]), folders=tuple(folders))


def datasource_body(
    template: dict[str, Any],
    *,
    database_url: str,
    password: str,
    mode: Mode,
    address: str | None = None,
) -> dict[str, Any]:
    """The data source as Grafana's HTTP API takes it, for this database and storage mode.

    The file's environment references are filled in: the address and database name from the
    database URL (``address`` overrides host:port, for a Grafana that reaches the database
    another way), the read-only login's password, and the TimescaleDB flag from the mode.
    """
    params = conninfo_to_dict(database_url)
    host = str(params.get("host") or "127.0.0.1").split(",")[0]
    port = str(params.get("port") or "5432").split(",")[0]
    json_data = {
        **template.get("jsonData", {}),
        "database": str(params.get("dbname") or "postgres"),
        "timescaledb": mode is Mode.TIMESCALEDB,
    }
    return {
        "uid": template["uid"],
        "name": template["name"],
        "type": template["type"],
        "access": template.get("access", "proxy"),
        "url": address or f"{host}:{port}",
        "user": template["user"],
        "isDefault": bool(template.get("isDefault", False)),
        "jsonData": json_data,
        "secureJsonData": {"password": password},
    }


def prepare_dashboard(dashboard: dict[str, Any], *, api_url: str) -> dict[str, Any]:
    """The dashboard to save: no numeric id (uids decide), map layers on this API's address."""
    out = copy.deepcopy(dashboard)
    out["id"] = None
    for panel in out.get("panels", []):
        for layer in panel.get("options", {}).get("layers", []):
            config = layer.get("config", {})
            if layer.get("type") == "geojson" and str(config.get("src", "")).endswith(
                KECAMATAN_LAYER
            ):
                config["src"] = api_url.rstrip("/") + KECAMATAN_LAYER
    return out


def _same_dashboard(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
    # Grafana adds the numeric id and counts versions; neither is content.
    ignored = {"id", "version"}
    return {k: v for k, v in saved.items() if k not in ignored} == {
        k: v for k, v in wanted.items() if k not in ignored
    }


@dataclass(slots=True)
class PushReport:
    """What a push did to each object: created, updated or unchanged."""

    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, uid, action)

    def add(self, kind: str, uid: str, action: str) -> None:
        self.actions.append((kind, uid, action))

    @property
    def changed(self) -> int:
        return sum(1 for _, _, action in self.actions if action != "unchanged")


def _missing(call: Any, *args: Any) -> Any:
    """The object ``call`` returns, or None when Grafana answers 404."""
    from grafana_client.client import GrafanaClientError

    try:
        return call(*args)
    except GrafanaClientError as error:
        if error.status_code == 404:
            return None
        raise


def push(
    api: Any,
    bundle: Bundle,
    *,
    datasource: dict[str, Any],
    api_url: str,
) -> PushReport:
    """Put the data source, the folders and their dashboards into Grafana through ``api``
    (a ``grafana_client.GrafanaApi``); idempotent."""
    report = PushReport()
    uid = datasource["uid"]
    if _missing(api.datasource.get_datasource_by_uid, uid) is None:
        api.datasource.create_datasource(datasource)
        report.add("datasource", uid, "created")
    else:
        api.datasource.update_datasource_by_uid(uid, datasource)
        report.add("datasource", uid, "updated")
    for folder in bundle.folders:
        existing = _missing(api.folder.get_folder, folder.uid)
        if existing is None:
            api.folder.create_folder(folder.title, uid=folder.uid)
            report.add("folder", folder.uid, "created")
        elif existing.get("title") != folder.title:
            api.folder.update_folder(folder.uid, title=folder.title, overwrite=True)
            report.add("folder", folder.uid, "updated")
        else:
            report.add("folder", folder.uid, "unchanged")
        for dashboard in folder.dashboards:
            wanted = prepare_dashboard(dashboard, api_url=api_url)
            saved = _missing(api.dashboard.get_dashboard, wanted["uid"])
            if (
                saved is not None
                and saved.get("meta", {}).get("folderUid") == folder.uid
                and _same_dashboard(saved.get("dashboard", {}), wanted)
            ):
                report.add("dashboard", wanted["uid"], "unchanged")
                continue
            api.dashboard.update_dashboard(
                {
                    "dashboard": wanted,
                    "folderUid": folder.uid,
                    "overwrite": True,
                    "message": "pantau grafana push",
                }
            )
            report.add("dashboard", wanted["uid"], "created" if saved is None else "updated")
    return report


def _storage_mode(database_url: str) -> Mode:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        mode = current_mode(conn)
    if mode is None:
        raise SettingsError("the database is not migrated: run `pantau db migrate` first")
    return mode


def _prepare(
    url: str, database_url: str | None, database_address: str | None, grafana_dir: Path
) -> tuple[Settings, Bundle, dict[str, Any]]:
    """The settings, the files and the data source to push; raises on what the operator set."""
    address = urlsplit(url)
    if address.scheme not in {"http", "https"} or not address.hostname:
        raise SettingsError(f"--url must be http(s)://[user:password@]host[:port]: {url!r}")
    settings = adopt_stack(get_settings())
    bundle = load_bundle(grafana_dir)
    database = database_url or settings.require_database_url()
    if settings.readonly_password is None:
        raise SettingsError(
            "PANTAU_READONLY_PASSWORD is not set: Grafana logs in as pantau_reader with it "
            "(`pantau db migrate` with the same variable creates that login)"
        )
    source = datasource_body(
        bundle.datasource,
        database_url=database,
        password=settings.readonly_password.get_secret_value(),
        mode=_storage_mode(database),
        address=database_address,
    )
    return settings, bundle, source


def _default_api_url(settings: Settings) -> str:
    record = running_stack(settings)
    if record is not None:
        return record.api_url
    host = settings.api.host
    return f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{settings.api.port}"


@app.command("push")
def push_command(
    url: Annotated[
        str,
        typer.Option(
            help="Grafana's address, with credentials if no token: http://admin:PASSWORD@host:3000"
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(envvar="GRAFANA_TOKEN", help="A service-account token instead of a password"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="The Pantau database; default: PANTAU_DATABASE_URL or the running stack"),
    ] = None,
    database_address: Annotated[
        str | None,
        typer.Option(help="host:port Grafana reaches the database at, if not the URL's"),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            help="The Pantau API as the browser reaches it (map layer); default: the running "
            "stack's or PANTAU_API__HOST/PORT"
        ),
    ] = None,
    grafana_dir: Annotated[
        Path, typer.Option(help="Pantau's grafana/ directory (provisioning and dashboards)")
    ] = GRAFANA_DIR,
    timeout_s: Annotated[float, typer.Option(help="Timeout of each request to Grafana")] = 30.0,
) -> None:
    """Put the Pantau data source, folders and dashboards into an existing Grafana (idempotent)."""
    try:
        from grafana_client.api import GrafanaApi
        from grafana_client.client import GrafanaException
    except ImportError:
        _error(INSTALL_HINT)
        raise typer.Exit(2) from None
    try:
        settings, bundle, source = _prepare(url, database_url, database_address, grafana_dir)
    except (SettingsError, GrafanaFilesError) as error:
        _error(str(error))
        raise typer.Exit(2) from None
    except psycopg.Error as error:
        _error(f"cannot read the database's storage mode: {error}")
        raise typer.Exit(1) from None
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        report = push(api, bundle, datasource=source, api_url=api_url or _default_api_url(settings))
    except (GrafanaException, OSError) as error:
        _error(f"Grafana refused or is unreachable: {error}")
        raise typer.Exit(1) from None
    for kind, uid, action in report.actions:
        console.print(f"{kind:<10} {uid:<22} {action}", highlight=False)
    console.print(
        f"timescaledb flag: {source['jsonData']['timescaledb']}; {report.changed} change(s)",
        highlight=False,
    )
