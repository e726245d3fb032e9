"""The GA 467 ID-card reader driver against the virtual reader on a real pty pair (socat)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import sam_ga467 as ga
from rigs.ga467 import CHEN_JING, WANG_FANG, ZHAO_LEI, Ga467Emulator
from rigs.pty import PtyPair
from rigs.rig import wait_until


def test_frames_match_the_published_vectors():
    assert ga.command(ga.RESET).hex(" ") == "aa aa aa 96 69 00 03 10 ff ec"
    assert ga.command(ga.SAM_STATUS).hex(" ") == "aa aa aa 96 69 00 03 11 ff ed"
    assert ga.command(ga.FIND).hex(" ") == "aa aa aa 96 69 00 03 20 01 22"
    assert ga.command(ga.SELECT).hex(" ") == "aa aa aa 96 69 00 03 20 02 21"
    assert ga.command(ga.READ_BASE).hex(" ") == "aa aa aa 96 69 00 03 30 01 32"
    assert ga.answer(0x9F, bytes(4)).hex(" ") == "aa aa aa 96 69 00 08 00 00 9f 00 00 00 00 97"
    assert ga.answer(0x80).hex(" ") == "aa aa aa 96 69 00 04 00 00 80 84"
    frames = list(ga.FrameParser().feed(bytes.fromhex("AAAAAA9669000800009F0000000097")))
    assert [f.sw3 for f in frames] == [0x9F]


def test_the_text_block_parses_and_keeps_nothing_in_its_repr():
    ident = ga.parse_text(CHEN_JING.text())
    assert (ident.name, ident.idno, ident.valid_to.isoformat()) == ("陈静", CHEN_JING.idno, "2035-12-31")
    assert ga.parse_text(WANG_FANG.text()).valid_to is None  # 长期: long-term
    assert "陈静" not in repr(ident) and CHEN_JING.idno not in repr(ident)
    with pytest.raises(ValueError, match="idno") as exc:
        ga.parse_text(ga.text_block(name="x", idno="12345"))
    assert "12345" not in str(exc.value)  # an error names the field, never its value


class Bench:
    """A reader thread on one end of a pty pair, the emulator on the other."""

    def __init__(self, root):
        self.pty = PtyPair(root / "ttyGW", root / "ttyDEV").start()
        self.emulator = Ga467Emulator(root / "ttyDEV")
        self.emulator.start()
        self.reads: list[ga.IdRead] = []
        self.status: list[str] = []
        self.reader = ga.Ga467Watcher(str(root / "ttyGW"), self.reads.append, lambda name, state: self.status.append(state),
                                      poll_s=0.05, backoff=None)
        self.reader.start()
        wait_until(lambda: "empty" in self.status, 5, "the reader to answer")

    def present(self, card, count: int) -> None:
        self.emulator.present(card)
        wait_until(lambda: len(self.reads) >= count, 5, f"{count} read(s)")
        self.emulator.take_away()

    def stop(self) -> None:
        self.reader.stop()
        self.emulator.stop()
        self.pty.stop()


@pytest.fixture
def bench(tmp_path):
    b = Bench(tmp_path)
    yield b
    b.stop()


def test_find_select_read_once_per_presentation(bench):
    bench.emulator.present(CHEN_JING)
    wait_until(lambda: len(bench.reads) == 1, 5, "the read")
    read = bench.reads[0]
    assert (read.idno, read.valid_to.isoformat(), read.sealed) == (CHEN_JING.idno, "2035-12-31", None)
    polls = bench.emulator.commands["2001"]
    wait_until(lambda: bench.emulator.commands["2001"] > polls + 5, 5, "more polls")
    assert len(bench.reads) == 1  # left on the reader: read once
    assert bench.emulator.commands["3001"] == 1 and bench.emulator.commands["2002"] == 1
    bench.emulator.take_away()
    bench.present(ZHAO_LEI, 2)
    assert bench.reads[1].valid_to.isoformat() == "2024-01-01"


def test_a_bad_checksum_is_counted_and_the_card_read_again(bench):
    bench.emulator.corrupt = 2  # the next two answers (a find, then a read or a select) arrive damaged
    bench.present(WANG_FANG, 1)
    assert bench.reads[0].idno == WANG_FANG.idno
    assert bench.reader.counters["bad_checksum"] >= 1 and bench.reader.parser.counters["bad_checksum"] >= 1


def test_a_card_pulled_mid_read_makes_no_read_and_the_next_one_works(bench):
    bench.emulator.pull_mid_read = True
    bench.emulator.present(CHEN_JING)  # the emulator takes it away halfway through the answer
    wait_until(lambda: bench.reader.counters["pulled_mid_read"] == 1, 5, "the aborted read to be counted")
    assert bench.reads == []
    bench.present(CHEN_JING, 1)
    assert bench.reads[0].idno == CHEN_JING.idno


def test_garbage_on_the_line_is_skipped(bench):
    bench.emulator.inject(bytes(range(256)) + b"\xAA\xAA\xAA\x96\x69\xFF\xFF" + b"noise")
    bench.present(WANG_FANG, 1)
    assert bench.reader.parser.counters["garbage_bytes"] + bench.reader.parser.counters["bad_length"] > 0


def test_the_reader_unplugged_and_back(bench):
    bench.pty.cut()  # the USB adapter pulled out: both ends vanish
    wait_until(lambda: "gone" in bench.status, 5, "the reader to be reported gone")
    assert not bench.reader.reconnects.is_up
    bench.pty.start()
    wait_until(lambda: bench.status[-1] == "empty", 15, "the reader to be back")
    bench.present(CHEN_JING, 1)
    assert bench.reader.reconnects.snapshot().outages == 1


def test_a_mute_module_is_reported_gone_and_back(bench):
    bench.emulator.mute = True
    wait_until(lambda: "gone" in bench.status, 5, "the mute module to be reported gone")
    bench.emulator.mute = False
    wait_until(lambda: bench.status[-1] == "empty", 15, "the module to answer again")


def test_register_mode_seals_the_identity_to_centrals_key(tmp_path):
    from nacl.public import PrivateKey

    import protocol

    key = PrivateKey.generate()
    pty = PtyPair(tmp_path / "a", tmp_path / "b").start()
    em = Ga467Emulator(tmp_path / "b")
    em.start()
    got: list[ga.IdRead] = []
    done = threading.Event()
    r = ga.Ga467Watcher(str(tmp_path / "a"), lambda read: (got.append(read), done.set()), seal_to=bytes(key.public_key), poll_s=0.05)
    r.start()
    try:
        em.present(CHEN_JING)
        assert done.wait(5)
        import base64

        ident = protocol.open_registration(bytes(key), base64.b64encode(got[0].sealed).decode())
        assert (ident.name, ident.idno, ident.address) == (CHEN_JING.name, CHEN_JING.idno, CHEN_JING.address)
        assert CHEN_JING.name.encode() not in got[0].sealed and CHEN_JING.idno.encode() not in got[0].sealed
        with pytest.raises(protocol.Rejected, match="undecryptable"):
            protocol.open_registration(bytes(PrivateKey.generate()), base64.b64encode(got[0].sealed).decode())
    finally:
        r.stop()
        em.stop()
        pty.stop()


# -- fuzzed frames ----------------------------------------------------------------------------
@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20))
def test_the_parser_survives_any_bytes_in_any_chunks(data, cuts):
    parser = ga.FrameParser()
    pos = 0
    for n in [*cuts, len(data)]:
        for frame in parser.feed(data[pos:pos + n]):
            assert len(frame.body) >= 1
        pos += n


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=200), st.integers(1, 97))
def test_a_good_frame_between_garbage_is_found(before, after, payload, chunk):
    frame = ga.answer(0x90, payload)
    stream = before + frame + after
    parser = ga.FrameParser()
    found = [f for i in range(0, len(stream), chunk) for f in parser.feed(stream[i:i + chunk])]
    assert any(f.data == payload and f.sw3 == 0x90 for f in found)


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=ga.TEXT_BYTES, max_size=ga.TEXT_BYTES))
def test_any_text_block_parses_or_is_refused_cleanly(block):
    try:
        ident = ga.parse_text(block)
    except ValueError:
        return
    assert len(ident.idno) == 18


def test_the_bench_line_has_the_issues_fields(tmp_path):
    from devtools.bench import _pct
    from devtools.bench_ga467 import bench_ga467

    got = bench_ga467(tmp_path, 3, _pct)
    assert set(got) == {"ga467_read_ms", "ga467_line_ms"} and set(got["ga467_read_ms"]) == {"p50", "p99"}
    assert 110 < got["ga467_line_ms"] < 125  # 1,355 bytes at 115200 baud
    assert got["ga467_read_ms"]["p50"] >= got["ga467_line_ms"] * 0.95  # the emulator keeps to the line's speed


def test_diag_asks_the_reader_through_the_drivers_own_exchange(tmp_path):
    import json
    import subprocess
    import sys

    from rigs.rig import IdReaderSpec, Rig
    from tests.conftest import REPO

    rig = Rig(tmp_path / "rig", own_pcscd=False, readers=False, id_readers=(IdReaderSpec("in"),)).start()
    try:
        assert rig.ga467[0].wait_ready()
        rig.ga467[0].present(WANG_FANG)
        res = subprocess.run([sys.executable, "-m", "edge", "diag", "--config", str(rig.config_path), "--json"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
        check = checks[f"id reader {rig.id_port(0)}"]
        assert check["status"] == "ok" and "card present" in check["detail"] and "SAM 050100" in check["detail"]
        rig.id_ptys[0].cut()  # unplugged: the line names the fix
        res = subprocess.run([sys.executable, "-m", "edge", "diag", "--config", str(rig.config_path), "--json"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        check = {c["name"]: c for c in json.loads(res.stdout)["checks"]}[f"id reader {rig.id_port(0)}"]
        assert check["status"] == "fail" and "readers[].port" in check["fix"] and res.returncode == 1
    finally:
        rig.stop()
