"""Throw-away databases on a server, for tests and benchmarks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


def database_url(server_url: str, dbname: str) -> str:
    """``server_url`` (any database on the server) pointed at ``dbname``."""
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{dbname}"


@contextmanager
def temporary_database(admin_url: str, *, prefix: str, timeout_s: float = 30) -> Iterator[str]:
    """A new, empty database named ``PREFIX_<random>``, dropped (forcibly) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.errors.ObjectInUse:
            # A background worker (e.g. TimescaleDB's scheduler) may briefly hold the template:
            # "source database is being accessed by other users" is worth another try.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield database_url(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
