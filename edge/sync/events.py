"""Events up: drain the journal to central in seq order, one batch in flight, delete on `evt/ack`.

Only events the journal's flusher has made durable (`seq <= durable_seq`) are sent, so central never
holds an event the gateway could lose in a power cut and then re-number. An event leaves the
journal only when central says it has committed it (`evt/ack`, not the broker's PUBACK). A batch
unacknowledged after `ack_timeout_s`, or in flight when the connection drops, is sent again:
central inserts-or-ignores on (gateway, event id), so a resend is harmless.

The journal is capped: past `journal_max_events` the oldest events are dropped, and the drop
itself becomes an event (`journal_overflow`, with the count and the seq range) and a counter in
telemetry, so central learns exactly what it will never see.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import protocol
from edge.store.outbox import Event, Outbox
from protocol import EventBatch, EvtAck, Rejected

log = logging.getLogger(__name__)

FIRST_RESEND_S = 2.0


@dataclass
class InFlight:
    first: int
    last: int
    sent_at: float


class EventDrain:
    def __init__(self, outbox: Outbox, durable: Callable[[], int], send: Callable[[str, bytes], bool], *,
                 batch_max: int, ack_timeout_s: float, cap: int):
        self.outbox = outbox
        self._durable = durable
        self._send = send
        self.batch_max = batch_max
        self.ack_timeout_s = ack_timeout_s
        self.cap = cap
        self.inflight: InFlight | None = None
        self.acked_seq = 0
        self.sent_upto = 0  # highest seq ever sent: central cannot acknowledge beyond it
        self.sent = self.batches = self.resends = self.acks = self.dropped = 0
        self.bad_acks = 0
        self.stale_acks = 0  # acks for what is already deleted here (a resent batch's twin): harmless, counted
        self._unanswered = 0

    def _resend_after(self) -> float:
        """2 s, then doubling up to `ack_timeout_s`: a batch lost with a broker restart (mosquitto
        does not keep the session of a subscriber connected when it stops) is resent within
        seconds, while a central that is merely slow is not flooded."""
        return min(self.ack_timeout_s, FIRST_RESEND_S * 2 ** self._unanswered)

    def step(self, now: float) -> None:
        """Send the next batch if none is in flight; resend one that timed out."""
        if self.inflight is not None:
            waited = now - self.inflight.sent_at
            if waited < self._resend_after():
                return
            self.resends += 1
            self._unanswered += 1
            log.warning("events %d..%d not acknowledged in %.1fs; sending again", self.inflight.first, self.inflight.last, waited)
            self.inflight = None
        batch = self.outbox.next_batch(0, self.batch_max, upto=self._durable())
        if not batch:
            return
        first, last = batch[0].seq or 0, batch[-1].seq or 0
        msg = EventBatch(first=first, last=last, events=[e.as_dict() for e in batch])
        if self._send("evt/access", msg.dumps()):
            self.inflight = InFlight(first, last, now)
            self.sent_upto = max(self.sent_upto, last)
            self.sent += len(batch)
            self.batches += 1

    def on_ack(self, payload: bytes, now: float) -> None:
        ack = protocol.load(EvtAck, payload)
        if ack.resend:
            # central lost its session (a broker restart): what was in flight may never arrive
            if self.inflight is not None:
                self.inflight = None
                self.step(now)
            if ack.upto > self.sent_upto:
                self.stale_acks += 1
                return  # we restarted since: the seq it names is not ours to judge
        if ack.upto > self.sent_upto:
            self.bad_acks += 1
            raise Rejected("ack_beyond_sent", f"ack up to {ack.upto}, sent up to {self.sent_upto}")
        if ack.upto <= self.acked_seq:
            self.stale_acks += 1
            return  # the twin of an ack already handled (a resent batch)
        self.outbox.ack(ack.upto)
        self.acked_seq = ack.upto
        self.acks += 1
        self._unanswered = 0
        if self.inflight is not None and ack.upto >= self.inflight.last:
            self.inflight = None
            self.step(now)

    def reconnected(self) -> None:
        """What was in flight may be lost with the old connection: send it again now."""
        self.inflight = None

    def enforce_cap(self) -> Event | None:
        depth = self.outbox.depth()
        if depth <= self.cap:
            return None
        n, first, last = self.outbox.drop_oldest(depth - self.cap + max(1, self.cap // 100))
        self.dropped += n
        event = Event("system", "journal_overflow", detail=f"dropped {n} oldest unsent events, seq {first}..{last}")
        self.outbox.put(event)
        log.error("journal over its cap of %d events: dropped %d (seq %d..%d), reported to central", self.cap, n, first, last)
        return event

    def stats(self, now: float | None = None) -> dict:
        oldest = self.outbox.oldest_ts()
        now = time.time() if now is None else now
        return {"depth": self.outbox.depth(), "last_seq": self.outbox.last_seq(), "durable_seq": self._durable(),
                "oldest_age_s": 0.0 if oldest is None else round(max(0.0, now - oldest), 1),  # central's "events stuck"
                "acked_seq": self.acked_seq, "sent": self.sent, "batches": self.batches, "resends": self.resends,
                "dropped": self.dropped, "bad_acks": self.bad_acks, "stale_acks": self.stale_acks,
                "inflight": None if self.inflight is None else [self.inflight.first, self.inflight.last]}
