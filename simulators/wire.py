"""A lean MQTT v5 publisher for load generation: PUBLISH packets written straight to a socket.

Load generation shares the machine with what it measures. paho-mqtt spends tens of
microseconds per QoS 1 message (packet objects, a lock, a wake-up of its network thread and
one write per packet): at 16,000 messages a second that is most of a core taken from the
broker and from ingest. This publisher encodes a message in a few microseconds, writes
messages in batches and reads PUBACKs on the same thread, so the load costs what the wire
costs. It covers what load needs and no more: QoS 0 and 1, user name and password, TLS, the
broker's Receive Maximum, keep-alive and, after a lost connection, reconnecting and sending
every unacknowledged message again (at least once, as QoS 1 promises). Devices and everything
else in the simulators use paho (:mod:`simulators.publisher`).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Callable

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pantau.settings import MqttSettings
from simulators.publisher import PublishError

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_PINGREQ, _DISCONNECT = 0xC0, 0xE0
_DUP = 0x08
# First bytes of PUBLISH packets with QoS 0 and with QoS 1 (its QoS bits: 0b01 << 1).
_PUBLISH_QOS0, _PUBLISH_QOS1 = bytes([_PUBLISH]), bytes([_PUBLISH | 0x02])
# Write what is buffered once it reaches this size or has waited this long.
_SEND_BYTES = 32 * 1024
_SEND_DELAY_S = 0.001
_MAX_PACKET_ID = 65535


def _varint(value: int) -> bytes:
    """MQTT variable byte integer (remaining length, property length)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def _reason(packet_type: int, code: int) -> str:
    try:
        return str(ReasonCode(packet_type, identifier=code))
    except (KeyError, ValueError):
        return f"reason code {code:#04x}"


class WirePublisher:
    """One MQTT v5 connection publishing in batches; see the module docstring.

    ``publish`` queues a message and blocks while ``window`` messages await their PUBACK;
    ``pause`` is the pacing sleep (it writes what is queued and reads PUBACKs meanwhile);
    ``flush`` waits for every PUBACK.
    """

    def __init__(
        self,
        *,
        mqtt_settings: MqttSettings,
        client_id: str,
        qos: int = 1,
        window: int = 1000,
        reconnect_timeout_s: float = 60.0,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        self.settings = mqtt_settings
        self.client_id = client_id
        self.qos = qos
        self.window = max(1, min(window, _MAX_PACKET_ID - 1))
        self.reconnect_timeout_s = reconnect_timeout_s
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None
        self._out = bytearray()
        self._out_since = 0.0
        self._rx = bytearray()
        # Unacknowledged QoS 1 messages by packet id, in sending order: sent again on reconnect.
        self._inflight: dict[int, bytes] = {}
        self._next_id = 0
        self._topics: dict[str, bytes] = {}
        self._last_write = 0.0

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def outstanding(self) -> int:
        """Messages published and not yet acknowledged."""
        return len(self._inflight)

    # -- connection ----------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and wait for the CONNACK; raises PublishError with the reason."""
        settings = self.settings
        try:
            sock = socket.create_connection(
                (settings.host, settings.port), timeout=settings.connect_timeout_s
            )
            if settings.tls:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=settings.host)
        except (OSError, ssl.SSLError) as error:
            raise PublishError(f"cannot reach the broker at {self.where}: {error}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._rx.clear()
        try:
            sock.sendall(self._connect_packet())
            server_window = self._await_connack(time.monotonic() + settings.connect_timeout_s)
        except (OSError, ssl.SSLError) as error:
            self._drop()
            raise PublishError(f"broker at {self.where} closed the connection: {error}") from None
        except PublishError:
            self._drop()
            raise
        if server_window is not None:
            # The broker may refuse more unacknowledged messages than it announced.
            self.window = min(self.window, server_window)
        sock.settimeout(None)
        self._last_write = time.monotonic()

    def _connect_packet(self) -> bytes:
        settings = self.settings
        flags = 0x02  # clean start: this publisher keeps its own unacknowledged messages
        payload = _string(self.client_id)
        if settings.username is not None:
            flags |= 0x80
            payload += _string(settings.username)
            if settings.password is not None:
                flags |= 0x40
                payload += _string(settings.password.get_secret_value())
        body = (
            _string("MQTT")
            + bytes([5, flags])
            + settings.keepalive_s.to_bytes(2, "big")
            + b"\x00"  # no properties: session ends with the connection
            + payload
        )
        return bytes([_CONNECT]) + _varint(len(body)) + body

    def _await_connack(self, deadline: float) -> int | None:
        assert self._sock is not None
        while True:
            packets = self._take_packets()
            if packets:
                kind, body = packets[0]
                if kind & 0xF0 != _CONNACK:
                    raise PublishError(f"broker at {self.where} answered CONNECT with {kind:#x}")
                code = body[1] if len(body) > 1 else 0
                if code >= 0x80:
                    reason = _reason(PacketTypes.CONNACK, code)
                    raise PublishError(f"broker at {self.where} refused {self.client_id}: {reason}")
                properties = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
                if len(body) > 2:
                    properties.unpack(bytes(body[2:]))  # type: ignore[no-untyped-call]
                receive_maximum = getattr(properties, "ReceiveMaximum", None)
                return None if receive_maximum is None else int(receive_maximum)
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishError(
                    f"broker at {self.where} refused {self.client_id}: "
                    f"no answer in {self.settings.connect_timeout_s} s"
                )
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise PublishError(f"broker at {self.where} closed the connection")
            self._rx += chunk

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None

    def _reconnect(self, cause: object) -> None:
        """The connection broke: connect again and send every unacknowledged message again."""
        self._drop()
        self.last_error = f"connection lost: {cause}"
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = 0.05
        while True:
            try:
                self.connect()
                self._resend()
                break
            except PublishError as error:
                if time.monotonic() + delay > deadline:
                    raise PublishError(
                        f"{error} (reconnecting for {self.reconnect_timeout_s:g} s)"
                    ) from None
                time.sleep(delay)  # backoff between connection attempts, not a readiness wait
                delay = min(delay * 2, 1.0)
        self.reconnects += 1
        self._out.clear()
        self._last_write = time.monotonic()

    def _resend(self) -> None:
        resend = b"".join(bytes([p[0] | _DUP]) + p[1:] for p in self._inflight.values())
        assert self._sock is not None
        try:
            self._sock.sendall(resend)
        except (OSError, ssl.SSLError) as error:
            self._drop()
            raise PublishError(f"broker at {self.where} closed the connection: {error}") from None

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, timeout_s: float = 60.0) -> None:
        """Queue one message; blocks while ``window`` messages await their PUBACK."""
        if self._sock is None:
            raise PublishError(f"not connected to the broker at {self.where}")
        encoded = self._topics.get(topic)
        if encoded is None:
            encoded = self._topics[topic] = _string(topic)
        now = time.monotonic()
        if not self._out:
            self._out_since = now
        if self.qos == 0:
            body_length = len(encoded) + 1 + len(payload)
            header = _PUBLISH_QOS0 + _varint(body_length)
            self._out += header + encoded + b"\x00" + payload
        else:
            if len(self._inflight) >= self.window:
                self._wait_for_room(now + timeout_s, timeout_s)
            packet_id = self._new_packet_id()
            body_length = len(encoded) + 3 + len(payload)
            packet = (
                _PUBLISH_QOS1
                + _varint(body_length)
                + encoded
                + packet_id.to_bytes(2, "big")
                + b"\x00"
                + payload
            )
            self._inflight[packet_id] = packet
            self._out += packet
        self.sent += 1
        if len(self._out) >= _SEND_BYTES or now - self._out_since >= _SEND_DELAY_S:
            self._send()
            self._poll(0.0)

    def _new_packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % _MAX_PACKET_ID + 1
            if self._next_id not in self._inflight:
                return self._next_id

    def _wait_for_room(self, deadline: float, timeout_s: float) -> None:
        if not self._poll_until(lambda: len(self._inflight) < self.window, deadline):
            raise PublishError(f"broker at {self.where} acknowledged nothing for {timeout_s:g} s")

    def _poll_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Write what is queued, then read what the broker sends until ``done()`` or the
        deadline; returns ``done()``."""
        self._send()
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._poll(min(left, 0.5))
        return True

    def _send(self) -> None:
        if not self._out:
            return
        assert self._sock is not None
        try:
            self._sock.sendall(self._out)
        except (OSError, ssl.SSLError) as error:
            self._reconnect(error)
            return
        self._out.clear()
        self._last_write = time.monotonic()

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` while writing what is queued and reading acknowledgements."""
        self._poll_until(lambda: False, time.monotonic() + seconds)

    def flush(self, *, timeout_s: float = 60.0) -> bool:
        """Write what is queued and wait until every message is acknowledged; False on timeout."""
        return self._poll_until(lambda: not self._inflight, time.monotonic() + timeout_s)

    def close(self) -> None:
        """Write what is queued, disconnect cleanly and close the socket."""
        if self._sock is None:
            return
        with contextlib.suppress(OSError, ssl.SSLError):
            self._sock.sendall(bytes(self._out) + bytes([_DISCONNECT, 0]))
        self._out.clear()
        self._drop()

    # -- reading -------------------------------------------------------------------------------

    def _poll(self, timeout_s: float) -> None:
        """Read and handle what the broker sent, waiting at most ``timeout_s`` for it."""
        # First: a ping that finds the connection broken reconnects, replacing the socket.
        self._keep_alive()
        sock = self._sock
        assert sock is not None
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending:
            readable, _, _ = select.select([sock], [], [], max(0.0, timeout_s))
            if not readable:
                return
        try:
            sock.setblocking(False)
            try:
                chunk = sock.recv(65536)
            finally:
                sock.setblocking(True)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except (OSError, ssl.SSLError) as error:
            self._reconnect(error)
            return
        if not chunk:
            self._reconnect("closed by the broker")
            return
        self._rx += chunk
        for first_byte, body in self._take_packets():
            kind = first_byte & 0xF0
            if kind == _PUBACK:
                packet_id = int.from_bytes(body[:2], "big")
                if self._inflight.pop(packet_id, None) is None:
                    continue  # acknowledged twice around a reconnect
                code = body[2] if len(body) > 2 else 0
                if code >= 0x80:
                    self.errors += 1
                    self.last_error = _reason(PacketTypes.PUBACK, code)
                else:
                    self.acked += 1
            elif kind == _DISCONNECT:
                code = body[0] if body else 0
                self._reconnect(_reason(PacketTypes.DISCONNECT, code))
                return

    def _take_packets(self) -> list[tuple[int, bytes]]:
        """The whole packets in the receive buffer, removed from it; a partial one stays."""
        rx = bytes(self._rx)
        packets = []
        start = 0
        size = len(rx)
        while start + 1 < size:
            length = shift = 0
            position = start + 1
            while position < size:
                byte = rx[position]
                length |= (byte & 0x7F) << shift
                position += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break  # the length itself is incomplete
            end = position + length
            if end > size:
                break
            packets.append((rx[start], rx[position:end]))
            start = end
        del self._rx[:start]
        return packets

    def _keep_alive(self) -> None:
        keepalive = self.settings.keepalive_s
        if keepalive and time.monotonic() - self._last_write > keepalive / 2:
            self._out += bytes([_PINGREQ, 0])
            self._send()
