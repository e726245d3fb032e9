"""The mutual-TLS listener with the per-gateway ACL (`door-edge central acl`): a gateway can use
its own topics only, whatever it tries; a certificate from another CA gets nowhere."""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as paho
import pytest

import protocol
from edge.config import SyncSection
from edge.sync.mqtt import new_client
from rigs.rig import wait_until


def tls_client(broker, ident, name: str) -> tuple[paho.Client, list, dict]:
    settings = SyncSection(host="127.0.0.1", port=broker.tls_port, tls=True, ca_file=broker.pki.ca_file,
                           cert_file=ident.cert, key_file=ident.key)
    client = new_client(name, settings, clean_start=True)
    got: list[tuple[str, bytes]] = []
    acks: dict[int, int] = {}
    done = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: done.set()
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, rc.value)
    client.connect("127.0.0.1", broker.tls_port)
    client.loop_start()
    assert done.wait(5), f"{name} did not connect"
    return client, got, acks


def test_a_gateway_can_neither_write_nor_read_another_gateways_topics(broker):
    a, _, a_acks = tls_client(broker, broker.pki.issue("gw-a"), "gw-a")
    b, b_got, _ = tls_client(broker, broker.pki.issue("gw-b"), "gw-b")
    central, c_got, _ = tls_client(broker, broker.pki.issue("central"), "central")
    try:
        a_got: list = []
        a.on_message = lambda c, u, m: a_got.append(m.topic)
        subacks: list[int] = []
        for client, filt in ((central, f"{protocol.PREFIX}/+/evt/access"), (a, f"{protocol.PREFIX}/gw-b/#"), (b, f"{protocol.PREFIX}/gw-b/wl/delta")):
            client.on_subscribe = lambda c, u, mid, rcs, p: subacks.append(mid)
            client.subscribe(filt, qos=1)
        wait_until(lambda: len(subacks) == 3, 5, "three SUBACKs")  # mosquitto grants all; it filters at delivery
        # gw-a forges an event batch in gw-b's name: refused with 0x87, never delivered
        forged = a.publish(protocol.topic("gw-b", "evt/access"), b'{"v":1,"first":1,"last":1,"events":[]}', qos=1)
        own = a.publish(protocol.topic("gw-a", "evt/access"), b'{"v":1,"first":1,"last":1,"events":[]}', qos=1)
        forged.wait_for_publish(5)
        own.wait_for_publish(5)
        wait_until(lambda: forged.mid in a_acks and own.mid in a_acks, 5, "both PUBACKs")
        assert a_acks[forged.mid] == 0x87 and a_acks[own.mid] < 0x80
        wait_until(lambda: any(t.endswith("gw-a/evt/access") for t, _ in c_got), 5, "gw-a's own batch at central")
        assert not any("gw-b" in t for t, _ in c_got)
        # central sends gw-b a delta: gw-b gets it, gw-a (subscribed to gw-b/#) does not
        central.publish(protocol.topic("gw-b", "wl/delta"), b"delta for b", qos=1).wait_for_publish(5)
        wait_until(lambda: b_got, 5, "gw-b's delta")
        assert a_got == []
    finally:
        for c in (a, b, central):
            c.loop_stop()
            c.disconnect()


def test_a_certificate_from_another_ca_is_refused(broker):
    rogue = broker.pki.rogue("gw-a")
    settings = SyncSection(host="127.0.0.1", port=broker.tls_port, tls=True, ca_file=broker.pki.ca_file,
                           cert_file=rogue.cert, key_file=rogue.key)
    client = new_client("gw-a", settings, clean_start=True)
    connack: list = []
    client.on_connect = lambda c, u, f, rc, p: connack.append(rc)
    with pytest.raises((ssl.SSLError, OSError)):
        client.connect("127.0.0.1", broker.tls_port)
        for _ in range(40):
            if client.loop(0.05) != 0:
                raise OSError("connection closed by the broker")
    assert not connack or connack[0].is_failure
