"""Visitor passes: the token (signed, compact, naming its site), the door's rule, and the daemon
deciding passes shown to a real camera pipeline (folder camera -> vision worker's QR detector ->
controller -> journal -> relay on the pty board) with the broker stopped: valid, expired, used up
across a restart, revoked through the list, another site's, a forged signature, one tampered byte."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from central import passes as central_passes
from edge.access.passes import Sightings, check
from edge.access.policy import Reason
from protocol import Keyring, Rejected, Signer, generate_signing_key
from protocol import passes as tokens
from protocol.passes import VisitorPass
from rigs import scene
from rigs.rig import QR_CAMERA, wait_until
from tests.conftest import AppThread, after_start

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both

NOW = 1_800_000_000
HOST = "p-0123456789abcdef"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    generate_signing_key(d / "central.key", d / "central.pub")
    generate_signing_key(d / "forger.key", d / "forger.pub")
    return Signer.from_file(d / "central.key"), Keyring.from_files([d / "central.pub"]), Signer.from_file(d / "forger.key")


def a_pass(**kw) -> VisitorPass:
    fields = {"id": tokens.new_id(), "site": "rig", "doors": ("lobby",), "not_before": NOW, "not_after": NOW + 7200, "uses": 2,
              "host": HOST} | kw
    return VisitorPass(**fields)


# -- the token ---------------------------------------------------------------------------------
def test_a_pass_round_trips_and_fits_a_small_qr_code(keys):
    signer, ring, _ = keys
    p = a_pass(doors=("lobby", "garage"))
    text = tokens.issue(signer, p)
    assert tokens.read(text, ring, "rig") == p
    assert len(text) < 230  # base32 in QR alphanumeric mode: version 8 at level M, coarse enough for a 640x480 camera


def test_a_forged_signature_another_site_and_garbage_are_refused(keys):
    signer, ring, forger = keys
    p = a_pass()
    with pytest.raises(Rejected, match="pass_bad_signature"):
        tokens.read(tokens.issue(forger, p), ring, "rig")  # a key this gateway does not trust
    forged = Signer(forger._key)
    forged.kid = signer.kid  # the forger claims central's key id
    with pytest.raises(Rejected, match="pass_bad_signature"):
        tokens.read(tokens.issue(forged, p), ring, "rig")
    with pytest.raises(Rejected, match="pass_other_site"):
        tokens.read(tokens.issue(signer, a_pass(site="another-community")), ring, "rig")
    for junk in ("", "hello", "DGP1:", "DGP1:!!!!", "DGP1:" + "A" * 200, "https://example.org/"):
        with pytest.raises(Rejected, match=r"pass_malformed|pass_bad_signature"):
            tokens.read(junk, ring, "rig")


def test_every_tampered_byte_is_refused(keys):
    """Each byte of the signed body and of the signature, changed in turn: never accepted."""
    signer, ring, _ = keys
    text = tokens.issue(signer, a_pass())
    raw = base64.b32decode(text[len(tokens.PREFIX):] + "=" * (-len(text[len(tokens.PREFIX):]) % 8))
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        tampered = tokens.PREFIX + base64.b32encode(bytes(bad)).decode().rstrip("=")
        with pytest.raises(Rejected, match=r"pass_malformed|pass_bad_signature"):
            tokens.read(tampered, ring, "rig")


def more_uses(text: str) -> str:
    """The pass with one byte changed: 99 uses instead of its own (the signature no longer fits)."""
    b32 = text[len(tokens.PREFIX):]
    raw = bytearray(base64.b32decode(b32 + "=" * (-len(b32) % 8)))
    raw[26] = 99  # the low byte of `uses` (protocol.passes: version, kid, id, not_before, not_after, then uses)
    return tokens.PREFIX + base64.b32encode(bytes(raw)).decode().rstrip("=")


# -- the door's rule ---------------------------------------------------------------------------
CASES = [
    ("inside its window", a_pass(), "lobby", NOW + 60, 0, False, Reason.VISITOR_GRANTED),
    ("its last use", a_pass(), "lobby", NOW + 60, 1, False, Reason.VISITOR_GRANTED),
    ("used up", a_pass(), "lobby", NOW + 60, 2, False, Reason.PASS_USED_UP),
    ("expired at the window's end", a_pass(), "lobby", NOW + 7200, 0, False, Reason.PASS_EXPIRED),
    ("not yet valid", a_pass(), "lobby", NOW - 1, 0, False, Reason.PASS_NOT_YET_VALID),
    ("another door", a_pass(), "garage", NOW + 60, 0, False, Reason.PASS_WRONG_DOOR),
    ("revoked", a_pass(), "lobby", NOW + 60, 0, True, Reason.PASS_REVOKED),
]


@pytest.mark.parametrize("what,p,door,now,used,revoked,reason", CASES, ids=[c[0] for c in CASES])
def test_rule(what, p, door, now, used, revoked, reason):
    assert check(p, door, now, used=used, revoked=revoked) is reason


def test_a_code_held_up_for_many_frames_is_one_presentation():
    s = Sightings(gone_s=2.0)
    assert s.new("cam", "A", 0.0)
    assert not any(s.new("cam", "A", 0.1 * i) for i in range(1, 40))  # four seconds in view
    assert s.new("cam", "B", 4.0)          # another code
    assert s.new("cam", "A", 4.1)          # the first one again, shown anew
    assert not s.new("cam", "A", 5.9)
    assert s.new("cam", "A", 8.0)          # taken away for more than two seconds, then shown again
    assert s.new("other-cam", "A", 8.0)    # another camera


# -- the daemon, broker stopped ----------------------------------------------------------------


def show(camera: Path, app: AppThread, name: str, text: str, reason: str) -> None:
    """Hold a code up to the lobby camera (its source is the link `camera`) until the daemon journals `reason`."""
    before = app.reasons().count(reason)
    folder = scene.write(camera.parent / "scenes" / name, scene.code_held(scene.code_image(text)))
    scene.show(camera, folder)
    app.wait_event(reason, timeout=30, count=before + 1)


def test_passes_are_decided_at_the_door_with_the_broker_stopped(synced_factory, broker, keys, tmp_path):
    camera = tmp_path / "lobby-cam"
    blank = scene.write(tmp_path / "scenes" / "blank", scene.blank(3))
    scene.show(camera, blank)
    s = synced_factory(readers=False, extra_toml=QR_CAMERA.format(source=camera))
    central = s.connect_central()
    central.publish_csv(s.rig.residents_path)
    from central.office import Office

    office = Office(central)
    host = s.rig.person_ref("R-0101 Li Wei")
    one_use = office.issue_pass(host=host, doors=("lobby",), uses=1, hours=2, who="office-a")
    revoked = office.issue_pass(host=host, doors=("lobby",), uses=5, hours=2, who="office-a")
    with central.store.use() as db:
        expired = central_passes.issue(db, central.signer, "rig", host=host, doors=("lobby",), uses=5, who="office-a",
                                       hours=1, start=time.time() - 2 * 3600)
    elsewhere = tokens.issue(central.signer, a_pass(site="another-community", not_before=int(time.time()) - 60,
                                                    not_after=int(time.time()) + 3600))
    forged = tokens.issue(keys[2], a_pass(not_before=int(time.time()) - 60, not_after=int(time.time()) + 3600))
    tampered = more_uses(one_use.text)
    result = office.revoke_pass(revoked.visitor_pass.id, "office-a")

    app = AppThread(s.rig.config_path).start(readers=0)
    try:
        wait_until(lambda: app.app.parts.whitelist.version == result.version, 15, "the revocation's delta")
        broker.stop()  # from here on the gateway is on its own
        show(camera, app, "one-use", one_use.text, "visitor_granted")
        assert s.rig.board.wait_for(lambda tl: [w.on for w in after_start(tl)][:2] == [True, False], 5)  # one pulse, then locked
        show(camera, app, "revoked", revoked.text, "pass_revoked")
        show(camera, app, "expired", expired.text, "pass_expired")
        show(camera, app, "elsewhere", elsewhere, "pass_other_site")
        show(camera, app, "forged", forged, "pass_bad_signature")
        show(camera, app, "tampered", tampered, "pass_bad_signature")
        scene.show(camera, blank)
    finally:
        app.stop()
    granted = next(e for e in app.events if e.reason == "visitor_granted")
    assert granted.kind == "pass" and one_use.visitor_pass.id in (granted.detail or "") and host in (granted.detail or "")

    again = AppThread(s.rig.config_path).start(readers=0)  # a restart: the use is remembered
    try:
        show(camera, again, "one-use-again", one_use.text, "pass_used_up")
    finally:
        again.stop()
        broker.start()
    pulses = [w for w in after_start(s.rig.board.timeline) if w.on]
    assert len(pulses) == 1  # only the valid pass moved the lock
    passes_seen = [e.reason for e in app.events + again.events if e.kind == "pass"]
    assert passes_seen == ["visitor_granted", "pass_revoked", "pass_expired", "pass_other_site", "pass_bad_signature",
                           "pass_bad_signature", "pass_used_up"]  # one decision per presentation


def test_a_camera_that_reads_passes_needs_central_keys(tmp_path):
    from edge import config

    path = Path(tmp_path / "gw.toml")
    path.write_text('[gateway]\nid = "gw"\nsite = "rig"\nsite_key_file = "site.key"\n'
                    '[[doors]]\nid = "lobby"\n[doors.relay]\ntype = "modbus"\nport = "/dev/ttyUSB0"\n'
                    '[[cameras]]\nid = "cam"\nsource = "/dev/video0"\ndoor = "lobby"\npasses = true\n')
    with pytest.raises(config.ConfigError, match=r"cameras\[0\]\.passes"):
        config.load(path)
