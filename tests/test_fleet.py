"""Central as a county runs it, small: PostgreSQL, one `--role lists` and two `--role ingest`
processes on shared subscriptions, and 20 simulated gateways running the gateway's own sync code
(devtools.bench_fleet). One ingest worker is killed with SIGKILL in the middle of a wave of events,
and the broker restarts: the store holds every journaled event exactly once."""

from __future__ import annotations

from devtools.bench import _pct
from devtools.bench_fleet import WAVE1, WAVE2, bench_fleet


def test_a_worker_killed_mid_wave_and_a_broker_restart_lose_nothing():
    r = bench_fleet(20, _pct, outage_s=2.0)  # raises if a step (all connected, all on the list, all back) does not finish
    assert r["events"] == 20 * (WAVE1 + WAVE2)
    assert r["worker_killed_lost"] == 0 and r["lost"] == 0 and r["duplicates"] == 0
    assert r["list_change_all_s"] < 5
    assert r["reconnect_peak_per_s"] >= 1
