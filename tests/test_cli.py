"""The installer's and technician's commands, run as a person would run them."""

from __future__ import annotations

import json
import subprocess
import sys

from drivers.virtual.rig import wait_until
from drivers.virtual.vcard import CardProfile, VirtualCard
from tests.conftest import REPO


def door_edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_keygen_refuses_to_overwrite(tmp_path):
    key = tmp_path / "site.key"
    assert door_edge("keygen", str(key)).returncode == 0
    first = key.read_bytes()
    res = door_edge("keygen", str(key))
    assert res.returncode == 2 and key.read_bytes() == first


def test_whitelist_import_and_show(rig):
    res = door_edge("whitelist", "import", "--config", str(rig.config_path), str(rig.residents_path))
    assert res.returncode == 0 and "v2" in res.stdout  # the rig imported v1 already
    show = door_edge("whitelist", "show", "--config", str(rig.config_path), "--entries")
    assert show.returncode == 0 and "4 credential(s)" in show.stdout
    assert "04A1B2C3" not in show.stdout and "R-0101" not in show.stdout  # tokens only
    js = json.loads(door_edge("whitelist", "show", "--config", str(rig.config_path), "--json").stdout)
    assert js == {"version": 2, "count": 4, "by_kind": {"idcard": 1, "ic": 2, "idno": 1}}


def test_whitelist_import_refuses_unknown_door(rig, tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("person,kind,value,doors,valid_from,valid_to\nR-1,ic,04A1B2C3,garage,,\n")
    res = door_edge("whitelist", "import", "--config", str(rig.config_path), str(csv))
    assert res.returncode == 2 and "garage" in res.stderr and "nothing changed" in res.stderr


def test_events_tail(app, rig):
    card = VirtualCard(CardProfile.mifare("04A1B2C3"))
    card.insert()
    app.wait_event("granted")
    card.remove()
    res = door_edge("events", "tail", "--config", str(rig.config_path), "--json")
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[-1]["reason"] == "granted" and events[-1]["kind"] == "ic" and len(events[-1]["token"]) == 12
    human = door_edge("events", "tail", "--config", str(rig.config_path)).stdout
    assert "granted" in human and "04A1B2C3" not in human


def test_diag_all_good_on_the_rig(rig):
    res = door_edge("diag", "--config", str(rig.config_path), "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["ok"], res.stdout
    names = {c["name"] for c in report["checks"]}
    assert {"config", "site key", "disk", "whitelist", "journal", "pcscd", "relay lobby", "inputs lobby"} <= names


def test_diag_reports_a_dead_board_with_a_fix(rig):
    rig.board.mute = True
    res = door_edge("diag", "--config", str(rig.config_path))
    assert res.returncode == 1
    assert "FAIL] relay lobby" in res.stdout and "fix: check power, A/B wiring" in res.stdout


def test_diag_reports_a_missing_reader(rig):
    rig.config_path.write_text(rig.config_path.read_text().replace('match = "Virtual PCD 00 01"', 'match = "ACR122U"'))
    res = door_edge("diag", "--config", str(rig.config_path), "--json")
    failing = [c for c in json.loads(res.stdout)["checks"] if c["status"] == "fail"]
    assert res.returncode == 1 and [c["name"] for c in failing] == ["reader ACR122U"] and failing[0]["fix"]


def test_diag_pulse_clicks_the_relay(rig):
    res = door_edge("diag", "--config", str(rig.config_path), "--pulse")
    assert res.returncode == 0, res.stdout
    wait_until(lambda: [w.on for w in rig.board.timeline] == [True, False], 2, "on then off")


def test_diag_on_a_broken_config(tmp_path):
    p = tmp_path / "gw.toml"
    p.write_text('[gateway]\nid = "x"\n')
    res = door_edge("diag", "--config", str(p))
    assert res.returncode == 1 and "gateway.site" in res.stdout


def test_demo_runs_to_completion():
    res = subprocess.run([sys.executable, "-m", "edge", "demo"], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for line in ("fire_release", "fire_cleared", "held_open", "forced_open", "unknown_credential", "expired"):
        assert line in res.stdout
    assert "demo finished" in res.stdout
