"""Pieces shared by the benchmarks and their helper processes: reading times, percentiles,
memory, and the environment and metrics of the services they run."""

from __future__ import annotations

import json
import os
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


def service_env(*, database: str, broker: str, root: str, **settings: str) -> dict[str, str]:
    """Environment for a service under benchmark: this process's own without its PANTAU_*
    settings, the bench's database, broker and topic root, logging at WARNING, and
    ``settings`` (PANTAU_* names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTAU_")}
    env.update(
        {
            "PANTAU_DATABASE_URL": database,
            "PANTAU_MQTT__URL": broker,
            "PANTAU_MQTT__TOPIC_ROOT": root,
            "PANTAU_LOG_LEVEL": "WARNING",
            **settings,
        }
    )
    return env


def scrape(port: int, *, timeout_s: float = 5) -> dict[str, float]:
    """A local service's ``/metrics``: each sample by name (histogram buckets as
    ``name{le=edge}``), summed over its other labels."""
    # Imported here: the measured helper processes import this module too, and their peak
    # memory is part of the results.
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if "le" in sample.labels:
                key += "{le=" + sample.labels["le"] + "}"
            out[key] = out.get(key, 0.0) + sample.value
    return out
