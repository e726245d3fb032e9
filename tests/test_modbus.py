"""Modbus RTU framing: CRC vectors from real boards, and a parser that cuts by length and CRC."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import modbus


def test_crc_vectors():
    assert modbus.write_coil(1, 0, True) == bytes.fromhex("010500 00FF008C3A".replace(" ", ""))
    assert modbus.read_bits(1, 0x02, 0, 8) == bytes.fromhex("0102000000 0879CC".replace(" ", ""))


def test_parser_joins_split_reads_and_splits_merged_ones():
    p = modbus.FrameParser(request=False)
    a = modbus.write_coil(1, 0, True)
    b = modbus.with_crc(bytes([1, 2, 1, 0b101]))
    stream = a + b
    out = []
    for i in range(len(stream)):
        out += p.feed(stream[i:i + 1])
    assert out == [a, b]
    assert p.feed(a + b) == [a, b]


def test_garbage_and_bad_crc_are_counted_and_skipped():
    p = modbus.FrameParser(request=False)
    good = modbus.write_coil(1, 3, False)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    out = p.feed(b"\x00\xff\x13" + bytes(bad) + good)
    assert out == [good]
    assert p.stats.bad_crc >= 1 and p.stats.garbage_bytes >= 3


def test_exception_reply_is_a_frame():
    p = modbus.FrameParser(request=False)
    exc = modbus.with_crc(bytes([1, 0x85, 2]))
    assert p.feed(exc) == [exc]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 7), st.booleans()), max_size=8))
def test_valid_frames_survive_any_garbage_between_them(chunks):
    """Whatever noise comes before it, a frame is found, at the latest once the next one arrives."""
    p = modbus.FrameParser(request=False)
    for noise, coil, on in chunks:
        f = modbus.write_coil(1, coil, on)
        got = p.feed(noise + f) + p.feed(f)
        assert f in got
        p.discard()


def test_request_parser_for_the_board():
    p = modbus.FrameParser(request=True)
    req = modbus.read_bits(1, 0x02, 0, 8)
    assert p.feed(b"\x55" + req) == [req]
