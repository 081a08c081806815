"""The container deployment: docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored in
tests/deploy/compose-spec/, with its licence and origin), parsed with PyYAML (merge keys
included) with the values of `.env.example`, and checked against the project: every command
resolves to a real `pantau` command with valid options, every ``PANTAU_*`` variable is a real
setting, mounted files exist, the broker's accounts agree with its ACL, and the demo
simulator's credentials work against a real Mosquitto running the production configuration.
Where the ``docker compose`` plugin is installed, Compose itself checks the file too.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel
from typer.exceptions import TyperException
from typer.testing import CliRunner

import pantau.cli.app as cli
from pantau.alertmanager import write_config
from pantau.cli.mosquitto import render_acl
from pantau.settings import Settings, get_settings
from pantau.tools.services import wait_until
from tests.fixtures.production_broker import ProductionBroker

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

SERVICES = {
    "timescaledb",
    "broker-init",
    "mosquitto",
    "migrate",
    "maintain",
    "ingest-1",
    "ingest-2",
    "alerts",
    "api",
    "grafana",
    "simulator",
    "devices",
    "alertmanager-init",
    "alertmanager",
}
PANTAU_IMAGE_SERVICES = {
    "alertmanager-init",
    "broker-init",
    "migrate",
    "maintain",
    "ingest-1",
    "ingest-2",
    "alerts",
    "api",
    "simulator",
    "devices",
}
ONE_SHOT = {"broker-init", "migrate", "devices", "alertmanager-init"}
INGEST_SERVICES = ("ingest-1", "ingest-2")
# Services started by `pantau X` whose own command-line app is imported when called.
DELEGATED = {"ingest": "ingest.cli", "simulate": "simulators.cli", "api": "api.cli",
             "alerts": "alerts.cli", "bench": "pantau.tools.bench.cli"}  # fmt: skip
DEPENDENCY_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _env_example() -> dict[str, str]:
    pairs = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {raw!r} is not NAME=value"
            pairs[key.strip()] = value.strip()
    return pairs


def _interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """The value Compose uses with `.env.example` copied to `.env` (and nothing else set)."""
    values = _env_example() if env is None else env

    def substitute(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        if values.get(name):
            return values[name]
        assert operator in {":-", "-"}, f"{match.group(0)}: not in .env.example, compose would fail"
        return str(word)

    return _INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def _interpolated(node: Any) -> Any:
    if isinstance(node, str):
        return _interpolate(node)
    if isinstance(node, list):
        return [_interpolated(item) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value) for key, value in node.items()}
    return node


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        env = {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume entry, short or long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out.append((volume["type"], str(volume.get("source", "")), volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _host_ports(service: dict[str, Any]) -> list[str]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(f"{port.get('host_ip', '')}:{port['published']}")
            continue
        parts = str(port).split(":")
        assert len(parts) >= 2, f"{port}: publish with an explicit host port"
        ports.append(":".join(parts[:-1]))
    return ports


def _setting_path(key: str) -> list[str]:
    """``PANTAU_MQTT__URL`` -> ``["mqtt", "url"]`` if that field exists; else AssertionError."""
    assert key.startswith("PANTAU_"), key
    model: type[BaseModel] = Settings
    path = []
    parts = key.removeprefix("PANTAU_").lower().split("__")
    for index, part in enumerate(parts):
        assert part in model.model_fields, f"{key}: no setting {'.'.join([*path, part])}"
        path.append(part)
        annotation = model.model_fields[part].annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if index < len(parts) - 1:
            assert nested, f"{key}: {'.'.join(path)} is not a group of settings"
            model = annotation  # type: ignore[assignment]
        else:
            assert not nested, f"{key}: {'.'.join(path)} is a group, not a setting"
    return path


# Variables of the compose file that are not settings (read by a shell command or Grafana).
NOT_SETTINGS = {"PANTAU_MQTT_TLS_HOSTNAME", "PANTAU_GRAFANA_DB_ADDRESS", "PANTAU_GRAFANA_DB_NAME"}


def _settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service's process starts with (only its own PANTAU_* variables set)."""
    for key in list(os.environ):
        if key.startswith("PANTAU_"):
            monkeypatch.delenv(key)
    for key, value in _environment(service).items():
        if key not in NOT_SETTINGS:
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _pantau_commands(service: dict[str, Any]) -> list[list[str]]:
    """The `pantau ...` command lines a Pantau-image service runs."""
    entrypoint = service.get("entrypoint") or ["pantau"]
    command = service.get("command") or []
    if entrypoint[0] == "pantau":
        return [[*entrypoint[1:], *command]]
    assert entrypoint[0] == "/bin/sh", entrypoint
    script = " ".join(command)
    lines = []
    for part in re.split(r"&&|;|\bthen\b|\bfi\b", script):
        words = shlex.split(part.replace("$$", "$"))
        if words and words[0] == "pantau":
            lines.append(words[1:])
    assert lines, f"no pantau command in {script!r}"
    return lines


def _resolve(argv: list[str]) -> None:
    """Parse a `pantau` command line as the real command would; raise on anything unknown."""
    command: Any = typer.main.get_command(cli.app)
    args, prog = list(argv), "pantau"
    while hasattr(command, "resolve_command") and args and not args[0].startswith("-"):
        if prog == "pantau" and args[0] in DELEGATED:
            # A service's own app, which `pantau` imports when called: it parses the rest.
            name = args.pop(0)
            command = typer.main.get_command(importlib.import_module(DELEGATED[name]).app)
            prog = f"pantau {name}"
            break
        context = command.make_context(prog, list(args))
        name, command, args = command.resolve_command(context, args)
        assert command is not None, f"{prog} has no command {name}"
        prog = f"{prog} {name}"
    command.make_context(prog, list(args))


# ------------------------------------------------------------------------- the specification


def test_the_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_interpolated(_compose())), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_schema_check_catches_mistakes() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    broken = _interpolated(_compose())
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["mosquitto"]["depends_on"]["broker-init"]["condition"] = "service_done"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_vendored_schema_keeps_its_licence_and_origin() -> None:
    folder = SCHEMA.parent
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert "compose-spec/compose-spec" in (folder / "ORIGIN.md").read_text(encoding="utf-8")


def test_every_variable_is_in_env_example() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8").replace("$$", "")
    required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) in {":?", "?"}}
    example = _env_example()
    assert required <= set(example), required - set(example)
    assert all(example[name] for name in required)
    # And the file refuses to start without them instead of falling back to a known password.
    for name in ("PANTAU_DB_PASSWORD", "PANTAU_MQTT_INGEST_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert name in required, name
        with pytest.raises(AssertionError):
            _interpolate("${%s:?set it}" % name, env={})  # noqa: UP031


# ------------------------------------------------------------------------------ the services


def test_all_services_present() -> None:
    assert set(_services()) == SERVICES


@pytest.mark.parametrize("name", sorted(PANTAU_IMAGE_SERVICES))
def test_every_command_is_a_real_pantau_command(name: str) -> None:
    for argv in _pantau_commands(_services()[name]):
        _resolve(argv)


def test_command_resolution_refuses_unknown_commands_and_options() -> None:
    _resolve(["devices", "import-city", "--no-registry", "--credentials", "x.yaml"])
    for bad in (["nope"], ["devices", "nope"], ["simulate", "--nope"], ["devices", "list", "--x"]):
        with pytest.raises((TyperException, AssertionError)):
            _resolve(bad)


def test_bind_mounted_files_exist_and_named_volumes_are_declared() -> None:
    declared = set(_compose().get("volumes") or {})
    missing = []
    for name, service in _services().items():
        for kind, source, target in _mounts(service):
            if kind == "bind" and not (ROOT / source).exists():
                missing.append(f"{name}: {source}")
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared"
            assert target.startswith("/"), f"{name}: {target}"
    assert not missing, f"bind-mounted but not in the repository: {missing}"


def test_every_pantau_variable_is_a_setting() -> None:
    seen = set()
    for name, service in _services().items():
        for key in _environment(service):
            if key.startswith("PANTAU_") and key not in NOT_SETTINGS:
                _setting_path(key)
                seen.add(name)
    assert seen >= PANTAU_IMAGE_SERVICES


def test_setting_path_rejects_unknown_variables() -> None:
    assert _setting_path("PANTAU_MQTT__URL") == ["mqtt", "url"]
    for bad in ("PANTAU_MQTT__NOPE", "PANTAU_NOPE", "PANTAU_MQTT", "PANTAU_DATABASE_URL__X"):
        with pytest.raises(AssertionError):
            _setting_path(bad)


@pytest.mark.parametrize("name", sorted(PANTAU_IMAGE_SERVICES))
def test_service_environment_builds_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each Pantau service's environment, with the `.env.example` values, is accepted."""
    monkeypatch.chdir(tmp_path)
    settings = _settings_of(_services()[name], monkeypatch)
    if name == "broker-init":  # works on files before the broker and database are up
        assert settings.broker.password_file is not None
        return
    if name == "alertmanager-init":  # writes Alertmanager's files from the settings alone
        assert settings.notify.receivers == []
        return
    assert settings.database_url is not None, f"{name} has no database URL"
    assert settings.mqtt.host == "mosquitto"


def test_health_checks_and_start_order() -> None:
    services = _services()
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck") or {}
        # Neither the simulator nor the maintenance loop serves an endpoint to probe.
        probed = check.get("test") or (name in {"simulator", "maintain"} and check.get("disable"))
        assert probed, name
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in DEPENDENCY_CONDITIONS, f"{name} -> {target}: {condition}"
    assert _depends_on(services["migrate"]) == {"timescaledb": "service_healthy"}
    assert "pg_isready" in json.dumps(services["timescaledb"]["healthcheck"]["test"])
    assert _depends_on(services["mosquitto"]) == {"broker-init": "service_completed_successfully"}
    for name in (*INGEST_SERVICES, "alerts", "api", "simulator", "devices", "maintain"):
        assert _depends_on(services[name])["migrate"] == "service_completed_successfully", name
    for name in (*INGEST_SERVICES, "alerts", "simulator", "devices"):
        assert _depends_on(services[name])["mosquitto"] == "service_healthy", name
    probe = " ".join(services["api"]["healthcheck"]["test"])
    assert "127.0.0.1:8000/healthz" in probe


def test_ports_plain_mqtt_on_loopback_tls_open() -> None:
    services = _services()
    ports = [port for service in services.values() for port in _host_ports(service)]
    assert len(ports) == len(set(ports)), ports
    mqtt = _host_ports(services["mosquitto"])
    assert "127.0.0.1:1883" in mqtt
    assert [p for p in mqtt if p.endswith(":1883")] == ["127.0.0.1:1883"], "plain MQTT only here"
    assert "8883" in mqtt, "the TLS listener is for devices in the field"
    assert any(p.endswith("8000") for p in _host_ports(services["api"]))
    assert any(p.endswith("3000") for p in _host_ports(services["grafana"]))
    assert _environment(services["api"])["PANTAU_API__HOST"] == "0.0.0.0"


def test_the_api_believes_forwarded_clients_from_the_proxy_on_this_host_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (network,) = _compose()["networks"]["default"]["ipam"]["config"]
    gateway = ipaddress.ip_address(network["gateway"])
    assert gateway in ipaddress.ip_network(network["subnet"])
    settings = _settings_of(_services()["api"], monkeypatch)
    assert settings.api.trusted_proxies == [str(gateway)]


def test_ingest_processes_have_own_client_ids_and_one_group() -> None:
    envs = [_environment(_services()[name]) for name in INGEST_SERVICES]
    client_ids = [env["PANTAU_MQTT__CLIENT_ID"] for env in envs]
    assert len(set(client_ids)) == len(client_ids), client_ids
    groups = {env["PANTAU_MQTT__SHARED_GROUP"] for env in envs}
    assert len(groups) == 1 and groups != {""}, groups
    for name in INGEST_SERVICES:
        assert _services()[name]["command"] == ["ingest"]
    alerts = _environment(_services()["alerts"])
    assert alerts["PANTAU_ALERTS__CLIENT_ID"] not in client_ids


def test_health_checks_probe_the_services_own_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in INGEST_SERVICES:
        service = _services()[name]
        port = _settings_of(service, monkeypatch).ingest.metrics_port
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    alerts = _services()["alerts"]
    port = _settings_of(alerts, monkeypatch).alerts.metrics_port
    assert f"127.0.0.1:{port}/metrics" in " ".join(alerts["healthcheck"]["test"])


def test_database_logins_are_the_same_everywhere() -> None:
    services = _services()
    migrate = _environment(services["migrate"])
    password = migrate["PANTAU_READONLY_PASSWORD"]
    assert password
    assert _environment(services["grafana"])["PANTAU_READONLY_PASSWORD"] == password
    logins = {"api": "PANTAU_API_PASSWORD", "alerts": "PANTAU_ALERTS_PASSWORD"}
    logins |= dict.fromkeys(INGEST_SERVICES, "PANTAU_INGEST_PASSWORD")
    for name, setting in logins.items():
        login = "pantau_" + name.split("-")[0]
        secret = migrate[setting]
        assert secret and secret != password, setting
        url = _environment(services[name])["PANTAU_DATABASE_URL"]
        assert url.startswith(f"postgresql://{login}:{secret}@"), (name, url)
    # Only what changes the schema or the registry logs in as the owner.
    owner = {n for n, s in services.items() if "postgresql://postgres:" in json.dumps(s)}
    assert owner == {"migrate", "maintain", "devices", "simulator"}, owner


def test_commands() -> None:
    services = _services()
    migrate = services["migrate"]
    assert " ".join([*migrate["entrypoint"], *migrate["command"]]) == (
        "/bin/sh -c pantau db migrate && pantau city load"
    )
    assert services["api"]["command"] == ["api"]
    assert services["alerts"]["command"] == ["alerts"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["devices"]["profiles"] == ["tools"]


def test_images_are_pinned() -> None:
    version = PYPROJECT["project"]["version"]
    for name, service in _services().items():
        image = _interpolate(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert "latest" not in tag, f"{name}: {image} floats"
        if name in PANTAU_IMAGE_SERVICES:
            assert image == f"pantau:{version}", f"{name}: the image tag follows the version"
            assert service["build"]["context"] == "."
    timescaledb = _services()["timescaledb"]["image"]
    # TimescaleDB 2.29 or later on PostgreSQL 17 or 18 (2.28, the last line for 15, gets no
    # security fixes), the Community build (an -oss image lacks the policies and aggregates).
    match = re.fullmatch(r"timescale/timescaledb:2\.(\d+)\.\d+-pg(\d+)", timescaledb)
    assert match and int(match[1]) >= 29 and match[2] in {"17", "18"}, timescaledb
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", _services()["mosquitto"]["image"])
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", _services()["grafana"]["image"])
    # The release line the tests run (Debian's package): its configuration format.
    assert re.fullmatch(r"prom/alertmanager:v0\.25\.\d+", _services()["alertmanager"]["image"])


def test_the_database_volume_holds_the_clusters_directory() -> None:
    """From PostgreSQL 18 the image's cluster is /var/lib/postgresql/MAJOR/docker: a volume on
    the old /var/lib/postgresql/data would not hold it (and the image refuses to start)."""
    service = _services()["timescaledb"]
    major = int(_interpolate(service["image"]).rpartition("-pg")[2])
    targets = {target: (kind, source) for kind, source, target in _mounts(service)}
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert targets.get(expected, ("", ""))[0] == "volume", targets


def test_alertmanager_reads_what_alertmanager_init_writes_and_the_services_reach_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = _services()
    init, server = services["alertmanager-init"], services["alertmanager"]
    written = {target: source for _, source, target in _mounts(init)}
    read = {target: source for _, source, target in _mounts(server)}
    out = _pantau_commands(init)[0]
    assert out[:2] == ["alertmanager", "config"]
    directory = out[out.index("--out") + 1]
    assert written[directory] == read[directory]
    config_flag = next(a for a in server["command"] if a.startswith("--config.file="))
    assert config_flag == f"--config.file={directory}/alertmanager.yml"
    assert "--cluster.listen-address=" in server["command"]
    assert _depends_on(server) == {"alertmanager-init": "service_completed_successfully"}
    assert _host_ports(server) == ["127.0.0.1:9093"], "its UI is for this host only"
    # The alert service sends to it; the control page links to its UI.
    alerts = _environment(services["alerts"])
    assert alerts["PANTAU_NOTIFY__ALERTMANAGER_URL"] == "http://alertmanager:9093"
    api = _environment(services["api"])
    flag = next(a for a in server["command"] if a.startswith("--web.external-url="))
    external = _interpolate(flag.split("=", 1)[1])
    assert external == _env_example()["PANTAU_ALERTMANAGER_EXTERNAL_URL"]
    assert api["PANTAU_NOTIFY__ALERTMANAGER_EXTERNAL_URL"] == external
    # The settings `.env.example` gives render a configuration Alertmanager accepts.
    monkeypatch.chdir(tmp_path)
    settings = _settings_of(init, monkeypatch)
    write_config(settings.notify, tmp_path)
    if shutil.which("amtool") is None:
        pytest.skip("amtool is not installed")
    check = subprocess.run(
        ["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


# -------------------------------------------------------------------------------- the broker


def _options(path: Path) -> dict[str, str]:
    return dict(
        line.split(None, 1)
        for line in (raw.strip() for raw in path.read_text(encoding="utf-8").splitlines())
        if line and not line.startswith("#") and " " in line and not line.startswith("listener")
    )


def test_the_broker_reads_what_the_other_services_write() -> None:
    services = _services()
    mounts = {target: (kind, source) for kind, source, target in _mounts(services["mosquitto"])}
    options = _options(ROOT / "mosquitto" / "mosquitto.conf")
    acl = options["acl_file"]
    assert mounts[acl] == ("bind", "./mosquitto/acl")
    # The password file: on a volume that broker-init fills before the broker starts, and
    # that the devices tool edits; both use the path the broker reads.
    password_file = Path(options["password_file"])
    secrets = mounts[str(password_file.parent)]
    for writer in ("broker-init", "devices"):
        assert secrets[1] in {source for _, source, _ in _mounts(services[writer])}, writer
        assert _environment(services[writer])["PANTAU_BROKER__PASSWORD_FILE"] == str(password_file)
    # The certificates: the directory broker-init issues the pilot certificate into.
    certs = Path(options["certfile"]).parent
    assert mounts[str(certs)] == ("bind", "./mosquitto/certs")
    assert ("bind", "./mosquitto/certs", str(certs)) in _mounts(services["broker-init"])
    # The pid file, for the devices tool's SIGHUP in the broker's process namespace.
    pid_file = Path(options["pid_file"])
    assert mounts[str(pid_file.parent)][0] == "volume"
    devices = services["devices"]
    assert devices["pid"] == "service:mosquitto"
    assert _environment(devices)["PANTAU_BROKER__PID_FILE"] == str(pid_file)


def test_service_accounts_match_the_committed_acl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    services = _services()
    init = _settings_of(services["broker-init"], monkeypatch)
    # The ACL the broker loads is the one rendered from the accounts broker-init creates.
    assert render_acl(init) == (ROOT / "mosquitto" / "acl").read_text(encoding="utf-8")
    for name, user, password in (
        ("ingest-1", init.broker.ingest_user, init.broker.ingest_password),
        ("ingest-2", init.broker.ingest_user, init.broker.ingest_password),
        ("alerts", init.broker.alerts_user, init.broker.alerts_password),
    ):
        mqtt = _settings_of(services[name], monkeypatch).mqtt
        assert mqtt.username == user, name
        assert mqtt.password is not None and password is not None
        assert mqtt.password.get_secret_value() == password.get_secret_value(), name


def test_mosquitto_health_check_needs_an_up_broker_that_refuses_anonymous(
    production_broker: ProductionBroker, broker_url: str
) -> None:
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub is not installed")
    test = _services()["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"

    def probe(port: int) -> int:
        command = test[1].replace("-p 1883", f"-p {port}")
        return subprocess.run(["sh", "-c", command], timeout=20, check=False).returncode

    assert probe(production_broker.port) == 0
    production_broker.stop()
    assert probe(production_broker.port) != 0, "a broker that is down is not healthy"
    anonymous = Settings(_env_file=None).mqtt.model_copy(update={"url": broker_url})  # type: ignore[call-arg]
    assert probe(anonymous.port) != 0, "a broker that lets anonymous clients in is not healthy"


def test_the_demo_simulator_publishes_with_the_accounts_broker_init_creates(
    production_broker: ProductionBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """broker-init's `pantau devices import-city`, then the simulator's own command line."""
    services = _services()
    init, simulator = services["broker-init"], services["simulator"]
    (volume_path,) = [t for _, s, t in _mounts(simulator) if s == "device-credentials"]
    assert ("volume", "device-credentials", volume_path) in _mounts(init)
    local = tmp_path / "devices"
    monkeypatch.chdir(tmp_path)

    def run(argv: list[str], env: dict[str, str]) -> None:
        for key in [k for k in os.environ if k.startswith("PANTAU_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        argv = [arg.replace(volume_path, str(local)) for arg in argv]
        result = CliRunner().invoke(cli.app, argv)
        get_settings.cache_clear()
        assert result.exit_code == 0, (argv, result.output)

    broker_env = {
        **_environment(init),
        "PANTAU_BROKER__PASSWORD_FILE": str(production_broker.password_file),
        "PANTAU_BROKER__PID_FILE": str(production_broker.directory / "mosquitto.pid"),
        "PANTAU_MQTT__TOPIC_ROOT": production_broker.root,
    }
    for argv in _pantau_commands(init):
        run(argv, broker_env)
    credentials = local / "credentials.yaml"
    assert credentials.is_file()

    from tests.deploy.test_broker_security import _subscriber

    # broker-init has just set the service accounts' passwords to those of .env.example.
    _, received, _ = _subscriber(
        production_broker,
        production_broker.settings.broker.ingest_user,
        broker_env["PANTAU_BROKER__INGEST_PASSWORD"],
        f"{production_broker.root}/up/+",
    )
    (argv,) = _pantau_commands(simulator)
    # Faster than real time, and bounded, but otherwise the demo's own command line.
    speed = argv.index("--speed") + 1
    argv = [*argv[:speed], "3600", *argv[speed + 1 :], "--max-messages", "40"]
    run(
        argv,
        {
            **_environment(simulator),
            "PANTAU_MQTT__URL": f"mqtt://127.0.0.1:{production_broker.port}",
            "PANTAU_MQTT__TOPIC_ROOT": production_broker.root,
        },
    )
    wait_until(lambda: len(received) >= 40, timeout_s=15, what="the demo's readings")
    secrets = yaml.safe_load(credentials.read_text(encoding="utf-8"))
    assert {m.topic.rsplit("/", 1)[1] for m in received} <= set(secrets)


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), argument.strip()))
    return stages


def test_dockerfile_runs_the_console_script_as_a_user() -> None:
    final = _dockerfile_stages()[-1]
    assert final[0] == ("FROM", "python:3.11-slim-bookworm")
    (entrypoint,) = [arg for ins, arg in final if ins == "ENTRYPOINT"]
    command = json.loads(entrypoint)
    assert command == ["pantau"]
    assert PYPROJECT["project"]["scripts"][command[0]] == "pantau.cli:main"
    users = [arg for ins, arg in final if ins == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    installs = [arg for ins, arg in final if ins == "RUN" and "pip install" in arg]
    assert installs and all(" -e " not in arg and "--editable" not in arg for arg in installs)


def _locked() -> dict[str, tuple[Requirement, list[str], list[str]]]:
    """requirements.lock by package: (its requirement line, its hashes, what needs it)."""
    entries: dict[str, tuple[Requirement, list[str], list[str]]] = {}
    current: str | None = None
    for raw in LOCK.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comment = line.lstrip("# ").removeprefix("via").strip()
            if current is not None and comment and not raw.startswith("#"):
                entries[current][2].append(comment)
            continue
        if not line:
            continue
        spec, *hashes = (part.strip() for part in line.split("--hash="))
        requirement = Requirement(spec)
        current = canonicalize_name(requirement.name)
        assert current not in entries, f"{current} is pinned twice"
        entries[current] = (requirement, hashes, [])
    return entries


def test_the_lock_pins_every_package_with_its_hashes() -> None:
    locked = _locked()
    assert locked, "requirements.lock is empty"
    for name, (requirement, hashes, needed_by) in locked.items():
        (pin,) = requirement.specifier
        assert pin.operator == "==", f"{name}: {requirement} is not an exact pin"
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{name}: no hashes"
        assert needed_by, f"{name}: nothing in the lock needs it"


def test_the_lock_agrees_with_pyproject() -> None:
    """The packages pyproject names are the lock's direct ones, at versions it allows, with what
    their extras bring; a dependency added, dropped or narrowed without `make lock` fails."""
    locked = _locked()
    wanted = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    direct = {
        name for name, (_, _, needed_by) in locked.items() if "pantau (pyproject.toml)" in needed_by
    }
    assert direct == {canonicalize_name(r.name) for r in wanted}
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        (pin,) = locked[name][0].specifier
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"pyproject wants {requirement}, the lock has {pin.version}: run `make lock`"
        )
        for extra in requirement.extras:  # what the extra adds, as the installed package says
            for text in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(text)
                if needed.marker and needed.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(needed.name) in locked, f"{requirement}: {needed}"


def test_the_image_installs_exactly_the_lock() -> None:
    final = _dockerfile_stages()[-1]
    copies = [arg for ins, arg in final if ins == "COPY"]
    assert any(arg.split()[0] == "requirements.lock" for arg in copies), copies
    installs = [arg for ins, arg in final if ins == "RUN" and "pip install" in arg]
    from_lock = [arg for arg in installs if "requirements.lock" in arg]
    assert from_lock and all("--require-hashes" in a and "--no-deps" in a for a in from_lock)
    project = [arg for arg in installs if ".whl" in arg]
    assert project and all("--no-deps" in arg for arg in project), "the wheel may bring nothing"
    assert all(arg in from_lock + project for arg in installs), installs


def test_dockerignore_keeps_what_the_build_needs() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "everything is excluded unless listed"
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"pyproject.toml", "requirements.lock", PYPROJECT["project"]["readme"]} <= kept
    assert {pattern.rstrip("*") for pattern in packages} <= kept


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_itself_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    result = subprocess.run(
        [
            *command,
            "--env-file",
            str(ENV_EXAMPLE),
            "-f",
            str(COMPOSE_FILE),
            "--profile",
            "demo",
            "--profile",
            "tools",
            "config",
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
