"""The installer's and technician's commands, run as a person would run them."""

from __future__ import annotations

import json
import subprocess
import sys

from rigs.rig import wait_until
from rigs.vcard import CardProfile, VirtualCard
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


def test_demo_runs_to_completion(pcscd_service):
    pcscd_service.stop()  # the demo runs its own pcscd: vpcd's ports are one per machine (tests after it start the session's again)
    res = subprocess.run([sys.executable, "-m", "edge", "demo"], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for line in ("fire_release", "fire_cleared", "held_open", "forced_open", "unknown_credential", "expired",
                 "kind=face token=", "reason=unknown_face", "reason=liveness_failed", "enrolled R-0101 Li Wei as p-",
                 "reason=id_card_expired", "event=registration_sent", "approved to", "no name and no ID number",
                 "door=gate kind=plate", "reason=unknown_plate", "kind=pass token=", "reason=visitor_granted", "reason=pass_used_up",
                 "alarm=forced_open critical", "alarm=forced_open cleared", "forced_open", "acknowledged"):
        assert line in res.stdout
    assert "demo finished" in res.stdout
    assert "list v2: 0 upserted, 1 deleted, sent as delta" in res.stdout  # the live change from central
    assert "gw-demo          online" in res.stdout and "list v2" in res.stdout


def test_diag_checks_the_broker_over_mutual_tls(synced_factory):
    s = synced_factory(tls=True)
    report = json.loads(door_edge("diag", "--config", str(s.rig.config_path), "--json").stdout)
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"], report
    for name in ("broker dns", "broker tcp", "broker tls", "gateway certificate", "broker auth", "broker round trip"):
        assert status[name] == "ok", (name, report)


def test_diag_names_the_fix_when_the_broker_is_not_there(synced_factory):
    from rigs.broker import free_port

    s = synced_factory(tls=True)
    text = s.rig.config_path.read_text()
    port = str(s.site.broker.tls_port)
    s.rig.config_path.write_text(text.replace(f"port = {port}", f"port = {free_port()}"))
    res = door_edge("diag", "--config", str(s.rig.config_path))
    assert res.returncode == 1
    assert "FAIL] broker tcp" in res.stdout and "is the broker running?" in res.stdout


def test_diag_refuses_a_certificate_whose_name_is_not_the_gateway(synced_factory):
    s = synced_factory(tls=True)
    other = s.site.broker.pki.issue("gw-someone-else")
    text = s.rig.config_path.read_text()
    cert_line = next(line for line in text.splitlines() if line.startswith("cert_file"))
    key_line = next(line for line in text.splitlines() if line.startswith("key_file"))
    s.rig.config_path.write_text(text.replace(cert_line, f'cert_file = "{other.cert}"').replace(key_line, f'key_file = "{other.key}"'))
    report = json.loads(door_edge("diag", "--config", str(s.rig.config_path), "--json").stdout)
    cert = next(c for c in report["checks"] if c["name"] == "gateway certificate")
    assert cert["status"] == "fail" and "CN = gateway.id" in cert["fix"]
    trip = next(c for c in report["checks"] if c["name"] == "broker round trip")
    assert trip["status"] == "fail" and "central acl" in trip["fix"]  # the ACL keys on the CN


def test_central_keygen_publish_and_status(synced_factory, tmp_path):
    keys = tmp_path / "keys"
    assert door_edge("central", "keygen", "--dir", str(keys)).returncode == 0
    again = door_edge("central", "keygen", "--dir", str(keys))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    s = synced_factory()
    cfg = s.site.central_config()
    res = door_edge("central", "publish", "--config", str(cfg), "--residents", str(s.rig.residents_path))
    assert res.returncode == 0 and "list v1: 4 upserted" in res.stdout, res.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("person,kind,value,doors,valid_from,valid_to\nR-1,ic,not-hex,*,,\n")
    res = door_edge("central", "publish", "--config", str(cfg), "--residents", str(bad))
    assert res.returncode == 2 and "line 2" in res.stderr and "not-hex" not in res.stderr
    assert "dg/v1/gw/%u/evt/access" in door_edge("central", "acl").stdout


def test_local_import_is_refused_when_central_manages_the_list(synced_factory):
    s = synced_factory()
    res = door_edge("whitelist", "import", "--config", str(s.rig.config_path), str(s.rig.residents_path))
    assert res.returncode == 2 and "central publish" in res.stderr


def test_run_names_a_missing_central_key_and_exits_2(synced_factory):
    s = synced_factory()
    s.site.public_key.unlink()
    res = door_edge("run", "--config", str(s.rig.config_path))
    assert res.returncode == 2 and "sync.trusted_keys" in res.stderr and "signing.pub" in res.stderr
    assert "Traceback" not in res.stderr
