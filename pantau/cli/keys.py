"""`pantau keys`: operator API keys made, listed and revoked (their form: :mod:`pantau.keys`;
the API checks them in api.keys)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import psycopg
import typer
from psycopg.rows import class_row
from rich.console import Console
from rich.table import Table

from pantau.keys import HOLDER_MAX_CHARS, KEY_PREFIX, digest
from pantau.settings import SettingsError, get_settings

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# Characters of a key kept in clear, so an operator can tell keys apart in a listing.
_SHOWN = len(KEY_PREFIX) + 6


class ApiKeyError(ValueError):
    """A key cannot be made or revoked; the message says why."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the key itself)."""

    id: int
    name: str
    holder: str | None
    key_prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_holder(holder: str) -> str:
    """``holder`` trimmed, or an :class:`ApiKeyError` saying why it cannot name a person."""
    text = holder.strip()
    if not 1 <= len(text) <= HOLDER_MAX_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ApiKeyError(
            f"invalid holder {holder!r}: 1 to {HOLDER_MAX_CHARS} characters, no control characters"
        )
    return text


def add_key(conn: psycopg.Connection, name: str, *, holder: str | None = None) -> str:
    """Store a new key for ``name`` (held by the person ``holder``, if given) and return it
    (the only time it is seen)."""
    if not NAME_PATTERN.match(name):
        raise ApiKeyError(
            f"invalid name {name!r}: letters, digits and . _ @ - (up to 64, no leading symbol)"
        )
    held_by = None if holder is None else check_holder(holder)
    key = new_key()
    try:
        conn.execute(
            "INSERT INTO pantau_private.api_keys (name, holder, key_hash, key_prefix) "
            "VALUES (%s, %s, %s, %s)",
            [name, held_by, digest(key), key[:_SHOWN]],
        )
    except psycopg.errors.UniqueViolation:
        raise ApiKeyError(f"a key named {name!r} exists already (revoke it first)") from None
    return key


def list_keys(conn: psycopg.Connection) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            "SELECT id, name, holder, key_prefix, created_at, last_used_at, revoked_at "
            "FROM pantau_private.api_keys ORDER BY id"
        ).fetchall()


def revoke_key(conn: psycopg.Connection, name: str) -> bool:
    """Revoke the live key of ``name``; False when it has none."""
    done = conn.execute(
        "UPDATE pantau_private.api_keys SET revoked_at = now() "
        "WHERE name = %s AND revoked_at IS NULL",
        [name],
    )
    return done.rowcount > 0


app = typer.Typer(help="Operator API keys (stored hashed; shown once).", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)


def _connect() -> psycopg.Connection:
    try:
        url = get_settings().require_database_url()
    except SettingsError as error:
        _err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as error:
        _err.print(f"[red]cannot reach the database:[/red] {error}")
        raise typer.Exit(1) from None


def _schema_error(error: psycopg.Error) -> None:
    _err.print(f"[red]{error}[/red] (run `pantau db migrate`?)")
    raise typer.Exit(1) from None


@app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. an operator's login")],
    holder: Annotated[
        str | None,
        typer.Option(
            help='The person the key is given to, e.g. "Budi Santoso (BPBD)": '
            "acknowledgements and the alert trail record this name."
        ),
    ] = None,
) -> None:
    """Make a key and print it once."""
    with _connect() as conn:
        try:
            key = add_key(conn, name, holder=holder)
        except ApiKeyError as error:
            _err.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
        except psycopg.Error as error:
            _schema_error(error)
    held = f", held by {holder.strip()}" if holder else ""
    _err.print(f"key for {name}{held} (shown only now; send it in the X-API-Key header):")
    typer.echo(key)


@app.command("list")
def list_command() -> None:
    """List keys (their first characters only), with when they were last used."""
    with _connect() as conn:
        try:
            keys = list_keys(conn)
        except psycopg.Error as error:
            _schema_error(error)
    table = Table(title="API keys")
    for column in ("name", "holder", "key", "created", "last used", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.name,
            k.holder or "",
            f"{k.key_prefix}…",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    _out.print(table)


@app.command("revoke")
def revoke_command(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key: requests with it get 403 from now on."""
    with _connect() as conn:
        try:
            done = revoke_key(conn, name)
        except psycopg.Error as error:
            _schema_error(error)
    if not done:
        _err.print(f"[red]no live key named {name!r}[/red]")
        raise typer.Exit(1)
    _out.print(f"revoked the key of {name}")
