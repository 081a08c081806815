"""Decoding stage: wire payloads to readings and rejection records, against the sensor registry.

The protocol itself lives in :mod:`pantau.payload`; this stage adds what a running service
needs around it: the registry of sensors and gateways (reloaded, at a bounded rate, when an
unknown sensor or a reading a device may not report shows up, so a newly registered sensor,
gateway or gateway link is accepted without a restart), per-device sequence-gap counting, and
rejection records ready to be stored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ingest.source import Inbound
from pantau.catalogue import Family
from pantau.db.registry import Snapshot
from pantau.db.store import RejectedPayload
from pantau.logs import get_logger
from pantau.payload import Decoded, DecodeLimits, NameCache, Reading, Reason, decode

log = get_logger(__name__)


class SensorRegistry:
    """Sensor id to family and gateway id to its sensors, reloaded on a miss at most every
    ``refresh_s`` seconds.

    With a ``cache_path`` the last registry loaded is kept on disk, so that ingest restarted
    during a database outage still recognises its sensors and gateways (and can spool their
    readings).
    """

    def __init__(
        self,
        *,
        load: Callable[[], Snapshot],
        refresh_s: float,
        cache_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._cache_path = cache_path
        self._clock = clock
        self._families: dict[str, Family] = {}
        self._gateways: dict[str, frozenset[str]] = {}
        self._last_attempt: float | None = None
        # Counts the registries loaded, so that what was resolved against an older one is dropped.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._families)

    def start(self) -> bool:
        """Load the registry; fall back to the on-disk copy if the database cannot be reached.

        Returns True when loaded from the database, False from the copy; raises the loader's
        error when there is neither.
        """
        try:
            self.refresh(force=True, raise_errors=True)
            return True
        except Exception as error:
            cached = self._read_cache()
            if cached is None:
                raise
            log.warning(
                "sensor registry unavailable; using the cached copy",
                error=str(error),
                sensors=len(cached.families),
            )
            self._families, self._gateways = cached.families, cached.gateways
            self.generation += 1
            return False

    def refresh(self, *, force: bool = False, raise_errors: bool = False) -> bool:
        """Reload if due (or forced); returns True when a reload happened and succeeded."""
        now = self._clock()
        if (
            not force
            and self._last_attempt is not None
            and now - self._last_attempt < self._refresh_s
        ):
            return False
        self._last_attempt = now
        try:
            loaded = self._load()
        except Exception as error:
            if raise_errors:
                raise
            log.warning("sensor registry reload failed", error=str(error))
            return False
        added = set(loaded.families) - set(self._families)
        linked = sum(
            len(sensors - self._gateways.get(gateway, frozenset()))
            for gateway, sensors in loaded.gateways.items()
        )
        self._families, self._gateways = loaded.families, loaded.gateways
        self.generation += 1
        if added or linked:
            log.info(
                "sensor registry reloaded",
                sensors=len(loaded.families),
                added=len(added),
                gateway_links_added=linked,
            )
        self._write_cache()
        return True

    def lookup(self, sensor_id: str) -> Family | None:
        family = self._families.get(sensor_id)
        if family is None and self.refresh():
            family = self._families.get(sensor_id)
        return family

    @property
    def gateways(self) -> dict[str, frozenset[str]]:
        """Gateway id to the sensors it may report for, as last loaded."""
        return self._gateways

    def _read_cache(self) -> Snapshot | None:
        if self._cache_path is None or not self._cache_path.exists():
            return None
        try:
            raw = json.loads(self._cache_path.read_text())
            if isinstance(raw.get("sensors"), dict):
                return Snapshot(
                    families={str(k): Family(v) for k, v in raw["sensors"].items()},
                    gateways={str(k): frozenset(map(str, v)) for k, v in raw["gateways"].items()},
                )
            # Written before gateways were registered: sensors only, every device for itself.
            return Snapshot(families={str(k): Family(v) for k, v in raw.items()}, gateways={})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("ignoring unreadable registry cache", error=str(error))
            return None

    def _write_cache(self) -> None:
        if self._cache_path is None:
            return
        temporary = self._cache_path.with_suffix(".tmp")
        document = {
            "sensors": {k: v.value for k, v in self._families.items()},
            "gateways": {k: sorted(v) for k, v in self._gateways.items()},
        }
        try:
            temporary.write_text(json.dumps(document))
            os.replace(temporary, self._cache_path)
        except OSError as error:
            log.warning("cannot write the registry cache", error=str(error))


class SequenceTracker:
    """Counts readings lost upstream from gaps in each device's ``seq`` numbers.

    A number more than one ahead of the last seen is a gap of the numbers skipped; a number at
    or behind the last seen (a redelivery, or an out-of-order message) is not.
    """

    def __init__(self, on_gap: Callable[[str, int], None] | None = None) -> None:
        self._last: dict[str, int] = {}
        self._on_gap = on_gap
        self.total_missing = 0

    def observe(self, sensor_id: str, seq: int) -> int:
        """Record one sequence number; returns how many numbers it shows missing."""
        last = self._last.get(sensor_id)
        if last is not None and seq <= last:
            return 0
        self._last[sensor_id] = seq
        missing = 0 if last is None else seq - last - 1
        if missing > 0:
            self.total_missing += missing
            if self._on_gap is not None:
                self._on_gap(sensor_id, missing)
        return missing


@dataclass(slots=True)
class DecodedMessage:
    """One message after decoding: what to store, what to record as rejected."""

    message: Inbound
    readings: list[Reading] = field(default_factory=list)
    rejected: list[RejectedPayload] = field(default_factory=list)


class Decoder:
    """Turns an :class:`Inbound` message into a :class:`DecodedMessage`; never raises."""

    def __init__(
        self,
        *,
        topic_root: str,
        registry: SensorRegistry,
        limits: DecodeLimits,
        sequences: SequenceTracker | None = None,
    ) -> None:
        self._topic_root = topic_root
        self._registry = registry
        self._limits = limits
        self._sequences = sequences or SequenceTracker()
        self._names: NameCache = {}
        self._names_generation = registry.generation

    def decode(self, message: Inbound) -> DecodedMessage:
        received_at = datetime.fromtimestamp(message.received_at, tz=UTC)
        decoded = self._decode(message, received_at)
        if any(r.reason is Reason.FOREIGN_SENSOR for r in decoded.rejections) and (
            self._registry.refresh()
        ):
            # Perhaps a gateway link registered since the last load: decide again against the
            # reloaded registry (reloads stay rate-limited, whatever a device sends).
            decoded = self._decode(message, received_at)
        for sensor_id, seq in decoded.sequences:
            self._sequences.observe(sensor_id, seq)
        rejected = [
            RejectedPayload(
                topic=storable(message.topic),
                payload=message.payload,
                received_at=received_at,
                rejection=type(rejection)(rejection.reason, storable(rejection.detail)),
            )
            for rejection in decoded.rejections
        ]
        return DecodedMessage(message=message, readings=decoded.readings, rejected=rejected)

    def _decode(self, message: Inbound, received_at: datetime) -> Decoded:
        if self._names_generation != self._registry.generation:
            self._names.clear()
            self._names_generation = self._registry.generation
        return decode(
            message.payload,
            topic=message.topic,
            topic_root=self._topic_root,
            sensors=self._registry.lookup,
            received_at=received_at,
            limits=self._limits,
            names=self._names,
            gateways=self._registry.gateways,
        )


def storable(text: str) -> str:
    """``text`` as PostgreSQL text can hold it: no NUL, no lone surrogates (JSON can spell
    both), so a hostile payload cannot make its own rejection record unstorable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text
