"""The PC/SC watcher against real pcscd with the vpcd virtual readers and virtual cards."""

from __future__ import annotations

import threading

import pytest

from drivers.pcsc import PcscWatcher, classify
from rigs.rig import wait_until
from rigs.vcard import ATR_UNKNOWN, VPCD_PORTS, CardProfile, VirtualCard


class Reads:
    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def __call__(self, read):
        with self.lock:
            self.items.append(read)

    def __len__(self):
        return len(self.items)


@pytest.fixture
def watcher(pcscd):
    reads = Reads()
    w = PcscWatcher(["Virtual PCD"], reads)
    w.reads = reads
    w.start()
    wait_until(lambda: len(w.readers) == 2, 10, "both virtual readers")
    yield w
    w.stop()


@pytest.fixture
def cards(watcher):
    """Cards for the test; at the end each is taken away and pcscd seen to notice, so the next
    test does not start with pcscd still holding this card's state."""
    made: list[VirtualCard] = []

    def make(profile: CardProfile, reader: int = 0) -> VirtualCard:
        c = VirtualCard(profile, port=VPCD_PORTS[reader])
        made.append(c)
        return c

    yield make
    for c in made:
        c.remove()
    wait_until(lambda: not any(watcher.readers.values()), 3, "the readers to be empty")


def present(watcher, card: VirtualCard, reader: int = 0) -> None:
    """Put the card down and wait until the reader has seen it."""
    card.insert()
    name = sorted(watcher.readers)[reader]
    wait_until(lambda: watcher.readers.get(name), 3, "the card to be seen")


def take_away(watcher, card: VirtualCard, reader: int = 0) -> None:
    card.remove()
    name = sorted(watcher.readers)[reader]
    wait_until(lambda: watcher.readers.get(name) is False, 3, "the card to leave")


def test_classify_by_atr():
    assert classify(bytes.fromhex("3B8880 01D1038605 00808000 58".replace(" ", "")))[0] == "idcard"
    assert classify(bytes.fromhex("3B8F8001804F0CA0000003060700000000000000"))[0] == "idcard"
    kind, apdu, known = classify(bytes.fromhex("3B8F8001804F0CA000000306030001000000006A"))
    assert (kind, apdu[:2], known) == ("ic", [0xFF, 0xCA], True)
    assert classify(ATR_UNKNOWN)[2] is False


def test_id_card_uid(watcher, cards):
    present(watcher, cards(CardProfile.idcard("0102030405060708")))
    wait_until(lambda: len(watcher.reads) == 1, 3, "one read")
    r = watcher.reads.items[0]
    assert (r.kind, r.uid, r.reader) == ("idcard", "0102030405060708", "Virtual PCD 00 00")
    assert "0102030405060708" not in repr(r)  # never printed by accident


def test_mifare_uid_on_the_second_reader(watcher, cards):
    present(watcher, cards(CardProfile.mifare("04A1B2C3D4E5F6"), 1), 1)
    wait_until(lambda: len(watcher.reads) == 1, 3, "one read")
    assert (watcher.reads.items[0].kind, watcher.reads.items[0].uid) == ("ic", "04A1B2C3D4E5F6")


def test_one_read_per_presentation(watcher, cards):
    card = cards(CardProfile.mifare("04A1B2C3"))
    present(watcher, card)
    wait_until(lambda: len(watcher.reads) == 1, 3, "the first read")
    # the card stays on the reader through three more of pcscd's presence polls
    polls, apdus = card.atr_requests, card.apdus
    wait_until(lambda: card.atr_requests >= polls + 3, 5, "three presence polls")
    assert len(watcher.reads) == 1 and card.apdus == apdus
    take_away(watcher, card)
    present(watcher, card)
    wait_until(lambda: len(watcher.reads) == 2, 3, "a second presentation read again")


def test_two_readers_at_once(watcher, cards):
    present(watcher, cards(CardProfile.mifare("04A1B2C3"), 0), 0)
    present(watcher, cards(CardProfile.idcard("1112131415161718"), 1), 1)
    wait_until(lambda: len(watcher.reads) == 2, 3, f"both reads {watcher.reads.items} {watcher.counters}")
    assert {r.reader for r in watcher.reads.items} == {"Virtual PCD 00 00", "Virtual PCD 00 01"}


FAILURES = ("bad_response", "transmit_failed", "connect_failed")


@pytest.mark.parametrize("fault", ["pull", "garbage", "short", "sw_error"])
def test_bad_cards_are_counted_and_survived(watcher, cards, fault):
    bad = cards(CardProfile.mifare("04A1B2C3", fault=fault))
    bad.insert()
    wait_until(lambda: sum(watcher.counters[c] for c in FAILURES) >= 1, 3, "the failed read counted")
    assert len(watcher.reads) == 0
    bad.remove()
    wait_until(lambda: watcher.readers.get("Virtual PCD 00 00") is False, 3, "the reader empty again")
    present(watcher, cards(CardProfile.mifare("04A1B2C3")))
    wait_until(lambda: len(watcher.reads) == 1, 3, "the next good card read")


def test_zero_uid_is_refused(watcher, cards):
    present(watcher, cards(CardProfile.mifare("00000000")))
    wait_until(lambda: watcher.counters["bad_response"] == 1, 3, "all-zero UID refused")
    assert len(watcher.reads) == 0


def test_unknown_atr_counted_and_generic_uid_tried(watcher, cards):
    present(watcher, cards(CardProfile(ATR_UNKNOWN, bytes.fromhex("04A1B2C3"), "mifare")))
    wait_until(lambda: watcher.counters["unknown_atr"] == 1, 3, "unknown ATR counted")
    wait_until(lambda: len(watcher.reads) == 1, 3, "read through FF CA")


def test_pcscd_restart_is_recovered(watcher, cards, pcscd):
    pcscd.restart()
    wait_until(lambda: watcher.counters["context_lost"] >= 1, 5, "the lost context noticed")
    wait_until(lambda: watcher.service_up and len(watcher.readers) == 2, 15, "recovery")
    present(watcher, cards(CardProfile.mifare("04A1B2C3")))
    wait_until(lambda: len(watcher.reads) == 1, 3, "the next swipe read")


def test_pcscd_down_then_up(watcher, cards, pcscd):
    pcscd.stop()
    wait_until(lambda: not watcher.service_up, 5, "pcscd reported down")
    pcscd.start()
    wait_until(lambda: watcher.service_up and len(watcher.readers) == 2, 15, "recovery")
    present(watcher, cards(CardProfile.idcard("0102030405060708")))
    wait_until(lambda: len(watcher.reads) == 1, 3, "the next swipe read")
