"""A whole virtual site for sync: a real mosquitto, the central reference, and the keys both
halves need (site key, Ed25519 signing pair, TLS identities). Used by tests, the demo and the
benchmarks, so all three run the protocol the same way.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge.privacy import generate_key
from protocol import generate_registration_key, generate_signing_key
from rigs.broker import Mosquitto

WEBHOOK_SECRET = "a secret the office's system shares with central"  # noqa: S105 - the test site's own


def free_port() -> int:
    """A TCP port nothing listens on now (for the office console)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CENTRAL_TEMPLATE = """\
[central]
state_dir = "{root}/central"
site = "{site}"
site_key_file = "{site_key}"
signing_key_file = "{root}/signing.key"
gateways = [{gateways}]
chunk_entries = {chunk}
delta_max_ops = {delta_max}
head_interval_s = {head_interval}

[broker]
host = "127.0.0.1"
{broker}
[web]
port = {web_port}
secret_file = "{root}/web.secret"

[metrics]
port = {metrics_port}
{webhook}{database}"""


@dataclass
class Site:
    root: Path
    site_key: Path
    gateways: list[str] = field(default_factory=lambda: ["gw-rig"])
    tls: bool = False
    broker: Mosquitto | None = None
    site: str = "rig"          # the gateways' gateway.site (rigs.rig writes "rig"): visitor passes name it
    web_port: int = 0          # the office console's port (0: a free one, picked when the config is written)
    metrics_port: int = 0      # the same for /metrics
    webhook_url: str | None = None
    database: str | None = None  # a PostgreSQL URL (rigs.postgres); None: SQLite under the state directory

    def start(self, broker: Mosquitto | None = None) -> Site:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.site_key.exists():
            generate_key(self.site_key)
        if not (self.root / "signing.key").exists():
            generate_signing_key(self.root / "signing.key", self.root / "signing.pub")
        if not (self.root / "registration.key").exists():
            generate_registration_key(self.root / "registration.key", self.root / "registration.pub")
        self.broker = broker or Mosquitto(self.root / "broker", tls=self.tls).start()
        return self

    @property
    def public_key(self) -> Path:
        return self.root / "signing.pub"

    def _broker_toml(self, identity: str, tls: bool) -> str:
        assert self.broker is not None
        if not tls:
            return f"port = {self.broker.port}\ntls = false\n"
        assert self.broker.pki is not None and self.broker.tls_port is not None
        ident = self.broker.pki.issue(identity)
        return (f"port = {self.broker.tls_port}\ntls = true\nca_file = \"{self.broker.pki.ca_file}\"\n"
                f"cert_file = \"{ident.cert}\"\nkey_file = \"{ident.key}\"\n")

    def gateway_sync_toml(self, gw: str, *, tls: bool | None = None, extra: str = "") -> str:
        """The `[sync]` section of a gateway's config on this site."""
        return ("\n[sync]\nhost = \"127.0.0.1\"\n" + self._broker_toml(gw, self.tls if tls is None else tls)
                + f"trusted_keys = [\"{self.public_key}\"]\nregistration_key_file = \"{self.root / 'registration.pub'}\"\n"
                + "reconnect_max_s = 2\n" + extra)

    def central_config(self, *, chunk: int = 5000, delta_max: int = 5000, head_interval: float = 300, tls: bool | None = None) -> Path:
        path = self.root / "central.toml"
        if not self.web_port:
            self.web_port = free_port()
        if not self.metrics_port:
            self.metrics_port = free_port()
        webhook = ""
        if self.webhook_url:
            (self.root / "webhook.secret").write_text(WEBHOOK_SECRET)
            webhook = f'\n[webhook]\nurl = "{self.webhook_url}"\nsecret_file = "{self.root / "webhook.secret"}"\ntimeout_s = 2\n'
        path.write_text(CENTRAL_TEMPLATE.format(root=self.root, site_key=self.site_key, chunk=chunk, delta_max=delta_max,
                                                head_interval=head_interval, gateways=", ".join(f'"{g}"' for g in self.gateways),
                                                broker=self._broker_toml("central", self.tls if tls is None else tls), site=self.site,
                                                web_port=self.web_port, metrics_port=self.metrics_port, webhook=webhook,
                                                database=f'\n[database]\nurl = "{self.database}"\n' if self.database else ""))
        return path

    def central(self, *, serve: bool = True, client_id: str = "central", **kw):
        from central.config import load_config
        from central.server import Central

        return Central(load_config(self.central_config(**kw)), client_id=client_id).connect(serve=serve)

    def central_process(self, **kw) -> subprocess.Popen[str]:
        """`door-edge central serve` in its own process (as on a real server); ready when it says so."""
        path = self.central_config(**kw)
        proc = subprocess.Popen([sys.executable, "-m", "edge", "central", "serve", "--config", str(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(self.root / "central.log", "ab"), text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "serving" not in line:
            proc.kill()
            raise RuntimeError(f"central serve did not start: {line!r}; see {self.root / 'central.log'}")
        return proc

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
