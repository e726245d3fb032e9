"""One MQTT v5 session to the broker (paho-mqtt 2.x), run by a thread of its own.

Why not paho's `loop_start()`: its reconnect delay is a plain doubling, so every gateway of a site
cut off by the same outage would come back in step; ours is jittered (`drivers.backoff`), and each
attempt gets a fresh will carrying the connection counter it will have.

- Persistent session (`clean_start=False`, a session expiry), so QoS 1 downlink messages wait at
  the broker while the gateway is offline; subscriptions are renewed on every connect anyway.
- `status` is retained: `online` on connect, `stopped` before a clean disconnect, and the will
  `offline`; each carries `conn`, a counter persisted across restarts (central sees flapping).
- `publish` returns None when not connected instead of letting paho queue the message: the
  callers (the event drain, the whitelist sync) own their retries and resend from durable state.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import protocol
from drivers.backoff import Backoff, Reconnects, pause
from edge.config import SyncSection

log = logging.getLogger(__name__)

MAX_INFLIGHT = 50  # paho scans its in-flight list on every ack: keep it small (rigs.md)


@dataclass
class Counters:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


def tls_context(s: SyncSection) -> ssl.SSLContext:
    """Client context: verify the broker against our CA and present our certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(s.ca_file) if s.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.cert_file is not None:
        ctx.load_cert_chain(str(s.cert_file), str(s.key_file) if s.key_file else None)
    return ctx


def new_client(client_id: str, s: SyncSection, *, clean_start: bool = False) -> paho.Client:
    """A paho client set up for our broker; the caller connects it."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if s.tls:
        client.tls_set_context(tls_context(s))
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    return client


def no_delay(client: paho.Client) -> None:
    """TCP_NODELAY on the client's socket: acks and small batches are request/response traffic,
    and Nagle plus delayed ACK would add ~40 ms to every exchange (measured: drain 570/s -> see bench)."""
    sock = client.socket()
    raw: Any = getattr(sock, "_sock", sock)  # paho may wrap the socket (an SSL socket, a websocket)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def connect_properties(session_expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    return props


class Connection(threading.Thread):
    """Keeps the gateway's session up; hands every message to `on_message(name, payload, retain)`."""

    def __init__(self, gw: str, settings: SyncSection, *, next_conn: Callable[[], int],
                 on_message: Callable[[str, bytes, bool], None], on_up: Callable[[], None] = lambda: None,
                 status_extra: Callable[[], dict] = dict, base_s: float = 0.5):
        super().__init__(name="mqtt", daemon=True)
        self.gw = gw
        self.settings = settings
        self._next_conn = next_conn
        self._on_message = on_message
        self._on_up = on_up
        self._status_extra = status_extra
        self.client = new_client(gw, settings)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message
        # Publishes from other threads only queue and wake this thread's select(); without this
        # hook paho would write to the socket from the caller's thread, racing this loop's writes.
        self.client.on_socket_register_write = lambda client, userdata, sock: None
        self.connected = False
        self.conn_no = 0
        self.counters = Counters()
        self.heartbeat = time.monotonic()
        self._halt = threading.Event()
        self._backoff = Backoff(base_s=min(base_s, settings.reconnect_max_s), cap_s=settings.reconnect_max_s)
        self.reconnects = Reconnects()

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        socket_open = False
        delay = 0.0
        while not self._halt.is_set():
            self.heartbeat = time.monotonic()
            if not socket_open:
                if pause(self._halt, delay, self._beat):  # a broker away is not a hang
                    break
                wait = self.attempt()
                socket_open, delay = wait is None, wait or 0.0
                continue
            rc = self.client.loop(timeout=0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                socket_open = False
                delay = self.lost(f"connection lost ({rc.name})")
        self._close()

    def attempt(self) -> float | None:
        """One attempt to open the socket: None when it opened (the CONNACK comes through the loop),
        else the jittered delay before the next one. Public for a driver that runs many
        connections on one selector instead of a thread each (the fleet bench's simulator)."""
        if self._attempt():
            return None
        return self._backoff.next()

    def lost(self, why: str) -> float:
        """The socket is gone: counted as a failed attempt; the jittered delay before the next."""
        self.connected = False
        self.reconnects.failed(why)
        return self._backoff.next()

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _attempt(self) -> bool:
        s = self.settings
        self.conn_no = self._next_conn()
        will = protocol.Status(state="offline", conn=self.conn_no, ts=time.time())
        self.client.will_set(protocol.topic(self.gw, "status"), will.dumps(), qos=1, retain=True)
        try:
            self.client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                                properties=connect_properties(s.session_expiry_s))
            return True
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.counters.connect_failures += 1
            self.counters.last_error = f"{exc.__class__.__name__}: {exc}"
            if self.reconnects.snapshot().up is not False:  # the first failure of an outage; the rest are counted
                log.warning("broker %s:%d unreachable (%s); retrying with backoff", s.host, s.port, self.counters.last_error)
            self.reconnects.failed(self.counters.last_error)
            return False

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.counters.connect_failures += 1
            self.counters.last_error = f"CONNACK {reason_code}"
            self.reconnects.failed(self.counters.last_error)
            log.error("broker refused the connection: %s (check the certificate, its CN and the ACL)", reason_code)
            return
        no_delay(client)
        self.connected = True
        self.counters.connects += 1
        self._backoff.reset()
        self.reconnects.up(f"conn {self.conn_no}")
        client.subscribe([(protocol.topic(self.gw, n), protocol.QOS[n]) for n in protocol.DOWN])
        self._publish_status("online")
        log.info("connected to %s:%d (conn %d, session %s)", self.settings.host, self.settings.port, self.conn_no,
                 "resumed" if flags.session_present else "new")
        self._on_up()

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.counters.disconnects += 1
            log.warning("disconnected from the broker: %s", reason_code)

    def _message(self, client, userdata, msg) -> None:
        try:
            gw, name = protocol.parse_topic(msg.topic)
        except protocol.Rejected:
            self.counters.extra["bad_topic"] = self.counters.extra.get("bad_topic", 0) + 1
            return
        if gw == self.gw:
            self._on_message(name, msg.payload, bool(msg.retain))

    def _publish_status(self, state: str) -> paho.MQTTMessageInfo:
        st = protocol.Status(state=state, conn=self.conn_no, ts=time.time(), **self._status_extra())  # type: ignore[arg-type]
        return self.client.publish(protocol.topic(self.gw, "status"), st.dumps(), qos=1, retain=True)

    def _close(self) -> None:
        if self.connected:
            info = self._publish_status("stopped")
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline:
                self.client.loop(timeout=0.05)
            self.client.disconnect()  # clean: the broker drops the will
            self.client.loop(timeout=0.05)
        self.connected = False

    # -- for the sync thread ----------------------------------------------------------------------
    def publish(self, name: str, payload: bytes, *, retain: bool = False) -> paho.MQTTMessageInfo | None:
        if not self.connected:
            return None
        info = self.client.publish(protocol.topic(self.gw, name), payload, qos=protocol.QOS[name], retain=retain)
        return None if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS else info

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
