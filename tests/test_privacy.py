"""Keyed hashing: stable, normalised, keyed; and bad keys are refused with a fix."""

from __future__ import annotations

import pytest

from edge.privacy import SiteKeyError, Tokenizer, generate_key, load_key, normalise, short

KEY = bytes(range(32))


def test_token_is_stable_and_normalised():
    t = Tokenizer(KEY)
    assert t.token("ic", "04 a1:b2-c3") == t.token("ic", "04A1B2C3") == t.token_raw("ic", "04A1B2C3")
    assert t.token("idno", "11010119900307451x") == t.token("idno", "11010119900307451X")
    assert len(t.token("ic", "04A1B2C3")) == 64


def test_token_depends_on_key_and_kind():
    a, b = Tokenizer(KEY), Tokenizer(bytes(32))
    assert a.token("ic", "04A1B2C3") != b.token("ic", "04A1B2C3")
    assert a.token("ic", "0102030405060708") != a.token("idcard", "0102030405060708")


def test_token_does_not_contain_the_value():
    t = Tokenizer(KEY).token("idcard", "0102030405060708")
    assert "0102030405060708" not in t and short(t) == t[:12]


@pytest.mark.parametrize("kind,value", [("ic", "xyz"), ("ic", "123"), ("idno", "1234"), ("face", ""), ("iris", "1")])
def test_bad_values_are_refused(kind, value):
    with pytest.raises(ValueError):
        normalise(kind, value) if kind != "face" else Tokenizer(KEY).token("iris", value)


def test_short_key_refused():
    with pytest.raises(SiteKeyError):
        Tokenizer(b"short")


def test_keygen_then_load(tmp_path):
    p = tmp_path / "site.key"
    generate_key(p)
    assert p.stat().st_mode & 0o777 == 0o600
    assert len(load_key(p)) == 32
    with pytest.raises(FileExistsError):
        generate_key(p)  # never overwrites: every stored token depends on it


def test_missing_key_names_the_fix(tmp_path):
    with pytest.raises(SiteKeyError, match="door-edge keygen"):
        load_key(tmp_path / "none.key")


def test_a_missing_site_key_says_what_and_how_to_fix_it(tmp_path):
    from edge.errors import SetupError

    with pytest.raises(SetupError) as err:
        load_key(tmp_path / "site.key")
    assert "not found" in err.value.problem and "door-edge keygen" in err.value.fix
    assert str(err.value) == f"{err.value.problem}. Fix: {err.value.fix}"
