"""`pantau up`: the whole platform on one machine, for trying Pantau and for field engineers.

Where no database or broker is configured it starts private ones under the state directory,
then migrates, loads the city file, and supervises ingest, the API and a city simulator until
Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from pantau.city import CityFileError, load_city
from pantau.db import registry
from pantau.db.migrate import MigrationError, migrate
from pantau.services import MissingProgramError, PrivateMosquitto, PrivatePostgres, free_port
from pantau.settings import Settings

console = Console()

PRIVATE_DB = "pantau"
# How long a crashed child waits before it is started again.
RESTART_DELAY_S = 2.0


@dataclass
class Child:
    """A supervised service process."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

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

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _stable_port(path: Path, preferred: int) -> int:
    """Reuse the port of the previous run so URLs stay the same between runs."""
    if path.exists():
        try:
            return int(path.read_text().strip())
        except ValueError:
            pass
    port = preferred
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", preferred))
    except OSError:
        port = free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(port))
    return port


def run_platform(settings: Settings, *, scenario: str, speed: float, simulate: bool) -> int:
    """Bring everything up, supervise it until interrupted; returns the exit code."""
    state = settings.state_dir.resolve()
    env = dict(os.environ)
    with ExitStack() as stack:
        try:
            if settings.database_url is None:
                pg = PrivatePostgres(
                    directory=state / "postgres", port=_stable_port(state / "postgres.port", 55432)
                )
                console.print(f"starting a private PostgreSQL on port {pg.port} ...")
                pg.start()
                stack.callback(pg.stop)
                database_url = pg.create_database(PRIVATE_DB)
            else:
                database_url = settings.database_url.get_secret_value()
            if "url" not in settings.mqtt.model_fields_set:
                broker = PrivateMosquitto(
                    directory=state / "mosquitto", port=_stable_port(state / "mqtt.port", 11883)
                )
                console.print(f"starting a private Mosquitto on port {broker.port} ...")
                broker.start()
                stack.callback(broker.stop)
                mqtt_url = broker.url
            else:
                mqtt_url = settings.mqtt.url
        except MissingProgramError as error:
            console.print(f"[red]{error}[/red]")
            return 1
        except (TimeoutError, RuntimeError, subprocess.CalledProcessError) as error:
            console.print(f"[red]could not start a local server:[/red] {error}")
            return 1

        try:
            result = migrate(database_url, settings.storage)
            city = load_city(settings.city_file)
            with psycopg.connect(database_url, autocommit=True) as conn:
                registry.load_city(conn, city)
        except (MigrationError, CityFileError, psycopg.Error) as error:
            console.print(f"[red]{error}[/red]")
            return 1

        env.update(
            {
                "PANTAU_DATABASE_URL": database_url,
                "PANTAU_MQTT__URL": mqtt_url,
                "PANTAU_CITY_FILE": str(settings.city_file),
            }
        )
        python = sys.executable
        logs = state / "logs"
        children = [
            Child(name="ingest", argv=[python, "-m", "ingest"], log=logs / "ingest.log", env=env),
            Child(name="api", argv=[python, "-m", "api"], log=logs / "api.log", env=env),
        ]
        if simulate:
            children.append(
                Child(
                    name="simulator",
                    argv=[
                        python,
                        "-m",
                        "simulators",
                        "--scenario",
                        scenario,
                        "--speed",
                        f"{speed:g}",
                        "--city",
                        str(settings.city_file),
                        "--quiet",
                    ],
                    log=logs / "simulator.log",
                    env=env,
                )
            )
        for child in children:
            child.start()
            stack.callback(child.stop)

        table = Table(
            title=f"Pantau is up ({city.name}, {len(city.sensors)} sensors)", show_header=False
        )
        table.add_row("storage", f"{result.mode}, schema version {result.version}")
        table.add_row("database", database_url)
        table.add_row(
            "broker", mqtt_url + f"  (devices publish to {settings.mqtt.uplink_topic('DEVICE_ID')})"
        )
        api = f"http://{settings.api.host}:{settings.api.port}"
        table.add_row("open-data API", f"{api}/docs  ·  {api}/sensors?format=geojson")
        if settings.ingest.metrics_port:
            table.add_row(
                "ingest metrics", f"http://127.0.0.1:{settings.ingest.metrics_port}/metrics"
            )
        if simulate:
            table.add_row("simulator", f"scenario {scenario!r} at {speed:g}x")
        table.add_row("logs", str(logs))
        table.add_row("status", "pantau db status   (with PANTAU_DATABASE_URL above)")
        console.print(table)
        console.print("Ctrl-C stops everything.")

        def _terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        # Also SIGINT: a shell may have started us with SIGINT ignored (in the background).
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)
        try:
            while True:
                for child in children:
                    if child.process is not None and child.process.poll() is not None:
                        code = child.process.returncode
                        console.print(
                            f"[yellow]{child.name} exited with {code}; restarting "
                            f"(see {child.log})[/yellow]"
                        )
                        time.sleep(RESTART_DELAY_S)
                        child.restarts += 1
                        child.start()
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping ...")
    return 0
