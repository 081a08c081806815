"""`pantau up`: the whole platform on one machine, for trying Pantau and for field engineers.

Where no database or broker is configured it starts private ones under the state directory
(and an Alertmanager for the notifications, where one is installed and none is configured),
then migrates, loads the city file, and supervises ingest, the API, the alert service and a
city simulator until Ctrl-C. One stack runs per state directory (a lock file says so); its
addresses are recorded in ``STATE_DIR/stack.json`` (:mod:`pantau.stack`) for the other commands.
A stack with another state directory takes free ports for everything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from pantau import stack
from pantau.alertmanager import AlertmanagerConfigError, config_files
from pantau.city import City, CityFileError, load_city
from pantau.db import registry
from pantau.db.migrate import MigrationError, migrate
from pantau.settings import Settings
from pantau.tools.services import (
    MissingProgramError,
    PrivateAlertmanager,
    PrivateMosquitto,
    PrivatePostgres,
    free_port,
    wait_until,
)

console = Console()

PRIVATE_DB = "pantau"
# A crashed child waits this long before it is started again, doubling with each crash in a
# row up to the maximum; one that ran for STABLE_S before it crashed starts from the beginning.
RESTART_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 60.0
STABLE_S = 60.0
# How long the banner waits for the API to answer.
API_READY_TIMEOUT_S = 120.0
LOCK_NAME = "up.lock"


@dataclass
class Child:
    """A supervised service process."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    started_at: float = field(default=0.0)
    restart_at: float | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            # A session of its own: Ctrl-C reaches only the supervisor, which then stops the
            # services in order (simulator first, ingest last so that it flushes).
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        self.restart_at = None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def supervise(self, now: float) -> str | None:
        """Schedule a restart of a crashed process, or do a due one; returns what to report."""
        if self.process is None:
            return None
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
            return None
        code = self.process.poll()
        if code is None:
            return None
        ran_s = now - self.started_at
        self.crashes_in_a_row = 1 if ran_s >= STABLE_S else self.crashes_in_a_row + 1
        delay = min(RESTART_MAX_DELAY_S, RESTART_DELAY_S * 2 ** (self.crashes_in_a_row - 1))
        self.restart_at = now + delay
        return f"{self.name} exited with {code}; restarting in {delay:g} s (see {self.log})"


class AlreadyRunningError(RuntimeError):
    """Another `pantau up` runs from the same state directory."""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            # The wildcard address collides with a listener on any address.
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _stable_port(path: Path, preferred: int) -> int:
    """The port of the previous run (URLs stay the same), else ``preferred``, if still free;
    otherwise any free one."""
    candidates = []
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int(path.read_text().strip()))
    candidates.append(preferred)
    port = next((p for p in candidates if _port_free(p)), None) or free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(port))
    return port


def _lock(state: Path) -> int:
    """Hold the state directory's lock for the life of this process; raises if it is taken."""
    fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        record = stack.read(state)
        where = f" (pid {record.pid}, API {record.api_url})" if record is not None else ""
        raise AlreadyRunningError(
            f"Pantau is already running from {state}{where}. Use that stack (every `pantau` "
            "command started here finds it), stop it with Ctrl-C in its terminal, or start a "
            "second one with another PANTAU_STATE_DIR."
        ) from None
    return fd


def _stop_leftovers(state: Path) -> None:
    """Stop what a stack that did not exit cleanly (killed, crashed) left running."""
    if (state / "postgres" / "data" / "postmaster.pid").exists():
        with contextlib.suppress(MissingProgramError):
            leftover = PrivatePostgres(directory=state / "postgres")
            if leftover.running():
                leftover.stop()
    record = stack.read(state)
    if record is None:
        return
    left = [(pid, started) for pid, started in record.processes.values() if started]
    left = [(pid, started) for pid, started in left if stack.alive(pid, started)]
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)  # each was started as a session (group) leader
    with contextlib.suppress(TimeoutError):
        wait_until(
            lambda: not any(stack.alive(pid, started) for pid, started in left),
            timeout_s=15,
            what="the processes of the previous run",
        )
    for pid, started in left:
        if stack.alive(pid, started):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    stack.record_path(state).unlink(missing_ok=True)


def unreachable_by(account: pwd.struct_passwd, path: Path) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` may not enter, if any."""
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None  # created later, by us, with a mode others may enter
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == account.pw_gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _api_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an answer all the same (e.g. 503 while the database warms up)


def _local(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "", "::"} else host


def _alertmanager(
    settings: Settings,
    state: Path,
    exits: ExitStack,
    processes: dict[str, tuple[int, str | None]],
    *,
    public_url: str,
) -> tuple[str, dict[str, str]]:
    """A private Alertmanager with the configuration of the settings, where none is configured
    and the program is installed. Returns the banner's line and what the services are told."""
    notify = settings.notify
    env = {} if notify.public_url else {"PANTAU_NOTIFY__PUBLIC_URL": public_url}
    if notify.alertmanager_url is not None:
        return f"{notify.alertmanager_url} (Alertmanager, configured)", env
    try:
        server = PrivateAlertmanager(
            directory=state / "alertmanager",
            files=config_files(notify),
            port=_stable_port(state / "alertmanager.port", 9093),
            external_url=notify.alertmanager_external_url,
        )
        console.print(f"starting a private Alertmanager on port {server.port} ...")
        server.start()
    except MissingProgramError as error:
        return f"off: {error} (the alerts are still on MQTT, the pages and the CAP feed)", env
    except (AlertmanagerConfigError, RuntimeError, TimeoutError) as error:
        console.print(f"[yellow]no notifications: {error}[/yellow]")
        return f"off: {error}", env
    exits.callback(server.stop)
    assert server.process is not None
    processes["alertmanager"] = (server.process.pid, stack.process_start(server.process.pid))
    env["PANTAU_NOTIFY__ALERTMANAGER_URL"] = server.url
    if notify.alertmanager_external_url is None:
        env["PANTAU_NOTIFY__ALERTMANAGER_EXTERNAL_URL"] = server.url
    receivers = ", ".join(r.name for r in notify.receivers) or "none"
    return (
        f"{server.url} (Alertmanager; receivers: {receivers}; "
        f"`amtool --alertmanager.url={server.url} alert` lists what it holds)",
        env,
    )


def run_platform(settings: Settings, *, scenario: str, speed: float, simulate: bool) -> int:
    """Bring everything up, supervise it until interrupted; returns the exit code."""

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Also SIGINT: a shell may have started us with SIGINT ignored (in the background).
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    state = settings.state_dir.resolve()
    try:
        state.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack_:
            stack_.callback(os.close, _lock(state))
            _stop_leftovers(state)
            return _run(settings, state, stack_, scenario=scenario, speed=speed, simulate=simulate)
    except AlreadyRunningError as error:
        console.print(f"[red]{error}[/red]", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("stopped")
        return 0


class _StartError(Exception):
    """A part of the stack did not start; the message is printed as it is."""


@dataclass(frozen=True, slots=True)
class _Ports:
    api: int
    ingest_metrics: int
    alerts_metrics: int


def _run(
    settings: Settings,
    state: Path,
    exits: ExitStack,
    *,
    scenario: str,
    speed: float,
    simulate: bool,
) -> int:
    processes: dict[str, tuple[int, str | None]] = {}
    try:
        database_url = _database(settings, state, exits)
        mqtt_url = _broker(settings, state, exits, processes)
        result = migrate(database_url, settings.storage)
        city = load_city(settings.city_file)
        with psycopg.connect(database_url, autocommit=True) as conn:
            registry.load_city(conn, city)
    except _StartError as error:
        console.print(str(error))
        return 1
    except (MigrationError, CityFileError, psycopg.Error) as error:
        console.print(f"[red]{error}[/red]")
        return 1

    ports = _Ports(
        api=_port_of(settings.api, "port", state / "api.port"),
        ingest_metrics=_port_of(settings.ingest, "metrics_port", state / "ingest-metrics.port"),
        alerts_metrics=_port_of(settings.alerts, "metrics_port", state / "alerts-metrics.port"),
    )
    api = f"http://{_local(settings.api.host)}:{ports.api}"
    notifications, notify_env = _alertmanager(settings, state, exits, processes, public_url=api)
    env = _service_env(settings, state, database_url, mqtt_url, ports, notify_env)
    logs = state / "logs"
    children = _children(settings, env, logs, scenario=scenario, speed=speed, simulate=simulate)
    for one in children:
        one.start()
        exits.callback(one.stop)
        assert one.process is not None
        processes[one.name] = (one.process.pid, stack.process_start(one.process.pid))

    try:
        wait_until(
            lambda: _api_answers(api), timeout_s=API_READY_TIMEOUT_S, what=f"the API at {api}"
        )
    except TimeoutError as error:
        console.print(f"[yellow]{error}; see {logs / 'api.log'}[/yellow]")

    record = _record(settings, state, database_url, mqtt_url, api, ports, processes)
    stack.write(record)
    exits.callback(stack.remove, state, pid=os.getpid())
    banner = f"{record.database_url}  ({result.mode}, schema version {result.version})"
    _print_banner(
        settings, city, record, database=banner, notifications=notifications, logs=logs,
        simulator=f"scenario {scenario!r} at {speed:g}x" if simulate else None,
    )  # fmt: skip
    _supervise(children, processes, record)
    return 0


def _record(
    settings: Settings,
    state: Path,
    database_url: str,
    mqtt_url: str,
    api: str,
    ports: _Ports,
    processes: dict[str, tuple[int, str | None]],
) -> stack.StackRecord:
    """What other commands (``pantau db``, ``simulate``, ``grafana push``) find the stack by."""
    return stack.StackRecord(
        state_dir=str(state),
        pid=os.getpid(),
        pid_started=stack.process_start(os.getpid()),
        database_url=database_url,
        mqtt_url=mqtt_url,
        topic_root=settings.mqtt.topic_root,
        api_url=api,
        metrics={
            "api": f"{api}/metrics",
            "ingest": f"http://127.0.0.1:{ports.ingest_metrics}/metrics",
            "alerts": f"http://127.0.0.1:{ports.alerts_metrics}/metrics",
        },
        processes=processes,
    )


def _service_env(
    settings: Settings,
    state: Path,
    database_url: str,
    mqtt_url: str,
    ports: _Ports,
    notify_env: dict[str, str],
) -> dict[str, str]:
    """The environment of the supervised processes: this one's, pointed at the stack."""
    env = dict(os.environ)
    env.update(
        {
            "PANTAU_DATABASE_URL": database_url,
            "PANTAU_MQTT__URL": mqtt_url,
            "PANTAU_CITY_FILE": str(settings.city_file),
            "PANTAU_STATE_DIR": str(state),
            "PANTAU_API__PORT": str(ports.api),
            "PANTAU_INGEST__METRICS_PORT": str(ports.ingest_metrics),
            "PANTAU_ALERTS__METRICS_PORT": str(ports.alerts_metrics),
            **notify_env,
        }
    )
    return env


def _print_banner(
    settings: Settings,
    city: City,
    record: stack.StackRecord,
    *,
    database: str,
    notifications: str,
    logs: Path,
    simulator: str | None,
) -> None:
    """Where to look, once the stack is up, and how to point other tools at it."""
    api, mqtt_url = record.api_url, record.mqtt_url
    table = Table(
        title=f"Pantau is up ({city.name}, {len(city.sensors)} sensors)", show_header=False
    )
    table.add_row("page", f"{api}/")
    table.add_row("open-data API", f"{api}/sensors?format=geojson")
    table.add_row("API docs", f"{api}/docs")
    for name, url in record.metrics.items():
        table.add_row(f"{name} metrics", url)
    table.add_row("database", database)
    table.add_row(
        "broker", mqtt_url + f"  (devices publish to {settings.mqtt.uplink_topic('DEVICE_ID')})"
    )
    table.add_row("notifications", notifications)
    if simulator is not None:
        table.add_row("simulator", simulator)
    table.add_row("logs", str(logs))
    console.print(table)
    console.print(
        f"`pantau` commands started in this directory use this stack. Elsewhere:\n"
        f"export PANTAU_DATABASE_URL={record.database_url} PANTAU_MQTT__URL={mqtt_url}",
        soft_wrap=True,
        highlight=False,
    )
    console.print("Ctrl-C stops everything.")


def _port_of(group: BaseModel, name: str, path: Path) -> int:
    """The port ``name`` of a settings group: as set, else a stable free one near its default."""
    port: int = getattr(group, name)
    return port if name in group.model_fields_set else _stable_port(path, port)


def _database(settings: Settings, state: Path, exits: ExitStack) -> str:
    """The configured database, else a private PostgreSQL's (started, stopped on exit)."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    pg = PrivatePostgres(
        directory=state / "postgres", port=_stable_port(state / "postgres.port", 55432)
    )
    if pg.account is not None and (blocked := unreachable_by(pg.account, pg.directory)):
        raise _StartError(
            f"[red]PostgreSQL refuses to run as root, so its cluster runs as user "
            f"{pg.account.pw_name}, who may not enter {blocked} (mode "
            f"{stat.S_IMODE(blocked.stat().st_mode):o}).[/red]\n"
            f"Keep the state where {pg.account.pw_name} can reach it, e.g. "
            f"`PANTAU_STATE_DIR=/var/lib/pantau make run`, or run as a normal user."
        )
    try:
        console.print(f"starting a private PostgreSQL on port {pg.port} ...")
        pg.start()
        exits.callback(pg.stop)
        return pg.create_database(PRIVATE_DB)
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or error.stdout or "").strip()
        log_tail = ""
        with contextlib.suppress(OSError):
            log_tail = pg.logfile.read_text(errors="replace")[-800:].strip()
        raise _StartError(
            f"[red]could not start the private PostgreSQL ({Path(error.cmd[-1]).name} "
            f"failed):[/red] {detail}\n{log_tail}"
        ) from None
    except MissingProgramError as error:
        raise _StartError(f"[red]{error}[/red]") from None
    except (TimeoutError, RuntimeError) as error:
        raise _StartError(f"[red]could not start a local server:[/red] {error}") from None


def _broker(
    settings: Settings, state: Path, exits: ExitStack, processes: dict[str, tuple[int, str | None]]
) -> str:
    """The configured broker, else a private Mosquitto's (started, stopped on exit)."""
    if "url" in settings.mqtt.model_fields_set:
        return settings.mqtt.url
    broker = PrivateMosquitto(
        directory=state / "mosquitto", port=_stable_port(state / "mqtt.port", 11883)
    )
    try:
        console.print(f"starting a private Mosquitto on port {broker.port} ...")
        broker.start()
    except MissingProgramError as error:
        raise _StartError(f"[red]{error}[/red]") from None
    except (TimeoutError, RuntimeError) as error:
        raise _StartError(f"[red]could not start a local server:[/red] {error}") from None
    exits.callback(broker.stop)
    assert broker.process is not None
    processes["mosquitto"] = (broker.process.pid, stack.process_start(broker.process.pid))
    return broker.url


def _children(
    settings: Settings,
    env: dict[str, str],
    logs: Path,
    *,
    scenario: str,
    speed: float,
    simulate: bool,
) -> list[Child]:
    """The supervised processes: ingest, the API, the alert service (and the simulator)."""

    def child(name: str, *argv: str) -> Child:
        return Child(name=name, argv=[sys.executable, *argv], log=logs / f"{name}.log", env=env)

    children = [
        child("ingest", "-m", "ingest"),
        child("api", "-m", "api"),
        child("alerts", "-m", "alerts"),
    ]
    if simulate:
        options = ["--scenario", scenario, "--speed", f"{speed:g}", "--quiet"]
        children.append(
            child("simulator", "-m", "simulators", *options, "--city", str(settings.city_file))
        )
    return children


def _supervise(
    children: list[Child], processes: dict[str, tuple[int, str | None]], record: stack.StackRecord
) -> None:
    """Restart what crashes (recording the new process ids) until Ctrl-C."""
    try:
        while True:
            now = time.monotonic()
            for one in children:
                report = one.supervise(now)
                if report is not None:
                    console.print(f"[yellow]{report}[/yellow]", soft_wrap=True)
                if one.process is not None and one.process.pid != processes[one.name][0]:
                    processes[one.name] = (one.process.pid, stack.process_start(one.process.pid))
                    stack.write(replace(record, processes=dict(processes)))
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping ...")
