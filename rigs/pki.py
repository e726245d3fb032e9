"""A throwaway certificate authority for the test broker and the demo (EC P-256).

One CA; a server certificate for 127.0.0.1/localhost; client certificates whose CN is the
identity the broker's ACL uses (`use_identity_as_username`): the gateway id, or `central`.
Never for production: keys are written unencrypted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


class Pki:
    def __init__(self, root: Path, days: int = 365):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.days = days
        self.ca_file = root / "ca.crt"
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "door-edge test CA")])
        now = dt.datetime.now(dt.UTC)
        self._ca_name = name
        self._ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._ca_key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                    .not_valid_after(now + dt.timedelta(days=days))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .sign(self._ca_key, hashes.SHA256()))
        self.ca_file.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        self.ca_key_file = root / "ca.key"  # for `central gateway add --ca-key` (provisioning tests)
        _write_key(self._ca_key, self.ca_key_file)

    def issue(self, cn: str, *, server: bool = False, ca_key: ec.EllipticCurvePrivateKey | None = None) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(self._ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=self.days))
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        cert = b.sign(ca_key or self._ca_key, hashes.SHA256())
        ident = Identity(self.root / f"{cn}.crt", self.root / f"{cn}.key")
        ident.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, ident.key)
        return ident

    def rogue(self, cn: str) -> Identity:
        """A certificate with the right name signed by a CA the broker does not trust."""
        return Pki(self.root / "rogue").issue(cn)
