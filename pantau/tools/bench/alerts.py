"""`pantau bench alerts`: how fast a threshold-crossing reading becomes a committed alert on MQTT,
and a notification at a webhook, while a steady load runs.

A private broker, a fresh database with the city, `python -m ingest` and `python -m alerts`
(production settings). The load (`python -m simulators load`, paced) runs across every sensor
of the city; meanwhile, a few times a second, a probe goes to one of the bench's own probe
gauges (a fresh one each time, so that each probe opens an alert whatever the dwell settings):
two readings above Awas, since a level needs two consecutive readings to be confirmed. The
confirming reading's publish time is compared with the moment its alert event arrives on
``ROOT/alerts/events`` (published only after the commit) and with the event's ``recorded_at``
(the commit). Where Alertmanager is installed, the alert service also sends to a private one
(the generated configuration, ``group_wait`` 0: a production ``group_wait`` adds its own wait)
whose webhook receiver, in this process, notes when each probe gauge's Awas arrives. Latencies
are wall-clock times on this one machine.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from pantau.alertmanager import config_files
from pantau.settings import DEFAULT_CITY_FILE, MqttSettings, NotifySettings
from pantau.tools.bench._common import percentiles, scrape, service_env
from pantau.tools.bench.ingest import (
    BenchConfig,
    BenchError,
    _database,
    _Ingest,
    _load,
    _python,
    _start_background,
    machine,
)
from pantau.tools.services import (
    MissingProgramError,
    PrivateAlertmanager,
    PrivateMosquitto,
    free_port,
    wait_until,
)
from pantau.topics import events_topic

PROBE_PREFIX = "fg-bench-probe-"
TARGET_P99_S = 1.0


@dataclass(frozen=True, kw_only=True)
class AlertBenchConfig:
    """Sizes of one run."""

    admin_url: str = BenchConfig.admin_url
    city_file: Path = DEFAULT_CITY_FILE
    rate_per_s: float = 5_000.0
    duration_s: float = 40.0
    warmup_s: float = 8.0
    probes_per_s: float = 4.0
    publishers: int = 2
    load_niceness: int = 10
    log: Callable[[str], None] = print


@dataclass(kw_only=True)
class AlertBenchResult:
    probes: int
    answered: int
    p50_s: float | None
    p99_s: float | None
    commit_p50_s: float | None
    commit_p99_s: float | None
    load_readings_per_s: float
    # Reading published to the webhook receiving the notification (None: no Alertmanager).
    notified: int | None = None
    webhook_p50_s: float | None = None
    webhook_p99_s: float | None = None
    target_p99_s: float = TARGET_P99_S
    machine: dict[str, str] = field(default_factory=machine)

    @property
    def passed(self) -> bool:
        return self.p99_s is not None and self.p99_s < self.target_p99_s

    def to_json(self) -> str:
        return orjson.dumps({**asdict(self), "passed": self.passed}).decode()


def _add_probes(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO sensors (id, family, name, kecamatan, lat, lon, interval_s, river,
                                 river_km)
            SELECT %s || n, 'flood_gauge', 'Bench probe ' || n, k.name, k.lat, k.lon, 60,
                   'Bench', 0
            FROM generate_series(0, %s - 1) AS n, (SELECT * FROM kecamatan LIMIT 1) AS k
            """,
            [PROBE_PREFIX, count],
        )
        conn.execute(
            "INSERT INTO flood_thresholds (sensor_id, waspada, siaga, awas) "
            "SELECT id, 1, 2, 3 FROM sensors WHERE id LIKE %s",
            [PROBE_PREFIX + "%"],
        )


class _Alerts:
    """`python -m alerts` on the bench's database and broker."""

    def __init__(
        self,
        *,
        database: str,
        broker: str,
        root: str,
        workdir: Path,
        alertmanager: str | None = None,
    ) -> None:
        self.port = free_port()
        notify = {} if alertmanager is None else {"PANTAU_NOTIFY__ALERTMANAGER_URL": alertmanager}
        self.env = service_env(
            database=database,
            broker=broker,
            root=root,
            PANTAU_ALERTS__CLIENT_ID=f"bench-alerts-{root}",
            PANTAU_ALERTS__METRICS_PORT=str(self.port),
            **notify,
        )
        self.log = workdir / "alerts.log"
        self.process = _start_background(_python("-m", "alerts"), env=self.env, log=self.log)

    def active(self) -> bool:
        if self.process.poll() is not None:
            raise BenchError(f"alerts exited: {self.log.read_text()[-2000:]}")
        return scrape(self.port, timeout_s=2).get("pantau_alerts_active") == 1

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


class _Probe:
    """Publishes probe readings and times their alert events."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.sent: dict[str, float] = {}  # observation time (ISO) -> publish wall time
        self.arrived: dict[str, tuple[float, str]] = {}  # -> (arrival, recorded_at)
        self.sent_to: dict[str, float] = {}  # probe gauge -> publish wall time
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-probe-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda client, *args: client.subscribe(
            events_topic(settings.topic_root), qos=1
        )
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect(self.settings.host, self.settings.port)
        self.client.loop_start()
        wait_until(self._ready.is_set, timeout_s=10, what="probe subscription")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        event = orjson.loads(message.payload)
        probe = str(event.get("sensor_id", "")).startswith(PROBE_PREFIX)
        if not probe or event.get("rule") != "flood_level" or event.get("change") != "opened":
            return
        observed = datetime.fromisoformat(event["observed_at"]).isoformat()
        with self._lock:
            self.arrived.setdefault(observed, (now, str(event.get("recorded_at"))))

    def send(self, number: int) -> None:
        """Two readings above Awas (3 m) on probe gauge ``number``: the second confirms the
        level, and is the one timed."""
        topic = self.settings.uplink_topic(f"{PROBE_PREFIX}{number}")
        first = datetime.now(UTC) - timedelta(seconds=1)
        payload = orjson.dumps({"ts": first.isoformat(), "values": {"water_level": 3.5}})
        self.client.publish(topic, payload, qos=1)
        when = datetime.now(UTC)
        payload = orjson.dumps({"ts": when.isoformat(), "values": {"water_level": 3.5}})
        with self._lock:
            self.sent[when.isoformat()] = time.time()
            self.sent_to[f"{PROBE_PREFIX}{number}"] = self.sent[when.isoformat()]
        self.client.publish(topic, payload, qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def latencies(self) -> tuple[list[float], list[float]]:
        with self._lock:
            pairs = [(self.sent[k], self.arrived[k]) for k in self.sent if k in self.arrived]
        on_mqtt = [arrived - sent for sent, (arrived, _) in pairs]
        committed = [
            datetime.fromisoformat(recorded).timestamp() - sent
            for sent, (_, recorded) in pairs
            if recorded not in ("None", "")
        ]
        return on_mqtt, committed


class _Webhook:
    """Alertmanager's webhook receiver: when each probe gauge's Awas first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                for alert in orjson.loads(body).get("alerts", []):
                    labels = alert.get("labels", {})
                    if alert.get("status") == "firing" and labels.get("level") == "3":
                        with hook._lock:
                            hook.arrived.setdefault(str(labels.get("sensor")), now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alertmanager(workdir: Path, hook: _Webhook) -> PrivateAlertmanager | None:
    """A private Alertmanager telling the webhook of every Awas at once; None if not installed."""
    settings = NotifySettings(
        group_wait_s=0,
        group_interval_s=1,
        resolved_resend_s=2,
        receivers=[{"name": "bench", "webhook_urls": [hook.url], "min_level": 3}],
    )
    try:
        server = PrivateAlertmanager(
            directory=workdir / "alertmanager", files=config_files(settings)
        )
    except MissingProgramError:
        return None
    server.start()
    return server


def run_alert_bench(config: AlertBenchConfig) -> AlertBenchResult:
    """One run; see the module docstring."""
    root = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="pantau-bench-alerts-") as tmp:
        workdir = Path(tmp)
        broker = PrivateMosquitto(directory=workdir / "broker")
        broker_url = broker.start()
        hook = _Webhook()
        alertmanager = _alertmanager(workdir, hook)
        if alertmanager is None:
            config.log("Alertmanager is not installed: no notification latency")
        try:
            database_config = BenchConfig(admin_url=config.admin_url, city_file=config.city_file)
            with _database(database_config, with_city=True) as url:
                _add_probes(url, round(config.duration_s * config.probes_per_s) + 10)
                ingest = _Ingest(database=url, broker=broker_url, root=root, workdir=workdir)
                ingest.start()
                alerts = _Alerts(
                    database=url, broker=broker_url, root=root, workdir=workdir,
                    alertmanager=None if alertmanager is None else alertmanager.url,
                )  # fmt: skip
                try:
                    wait_until(alerts.active, timeout_s=60, what="alerts evaluating")
                    return _measure(config, broker_url, root, workdir, hook, alertmanager)
                finally:
                    alerts.stop()
                    ingest.stop()
        finally:
            if alertmanager is not None:
                alertmanager.stop()
            hook.stop()
            broker.stop()


def _measure(
    config: AlertBenchConfig,
    broker_url: str,
    root: str,
    workdir: Path,
    hook: _Webhook,
    alertmanager: PrivateAlertmanager | None,
) -> AlertBenchResult:
    probe = _Probe(MqttSettings(url=broker_url, topic_root=root))
    probe.start()
    load_result: dict[str, object] = {}

    def load() -> None:
        load_result.update(
            _load(
                broker=broker_url, root=root, city=config.city_file,
                messages=int(config.rate_per_s * config.duration_s),
                publishers=config.publishers, shape="single", per_message=1,
                manifest=workdir / "load", nice=config.load_niceness, rate=config.rate_per_s,
            )
        )  # fmt: skip

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    config.log(f"load: {config.rate_per_s:,.0f} readings/s for {config.duration_s:.0f} s")
    time.sleep(config.warmup_s)  # the load reaches its pace before the probes start
    deadline = time.monotonic() + config.duration_s - config.warmup_s - 2
    number = 0
    while time.monotonic() < deadline and loader.is_alive():
        probe.send(number)
        number += 1
        time.sleep(1 / config.probes_per_s)
    loader.join(timeout=config.duration_s * 3)
    # Late answers still count: a probe that never gets one is reported as unanswered.
    settle = time.monotonic() + 15

    def waiting() -> bool:
        on_mqtt = len(probe.arrived) < len(probe.sent)
        return on_mqtt or (alertmanager is not None and len(hook.arrived) < len(probe.sent_to))

    while time.monotonic() < settle and waiting():
        time.sleep(0.2)
    probe.stop()
    on_mqtt, committed = probe.latencies()
    p50, p99 = percentiles(on_mqtt)
    c50, c99 = percentiles(committed)
    notified = [
        hook.arrived[gauge] - sent for gauge, sent in probe.sent_to.items() if gauge in hook.arrived
    ]
    w50, w99 = percentiles(notified)
    return AlertBenchResult(
        probes=len(probe.sent),
        answered=len(on_mqtt),
        p50_s=p50,
        p99_s=p99,
        commit_p50_s=c50,
        commit_p99_s=c99,
        load_readings_per_s=float(load_result.get("readings_per_s", 0.0)),  # type: ignore[arg-type]
        notified=None if alertmanager is None else len(notified),
        webhook_p50_s=w50,
        webhook_p99_s=w99,
    )
