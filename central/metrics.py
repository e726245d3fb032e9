"""Fleet metrics for Prometheus: what central knows of its gateways, computed when scraped.

`Latency` is a plain bucket counter that ingest feeds (no import of prometheus_client, so a
gateway install can still run the central tools); `serve()` imports the client and exposes, on
`[metrics] host:port`:

| metric | what |
|---|---|
| `doorgw_gateways{site,state}` | each site's gateways `online` and `offline` (offline: stopped, lost, or never heard from) |
| `doorgw_gateways_list_lagging{site}` | gateways whose applied list version is not central's |
| `doorgw_events_ingested_total{site}` | events this process committed (resends not counted); `sum(rate())` over the ingest workers is events per second |
| `doorgw_ack_latency_seconds` | a batch's arrival to its `evt/ack`, the commit in between (histogram) |
| `doorgw_oldest_unacked_event_age_seconds{gw}` | from telemetry: the age of the oldest event a gateway still holds |
| `doorgw_rejected_messages_total{reason}` | what came off the network and did not fit, by reason |
| `doorgw_alarms_open{site}` | alarms standing now |

`config/central-alerts.yml` has the two alert rules that matter most: gateways offline, events stuck.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from central import sites

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


def oldest_unacked(rows: list[dict[str, Any]], now: float | None = None) -> dict[str, float]:
    """Per gateway in a site: how old its oldest unacknowledged event is now (its last telemetry's
    figure, aged since it came). The telemetry is in the database, so every central process agrees."""
    now = time.time() if now is None else now
    out = {}
    for g in rows:
        if g.get("site") is None or not g.get("telemetry"):
            continue
        try:
            age = json.loads(g["telemetry"]).get("journal", {}).get("oldest_age_s")
        except (ValueError, AttributeError):
            continue
        if isinstance(age, int | float):
            out[g["gw"]] = float(age) + (now - float(g.get("telemetry_at") or now) if age > 0 else 0.0)
    return out


class FleetCollector:
    def __init__(self, central: Central):
        self.central = central

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        c = self.central
        rows = c.gateways()
        with c.store.use() as db:
            versions = {s: sites.state(db, s).version for s in sites.names(db)}
            open_alarms = int(db.execute("SELECT count(*) FROM alarms WHERE cleared IS NULL").fetchone()[0])
        members = [g for g in rows if g.get("site") is not None]  # a gateway that left its site (or a stranger's status) is not counted
        g = GaugeMetricFamily("doorgw_gateways", "Gateways by site and state (offline: stopped, lost or never heard from)",
                              labels=["site", "state"])
        lag = GaugeMetricFamily("doorgw_gateways_list_lagging", "Gateways whose applied list version is not their site's", labels=["site"])
        for site in sorted({g["site"] for g in members} | ({c.site} if c.site in versions else set())):
            of_site = [g for g in members if g["site"] == site]
            online = sum(1 for g in of_site if g.get("state") == "online")
            g.add_metric([site, "online"], online)
            g.add_metric([site, "offline"], len(of_site) - online)
            lag.add_metric([site], sum(1 for g in of_site if g.get("applied_version") != versions.get(site)))
        yield g
        yield lag
        ev = CounterMetricFamily("doorgw_events_ingested", "Events committed by this process (resends not counted)", labels=["site"])
        ev.add_metric([c.site], c.counters["events"])
        yield ev
        buckets, total = c.ack_latency.cumulative()
        h = HistogramMetricFamily("doorgw_ack_latency_seconds", "From a batch's arrival to its evt/ack")
        h.add_metric([], buckets, total)
        yield h
        age = GaugeMetricFamily("doorgw_oldest_unacked_event_age_seconds", "Age of the oldest event a gateway still holds",
                                labels=["site", "gw"])
        site_of = {g["gw"]: g["site"] for g in members}
        for gw, seconds in sorted(oldest_unacked(members).items()):
            age.add_metric([site_of[gw], gw], round(seconds, 1))
        yield age
        rej = CounterMetricFamily("doorgw_rejected_messages", "Messages that did not fit, by reason", labels=["reason"])
        for key, n in sorted(c.counters.items()):
            if key.startswith("rejected."):
                rej.add_metric([key.removeprefix("rejected.")], n)
        yield rej
        alarms = GaugeMetricFamily("doorgw_alarms_open", "Alarms standing now", labels=["site"])
        alarms.add_metric([c.site], open_alarms)
        yield alarms


def serve(central: Central, host: str, port: int):
    """The /metrics endpoint in a thread of central's process; returns the server (`.shutdown()`)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(central))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
