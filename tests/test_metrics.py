"""Fleet metrics: `door-edge central serve` (a real process) on the real broker, with a gateway on
virtual devices; /metrics scraped as Prometheus would, while the gateway is up and after it stops."""

from __future__ import annotations

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from rigs.proc import terminate
from rigs.rig import wait_until
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard
from tests.conftest import AppThread

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_central_exposes_fleet_metrics(synced_factory):
    s = synced_factory(sync_extra="telemetry_s = 1\nack_timeout_s = 2\n")
    server = s.site.central_process()
    port = s.site.metrics_port
    try:
        app = AppThread(s.rig.config_path).start()
        try:
            publisher = s.site.central(serve=False, client_id="central-publish")
            try:
                publisher.publish_csv(s.rig.residents_path)
                wait_until(lambda: app.app.parts.whitelist.version == 1, 20, "the list at the gateway")  # before the publisher goes
            finally:
                publisher.close()
            wait_until(lambda: value(scrape(port), "doorgw_gateways", site="rig", state="online") == 1, 20, "the gateway online")
            card = VirtualCard(CardProfile.mifare("04A1B2C3"), port=VPCD_PORTS[0])
            card.insert()
            app.wait_event("granted")
            card.remove()
            wait_until(lambda: (value(scrape(port), "doorgw_events_ingested_total", site="rig") or 0) >= 2, 20, "events counted")
            wait_until(lambda: value(scrape(port), "doorgw_gateways_list_lagging", site="rig") == 0, 20, "no gateway lagging")
            wait_until(lambda: value(scrape(port), "doorgw_oldest_unacked_event_age_seconds", site="rig", gw=s.gw) == 0, 20,
                       "telemetry: nothing unacknowledged")
            m = scrape(port)
            assert value(m, "doorgw_ack_latency_seconds_count") >= 1 and value(m, "doorgw_ack_latency_seconds_bucket", le="+Inf") >= 1
            assert value(m, "doorgw_gateways", site="rig", state="offline") == 0
        finally:
            app.stop()
        wait_until(lambda: value(scrape(port), "doorgw_gateways", site="rig", state="offline") == 1, 20, "the stopped gateway offline")
    finally:
        terminate(server)  # its client id is the session broker's `central`: never left behind for the next test
    assert not re.search(r"Traceback", (s.site.root / "central.log").read_text())
