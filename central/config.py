"""Central's configuration (central.toml): pydantic models that refuse unknown keys, as the gateway's."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge import config as config_mod
from edge.config import StrictModel, SyncSection, credential_path


class CentralSection(StrictModel):
    state_dir: Path = Field(title="State directory", description="Where central.db lives.")
    site_key_file: Path = Field(default=Path("site.key"), title="Site key file", description="The same site key as the gateways'.")
    signing_key_file: Path = Field(default=Path("signing.key"), title="Signing key", description="Ed25519 private key from `door-edge central keygen`.")
    registration_key_file: Path = Field(default=Path("registration.key"), title="Registration key",
                                        description="X25519 private key from `door-edge central keygen` that opens the identities "
                                                    "gateways seal at registration; give the gateways registration.pub.")
    site: str = Field(default="", title="Site", description="The community or building, as the residence-registration export names it.")
    gateways: list[str] = Field(default_factory=list, title="Gateways",
                                description="Ids of gateways that join `site` at start (unless they are in a site already); "
                                            "`door-edge central gateway add` provisions them without editing this file.")
    chunk_entries: int = Field(default=5000, ge=100, le=50_000, title="Snapshot chunk", description="Entries per snapshot chunk.")
    delta_max_ops: int = Field(default=5000, ge=0, title="Largest delta", description="Bigger changes are sent as a snapshot.")
    changelog_versions: int = Field(default=50, ge=1, title="Changelog window", description="How many versions back a delta can start.")
    head_interval_s: float = Field(default=300.0, ge=1, title="Head interval", description="Seconds between republished heads.")


class DatabaseSection(StrictModel):
    url: str = Field(pattern=r"^postgres(ql)?://\S+$", title="PostgreSQL URL",
                     description="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (or a libpq conninfo URL); without [database], "
                                 "central keeps its state in SQLite under state_dir. Keep the password out of this file: "
                                 "libpq reads ~/.pgpass and PGPASSWORD.")
    pool_max: int = Field(default=8, ge=1, le=100, title="Pool size", description="Connections this process keeps open at most.")


class CentralRetention(StrictModel):
    event_days: float = Field(default=365.0, gt=0, le=36500, title="Events kept (days)",
                              description="Events central received longer ago than this are deleted, daily, in small batches.")


class WebhookSection(StrictModel):
    url: str = Field(pattern=r"^https?://\S+$", title="Webhook URL",
                     description="Where each new alarm is POSTed (JSON) for the office's own systems; http:// or https://.")
    secret_file: Path = Field(default=Path("webhook.secret"), title="Webhook secret",
                              description="A file holding the shared secret the POSTs are signed with (HMAC-SHA256).")
    timeout_s: float = Field(default=5.0, gt=0, le=60, title="Timeout", description="Seconds to wait for the receiver's answer.")


class WebSection(StrictModel):
    host: str = Field(default="127.0.0.1", title="Listen address",
                      description="The office console listens here; keep 127.0.0.1 and put a TLS reverse proxy in front (README).")
    port: int = Field(default=8080, ge=1, le=65535, title="Port", description="The office console's port.")
    secret_file: Path = Field(default=Path("web.secret"), title="Session secret",
                              description="A file holding the key that signs the console's session cookies (made at first start).")
    secure_cookies: bool = Field(default=False, title="Secure cookies",
                                 description="Send the session cookie over HTTPS only: turn on behind the TLS proxy.")


class MetricsSection(StrictModel):
    host: str = Field(default="127.0.0.1", title="Listen address", description="Prometheus scrapes /metrics here (keep it off the internet).")
    port: int = Field(default=9464, ge=0, le=65535, title="Port", description="The metrics port; 0 turns the endpoint off.")


class CareSection(StrictModel):
    check_s: float = Field(default=60.0, ge=1, le=3600, title="Care check interval",
                           description="How often central looks for cared-for residents quiet for longer than their period.")


class CentralConfig(StrictModel):
    central: CentralSection = Field(title="Central", description="The reference central server.")
    broker: SyncSection = Field(title="Broker", description="Broker connection (identity `central` in the ACL).")
    database: DatabaseSection | None = Field(default=None, title="Database",
                                             description="PostgreSQL for a county's central; without it, SQLite under state_dir.")
    retention: CentralRetention = Field(default_factory=CentralRetention, title="Retention",
                                        description="How long central keeps the events gateways sent.")
    webhook: WebhookSection | None = Field(default=None, title="Webhook", description="Forward each new alarm to the office's systems.")
    web: WebSection = Field(default_factory=WebSection, title="Office console", description="The office's web console (`central web`).")
    care: CareSection = Field(default_factory=CareSection, title="Care", description="Care for residents living alone.")
    metrics: MetricsSection = Field(default_factory=MetricsSection, title="Metrics", description="Fleet metrics for Prometheus.")


def load_config(path: Path) -> CentralConfig:
    cfg = config_mod.validate(CentralConfig, config_mod.read_toml(path), str(path))
    c, b, base = cfg.central, cfg.broker, path.parent
    c = c.model_copy(update={"state_dir": base / c.state_dir, "site_key_file": credential_path(c.site_key_file, base),
                             "signing_key_file": credential_path(c.signing_key_file, base),
                             "registration_key_file": credential_path(c.registration_key_file, base)})
    b = b.model_copy(update={k: getattr(b, k) and credential_path(getattr(b, k), base) for k in ("ca_file", "cert_file", "key_file")})
    hook = cfg.webhook and cfg.webhook.model_copy(update={"secret_file": credential_path(cfg.webhook.secret_file, base)})
    web = cfg.web.model_copy(update={"secret_file": credential_path(cfg.web.secret_file, base)})
    return cfg.model_copy(update={"central": c, "broker": b, "webhook": hook, "web": web})
