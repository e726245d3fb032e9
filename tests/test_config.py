"""Config loading and `door-edge config check`: every problem named by key path, value and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge import config
from tests.conftest import REPO

BASE = """
[gateway]
id = "gw1"
site = "s"

[[readers]]
type = "pcsc"
match = "Reader"
door = "d1"

[[doors]]
id = "d1"
schedule = "day"

[doors.relay]
type = "modbus"
port = "/dev/ttyUSB0"

[doors.inputs]
contact = 0

[schedules.day]
mon = ["07:00-22:00"]
"""


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", "config", "check", str(path)], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("name", ["gateway.example.toml", "demo.toml"])
def test_shipped_configs_are_valid(name):
    res = check(REPO / "config" / name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok" in res.stdout


def test_typo_and_bad_port_exit_2_naming_both_keys(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text(BASE.replace('port = "/dev/ttyUSB0"', 'port = "ttyUSB0"\nbuad = 9600'))
    res = check(p)
    assert res.returncode == 2
    assert "doors[0].relay.buad: unknown key" in res.stdout
    assert "did you mean 'baud'" in res.stdout
    assert "doors[0].relay.port:" in res.stdout and "'ttyUSB0'" in res.stdout


def test_base_config_is_valid(tmp_path):
    cfg = config.parse(__import__("tomllib").loads(BASE))
    assert cfg.doors[0].relay.port == "/dev/ttyUSB0"
    assert cfg.doors[0].fail_mode == "secure"


@pytest.mark.parametrize("old,new,path,words", [
    ('door = "d1"', 'door = "d9"', "readers[0].door", "no such door"),
    ('schedule = "day"', 'schedule = "night"', "doors[0].schedule", "no such schedule"),
    ('mon = ["07:00-22:00"]', 'mon = ["22:00-07:00"]', "schedules.day.mon", "time range"),
    ('type = "modbus"', 'type = "relayboard"', "doors[0].relay", "modbus"),
    ('id = "gw1"', 'id = "gw 1!"', "gateway.id", "pattern"),
    ('[[doors]]\nid = "d1"', '[[doors]]\nid = "d1"\nmode = "iris"', "doors[0].mode", "'card'"),
    ('[doors.inputs]\ncontact = 0', '[doors.inputs]\ncontact = 0\nfire = 2', "doors[0].inputs.fire", "fire_alarm"),
    ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaud = 9601', "doors[0].relay.baud", "9600"),
    ('type = "modbus"\nport = "/dev/ttyUSB0"', 'type = "lcus"\nport = "/dev/ttyUSB0"', "doors[0].inputs", "LCUS"),
])
def test_each_error_names_its_key_path(old, new, path, words):
    data = __import__("tomllib").loads(BASE.replace(old, new))
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data)
    text = str(exc.value)
    assert any(p.path == path for p in exc.value.problems), text
    assert words in text


def test_missing_required_key_says_missing(tmp_path):
    data = __import__("tomllib").loads(BASE.replace('site = "s"\n', ""))
    with pytest.raises(config.ConfigError) as exc:
        config.parse(data)
    (p,) = exc.value.problems
    assert p.path == "gateway.site" and "(missing)" in str(p) and "add this key" in p.fix


def test_toml_syntax_error_exits_2(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[gateway\nid = 1\n")
    res = check(p)
    assert res.returncode == 2 and "not valid TOML" in res.stdout


def test_missing_file_exits_2(tmp_path):
    res = check(tmp_path / "nope.toml")
    assert res.returncode == 2 and "file not found" in res.stdout


def test_relative_paths_resolve_next_to_the_file(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text(BASE.replace('site = "s"', 'site = "s"\nstate_dir = "st"\nsite_key_file = "k.key"'))
    cfg = config.load(p)
    assert cfg.state_dir() == tmp_path / "st"
    assert cfg.gateway.site_key_file == tmp_path / "k.key"


def test_a_face_door_needs_a_camera_and_a_card_reader(tmp_path):
    from edge.config import ConfigError, parse

    data = {"gateway": {"id": "gw", "site": "s"},
            "doors": [{"id": "lobby", "mode": "face", "relay": {"type": "lcus", "port": "/dev/ttyUSB0"}}]}
    with pytest.raises(ConfigError) as e:
        parse(data)
    text = str(e.value)
    assert "doors[0].mode" in text and "needs a camera" in text and "never the only way in" in text
    data["cameras"] = [{"id": "cam", "source": "/dev/video0", "door": "nowhere"}]
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert "cameras[0].door: no such door (value: 'nowhere')" in str(e.value)


@pytest.mark.parametrize("source,ok", [("ftp://cam/stream", False), ("rtsp://", False), (" /dev/video0", False),
                                       ("rtsp://user:pw@10.0.0.5:554/h264", True), ("/dev/video9", True), ("0", True)])
def test_a_malformed_camera_source_is_refused_an_absent_one_is_not(tmp_path, source, ok):
    """An unplugged camera is the gateway's to retry at run time; a source that cannot be one is the installer's to fix."""
    p = tmp_path / "gw.toml"
    p.write_text(BASE.replace('schedule = "day"', 'schedule = "day"\nmode = "card_or_face"')
                 + f'\n[[cameras]]\nid = "cam"\nsource = "{source}"\ndoor = "d1"\n')
    res = check(p)
    assert (res.returncode == 0) is ok, res.stdout
    if not ok:
        assert "cameras[0].source" in res.stdout and "Fix:" in res.stdout


def test_a_config_that_is_not_utf8_is_refused_with_a_message(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_bytes(BASE.encode() + b"\n# \xfe\xff\n")
    res = check(p)
    assert res.returncode == 2 and "not UTF-8" in res.stdout


@pytest.mark.parametrize("text", ["[reconnect]\nbase_s = 5\ncap_s = 1\n", "[retention]\njournal_days = 0\n"])
def test_reconnect_and_retention_bounds_are_checked(tmp_path, text):
    p = tmp_path / "gw.toml"
    p.write_text(BASE + "\n" + text)
    res = check(p)
    assert res.returncode == 2 and ("reconnect.cap_s" in res.stdout or "retention.journal_days" in res.stdout)


GA467 = """
[[readers]]
type = "ga467"
port = "/dev/ttyUSB1"
door = "d1"
mode = "register"
"""


def test_a_register_reader_without_centrals_key_names_the_key_and_the_fix(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text(BASE + GA467)
    res = check(p)
    assert res.returncode == 2
    assert "readers[1].mode: registration needs central's registration key" in res.stdout and "registration_key_file" in res.stdout


def test_a_ga467_reader_typo_is_named_with_its_path(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text(BASE + GA467.replace('mode = "register"', 'mode = "acess"\nbuad = 9600'))
    res = check(p)
    assert res.returncode == 2
    assert "readers[1].buad: unknown key" in res.stdout and "did you mean 'baud'" in res.stdout
    assert "readers[1].mode:" in res.stdout and "'access'" in res.stdout


def test_antipassback_needs_an_out_reader_and_areas_must_agree(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text(BASE.replace('schedule = "day"', 'schedule = "day"\nantipassback = "hard"'))
    res = check(p)
    assert res.returncode == 2 and "doors[0].antipassback: anti-passback needs an `in` and an `out` reader" in res.stdout
    two = BASE.replace('schedule = "day"', 'schedule = "day"\nantipassback = "hard"\narea = "block3"') + """
[[readers]]
type = "pcsc"
match = "Inside"
door = "d2"
direction = "out"

[[doors]]
id = "d2"
antipassback = "soft"
area = "block3"

[doors.relay]
type = "modbus"
port = "/dev/ttyUSB0"
coil = 1
"""
    p.write_text(two)
    res = check(p)
    assert res.returncode == 2 and "doors[1].antipassback: area 'block3' is hard" in res.stdout
    p.write_text(two.replace('antipassback = "soft"', 'antipassback = "hard"'))
    assert check(p).returncode == 0  # one area, a way in on d1 and a way out on d2
