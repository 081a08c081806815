"""Notifications: what the database says is true now, sent to Prometheus Alertmanager.

A thread of its own, after the commit like the MQTT publisher, posts to Alertmanager's
``/api/v2/alerts`` every open alert (one Alertmanager alert per level of a Pantau alert; labels
in :mod:`pantau.alertmanager`) and each recent end of a level, with its ``endsAt``. It sends at
once after a commit that changed alerts (the service pokes it) and again every
``PANTAU_NOTIFY__RESEND_INTERVAL_S``, so Alertmanager, which keeps alerts in memory only, is
told everything again whenever it comes back, and a restart of this service resends from the
database. Evaluation never waits for it: a poke only sets a flag, and what is sent is read from
the database each time (so nothing queues up, however long Alertmanager is away).

An end (an escalation, de-escalation or resolution recorded in ``alert_events``) is sent until
Alertmanager has taken it and for ``RESOLVED_RESEND_S`` more; the highest event id up to which
every end is done is kept in ``alert_service_state`` (``notified_event_id``), so that ends not
yet delivered when the service stops are delivered by the next instance. Sending one twice is
harmless: Alertmanager's notification log deduplicates.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pantau import levels
from pantau.alertmanager import RULE_TITLES, alertname, level_name
from pantau.logs import get_logger
from pantau.settings import FLOOD_RULES, NotifySettings, Settings

log = get_logger(__name__)
WIB = timezone(timedelta(hours=7), "WIB")
WATERMARK_KEY = "notified_event_id"
# A gauge's warnings that its own Awas silences (pantau.alertmanager's third inhibit rule).
_SILENCED_AT_AWAS = frozenset(FLOOD_RULES) - {"flood_level"}

_OPEN = """
SELECT a.id AS alert_id, a.sensor_id, a.rule, a.level, a.updated_at AS entered_at, a.value,
       a.predicted_level, a.predicted_at, a.message, a.message_en,
       s.name, s.family, s.kecamatan, s.river
FROM alerts a JOIN sensors s ON s.id = a.sensor_id
WHERE a.state = 'open'
ORDER BY a.id
"""

# Each change that left a level (its `previous_level`), with what that level was: when it began
# and its message, from the change before it in the same alert.
_ENDS = """
WITH ended AS (
    SELECT id, alert_id FROM alert_events
    WHERE id > %(after)s AND change IN ('escalated', 'de-escalated', 'resolved')
), chain AS (
    SELECT e.id, e.alert_id, coalesce(e.previous_level, lag(e.level) OVER w) AS previous_level,
           e.observed_at, e.message, e.message_en,
           lag(e.observed_at) OVER w AS entered_at, lag(e.message) OVER w AS level_message,
           lag(e.message_en) OVER w AS level_message_en, lag(e.value) OVER w AS value,
           lag(e.predicted_level) OVER w AS predicted_level,
           lag(e.predicted_at) OVER w AS predicted_at
    FROM alert_events e
    WHERE e.alert_id IN (SELECT alert_id FROM ended) AND e.change <> 'acknowledged'
    WINDOW w AS (PARTITION BY e.alert_id ORDER BY e.id)
)
SELECT c.*, a.sensor_id, a.rule, s.name, s.family, s.kecamatan, s.river
FROM chain c
JOIN ended USING (id)
JOIN alerts a ON a.id = c.alert_id
JOIN sensors s ON s.id = a.sensor_id
WHERE c.previous_level IS NOT NULL
ORDER BY c.id
"""


def _wib(moment: datetime) -> str:
    return moment.astimezone(WIB).strftime("%d/%m/%Y %H:%M WIB")


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _title(rule: str, level: int, row: dict[str, Any]) -> tuple[str, str]:
    # A flood rule's level is a flood level (for a forecast, the one expected): named as such.
    flood = rule in FLOOD_RULES and level in levels.FLOOD_LEVELS
    name_id, name_en = levels.FLOOD_LEVELS[level] if flood else level_name(rule, level)
    topic_id, topic_en = RULE_TITLES.get(rule, (rule, rule))
    if rule == "flood_level":
        what_id, what_en = f"{topic_id} {name_id}", f"{topic_en} {name_en}"
    elif rule == "rising_fast":
        what_id, what_en = f"{topic_id}, {name_id} diperkirakan", f"{topic_en}, {name_en} expected"
    else:
        what_id, what_en = f"{topic_id} ({name_id})", f"{topic_en} ({name_en})"
    place = f"{row['name']}, Kec. {row['kecamatan']}"
    return f"{what_id}: {place}", f"{what_en}: {row['name']}, {row['kecamatan']} district"


@dataclass(frozen=True, slots=True, kw_only=True)
class Links:
    """Where a notification points people (both optional)."""

    public_url: str | None = None


def labels(row: dict[str, Any], level: int) -> dict[str, str]:
    """The labels of one level of one alert: the same every time it is sent (Alertmanager
    tells alerts apart by them)."""
    out = {
        "alertname": alertname(row["rule"]),
        "alert_id": str(row["alert_id"]),
        "sensor": row["sensor_id"],
        "rule": row["rule"],
        "level": str(level),
        "level_name": level_name(row["rule"], level)[0],
        "kecamatan": row["kecamatan"],
        "family": row["family"],
    }
    if row["river"]:
        out["river"] = row["river"]
    return out


def alert_annotations(row: dict[str, Any], level: int, links: Links) -> dict[str, str]:
    """What a message says about one level of one alert, in Indonesian and in English."""
    title_id, title_en = _title(row["rule"], level, row)
    out = {
        "title": title_id,
        "title_en": title_en,
        "sensor_name": row["name"],
        "description": row["message"],
        "description_en": row["message_en"],
        "since_wib": _wib(row["entered_at"]),
    }
    if row["value"] is not None:
        out["value"] = f"{row['value']:g}"
    if row["predicted_level"] and row["predicted_at"] is not None:
        predicted_id, predicted_en = level_name("flood_level", row["predicted_level"])
        clock = row["predicted_at"].astimezone(WIB).strftime("%H:%M")
        out |= {
            "predicted_level": str(row["predicted_level"]),
            "predicted_level_name": predicted_id,
            "predicted_at": _iso(row["predicted_at"]),
            "forecast": f"{predicted_id} diperkirakan sekitar pukul {clock} WIB.",
            "forecast_en": f"{predicted_en} expected at about {clock} WIB.",
        }
    if links.public_url:
        out["link"] = f"{links.public_url}/?sensor={row['sensor_id']}"
    return out


def firing(row: dict[str, Any], links: Links) -> dict[str, Any]:
    """An open alert at its current level, as Alertmanager's v2 API takes it (no ``endsAt``:
    Alertmanager ends it after its ``resolve_timeout`` unless it is sent again)."""
    alert: dict[str, Any] = {
        "labels": labels(row, row["level"]),
        "annotations": alert_annotations(row, row["level"], links),
        "startsAt": _iso(row["entered_at"]),
    }
    if links.public_url:
        alert["generatorURL"] = f"{links.public_url}/alerts/{row['alert_id']}"
    return alert


def ended(row: dict[str, Any], links: Links) -> dict[str, Any]:
    """A level that ended (the change after it is ``row``), with its ``endsAt``."""
    level = row["previous_level"]
    entered = row["entered_at"] or row["observed_at"]
    at_level = row | {
        "entered_at": entered,
        "message": row["level_message"] or row["message"],
        "message_en": row["level_message_en"] or row["message_en"],
    }
    notes = alert_annotations(at_level, level, links) | {
        "resolution": row["message"],
        "resolution_en": row["message_en"],
        "ended_wib": _wib(row["observed_at"]),
    }
    alert: dict[str, Any] = {
        "labels": labels(row, level),
        "annotations": notes,
        "startsAt": _iso(entered),
        "endsAt": _iso(max(row["observed_at"], entered)),
    }
    if links.public_url:
        alert["generatorURL"] = f"{links.public_url}/alerts/{row['alert_id']}"
    return alert


@dataclass(slots=True)
class Batch:
    """One post: the alerts, and the ends it carries (event id by label key)."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    ends: dict[tuple[int, int], int] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)
    """Ends held back until what silences them has been taken (event ids)."""
    newest_end: int = 0


def build(
    open_rows: list[dict[str, Any]],
    end_rows: list[dict[str, Any]],
    links: Links,
    *,
    done: frozenset[int] = frozenset(),
    known: frozenset[tuple[int, int]] = frozenset(),
) -> Batch:
    """The post for these rows: open alerts first, then each level's newest end, unless that
    level is in force again or the end is ``done`` (sent long enough).

    Alertmanager decides what is silenced (its inhibit rules), but its inhibition is
    eventually consistent: the alert that silences another counts once Alertmanager's
    inhibitor has read it, which can be after the silenced one's group is flushed when both
    arrive in one post. So whatever a level not yet taken would silence (a lower level's end,
    or a gauge's own rising-fast and upstream warnings and their ends while it is at Awas)
    waits for the next post, by which time Alertmanager holds that level; ``known`` is the
    ``(alert_id, level)`` firings Alertmanager took before."""
    batch = Batch()
    live: dict[int, int] = {}
    awas: dict[str, int] = {}  # sensor -> its flood_level alert at Awas
    for row in open_rows:
        live[row["alert_id"]] = row["level"]
        if row["rule"] == "flood_level" and row["level"] == 3:
            awas[row["sensor_id"]] = row["alert_id"]

    def unheard(rule: str, sensor: str) -> bool:
        return rule in _SILENCED_AT_AWAS and sensor in awas and (awas[sensor], 3) not in known

    for row in open_rows:
        if not unheard(row["rule"], row["sensor_id"]):
            batch.alerts.append(firing(row, links))
    newest: dict[tuple[int, int], dict[str, Any]] = {}
    for row in end_rows:
        batch.newest_end = max(batch.newest_end, row["id"])
        key = (row["alert_id"], row["previous_level"])
        if live.get(row["alert_id"]) != row["previous_level"]:
            newest[key] = row  # rows come in id order: the last one wins
    for key, row in newest.items():
        if row["id"] in done:
            continue
        alert_id, level = key
        higher = live.get(alert_id, 0)
        if (higher > level and (alert_id, higher) not in known) or unheard(
            row["rule"], row["sensor_id"]
        ):
            batch.deferred.append(row["id"])
            continue
        batch.ends[key] = row["id"]
        batch.alerts.append(ended(row, links))
    return batch


def _record(conn: psycopg.Connection[Any], alerts: list[dict[str, Any]]) -> None:
    """Note each level and end the first time Alertmanager took it (an alert's history shows
    them); resends change nothing."""
    rows = [
        {
            "alert_id": int(alert["labels"]["alert_id"]),
            "level": int(alert["labels"]["level"]),
            "status": "resolved" if "endsAt" in alert else "firing",
        }
        for alert in alerts
    ]
    if rows:
        conn.execute(
            """
            INSERT INTO alert_notifications (alert_id, level, status)
            SELECT alert_id, level, status FROM jsonb_to_recordset(%s::jsonb)
                AS x(alert_id bigint, level smallint, status text)
            ON CONFLICT (alert_id, level, status) DO NOTHING
            """,
            [orjson.dumps(rows).decode()],
        )


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.posts = Counter(
            "pantau_alerts_notify_posts",
            "Posts of the open alerts to Alertmanager, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.alerts = Gauge(
            "pantau_alerts_notify_alerts",
            "Alerts (levels in force and recent ends) in the latest post to Alertmanager.",
            registry=registry,
        )
        self.last_success = Gauge(
            "pantau_alerts_notify_last_success_timestamp_seconds",
            "When Alertmanager last took a post.",
            registry=registry,
        )


class NotifyError(RuntimeError):
    """Alertmanager did not take a post."""


class Notifier:
    """Sends the alerts to Alertmanager from a thread of its own; see the module docstring."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        notify = settings.notify
        if notify.alertmanager_url is None:
            raise ValueError("PANTAU_NOTIFY__ALERTMANAGER_URL is not set")
        self._settings: NotifySettings = notify
        self._endpoint = f"{notify.alertmanager_url}/api/v2/alerts"
        self._links = Links(public_url=notify.public_url)
        self._conninfo = settings.require_database_url()
        self._connect_timeout_s = settings.alerts.db_connect_timeout_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pantau-notify", daemon=True)
        # End event id -> when Alertmanager first took it (monotonic seconds).
        self._taken: dict[int, float] = {}
        # (alert_id, level) firings Alertmanager has taken, of the alerts open now.
        self._known: frozenset[tuple[int, int]] = frozenset()
        self._watermark: int | None = None
        self.metrics = _Metrics(registry)

    @classmethod
    def maybe(cls, settings: Settings, *, registry: CollectorRegistry | None) -> Notifier | None:
        """A notifier where an Alertmanager is configured, else None."""
        if settings.notify.alertmanager_url is None:
            return None
        return cls(settings, registry=registry)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Alerts changed (committed): send soon. Never blocks."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self._settings.request_timeout_s + 5)

    # ---------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        s = self._settings
        conn: psycopg.Connection[Any] | None = None
        retry = s.retry_initial_s
        due = 0.0  # send at once on start: a restarted service tells everything again
        failing = False
        try:
            while not self._stop.is_set():
                timeout = max(0.0, due - time.monotonic())
                woken = self._wake.wait(timeout)
                if self._stop.is_set():
                    break
                if woken:
                    self._wake.clear()
                    if failing and time.monotonic() < due:
                        continue  # waiting out the backoff; the next attempt sends it all
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    self._cycle(conn)
                except (NotifyError, psycopg.Error, OSError) as error:
                    if isinstance(error, psycopg.Error) and conn is not None:
                        conn.close()
                        conn = None
                    self.metrics.posts.labels(outcome="failed").inc()
                    log.warning("notification not sent; retrying", error=str(error).strip()[:300],
                                retry_s=retry)  # fmt: skip
                    failing = True
                    due = time.monotonic() + retry
                    retry = min(retry * 2, s.retry_max_s, s.resend_interval_s)
                else:
                    if failing:
                        log.info("Alertmanager took the alerts again")
                    failing = False
                    retry = s.retry_initial_s
                    due = time.monotonic() + s.resend_interval_s
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(1, round(self._connect_timeout_s)),
            row_factory=dict_row,
        )

    def _cycle(self, conn: psycopg.Connection[Any]) -> None:
        if self._watermark is None:
            self._watermark = self._load_watermark(conn)
        open_rows = conn.execute(_OPEN).fetchall()
        end_rows = conn.execute(_ENDS, {"after": self._watermark}).fetchall()
        now, keep = time.monotonic(), self._settings.resolved_resend_s
        done = frozenset(e for e, taken in self._taken.items() if now - taken >= keep)
        batch = build(open_rows, end_rows, self._links, done=done, known=self._known)
        self._post(batch.alerts)
        self._known = frozenset(
            (int(a["labels"]["alert_id"]), int(a["labels"]["level"]))
            for a in batch.alerts
            if "endsAt" not in a
        )
        _record(conn, batch.alerts)
        self.metrics.posts.labels(outcome="ok").inc()
        self.metrics.alerts.set(len(batch.alerts))
        self.metrics.last_success.set(time.time())
        self._retire(conn, batch)

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            self._endpoint,
            data=orjson.dumps(alerts),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._settings.request_timeout_s):
                return
        except urllib.error.HTTPError as error:
            body = error.read()[:500].decode(errors="replace")
            raise NotifyError(f"Alertmanager answered {error.code}: {body}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise NotifyError(f"Alertmanager unreachable: {error}") from None

    def _retire(self, conn: psycopg.Connection[Any], batch: Batch) -> None:
        """Ends taken long enough ago are done; move the watermark past everything done."""
        now = time.monotonic()
        waiting = list(batch.ends.values())
        for event_id in waiting:
            self._taken.setdefault(event_id, now)
        assert self._watermark is not None
        # Ends not sent (superseded, in force again, done) hold nothing back; deferred ones do.
        held = waiting + batch.deferred
        mark = min(held) - 1 if held else max(self._watermark, batch.newest_end)
        for event_id in [e for e in self._taken if e <= mark]:
            del self._taken[event_id]
        if mark > self._watermark:
            conn.execute(
                """
                INSERT INTO alert_service_state (key, value, updated_at)
                VALUES (%s, %s, now())
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                """,
                [WATERMARK_KEY, Jsonb(mark)],
            )
            self._watermark = mark

    def _load_watermark(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT value FROM alert_service_state WHERE key = %s", [WATERMARK_KEY]
        ).fetchone()
        if row is not None:
            return int(row["value"])
        # Never sent before: only the ends of the last RESOLVED_RESEND_S are news.
        first = conn.execute(
            "SELECT coalesce(max(id), 0) AS id FROM alert_events "
            "WHERE recorded_at < now() - make_interval(secs => %s)",
            [self._settings.resolved_resend_s],
        ).fetchone()
        return int(first["id"]) if first else 0
