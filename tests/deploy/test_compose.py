"""The container deployment: docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is parsed with PyYAML (merge keys included) and checked against the
repository and the settings classes: mounted files exist, every ``PANTAU_*`` variable is a real
setting with a valid value, dependencies and ports are consistent. Where the ``docker compose``
plugin (or ``docker-compose``) is installed, the file is also validated by Compose itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pantau.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

SERVICES = {
    "timescaledb",
    "mosquitto-passwd",
    "mosquitto",
    "migrate",
    "ingest-1",
    "ingest-2",
    "api",
    "grafana",
    "simulator",
}
PANTAU_IMAGE_SERVICES = {"migrate", "ingest-1", "ingest-2", "api", "simulator"}
INGEST_SERVICES = ("ingest-1", "ingest-2")
DEPENDENCY_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _interpolate(value: str) -> str:
    """The value Compose uses when no variable is set in the environment or `.env`."""

    def default(match: re.Match[str]) -> str:
        operator, word = match.group(2), match.group(3)
        assert operator in {":-", "-"}, f"{match.group(0)} has no default: compose up would fail"
        return str(word)

    return _INTERPOLATION.sub(default, value.replace("$$", "\0")).replace("\0", "$")


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


def _settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service's process starts with (only its own PANTAU_* variables set)."""
    for key in list(os.environ):
        if key.startswith("PANTAU_"):
            monkeypatch.delenv(key)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_all_services_present() -> None:
    assert set(_services()) == SERVICES


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
            if key.startswith("PANTAU_"):
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
    """Each Pantau service's environment, with the compose defaults, is accepted by Settings."""
    monkeypatch.chdir(tmp_path)  # no stray .env file
    settings = _settings_of(_services()[name], monkeypatch)
    assert settings.database_url is not None, f"{name} has no database URL"
    assert settings.mqtt.host == "mosquitto"


def test_dependencies_exist_and_order_the_start() -> None:
    services = _services()
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            assert condition in DEPENDENCY_CONDITIONS, f"{name} -> {target}: {condition}"
    assert _depends_on(services["migrate"]) == {"timescaledb": "service_healthy"}
    assert "test" in services["timescaledb"]["healthcheck"]
    assert "pg_isready" in json.dumps(services["timescaledb"]["healthcheck"]["test"])
    for name in (*INGEST_SERVICES, "api"):
        assert _depends_on(services[name])["migrate"] == "service_completed_successfully", name
    for name in INGEST_SERVICES:
        assert "mosquitto" in _depends_on(services[name]), name


def test_published_ports_do_not_collide() -> None:
    ports = [port for service in _services().values() for port in _host_ports(service)]
    assert len(ports) == len(set(ports)), ports
    services = _services()
    assert any(p.endswith("8000") for p in _host_ports(services["api"]))
    assert any(p.endswith("3000") for p in _host_ports(services["grafana"]))
    assert _environment(services["api"])["PANTAU_API__HOST"] == "0.0.0.0"


def test_ingest_processes_have_own_client_ids_and_one_group() -> None:
    envs = [_environment(_services()[name]) for name in INGEST_SERVICES]
    client_ids = [env["PANTAU_MQTT__CLIENT_ID"] for env in envs]
    assert len(set(client_ids)) == len(client_ids), client_ids
    groups = {env["PANTAU_MQTT__SHARED_GROUP"] for env in envs}
    assert len(groups) == 1 and groups != {""}, groups
    for name in INGEST_SERVICES:
        assert _services()[name]["command"] == ["ingest"]


def test_ingest_healthcheck_probes_its_metrics_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in INGEST_SERVICES:
        service = _services()[name]
        port = _settings_of(service, monkeypatch).ingest.metrics_port
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/healthz" in probe, probe


def test_read_only_password_is_the_same_everywhere() -> None:
    services = _services()
    password = _environment(services["migrate"])["PANTAU_READONLY_PASSWORD"]
    assert password
    assert _environment(services["grafana"])["PANTAU_READONLY_PASSWORD"] == password
    api_url = _environment(services["api"])["PANTAU_DATABASE_URL"]
    assert api_url.startswith(f"postgresql://pantau_reader:{password}@"), api_url


def test_commands() -> None:
    services = _services()
    migrate = services["migrate"]
    assert " ".join([*migrate["entrypoint"], *migrate["command"]]) == (
        "/bin/sh -c pantau db migrate && pantau city load"
    )
    assert migrate["restart"] == "no"
    assert services["api"]["command"] == ["api"]
    assert services["simulator"]["command"] == [
        "simulate",
        "--scenario",
        "normal",
        "--speed",
        "1",
    ]
    assert services["simulator"]["profiles"] == ["sim"]


def test_images_are_pinned() -> None:
    version = PYPROJECT["project"]["version"]
    for name, service in _services().items():
        image = _interpolate(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} floats"
        if name in PANTAU_IMAGE_SERVICES:
            assert image == f"pantau:{version}", f"{name}: the image tag follows the version"
            assert service["build"]["context"] == "."
    assert _services()["timescaledb"]["image"] == "timescale/timescaledb:latest-pg15"


def test_mosquitto_config_refers_to_the_mounted_files() -> None:
    mounts = {target: source for _, source, target in _mounts(_services()["mosquitto"])}
    config_file = ROOT / "mosquitto" / "mosquitto.conf"
    assert config_file.is_file(), "mosquitto/mosquitto.conf is missing"
    config = config_file.read_text(encoding="utf-8")
    options = dict(
        line.split(None, 1)
        for line in (raw.strip() for raw in config.splitlines())
        if line and not line.startswith("#") and " " in line
    )
    acl = options["acl_file"].strip()
    assert acl in mounts, f"acl_file {acl} is not mounted"
    assert (ROOT / mounts[acl]).is_file()
    # The password file lives in a volume that the one-shot `mosquitto-passwd` service fills
    # before the broker starts: no password is kept in the repository.
    password_file = Path(options["password_file"].strip())
    volume = mounts.get(str(password_file.parent))
    assert volume is not None, f"password_file {password_file} is on no mounted volume"
    init = _services()["mosquitto-passwd"]
    assert (volume, str(password_file.parent)) in {(s, t) for _, s, t in _mounts(init)}
    assert str(password_file) in " ".join(init["command"])
    conditions = _depends_on(_services()["mosquitto"])
    assert conditions.get("mosquitto-passwd") == "service_completed_successfully"


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


def test_dockerignore_keeps_what_the_build_needs() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "everything is excluded unless listed"
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= kept
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
        [*command, "-f", str(COMPOSE_FILE), "--profile", "sim", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
