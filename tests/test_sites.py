"""Sites: a gateway provisioned by command (certificate, config snippet, ACL block) gets its own
site's list and no other, and leaves its site without anyone editing a file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from central.provision import acl_block, edit_acl
from edge.privacy import Tokenizer, load_key
from edge.store.whitelist import Entry
from rigs.rig import Rig, wait_until
from rigs.site import Site
from tests.conftest import AppThread

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both


def central_cli(config: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", "central", *map(str, args), "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_acl_blocks_are_added_replaced_and_removed_in_place(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user central\ntopic readwrite dg/v1/gw/#\n")
    edit_acl(acl, "gw-a", present=True)
    edit_acl(acl, "gw-b", present=True)
    edit_acl(acl, "gw-a", present=True)  # again: replaced, not doubled
    text = acl.read_text()
    assert text.startswith("user central\n") and text.count("user gw-a") == 1 and "user gw-b" in text
    assert "topic write dg/v1/gw/gw-a/evt/access" in text and "topic read dg/v1/gw/gw-a/wl/delta" in text
    edit_acl(acl, "gw-a", present=False)
    assert "gw-a" not in acl.read_text() and acl.read_text().endswith(acl_block("gw-b"))


def test_a_provisioned_gateway_gets_its_sites_list_only_and_leaves_without_a_file_edit(tmp_path, pcscd, broker, central_db):
    site = Site(tmp_path / "central", tmp_path / "rig-site.key", gateways=[], tls=True, database=central_db).start(broker)
    cfg = site.central_config()
    assert broker.pki is not None and broker.tls_port is not None
    acl, bundle, gw = tmp_path / "acl", tmp_path / "bundle", "gw-north-1"

    r = central_cli(cfg, "site", "add", "north")
    assert r.returncode == 0 and "site north added" in r.stdout, r.stderr
    r = central_cli(cfg, "gateway", "add", gw, "--site", "north", "--out", bundle, "--ca-cert", broker.pki.ca_file,
                    "--ca-key", broker.pki.ca_key_file, "--acl", acl, "--broker-port", broker.tls_port)
    assert r.returncode == 0, r.stderr
    assert f"{gw} joined site north" in r.stdout and f"user {gw}" in r.stdout
    assert {p.name for p in bundle.iterdir()} >= {"site.key", "central.pub", "registration.pub", "gateway.crt", "gateway.key", "ca.crt",
                                                  "gateway.toml", "acl.conf"}
    assert (bundle / "gateway.key").stat().st_mode & 0o077 == 0 and (bundle / "site.key").stat().st_mode & 0o077 == 0
    assert acl.read_text() == acl_block(gw)
    snippet = tomllib.loads((bundle / "gateway.toml").read_text())
    assert snippet["gateway"] == {"id": gw, "site": "north", "site_key_file": "site.key"} and snippet["sync"]["tls"] is True
    r = central_cli(cfg, "gateway", "add", "gw-x", "--site", "nowhere", "--out", tmp_path / "x")
    assert r.returncode == 2 and "no site 'nowhere'" in r.stderr

    # the gateway, configured from the bundle: its certificate (CN = its id) on the mutual-TLS listener
    rig = Rig(tmp_path / "rig", own_pcscd=False, gw=gw, pulse_ms=300)
    rig.root.mkdir(parents=True)
    (rig.root / "site.key").write_bytes((bundle / "site.key").read_bytes())
    s = snippet["sync"]
    rig.extra_toml = (f'\n[sync]\nhost = "127.0.0.1"\nport = {s["port"]}\ntls = true\nca_file = "{bundle / "ca.crt"}"\n'
                      f'cert_file = "{bundle / "gateway.crt"}"\nkey_file = "{bundle / "gateway.key"}"\n'
                      f'trusted_keys = ["{bundle / "central.pub"}"]\nreconnect_max_s = 2\n')
    rig.start()
    central = site.central()
    app = AppThread(rig.config_path).start()
    try:
        north = central.publish_csv(rig.residents_path, site="north")
        wl = app.app.parts.whitelist
        wait_until(lambda: wl.version == north.version and wl.sha256 == central.sha256("north"), 20, "north's list at its gateway")
        tok = Tokenizer(load_key(bundle / "site.key"))  # the gateway tokenises a card as central did for its site
        assert wl.lookup(tok.token("ic", "04A1B2C3")) is not None

        # the configured site's change goes to its own gateways, not to north's
        other = Tokenizer(load_key(site.site_key))
        central.apply_changes([Entry(other.token("ic", "0A0A0A0A"), "ic", "p-0a0a0a0a0a0a0a0a", None, None, None)], site="rig")
        moved = central.apply_changes([Entry(tok.token("ic", "0B0B0B0B"), "ic", "p-0b0b0b0b0b0b0b0b", None, None, None)], site="north")
        wait_until(lambda: wl.version == moved.version, 20, "north's next version")
        assert wl.sha256 == central.sha256("north") and wl.lookup(other.token("ic", "0A0A0A0A")) is None

        # it leaves: no more lists, and what it asks for is refused
        r = central_cli(cfg, "gateway", "remove", gw, "--acl", acl)
        assert r.returncode == 0 and f"{gw} left site north" in r.stdout, r.stderr
        assert gw not in acl.read_text()
        central.apply_changes([Entry(tok.token("ic", "0C0C0C0C"), "ic", "p-0c0c0c0c0c0c0c0c", None, None, None)], site="north")
        answer = central.call(gw, "whitelist_resync")
        assert answer is not None and answer.ok
        wait_until(lambda: central.counters["rejected.unknown_gateway"] >= 1, 20, "its list request refused")
        assert wl.version == moved.version
    finally:
        app.stop()
        central.close()
        rig.stop()
