"""The record of a running `pantau up` stack, so that every command in the checkout finds it.

`pantau up` writes ``STATE_DIR/stack.json`` (addresses of the database, broker, API and metrics,
and the process ids) once the stack answers, replaces it atomically, and removes it on exit. A
command that has no database or broker configured reads the record of its state directory
(``PANTAU_STATE_DIR``, default ``.pantau`` in the current directory) and, when the process that
wrote it still runs, talks to that stack, saying so in one line on stderr. A record whose
process is gone (a crash, a reboot) is stale and ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import SecretStr

from pantau.settings import Settings

RECORD_NAME = "stack.json"


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc); None if it is gone.

    A process id alone may be reused after a reboot; with its start time it names one process.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Field 22 of stat is the start time; the split above starts at field 3 (the state).
    return None if fields[0] == "Z" else fields[19]


def alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` runs and is the process that started at ``started``."""
    now = process_start(pid)
    if now is None:
        if started is not None or not Path("/proc").is_dir():
            return False
        try:  # no /proc (not Linux): a signal 0 tells whether the id is in use
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return started is None or now == started


@dataclass(frozen=True, kw_only=True)
class StackRecord:
    """Where a running stack's parts listen, and which processes are its own."""

    state_dir: str
    pid: int
    pid_started: str | None
    database_url: str
    mqtt_url: str
    topic_root: str
    api_url: str
    metrics: dict[str, str] = field(default_factory=dict)
    # name -> [pid, start time] of each supervised process and private server
    processes: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return alive(self.pid, self.pid_started)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StackRecord:
        """Parse a record; raises ValueError when it is not one."""
        try:
            raw = json.loads(text)
            raw["processes"] = {
                str(k): (int(v[0]), None if v[1] is None else str(v[1]))
                for k, v in raw.get("processes", {}).items()
            }
            return cls(**raw)
        except (TypeError, KeyError, IndexError, AttributeError) as error:
            raise ValueError(f"not a stack record: {error}") from None

    def describe(self) -> str:
        """One line naming the stack and its addresses."""
        return (
            f"using the Pantau stack of {self.state_dir} (pantau up, pid {self.pid}): "
            f"database {self.database_url}, broker {self.mqtt_url}, API {self.api_url}"
        )


def record_path(state_dir: Path) -> Path:
    return state_dir / RECORD_NAME


def write(record: StackRecord) -> None:
    """Write the record atomically: a reader sees the old one or the new one, never half."""
    path = record_path(Path(record.state_dir))
    temporary = path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(record.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def read(state_dir: Path) -> StackRecord | None:
    """The record in ``state_dir``, alive or not; None when there is none (or it is garbled)."""
    try:
        return StackRecord.from_json(record_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove(state_dir: Path, *, pid: int) -> None:
    """Remove the record if process ``pid`` wrote it."""
    record = read(state_dir)
    if record is not None and record.pid == pid:
        record_path(state_dir).unlink(missing_ok=True)


def running(state_dir: Path) -> StackRecord | None:
    """The record of the stack running from ``state_dir``; None if none runs (stale ignored)."""
    record = read(state_dir)
    return record if record is not None and record.alive else None


def adopt(settings: Settings, *, announce: Callable[[str], None]) -> Settings:
    """``settings`` with the running stack's database and broker where none is configured.

    ``announce`` gets one line naming the stack whenever it is used.
    """
    need_database = settings.database_url is None
    need_broker = "url" not in settings.mqtt.model_fields_set
    if not (need_database or need_broker):
        return settings
    record = running(settings.state_dir.resolve())
    if record is None:
        return settings
    update: dict[str, object] = {}
    if need_database:
        update["database_url"] = SecretStr(record.database_url)
    if need_broker:
        update["mqtt"] = settings.mqtt.model_copy(update={"url": record.mqtt_url})
    announce(record.describe())
    return settings.model_copy(update=update)
