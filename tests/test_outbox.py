"""The journal: ordered seq, delete only on ack, group-commit flusher, time-ordered ids."""

from __future__ import annotations

import re
import uuid

from edge.store.db import open_db
from edge.store.outbox import Event, Flusher, Outbox, uuid7
from rigs.rig import wait_until


def test_seq_is_ordered_and_survives_reopen(tmp_path):
    ob = Outbox(open_db(tmp_path))
    seqs = [ob.put(Event("access", "granted", door="d", kind="ic", token="abc", decision="granted")) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    ob2 = Outbox(open_db(tmp_path))
    assert [e.seq for e in ob2.next_batch(0)] == seqs
    assert ob2.next_batch(3)[0].seq == 4


def test_ack_deletes_and_seq_never_reused(tmp_path):
    ob = Outbox(open_db(tmp_path))
    for _ in range(4):
        ob.put(Event("door", "opened", door="d"))
    assert ob.ack(3) == 3
    assert ob.depth() == 1
    assert ob.put(Event("door", "closed", door="d")) == 5
    assert ob.last_seq() == 5


def test_flusher_makes_puts_durable_in_groups(tmp_path):
    ob = Outbox(open_db(tmp_path))
    fl = Flusher(tmp_path, max_delay_s=0.02)
    ob.on_put.append(fl.notify)
    fl.start()
    try:
        for _ in range(50):
            ob.put(Event("door", "opened", door="d"))
        wait_until(lambda: fl.durable_seq == 50, 5, "the flusher to reach seq 50")
        assert fl.flushes < 50  # grouped
    finally:
        fl.stop()


def test_uuid7_is_version_7_and_time_ordered():
    ids = [uuid7() for _ in range(100)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps)


def test_the_flusher_makes_puts_durable_without_checkpointing_each_time(tmp_path):
    """Every put is fsynced (its seq becomes durable) soon after it is committed, but the WAL is
    copied into the database only at the first flush, then per CHECKPOINT_S or at stop: the commit
    after a checkpoint restarts the WAL, which the card path should meet rarely."""
    ob = Outbox(open_db(tmp_path, autocheckpoint=False))
    fl = Flusher(tmp_path, max_delay_s=0.01, checkpoint_s=3600)
    ob.on_put.append(fl.notify)
    fl.start()
    try:
        for i in range(5):
            seq = ob.put(Event("door", "opened", door="d"))
            wait_until(lambda: fl.durable_seq == seq, 5, f"put {i} durable")
        assert fl.flushes >= 5 and fl.checkpoints == 1
        assert (tmp_path / "door-edge.db-wal").stat().st_size > 0  # the puts are in the WAL, fsynced there
    finally:
        fl.stop()
    assert fl.checkpoints > 1  # the stop copies the WAL into the database


def test_a_put_notified_while_the_flusher_starts_up_is_still_made_durable(tmp_path):
    """The flusher starts by reading the journal's last seq; a put committed and notified between
    that read and its use (the card path is already running) must not be forgotten: its event would
    wait, unreported upstream, until some later put woke the flusher again."""
    ob = Outbox(open_db(tmp_path, autocheckpoint=False))
    fl = Flusher(tmp_path, max_delay_s=0.01, checkpoint_s=3600)
    ob.on_put.append(fl.notify)
    put: list[int] = []
    real = fl._conn

    class PutDuringStartup:
        """The flusher's connection, with a put landing right after its start-up read."""

        def execute(self, sql, *args):
            cur = real.execute(sql, *args)
            if "max(seq)" in sql and not put:
                row = cur.fetchone()  # read before the put: the stale last seq
                put.append(ob.put(Event("door", "opened", door="d")))
                return type("Stale", (), {"fetchone": staticmethod(lambda: row)})()
            return cur

        def __getattr__(self, name):
            return getattr(real, name)

    fl._conn = PutDuringStartup()
    fl.start()
    try:
        wait_until(lambda: put and fl.durable_seq == put[0], 5, "the put made during start-up durable")
    finally:
        fl.stop()
