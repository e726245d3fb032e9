"""Relay links against board emulators on a real pty pair (socat)."""

from __future__ import annotations

import threading

import pytest

from drivers import modbus
from drivers.relay import LcusLink, ModbusLink, Output, lcus_frame
from rigs.boards import LcusBoard, ModbusBoard
from rigs.pty import PtyPair
from rigs.rig import wait_until


class Listener:
    def __init__(self):
        self.links: list[tuple[bool, str]] = []
        self.inputs: list[tuple[int, int]] = []
        self.writes: list[tuple[Output, bool]] = []
        self.lock = threading.Lock()

    def link_changed(self, port, up, detail):
        with self.lock:
            self.links.append((up, detail))

    def inputs_changed(self, port, unit, bits):
        with self.lock:
            self.inputs.append((unit, bits))

    def output_written(self, port, output, on, t_ns):
        with self.lock:
            self.writes.append((output, on))


@pytest.fixture
def pty(tmp_path):
    p = PtyPair(tmp_path / "ttyGW", tmp_path / "ttyBOARD").start()
    yield p
    p.stop()


@pytest.fixture
def board(pty):
    b = ModbusBoard(pty.device_end)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def link(pty, board):
    lis = Listener()
    ln = ModbusLink(str(pty.gateway_end), 9600, lis, inputs={1: 3})
    ln.listener = lis
    ln.start()
    wait_until(lambda: ln.up, 5, "the link to come up")
    yield ln
    ln.stop()


def test_pulse_turns_coil_on_then_off_on_time(link, board):
    link.pulse(Output(1, 0), 300)
    assert board.wait_for(lambda tl: any(w.on for w in tl), 2)
    assert board.wait_for(lambda tl: len(tl) >= 2 and not tl[-1].on, 2)
    on, off = board.timeline[0], board.timeline[1]
    assert 0.28 <= (off.t_ns - on.t_ns) / 1e9 <= 0.45
    assert (Output(1, 0), True) in link.listener.writes  # confirmed by the echo


def test_later_pulse_extends_the_first(link, board):
    link.pulse(Output(1, 0), 300)
    assert board.wait_for(lambda tl: len(tl) >= 1, 2)
    link.pulse(Output(1, 0), 600)
    assert board.wait_for(lambda tl: any(not w.on for w in tl), 2)
    on_first, off = board.timeline[0], next(w for w in board.timeline if not w.on)
    assert (off.t_ns - on_first.t_ns) / 1e9 >= 0.55


def test_hold_keeps_output_until_released(link, board):
    link.hold(Output(1, 2), True)
    wait_until(lambda: board.coils[2], 2, "coil 2 on")
    link.hold(Output(1, 2), False)
    wait_until(lambda: not board.coils[2], 2, "coil 2 off")


def test_inputs_are_polled_and_changes_reported(link, board):
    wait_until(lambda: link.listener.inputs, 2, "the first input sample")
    board.set_input(0, True)
    wait_until(lambda: link.listener.inputs[-1] == (1, 0b001), 2, "contact on")
    board.set_input(2, True)
    wait_until(lambda: link.listener.inputs[-1] == (1, 0b101), 2, "fire on")


def test_garbage_and_bad_crc_on_the_line_are_counted_and_survived(link, board):
    start = link.parser.stats.garbage_bytes
    bad = bytearray(modbus.write_coil(1, 0, True))
    bad[-2] ^= 0x55
    for _ in range(5):
        board.inject(b"\xde\xad\xbe\xef" + bytes(bad))
    wait_until(lambda: link.parser.stats.garbage_bytes > start, 3, "garbage to be counted")
    link.pulse(Output(1, 1), 200)
    wait_until(lambda: board.coils[1], 2, "the relay still works")
    assert link.up


def test_board_that_stops_answering_is_link_down_then_back(link, board):
    board.mute = True
    wait_until(lambda: not link.up, 5, "link down")
    assert link.stats.retries > 0
    link.hold(Output(1, 3), True)  # remembered while down
    board.mute = False
    wait_until(lambda: link.up, 5, "link back")
    wait_until(lambda: board.coils[3], 3, "the remembered state written")
    assert [u for u, _ in link.listener.links] == [True, False, True]


def test_port_vanishing_and_returning(link, board, pty):
    link.hold(Output(1, 0), True)
    wait_until(lambda: board.coils[0], 2, "coil on")
    pty.cut()  # the USB adapter is pulled
    wait_until(lambda: not link.up, 5, "link down")
    board.coils[0] = False  # the board lost power with it
    pty.start()  # plugged back in, same path
    wait_until(lambda: link.up, 10, "link back")
    wait_until(lambda: board.coils[0], 5, "desired state restored on the board")
    link.pulse(Output(1, 1), 100)
    wait_until(lambda: board.coils[1], 2, "pulses work again")


def test_exception_reply_is_a_failure_not_a_crash(link, board):
    link.pulse(Output(1, 40), 100)  # the board has 8 coils: exception code 2
    wait_until(lambda: link.stats.exceptions >= 1, 3, "the exception counted")
    link.pulse(Output(1, 0), 100)
    wait_until(lambda: board.coils[0], 2, "the next write works")


def test_lcus_pulse(pty):
    b = LcusBoard(pty.device_end)
    b.start()
    lis = Listener()
    ln = LcusLink(str(pty.gateway_end), 9600, lis)
    ln.start()
    try:
        wait_until(lambda: ln.up, 5, "lcus link up")
        ln.pulse(Output(0, 1), 200)
        assert b.wait_for(lambda tl: [w.on for w in tl][:2] == [True, False], 2)
        b.inject(b"garbage")  # an LCUS board never talks: nothing breaks
        ln.pulse(Output(0, 2), 100)
        assert b.wait_for(lambda tl: [(w.coil, w.on) for w in tl if w.coil == 2][:2] == [(2, True), (2, False)], 2)
        assert not b.relays[1] and not b.relays[2]
    finally:
        ln.stop()
        b.stop()


def test_missing_port_is_retried_not_fatal(tmp_path):
    lis = Listener()
    ln = LcusLink(str(tmp_path / "ttyNONE"), 9600, lis)
    ln.start()
    try:
        wait_until(lambda: lis.links and lis.links[0][0] is False, 3, "link reported down")
        assert "cannot open" in lis.links[0][1]
        p = PtyPair(tmp_path / "ttyNONE", tmp_path / "ttyB").start()
        try:
            wait_until(lambda: ln.up, 10, "link up once the port appears")
        finally:
            p.stop()
    finally:
        ln.stop()


def test_stop_writes_final_states(link, board):
    link.stop(final={Output(1, 0): True})
    assert board.coils[0] is True


def test_every_owned_output_is_written_locked_the_moment_the_port_opens(pty, board):
    board.coils[0] = board.coils[1] = True  # what a daemon killed mid-pulse leaves behind
    lis = Listener()
    ln = ModbusLink(str(pty.gateway_end), 9600, lis, outputs={Output(1, 0): False, Output(1, 1): False})
    ln.start()
    try:
        wait_until(lambda: not board.coils[0] and not board.coils[1], 2, "both locks relocked at open")
        assert [w.on for w in board.timeline[:2]] == [False, False]
    finally:
        ln.stop()


def test_a_coil_found_in_the_wrong_state_is_set_right(pty, board):
    lis = Listener()
    ln = ModbusLink(str(pty.gateway_end), 9600, lis, outputs={Output(1, 0): False}, assert_s=0.2)
    ln.start()
    try:
        wait_until(lambda: ln.up and board.timeline, 3, "the link up")
        board.coils[0] = True  # the board glitched (a brown-out, a hand on its button): the lock is open
        wait_until(lambda: not board.coils[0], 2, "the periodic check relocks it")
        assert ln.stats.corrections == 1
        ln.pulse(Output(1, 0), 800)  # a pulse is what the lock should be: not "corrected"
        wait_until(lambda: board.coils[0], 2, "released by the pulse")
        wait_until(lambda: not board.coils[0], 3, "relocked when the pulse ends")
        assert ln.stats.corrections == 1
    finally:
        ln.stop()


@pytest.mark.parametrize("timer,left_on", [("board", False), ("gateway", True)])
def test_a_link_that_dies_mid_pulse_leaves_the_lock_to_the_board_timer(pty, board, timer, left_on):
    """The daemon dies 100 ms into a 500 ms pulse: only a board-timed pulse still ends on time."""
    lis = Listener()
    ln = ModbusLink(str(pty.gateway_end), 9600, lis, outputs={Output(1, 0): False}, board_timed=timer == "board")
    ln.start()
    wait_until(lambda: ln.up and board.timeline, 3, "the link up")
    ln.pulse(Output(1, 0), 500)
    wait_until(lambda: board.coils[0], 2, "released")
    ln.request_stop()  # the thread ends at once: no pulse end, no final state (as after SIGKILL)
    ln.join(2)
    deadline = board.timeline[-1].t_ns + 900_000_000
    board.wait_for(lambda tl: not board.coils[0], 1.5)
    assert board.coils[0] is left_on
    if not left_on:
        off = board.timeline[-1]
        assert not off.on and off.t_ns <= deadline


def test_a_port_missing_for_many_attempts_is_still_retried(tmp_path):
    from drivers.backoff import Backoff

    lis = Listener()
    backoff = Backoff(0.0005, 0.001)
    backoff.attempt = 10**6  # as after a week unplugged: the next delay is still computed
    ln = LcusLink(str(tmp_path / "ttyGONE"), 9600, lis, backoff=backoff)
    ln.start()
    try:
        wait_until(lambda: ln.reconnects.snapshot().attempts >= 500, 10, "hundreds of attempts")
        assert ln.is_alive()
        p = PtyPair(tmp_path / "ttyGONE", tmp_path / "ttyB").start()
        try:
            wait_until(lambda: ln.up, 5, "up once the port is back")
        finally:
            p.stop()
    finally:
        ln.stop()


def test_lcus_frames_are_the_published_bytes():
    """Known answers from the LCUS-1 documentation: the emulator parses with the same function, so
    this is what keeps both honest."""
    assert lcus_frame(1, True) == bytes.fromhex("A00101A2")
    assert lcus_frame(1, False) == bytes.fromhex("A00100A1")
    assert lcus_frame(2, True) == bytes.fromhex("A00201A3")
