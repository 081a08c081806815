"""The evaluation lock: one database connection holding a session advisory lock, with a lease
bounded in time.

Only the instance holding the lock evaluates and publishes. The lock lives on the connection
every commit goes through, so an instance that lost it cannot commit anything more. What makes
the loss *bounded* is that neither end waits on TCP to notice a path that was cut without
being closed (a frozen router or proxy keeps acknowledging keepalive probes, so the server would
keep the dead session, and its lock, until the kernel gives up, hours later):

* the server ends the session once it has been idle for ``timeout_s``
  (``idle_session_timeout`` and ``idle_in_transaction_session_timeout``, set for this session
  only), and bounds what it may spend on one statement or on unacknowledged data
  (``statement_timeout``, ``tcp_user_timeout``), so a frozen client's lock is released after
  about ``timeout_s``;
* the active instance confirms the lock (a commit, or a heartbeat that checks ``pg_locks``)
  every quarter of it, and holds a *lease* until three quarters of it after the start of its
  last confirmed round trip: past that it publishes nothing more, and a watchdog cuts the
  connection of a call that is still waiting, so the call fails and the instance exits
  (status 1) before the server can have handed the lock to a standby.

Every database error raises :class:`StoreError` (:class:`LockLostError` when the connection
itself failed), never a driver exception: the service ends cleanly on either.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from pantau.logs import get_logger

log = get_logger(__name__)
# Arbitrary but fixed: the alert service's evaluation lock ("alerts" in ASCII).
EVALUATION_LOCK = 0x616C65727473
# A bigint advisory key appears in pg_locks as two 32-bit halves.
_LOCK_CLASSID, _LOCK_OBJID = EVALUATION_LOCK >> 32, EVALUATION_LOCK & 0xFFFFFFFF
HEARTBEAT_SHARE = 0.25
LEASE_SHARE = 0.75


class StoreError(RuntimeError):
    """A database error: this instance must stop and let a standby take over."""


class LockLostError(StoreError):
    """The lock's connection failed, or the lock could not be confirmed within the lease: this
    instance must stop emitting."""


class EvaluationLock:
    """Takes the lock, then keeps confirming it; see the module docstring."""

    def __init__(self, *, conninfo: str, connect_timeout_s: float, timeout_s: float) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._fd = -1
        self._mutex = threading.Lock()
        # Monotonic start of the last round trip the server answered; 0: no lease.
        self._confirmed = 0.0
        # The deadline of the call in progress (None: none in progress).
        self._busy_until: float | None = None
        self._cut = False
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------------------- taking

    def acquire(self, *, retry_s: float, stop: Callable[[], bool]) -> bool:
        """Connect and take the lock, waiting as a standby while another instance holds it;
        False when ``stop`` says so first."""
        self._start_watchdog()
        while not stop():
            started = time.monotonic()
            conn = None
            try:
                conn = self._connect()
                got = self._timed(conn, started + self.timeout_s, self._take)
            except (psycopg.Error, LockLostError) as error:
                log.warning("database unavailable; retrying", error=str(error).strip())
                got = False
            if got and conn is not None:
                self._conn, self._confirmed = conn, started
                return True
            if conn is not None:
                conn.close()
            deadline = time.monotonic() + retry_s
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.1, retry_s))
        return False

    def _connect(self) -> psycopg.Connection[Any]:
        t = self.timeout_s
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(1, round(min(self._connect_timeout_s, t))),
            application_name="pantau-alerts",
            # A vanished peer (host down, link gone) is noticed well within the lease.
            keepalives=1,
            keepalives_idle=max(1, round(t * HEARTBEAT_SHARE)),
            keepalives_interval=max(1, round(t * HEARTBEAT_SHARE / 2)),
            keepalives_count=2,
            tcp_user_timeout=round(t * 1000 * LEASE_SHARE),
        )
        return conn

    def _take(self, conn: psycopg.Connection[Any]) -> bool:
        ms = round(self.timeout_s * 1000)
        # This session only: the server lets go of a client that stopped talking.
        conn.execute(
            f"SET idle_session_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}; "
            f"SET statement_timeout = {ms // 2}; SET tcp_user_timeout = {ms // 2}; "
            f"SET tcp_keepalives_idle = {max(1, ms // 4000)}; "
            f"SET tcp_keepalives_interval = {max(1, ms // 8000)}; SET tcp_keepalives_count = 2"
        )
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [EVALUATION_LOCK]).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------------------ holding

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock's session (None before it is taken)."""
        return None if self._conn is None else self._conn.info.backend_pid

    def _lease_end(self) -> float:
        return self._confirmed + self.timeout_s * LEASE_SHARE

    def holds(self) -> bool:
        """Whether the lease runs: the lock was confirmed recently enough to act on it."""
        return self._conn is not None and not self._cut and time.monotonic() < self._lease_end()

    def ensure(self) -> None:
        """Raise :class:`LockLostError` unless the lease runs (call before publishing)."""
        if not self.holds():
            raise LockLostError(
                f"could not confirm the evaluation lock within {self.timeout_s * LEASE_SHARE:.1f} s"
            )

    def heartbeat_in_s(self) -> float:
        """Seconds until the lock should be confirmed again (0: now)."""
        due = self._confirmed + self.timeout_s * HEARTBEAT_SHARE
        return max(0.0, due - time.monotonic())

    def keep(self) -> None:
        """Confirm the lock if it is due: the server still answers and still lists it."""
        if self.heartbeat_in_s() > 0:
            return
        with self.use("heartbeat") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 1",
                [_LOCK_CLASSID, _LOCK_OBJID],
            ).fetchone()
        if not row or not row[0]:
            raise LockLostError("the database no longer lists the evaluation lock as held")

    @contextmanager
    def use(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """The lock's connection for one piece of work. A database error raises
        :class:`StoreError`; a failed connection, or no answer before the lease ends,
        :class:`LockLostError`. Work that completes confirms the lock from its start."""
        conn = self._conn
        if conn is None or conn.closed or self._cut:
            raise LockLostError("the evaluation lock's connection is gone")
        self.ensure()
        started = time.monotonic()
        with self._mutex:
            self._busy_until = self._lease_end()
        try:
            yield conn
        except psycopg.OperationalError as error:
            raise LockLostError(f"{what}: database connection failed: {_one_line(error)}") from None
        except psycopg.Error as error:
            raise StoreError(f"{what}: {type(error).__name__}: {_one_line(error)}") from None
        finally:
            with self._mutex:
                self._busy_until = None
        if self._cut:
            raise LockLostError(f"{what}: cut off after the lease ended")
        self._confirmed = started

    def _timed(
        self,
        conn: psycopg.Connection[Any],
        deadline: float,
        work: Callable[[psycopg.Connection[Any]], bool],
    ) -> bool:
        """``work`` on a connection not yet holding the lock, cut off at ``deadline``."""
        self._fd = conn.fileno()
        with self._mutex:
            self._busy_until = deadline
        try:
            return work(conn)
        finally:
            with self._mutex:
                self._busy_until = None
            if self._cut:
                self._cut = False
                raise LockLostError("no answer from the database in time")

    # ----------------------------------------------------------------------------- watchdog

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="alerts-lock-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        poll_s = min(0.25, self.timeout_s / 20)
        while not self._closed.wait(poll_s):
            with self._mutex:
                overdue = self._busy_until is not None and time.monotonic() > self._busy_until
                if overdue and not self._cut:
                    self._cut = True
                    fd = self._fd
                else:
                    continue
            log.error(
                "no answer from the database before the lease ended; cutting the connection",
                timeout_s=self.timeout_s,
            )
            # The waiting call then fails at once instead of waiting on TCP for hours.
            with suppress(OSError):
                dup = socket.socket(fileno=os.dup(fd))
                with suppress(OSError):
                    dup.shutdown(socket.SHUT_RDWR)
                dup.close()

    def close(self) -> None:
        """Close the connection (the session lock goes with the session)."""
        self._closed.set()
        conn, self._conn = self._conn, None
        self._confirmed = 0.0
        if conn is not None:
            with suppress(Exception):
                conn.close()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
