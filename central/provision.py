"""Gateways join and leave a site without anyone editing a file by hand.

`door-edge central gateway add GW --site S --out DIR` records the membership in central's
database (every central process sees it at once) and writes into DIR what the installer copies
to the gateway's /etc/door-edge: the site key, central's public keys, the `[gateway]`/`[sync]`
config snippet and, given the CA (`--ca-cert`, `--ca-key`), the gateway's client certificate
(CN = gateway id) and key. It prints the gateway's ACL block; with `--acl FILE` it keeps that
block in the broker's ACL file, replaced or removed in place (then `kill -HUP` the broker).

`gateway remove GW` takes it out of its site (no more lists; its history stays) and out of the ACL
file, so its certificate no longer opens any topic even before it is revoked.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol import DOWN, LOOPBACK, PREFIX, UP

BEGIN, END = "# >>> door-edge gateway {gw}", "# <<< door-edge gateway {gw}"


def acl_block(gw: str) -> str:
    """The broker's rules for one gateway (its certificate CN is its user name): its own topics only."""
    lines = [BEGIN.format(gw=gw), f"user {gw}"]
    lines += [f"topic write {PREFIX}/{gw}/{n}" for n in UP]
    lines += [f"topic read {PREFIX}/{gw}/{n}" for n in DOWN]
    lines += [f"topic readwrite {PREFIX}/{gw}/{LOOPBACK}", END.format(gw=gw)]
    return "\n".join(lines) + "\n"


def edit_acl(path: Path, gw: str, *, present: bool) -> None:
    """Put the gateway's block in the ACL file (replacing an old one), or take it out; atomic."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(BEGIN.format(gw=gw)) + r".*?" + re.escape(END.format(gw=gw)) + r"\n?", re.DOTALL)
    text = pattern.sub("", text)
    if present:
        text = (text if not text or text.endswith("\n") else text + "\n") + acl_block(gw)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass(frozen=True)
class Bundle:
    out: Path
    files: list[str]


def issue_certificate(gw: str, ca_cert: Path, ca_key: Path, out: Path, days: int = 825) -> tuple[Path, Path]:
    """A client certificate for `gw` (EC P-256, CN = gw, clientAuth) signed by the CA; the key 0600."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gw)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))  # type: ignore[arg-type]
    crt, pem = out / "gateway.crt", out / "gateway.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


def write_bundle(gw: str, site: str, site_key: bytes, out: Path, *, broker_host: str, broker_port: int, signing_pub: Path,
                 registration_pub: Path | None, ca_cert: Path | None, ca_key: Path | None) -> Bundle:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    key_file = out / "site.key"
    key_file.write_text(site_key.hex() + "\n")
    key_file.chmod(0o600)
    files.append("site.key")
    shutil.copyfile(signing_pub, out / "central.pub")
    files.append("central.pub")
    reg = ""
    if registration_pub is not None and registration_pub.exists():
        shutil.copyfile(registration_pub, out / "registration.pub")
        files.append("registration.pub")
        reg = 'registration_key_file = "registration.pub"\n'
    if ca_cert is not None and ca_key is not None:
        issue_certificate(gw, ca_cert, ca_key, out)
        shutil.copyfile(ca_cert, out / "ca.crt")
        files += ["gateway.crt", "gateway.key", "ca.crt"]
    (out / "gateway.toml").write_text(
        f"# door-edge: written by `door-edge central gateway add {gw} --site {site}`; merge into /etc/door-edge/gateway.toml\n"
        f'[gateway]\nid = "{gw}"\nsite = "{site}"\nsite_key_file = "site.key"\n\n'
        f'[sync]\nhost = "{broker_host}"\nport = {broker_port}\ntls = true\nca_file = "ca.crt"\ncert_file = "gateway.crt"\n'
        f'key_file = "gateway.key"\ntrusted_keys = ["central.pub"]\n{reg}')
    files.append("gateway.toml")
    (out / "acl.conf").write_text(acl_block(gw))
    files.append("acl.conf")
    return Bundle(out, files)
