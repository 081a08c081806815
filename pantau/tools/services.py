"""Private PostgreSQL, Mosquitto and Alertmanager servers on free loopback ports.

`pantau up` runs the platform on them when no database or broker is configured, and tests that
stop or reconfigure a server start their own. PostgreSQL refuses to run as root, so as root the
cluster belongs to the ``postgres`` (or ``nobody``) account.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

INSTALL_HINT = {
    "postgres": "apt-get install postgresql (Debian/Ubuntu)",
    "mosquitto": "apt-get install mosquitto (Debian/Ubuntu)",
    "alertmanager": "apt-get install prometheus-alertmanager (Debian/Ubuntu)",
}
# Debian names the binary prometheus-alertmanager; the upstream release calls it alertmanager.
ALERTMANAGER_PROGRAMS = ("prometheus-alertmanager", "alertmanager")


class MissingProgramError(RuntimeError):
    """A server program is not installed; the message says what to install."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(probe: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    """Poll ``probe`` until it returns True; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    last: Exception | None = None
    while True:
        try:
            if probe():
                return
        except Exception as error:  # a failing probe just means "not yet"
            last = error
        if time.monotonic() > deadline:
            reason = f" (last error: {last!r})" if last else ""
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s{reason}") from last
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, as Linux lists them (just ``pid`` elsewhere)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*/children"):
            try:
                tree.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue  # gone meanwhile
        index += 1
    return tree


def tree_memory_bytes(pid: int, *, key: str = "VmRSS") -> int:
    """Resident memory (``VmRSS``) or each one's peak (``VmHWM``) summed over a process tree."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(key + ":"))
    return total


def port_open(host: str, port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def postgres_bindir() -> Path:
    """Directory of initdb/pg_ctl, newest installed version first."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise MissingProgramError(f"PostgreSQL server not found: {INSTALL_HINT['postgres']}")
    return candidates[0].parent


def _service_account() -> pwd.struct_passwd | None:
    """Account to run PostgreSQL as when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise MissingProgramError(
        "running as root needs a `postgres` or `nobody` account for PostgreSQL"
    )


def _timescaledb_installed(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        pg_config = Path(shutil.which("pg_config") or "pg_config")
    try:
        sharedir = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return (Path(sharedir) / "extension" / "timescaledb.control").exists()


@dataclass(kw_only=True)
class PrivatePostgres:
    """A throw-away PostgreSQL cluster in ``directory`` listening on 127.0.0.1:``port``."""

    directory: Path
    port: int = 0
    start_timeout_s: float = 60.0
    # Directory of initdb/pg_ctl; default: the first on PATH, else the newest installed.
    binaries: Path | None = None
    # Where those binaries have the TimescaleDB extension: load it at start (False leaves it
    # installed but unloaded, so CREATE EXTENSION fails).
    preload_timescaledb: bool = True

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.port = self.port or free_port()
        self.bindir = self.binaries or postgres_bindir()
        self.account = _service_account()

    @property
    def timescaledb_installed(self) -> bool:
        """Whether the binaries come with the TimescaleDB extension."""
        return _timescaledb_installed(self.bindir)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.account is not None:
            command = ["runuser", "-u", self.account.pw_name, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check)

    def _own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def init(self) -> None:
        """Create the cluster unless it exists."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self._own(self.directory)
        if (self.data / "PG_VERSION").exists():
            return
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.directory}'",
            "shared_buffers = 128MB",
            "max_connections = 200",
            "log_min_messages = warning",
        ]
        if self.preload_timescaledb and self.timescaledb_installed:
            options += [
                "shared_preload_libraries = 'timescaledb'",
                "timescaledb.telemetry_level = off",
            ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# pantau private cluster\n" + "\n".join(options) + "\n")

    def start(self) -> str:
        """Start (initialising first if needed) and wait until it accepts connections."""
        self.init()
        self.logfile.touch()
        self._own(self.logfile)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-o",
            f"-p {self.port}",
            "-w",
            "-t",
            str(int(self.start_timeout_s)),
            "start",
        )
        self.wait_ready()
        return self.url()

    def wait_ready(self) -> None:
        def probe() -> bool:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True

        wait_until(probe, timeout_s=self.start_timeout_s, what=f"PostgreSQL on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``immediate`` is a crash as far as PostgreSQL is concerned."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise MissingProgramError(f"Mosquitto not found: {INSTALL_HINT['mosquitto']}")
    return found


def mosquitto_config(*, port: int, directory: Path, max_inflight: int = 0) -> str:
    """Configuration of a private broker: persistence on, queues sized for an outage."""
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            # Keep root when started as root: the broker writes its persistence file here.
            "user root" if os.geteuid() == 0 else "",
            "persistence true",
            f"persistence_location {directory}/",
            "autosave_interval 1",
            # 0: no limit. Ingest's Receive Maximum (v5) governs the in-flight window; a
            # v3.1.1 client falls back to this value.
            f"max_inflight_messages {max_inflight}",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "persistent_client_expiration 1d",
            "set_tcp_nodelay true",
            f"log_dest file {directory}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


@dataclass(kw_only=True)
class _PrivateServer:
    """A server process of our own on 127.0.0.1:``port``, its files in ``directory``.

    Subclasses say how to prepare its files, its command line, where it logs and what "ready"
    means; starting, the exit check and stopping are the same for every one.
    """

    directory: Path
    port: int = 0
    start_timeout_s: float = 20.0

    name = "server"
    scheme = "tcp"

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.port = self.port or free_port()
        self.binary = self._binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """Where the process's standard error goes (kept across restarts)."""
        return self.directory / f"{self.name.lower()}.log"

    def _binary(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write what the server reads at start."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        """Whether the running process answers on its port."""
        return port_open("127.0.0.1", self.port)

    def ready(self) -> bool:
        """Whether it answers (raises if the process exited, with the end of its log)."""
        if self.process is None or self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited: {tail}")
        return self._answers()

    def start(self) -> str:
        """Start the process and wait until it answers; returns its URL."""
        if port_open("127.0.0.1", self.port):
            # Otherwise the readiness probe would see the other server and report success.
            raise RuntimeError(f"cannot start {self.name}: port {self.port} is already in use")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prepare()
        self.process = subprocess.Popen(
            self._argv(),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            start_new_session=True,
        )
        wait_until(
            self.ready, timeout_s=self.start_timeout_s, what=f"{self.name} on port {self.port}"
        )
        return self.url

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it; SIGTERM lets it save its state (persistence, notification log) first."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass(kw_only=True)
class PrivateMosquitto(_PrivateServer):
    """A Mosquitto broker of our own, with persistence in ``directory``."""

    name = "Mosquitto"
    scheme = "mqtt"

    @property
    def log(self) -> Path:
        return self.directory / "stderr.log"

    def _binary(self) -> str:
        return mosquitto_binary()

    def _prepare(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(mosquitto_config(port=self.port, directory=self.directory))

    def _argv(self) -> list[str]:
        return [self.binary, "-c", str(self.directory / "mosquitto.conf")]


def alertmanager_binary() -> str:
    """Path of the Alertmanager program, or MissingProgramError saying what to install."""
    for name in ALERTMANAGER_PROGRAMS:
        found = shutil.which(name)
        if found:
            return found
    raise MissingProgramError(f"Alertmanager not found: {INSTALL_HINT['alertmanager']}")


@dataclass(kw_only=True)
class PrivateAlertmanager(_PrivateServer):
    """An Alertmanager of our own on 127.0.0.1:``port``, clustering off, its configuration
    ``files`` (name: text, as :func:`pantau.alertmanager.config_files` gives them) and its
    state (notification log, silences) in ``directory``, kept across restarts."""

    files: dict[str, str]
    external_url: str | None = None

    name = "Alertmanager"
    scheme = "http"

    def _binary(self) -> str:
        return alertmanager_binary()

    def write(self) -> None:
        """Write the configuration files (before a start, or before :meth:`reload`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            path = self.directory / name
            path.write_text(text, encoding="utf-8")
            path.chmod(0o600)  # it may hold an SMTP password or a bot token

    def _prepare(self) -> None:
        self.write()

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            f"--config.file={self.directory / 'alertmanager.yml'}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]
        if self.external_url:
            argv.append(f"--web.external-url={self.external_url}")
        return argv

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def reload(self) -> None:
        """Write the files again and make it re-read them."""
        self.write()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


@contextmanager
def running(server: PrivatePostgres | PrivateMosquitto) -> Iterator[str]:
    """Start a server for the duration of a block."""
    started = server.start()
    try:
        yield started
    finally:
        server.stop()
