"""Pieces shared by the benchmark's helper processes: reading times, percentiles, memory."""

from __future__ import annotations

import json
import re
import resource
import sys
from collections.abc import Sequence
from datetime import datetime

import numpy as np

_TS = re.compile(rb'"(?:ts|bt)"\s*:\s*("[^"]*"|-?[0-9.eE+]+)')


def publish_time(payload: bytes) -> float | None:
    """The publish time a load message carries (``ts``, or SenML ``bt``), as epoch seconds."""
    match = _TS.search(payload)
    if match is None:
        return None
    raw = match.group(1)
    if raw.startswith(b'"'):
        return datetime.fromisoformat(raw[1:-1].decode()).timestamp()
    return float(raw)


def percentiles(latencies: Sequence[float]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    values = np.asarray(latencies, dtype=np.float64)
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


READY = "ready"


def announce_ready() -> None:
    """Tell the benchmark that this helper is subscribed and may be sent the paced load."""
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()


def emit(result: dict[str, object]) -> None:
    """The helper's result: one JSON line on stdout, last."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
