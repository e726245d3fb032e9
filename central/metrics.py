"""Fleet metrics for Prometheus: what central knows of its gateways, computed when scraped.

`Latency` is a plain bucket counter that ingest feeds (no import of prometheus_client, so a
gateway install can still run the central tools); `serve()` imports the client and exposes, on
`[metrics] host:port`:

| metric | what |
|---|---|
| `doorgw_gateways{site,state}` | the site's gateways (`central.gateways`) `online` and `offline` (offline: stopped, lost, or never heard from) |
| `doorgw_gateways_list_lagging{site}` | gateways whose applied list version is not central's |
| `doorgw_events_ingested_total{site}` | events committed (resends not counted); `rate()` is events per second |
| `doorgw_ack_latency_seconds` | a batch's arrival to its `evt/ack`, the commit in between (histogram) |
| `doorgw_oldest_unacked_event_age_seconds{gw}` | from telemetry: the age of the oldest event a gateway still holds |
| `doorgw_rejected_messages_total{reason}` | what came off the network and did not fit, by reason |
| `doorgw_alarms_open{site}` | alarms standing now |

`config/central-alerts.yml` has the two alert rules that matter most: gateways offline, events stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from central.server import Central

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Latency:
    """A histogram's buckets, fed from the MQTT thread, read by the scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        i = next((k for k, le in enumerate(BUCKETS) if seconds <= le), len(BUCKETS))
        with self._lock:
            self.counts[i] += 1
            self.total += seconds

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        with self._lock:
            counts, total = list(self.counts), self.total
        out, running = [], 0
        for le, n in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
            running += n
            out.append((le, running))
        return out, total


def oldest_unacked(central: Central, now: float | None = None) -> dict[str, float]:
    """Per gateway: how old its oldest unacknowledged event is now (telemetry's figure, aged since)."""
    now = time.time() if now is None else now
    out = {}
    for gw, telemetry in dict(central.telemetry).items():
        if gw not in central.cfg.central.gateways:
            continue
        age, received = telemetry.journal.get("oldest_age_s"), central.telemetry_at.get(gw, now)
        if isinstance(age, int | float):
            out[gw] = float(age) + (now - received if age > 0 else 0.0)
    return out


class FleetCollector:
    def __init__(self, central: Central):
        self.central = central

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        c = self.central
        site = c.cfg.central.site
        rows = {g["gw"]: g for g in c.gateways()}
        names = set(c.cfg.central.gateways)  # the site's gateways: one that left the list (or a stranger's retained status) is not counted
        online = sum(1 for gw in names if (rows.get(gw) or {}).get("state") == "online")
        g = GaugeMetricFamily("doorgw_gateways", "Gateways by state (offline: stopped, lost or never heard from)", labels=["site", "state"])
        g.add_metric([site, "online"], online)
        g.add_metric([site, "offline"], len(names) - online)
        yield g
        version = c.version
        lag = GaugeMetricFamily("doorgw_gateways_list_lagging", "Gateways whose applied list version is not central's", labels=["site"])
        lag.add_metric([site], sum(1 for gw in names if (rows.get(gw) or {}).get("applied_version") != version))
        yield lag
        ev = CounterMetricFamily("doorgw_events_ingested", "Events committed (resends not counted)", labels=["site"])
        ev.add_metric([site], c.counters["events"])
        yield ev
        buckets, total = c.ack_latency.cumulative()
        h = HistogramMetricFamily("doorgw_ack_latency_seconds", "From a batch's arrival to its evt/ack")
        h.add_metric([], buckets, total)
        yield h
        age = GaugeMetricFamily("doorgw_oldest_unacked_event_age_seconds", "Age of the oldest event a gateway still holds",
                                labels=["site", "gw"])
        for gw, seconds in sorted(oldest_unacked(c).items()):
            age.add_metric([site, gw], round(seconds, 1))
        yield age
        rej = CounterMetricFamily("doorgw_rejected_messages", "Messages that did not fit, by reason", labels=["reason"])
        for key, n in sorted(c.counters.items()):
            if key.startswith("rejected."):
                rej.add_metric([key.removeprefix("rejected.")], n)
        yield rej
        alarms = GaugeMetricFamily("doorgw_alarms_open", "Alarms standing now", labels=["site"])
        with c._lock:
            alarms.add_metric([site], c.db.execute("SELECT count(*) FROM alarms WHERE cleared IS NULL").fetchone()[0])
        yield alarms


def serve(central: Central, host: str, port: int):
    """The /metrics endpoint in a thread of central's process; returns the server (`.shutdown()`)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(central))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
