"""The MQTT source in a process of its own, so that paho's packet parsing has a core to itself.

paho parses every PUBLISH in Python; in the ingest process it shares one interpreter lock with
decoding and the writers, and that lock, not the machine, limits how many messages a second
one ingest process takes. :class:`ProcessSource` has the interface of
:class:`~ingest.source.MqttSource` and runs one in a child process: messages come over a pipe
in small batches, acknowledgements go back the same way, in order, so a PUBACK still leaves
only after the commit. The child ignores SIGINT and SIGTERM (the parent decides when to stop)
and exits at once, without acknowledging anything, when the parent goes away: the broker then
keeps the session and sends everything unacknowledged again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ingest.source import Inbound, MqttSource, SourceBase, SourceError
from pantau import logs
from pantau.logs import get_logger
from pantau.settings import MqttSettings

log = get_logger(__name__)

# The child sends what it received at least this often, or as soon as this many are waiting.
_FORWARD_EVERY_S = 0.002
_FORWARD_BATCH = 512


class ProcessSource(SourceBase):
    """An :class:`MqttSource` in a child process, seen through the same interface.

    Should the child die, it is started again (after ``restart_delay_s``); until then the
    source counts as disconnected, and what was received on the lost connection comes again.
    """

    def __init__(
        self,
        *,
        settings: MqttSettings,
        receive_maximum: int,
        deliver: Callable[[Inbound], None],
        on_state: Callable[[bool], None] | None = None,
        log_level: str = "INFO",
        log_json: bool = False,
        restart_delay_s: float = 1.0,
    ) -> None:
        super().__init__(
            settings=settings, receive_maximum=receive_maximum, deliver=deliver, on_state=on_state
        )
        self._log = (log_level, log_json)
        self._restart_delay_s = restart_delay_s
        self._connected = False
        self._closing = threading.Event()
        self._started = threading.Event()
        self._start_error: str | None = None
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._supervisor: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def start(self) -> None:
        """Start the child, which connects and subscribes; raise SourceError on failure."""
        self._spawn()
        timeout = self._settings.connect_timeout_s + 30  # the child's own start takes a moment
        if not self._started.wait(timeout) or self._start_error is not None:
            self._closing.set()
            self._kill()
            raise SourceError(self._start_error or f"MQTT process did not start in {timeout:g} s")
        self._supervisor = threading.Thread(
            target=self._supervise, name="ingest-mqtt-pipe", daemon=True
        )
        self._supervisor.start()

    def stop(self) -> None:
        """Have the child send the acknowledgements it was given, disconnect and exit."""
        self._closing.set()
        with self._lock:
            self._generation += 1
            self._connected = False
            conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        if self._process is not None:
            self._process.join(self._settings.connect_timeout_s + 10)
            self._kill()
        if self._supervisor is not None:
            self._supervisor.join(5)

    def ack(self, messages: list[Inbound]) -> int:
        """Acknowledge committed messages of the current connection; returns how many were."""
        with self._lock:
            generation, conn = self._generation, self._conn
            mids = self._acknowledgeable(messages)
            if not mids or conn is None:
                return 0
            try:
                conn.send(("ack", generation, mids))
            except OSError:
                return 0  # the child is gone: the broker sends these again
            self._inflight = max(0, self._inflight - len(mids))
        return len(mids)

    # -- the parent's side of the pipe ----------------------------------------------------------

    def _spawn(self) -> None:
        # Spawn, not fork: this process runs threads, which fork does not copy safely.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_child_main,
            args=(self._settings, self._receive_maximum, self._generation, child, *self._log),
            name="ingest-mqtt",
            daemon=True,
        )
        process.start()
        child.close()
        with self._lock:
            self._conn, self._process = parent, process
        if self._supervisor is None:  # the first start: read until "started" arrives
            threading.Thread(target=self._read_until_started, daemon=True).start()

    def _read_until_started(self) -> None:
        conn = self._conn
        assert conn is not None
        while not self._started.is_set():
            if not self._receive(conn):
                self._start_error = self._start_error or "the MQTT process exited while starting"
                self._started.set()

    def _supervise(self) -> None:
        while not self._closing.is_set():
            conn = self._conn
            assert conn is not None
            while self._receive(conn):
                pass
            with self._lock:
                self._generation += 1
                was_connected, self._connected = self._connected, False
                self._inflight = 0
            if was_connected and self._on_state is not None:
                self._on_state(False)
            if self._closing.wait(self._restart_delay_s):
                return
            process = self._process
            code = None if process is None else process.exitcode
            log.warning("the MQTT process exited; starting it again", exit_code=code)
            try:
                self._spawn()
            except OSError as error:
                log.error("cannot start the MQTT process", error=str(error))

    def _receive(self, conn: Connection) -> bool:
        """Handle one item from the child; False when the pipe is closed."""
        try:
            kind, *body = conn.recv()
        except (EOFError, OSError):
            return False
        if kind == "messages":
            messages: list[Inbound] = body[0]
            with self._lock:
                generation = self._generation
                self._inflight += sum(
                    1 for m in messages if m.qos > 0 and m.generation == generation
                )
            for message in messages:
                self._deliver(message)
        elif kind == "state":
            up, generation = body
            with self._lock:
                self._generation = generation
                self._connected = up
                self._inflight = 0
            if self._on_state is not None:
                self._on_state(up)
        elif kind == "started":
            self._started.set()
        elif kind == "failed":
            self._start_error = body[0]
        return True

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
            process.join(5)


# -- the child ------------------------------------------------------------------------------------


class _Forwarder:
    """The child's side of the pipe: received messages go to the parent in batches, in the
    order they came; state changes follow the messages of the connection they end."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._pending: list[Inbound] = []
        self._pending_lock = threading.Lock()
        self._oldest = 0.0  # when the first message now pending was received (monotonic)

    def send(self, item: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(item)

    def deliver(self, message: Inbound) -> None:
        # paho's network thread forwards what is due itself. Handing the interpreter lock to a
        # forwarding thread hundreds of times a second cost it more time than the work.
        with self._pending_lock:
            pending = self._pending
            if not pending:
                self._oldest = message.received_mono
            pending.append(message)
            due = (
                len(pending) >= _FORWARD_BATCH
                or message.received_mono - self._oldest >= _FORWARD_EVERY_S
            )
        if due:
            self.forward()

    def forward(self, min_age_s: float = 0.0) -> None:
        # Taken and sent under one lock, so batches cross the pipe in the order their messages
        # came, which acknowledgements must follow.
        with self._send_lock:
            with self._pending_lock:
                if not self._pending or time.monotonic() - self._oldest < min_age_s:
                    return
                batch = self._pending[:]
                self._pending.clear()
            # Should the parent be gone, the main loop sees the pipe close and leaves.
            with contextlib.suppress(OSError):
                self._conn.send(("messages", batch))

    def flush_while(self, stopping: threading.Event) -> None:
        """What a quiet broker leaves pending goes once it is due, until ``stopping``."""
        while not stopping.wait(_FORWARD_EVERY_S):
            self.forward(min_age_s=_FORWARD_EVERY_S)


def _child_main(
    settings: MqttSettings,
    receive_maximum: int,
    first_generation: int,
    conn: Connection,
    log_level: str,
    log_json: bool,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    logs.configure(log_level, json=log_json)
    forwarder = _Forwarder(conn)

    def state(up: bool) -> None:
        forwarder.forward()  # messages of the old connection go first, then the change
        forwarder.send(("state", up, source.generation))

    source = MqttSource(
        settings=settings,
        receive_maximum=receive_maximum,
        deliver=forwarder.deliver,
        on_state=state,
        first_generation=first_generation,
    )
    try:
        source.start()
    except SourceError as error:
        forwarder.send(("failed", str(error)))
        return
    forwarder.send(("started",))
    stopping = threading.Event()
    thread = threading.Thread(
        target=forwarder.flush_while, args=(stopping,), name="ingest-mqtt-forward", daemon=True
    )
    thread.start()
    while True:
        try:
            kind, *body = conn.recv()
        except (EOFError, OSError):
            # The parent is gone: leave without a word, so that nothing is acknowledged.
            os._exit(0)
        if kind == "ack":
            generation, mids = body
            source.ack([Inbound("", b"", mid, 1, generation, 0.0, 0.0) for mid in mids])
        elif kind == "stop":
            stopping.set()
            thread.join()
            source.stop()
            return


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(0)
