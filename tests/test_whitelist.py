"""Whitelist import and storage: hashed on the way in, swapped whole, never the clear values."""

from __future__ import annotations

from datetime import datetime

import pytest

from edge.privacy import Tokenizer
from edge.store.db import open_whitelist_db
from edge.store.whitelist import ResidentsCsvError, Whitelist, read_csv

KEY = bytes(range(32))
CSV = """person,kind,value,doors,valid_from,valid_to,schedule
R-1,ic,04A1B2C3,lobby;garage,2024-01-01,2026-06-30,
R-2,idcard,0102030405060708,*,,,cleaners
R-3 Wang Fang,idno,110101199003074514,lobby,,2027-01-01T18:00,
R-3 Wang Fang,face,,lobby,,,
"""


def test_import_hashes_and_stores_no_clear_values(tmp_path):
    src = tmp_path / "residents.csv"
    src.write_text(CSV)
    conn = open_whitelist_db(tmp_path / "state")
    wl = Whitelist(conn)
    version = wl.replace(read_csv(src, Tokenizer(KEY)))
    conn.close()
    assert version == 1
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir())
    for secret in (b"04A1B2C3", b"0102030405060708", b"110101199003074514", b"Wang Fang", b"R-3"):
        assert secret not in raw and secret.decode().encode("utf-16-le") not in raw


def test_people_are_opaque_references_that_central_can_map_back():
    import tempfile
    from pathlib import Path

    tok = Tokenizer(KEY)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "r.csv"
        src.write_text(CSV)
        names: dict[str, str] = {}
        entries = read_csv(src, tok, names)
    wang = tok.person_ref("R-3 Wang Fang")
    assert wang.startswith("p-") and len(wang) == 18 and tok.person_ref(wang) == wang  # a reference stays itself
    assert {e.person for e in entries if e.kind in ("idno", "face")} == {wang}
    face = next(e for e in entries if e.kind == "face")
    assert face.token == tok.token("face", wang)  # the face enrolled under her reference is the one the row allows
    assert names[wang] == "R-3 Wang Fang" and Tokenizer(bytes(range(1, 33))).person_ref("R-3 Wang Fang") != wang


def test_lookup_after_reopen(tmp_path):
    src = tmp_path / "r.csv"
    src.write_text(CSV)
    t = Tokenizer(KEY)
    conn = open_whitelist_db(tmp_path)
    Whitelist(conn).replace(read_csv(src, t))
    wl = Whitelist(conn)
    e = wl.lookup(t.token("ic", "04a1b2c3"))
    assert e is not None and e.doors == frozenset({"lobby", "garage"})
    assert e.valid_from == datetime(2024, 1, 1) and e.valid_to == datetime(2026, 7, 1)  # through the end date
    assert wl.lookup(t.token("idcard", "0102030405060708")).doors is None
    assert wl.lookup(t.token("idcard", "0102030405060708")).schedule == "cleaners"
    assert wl.lookup(t.token("ic", "DEADBEEF")) is None
    assert wl.counts() == {"ic": 1, "idcard": 1, "idno": 1, "face": 1}


def test_replace_swaps_whole_list_and_bumps_version(tmp_path):
    t = Tokenizer(KEY)
    conn = open_whitelist_db(tmp_path)
    wl = Whitelist(conn)
    (tmp_path / "a.csv").write_text(CSV)
    wl.replace(read_csv(tmp_path / "a.csv", t))
    (tmp_path / "b.csv").write_text("person,kind,value,doors,valid_from,valid_to\nR-9,ic,04FFFFFF,*,,\n")
    assert wl.replace(read_csv(tmp_path / "b.csv", t)) == 2
    assert len(wl) == 1 and wl.lookup(t.token("ic", "04A1B2C3")) is None
    other = Whitelist(open_whitelist_db(tmp_path))  # another process sees the new version
    assert other.version == 2 and len(other) == 1


@pytest.mark.parametrize("line,words", [
    ("R-1,ic,XYZ,*,,", "line 2: a card UID"),
    ("R-1,passport,123,*,,", "line 2: kind 'passport'"),
    ("R-1,ic,04A1B2C3,,,", "line 2: doors is empty"),
    ("R-1,idno,1101011990030745,*,,", "line 2: an ID number"),
    ("R-1,ic,04A1B2C3,*,yesterday,", "line 2"),
])
def test_bad_rows_name_the_line_not_the_value(tmp_path, line, words):
    p = tmp_path / "bad.csv"
    p.write_text("person,kind,value,doors,valid_from,valid_to\n" + line + "\n")
    with pytest.raises(ResidentsCsvError) as exc:
        read_csv(p, Tokenizer(KEY))
    assert words in str(exc.value)
    assert "1101011990030745" not in str(exc.value)


def test_missing_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("person,kind,value\nR-1,ic,04A1B2C3\n")
    with pytest.raises(ResidentsCsvError, match="missing column"):
        read_csv(p, Tokenizer(KEY))
