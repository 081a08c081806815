"""Manifests: an exact record of what a simulator run published.

A manifest is a JSON Lines file. The first line is a header; then one line per valid reading
that was published (a reading sent twice on purpose appears under the same key), one line per
injected fault payload, and a closing line with the counts, written when the run ends cleanly.
``pantau simulate verify`` compares a database with it.

Lines are streamed to disk as the run goes, so a run of millions of readings never holds them
in memory. Several processes each write their own part; :func:`load_manifest` merges parts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

KIND = "pantau-manifest"
VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, str, datetime]


class ManifestError(ValueError):
    """A manifest file cannot be read or is inconsistent; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault payload, as published."""

    kind: str
    topic: str
    payload: bytes
    expect_rejected: bool


@dataclass(slots=True)
class Manifest:
    """Everything one run (or several parts of one run) published."""

    topic_root: str
    seed: int | None = None
    meta: dict[str, object] = field(default_factory=dict)
    valid: dict[Key, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)

    @property
    def sensors(self) -> set[str]:
        """Every sensor with at least one valid reading."""
        return {sensor for sensor, _, _ in self.valid}

    def time_range(self) -> tuple[datetime, datetime] | None:
        """Earliest and latest time of the valid readings, or None without any."""
        if not self.valid:
            return None
        times = [time for _, _, time in self.valid]
        return min(times), max(times)


def to_us(time: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, no float rounding)."""
    if time.tzinfo is None:
        raise ValueError(f"naive datetime {time.isoformat()}: give a time zone")
    delta = time - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The UTC datetime of a count of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


class ManifestWriter:
    """Streams a manifest to ``path``; use as a context manager.

    The closing line (with counts) is written only when the block ends without an exception,
    so a manifest of an interrupted run is recognisably incomplete.
    """

    def __init__(
        self,
        path: Path,
        *,
        topic_root: str,
        seed: int | None = None,
        meta: dict[str, object] | None = None,
    ) -> None:
        self.path = Path(path)
        self.topic_root = topic_root
        self.seed = seed
        self.meta = dict(meta or {})
        self.valid_count = 0
        self.fault_count = 0
        self._file: IO[str] | None = None
        self._prefixes: dict[tuple[str, str], str] = {}

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(complete=exc_type is None)

    def open(self) -> None:
        """Create the file and write the header (the context manager calls this)."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8", buffering=1 << 20)
        header = {
            "kind": KIND,
            "version": VERSION,
            "topic_root": self.topic_root,
            "seed": self.seed,
            "meta": self.meta,
        }
        self._file.write(json.dumps(header, default=str) + "\n")

    def close(self, *, complete: bool = True) -> None:
        """Flush and close; ``complete`` writes the closing line."""
        if self._file is None:
            return
        if complete:
            end = {"kind": "end", "valid": self.valid_count, "faults": self.fault_count}
            self._file.write(json.dumps(end) + "\n")
        self._file.close()
        self._file = None

    def _out(self) -> IO[str]:
        if self._file is None:
            raise RuntimeError("ManifestWriter is not open: use it as a context manager")
        return self._file

    def valid(self, sensor_id: str, metric: str, time: datetime, value: float) -> None:
        """Record one valid reading that was published (again for each deliberate resend)."""
        self.valid_us(sensor_id, metric, to_us(time), value)

    def valid_us(self, sensor_id: str, metric: str, time_us: int, value: float) -> None:
        """Like :meth:`valid` with the time in microseconds since the epoch (the fast path)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{sensor_id}/{metric}: a valid reading must be finite, got {value}")
        prefix = self._prefixes.get((sensor_id, metric))
        if prefix is None:
            prefix = f'{{"s":{json.dumps(sensor_id)},"m":{json.dumps(metric)},"t":'
            self._prefixes[(sensor_id, metric)] = prefix
        self._out().write(f'{prefix}{int(time_us)},"v":{value!r}}}\n')
        self.valid_count += 1

    def fault(self, kind: str, *, topic: str, payload: bytes, expect_rejected: bool) -> None:
        """Record one injected fault payload exactly as published."""
        line = {
            "f": kind,
            "topic": topic,
            "payload": base64.b64encode(payload).decode("ascii"),
            "expect_rejected": bool(expect_rejected),
        }
        self._out().write(json.dumps(line) + "\n")
        self.fault_count += 1


def load_manifest(
    path: Path | str | Sequence[Path | str], *, allow_incomplete: bool = False
) -> Manifest:
    """Read one manifest, or merge several parts of one run.

    Raises :class:`ManifestError` naming the file and line of any problem, when parts disagree
    on the topic root, or (unless ``allow_incomplete``) when a part lacks its closing line.
    """
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    if not paths:
        raise ManifestError("no manifest given")
    merged: Manifest | None = None
    for part in paths:
        merged = _read(part, merged, allow_incomplete=allow_incomplete)
    assert merged is not None
    if len(paths) > 1:
        merged.meta = {**merged.meta, "parts": len(paths)}
    return merged


def _read(path: Path, into: Manifest | None, *, allow_incomplete: bool) -> Manifest:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise ManifestError(f"{path}: {error.strerror or error}") from None
    with handle:
        lines = iter(handle)
        header = _header(path, next(lines, ""))
        topic_root = str(header["topic_root"])
        if into is None:
            seed = header.get("seed")
            meta = header.get("meta") or {}
            if not isinstance(meta, dict):
                raise ManifestError(f"{path}:1: `meta` must be an object")
            into = Manifest(
                topic_root=topic_root, seed=seed if isinstance(seed, int) else None, meta=meta
            )
        elif into.topic_root != topic_root:
            raise ManifestError(
                f"{path}: topic root {topic_root!r} differs from {into.topic_root!r} "
                "of the other parts"
            )
        ended = _body(path, lines, into)
    if not ended and not allow_incomplete:
        raise ManifestError(
            f"{path}: incomplete (no closing line): the run that wrote it did not finish"
        )
    return into


def _header(path: Path, line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("kind") != KIND:
        raise ManifestError(f"{path}:1: not a Pantau manifest (no {KIND!r} header)")
    if header.get("version") != VERSION:
        raise ManifestError(f"{path}:1: unsupported manifest version {header.get('version')!r}")
    if not isinstance(header.get("topic_root"), str):
        raise ManifestError(f"{path}:1: header has no topic_root")
    return header


def _body(path: Path, lines: Iterable[str], into: Manifest) -> bool:
    valid = into.valid
    ended = False
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        if ended:
            raise ManifestError(f"{path}:{number}: content after the closing line")
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise TypeError("not an object")
            if "s" in record:
                sensor, metric, us, value = record["s"], record["m"], record["t"], record["v"]
                if not (
                    isinstance(sensor, str)
                    and isinstance(metric, str)
                    and isinstance(us, int)
                    and isinstance(value, int | float)
                    and not isinstance(value, bool)
                ):
                    raise TypeError("bad field types in a reading")
                # A key recorded twice (a deliberate duplicate) keeps its first value.
                valid.setdefault((sensor, metric, from_us(us)), float(value))
            elif "f" in record:
                into.faults.append(
                    Fault(
                        kind=str(record["f"]),
                        topic=str(record["topic"]),
                        payload=base64.b64decode(record["payload"], validate=True),
                        expect_rejected=bool(record["expect_rejected"]),
                    )
                )
            elif record.get("kind") == "end":
                ended = True
            else:
                raise TypeError("unknown record")
        except (ValueError, TypeError, KeyError, OverflowError, binascii.Error) as error:
            raise ManifestError(f"{path}:{number}: malformed line ({error})") from None
    return ended
