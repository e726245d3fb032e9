"""The one backoff every reconnecting part uses: bounded for a million attempts, jittered, observable."""

from __future__ import annotations

import random

import pytest

from drivers.backoff import Backoff, Reconnects


def test_a_million_attempts_never_overflow_and_stay_within_the_cap():
    b = Backoff(0.2, 10.0, _rng=random.Random(7))
    delays = [b.next() for _ in range(1_000_000)]
    assert b.attempt == 1_000_000
    assert min(delays) >= 0.1 and max(delays) <= 10.0
    late = delays[-10_000:]
    assert sum(late) / len(late) > 5.0  # at the cap, jittered over [0.1, 10]: the mean is ~5


def test_the_delay_grows_from_the_base_then_resets():
    b = Backoff(0.2, 10.0, _rng=random.Random(1))
    first = [b.next() for _ in range(3)]
    assert 0.1 <= first[0] <= 0.2 and first[2] <= 0.8
    b.reset()
    assert b.attempt == 0 and b.next() <= 0.2


def test_jitter_spreads_a_fleet():
    fleet = [Backoff(0.5, 60.0, _rng=random.Random(i)) for i in range(200)]
    for b in fleet:
        for _ in range(20):
            b.next()
    waits = sorted(b.next() for b in fleet)
    assert waits[-1] - waits[0] > 30  # two hundred gateways do not come back in step


@pytest.mark.parametrize("base,cap", [(0, 1), (1, 0.5), (-1, 2)])
def test_nonsense_bounds_are_refused(base, cap):
    with pytest.raises(ValueError):
        Backoff(base, cap)


def test_reconnects_count_attempts_but_report_each_outage_once():
    changes = []
    r = Reconnects(lambda up, detail: changes.append((up, detail)))
    r.up("open")
    for i in range(10_000):
        r.failed(f"refused {i}")
    snap = r.snapshot()
    assert (snap.up, snap.attempts, snap.outages, snap.detail) == (False, 10_000, 1, "refused 9999")
    r.up("back")
    assert r.snapshot().attempts == 0 and r.snapshot().outages == 1
    assert changes == [(True, "open"), (False, "refused 0"), (True, "back")]
