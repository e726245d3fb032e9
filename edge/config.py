"""Gateway configuration: TOML on disk, pydantic models in memory.

Every model forbids unknown keys so that an installer's typo fails at start, loudly, with the key's
path. `load()` never raises pydantic's own errors to callers: it gathers every problem into
`ConfigError`, each with a key path, the offending value and a fix an installer can act on.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from drivers.ports import Output
from edge import paths
from edge.errors import SetupError

M = TypeVar("M", bound=BaseModel)

STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FACE_MODES = ("face", "card_or_face", "card_and_face")
PLATE_MODES = ("plate", "plate_or_card")
CAMERA_SCHEMES = ("rtsp", "rtsps", "http", "https")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class StrictModel(BaseModel):
    """Every config section: unknown keys refused (a typo fails at start, with its path), values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_port(value: str) -> str:
    """Serial ports are absolute device paths or pyserial URLs (socket://, rfc2217://)."""
    if "://" in value or value.startswith("/"):
        return value
    raise ValueError("a serial port must be an absolute device path or a pyserial URL")


def _check_baud(value: int) -> int:
    if value not in STANDARD_BAUDS:
        raise ValueError(f"baud rate must be one of {', '.join(map(str, STANDARD_BAUDS))}")
    return value


class SerialDevice(StrictModel):
    """A section for a device on a serial port: `port` and `baud` are checked alike everywhere."""

    @field_validator("port", check_fields=False)
    @classmethod
    def _port(cls, v: str) -> str:
        return _check_port(v)

    @field_validator("baud", check_fields=False)
    @classmethod
    def _baud(cls, v: int) -> int:
        return _check_baud(v)


class GatewaySection(StrictModel):
    id: str = Field(title="Gateway id", description="Unique id of this gateway; also its MQTT client id and certificate CN.",
                    pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    site: str = Field(title="Site", description="Name of the site (building, community) this gateway belongs to.", min_length=1)
    state_dir: Path | None = Field(default=None, title="State directory",
                                   description="Where the database and journal live. Default: $STATE_DIRECTORY, else /var/lib/door-edge.")
    site_key_file: Path = Field(default=Path("site.key"), title="Site key file",
                                description="32+ random bytes (raw or hex) shared with the central server; "
                                            "credentials are stored as HMAC tokens under this key. "
                                            "A relative path is looked up in $CREDENTIALS_DIRECTORY, then next to the config file.")
    face_key_file: Path = Field(default=Path("face.key"), title="Face template key",
                                description="32 random bytes (hex) that seal enrolled face templates (AES-GCM); made with `door-edge keygen`. "
                                            "Looked up like site_key_file. Never leaves the gateway.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", title="Log level",
                                                                     description="Verbosity of the daemon's log on stderr.")


class PcscReader(StrictModel):
    type: Literal["pcsc"] = Field(title="Reader type", description="`pcsc`: a PC/SC contactless reader served by pcscd.")
    match: str = Field(title="Reader name match", description="Substring of the PC/SC reader name (see `pcsc_scan` or `door-edge diag`).", min_length=1)
    door: str = Field(title="Door", description="Id of the door this reader opens (one of doors[].id).")
    direction: Literal["in", "out"] = Field(default="in", title="Direction",
                                            description="`in` for the outside reader, `out` for the inside one (anti-passback counts them).")


class Ga467Reader(SerialDevice):
    type: Literal["ga467"] = Field(title="Reader type",
                                   description="`ga467`: a GA 467 ID-card reader (the public-security SAM module) on a serial or USB-serial port; "
                                               "it reads the ID number of a second-generation resident ID card.")
    port: str = Field(title="Serial port", description="Device path of the reader, e.g. /dev/ttyUSB1 or /dev/serial/by-id/...")
    baud: int = Field(default=115200, title="Baud rate", description="Serial speed of the module (115200 unless its DIP switches say otherwise).")
    door: str = Field(title="Door", description="Id of the door this reader opens, or stands at (one of doors[].id).")
    direction: Literal["in", "out"] = Field(default="in", title="Direction",
                                            description="`in` for the outside reader, `out` for the inside one (anti-passback counts them).")
    mode: Literal["access", "register"] = Field(
        default="access", title="Mode",
        description="`access`: the ID number opens the door like a card; `register`: a new tenant presents the ID card to register "
                    "(the identity is sealed to central's registration key and sent; the door does not open). Needs "
                    "sync.registration_key_file.")


Reader = Annotated[PcscReader | Ga467Reader, Field(discriminator="type")]


class LcusRelay(SerialDevice):
    type: Literal["lcus"] = Field(title="Relay type", description="`lcus`: LCUS/CH340 USB relay, write-only, no inputs.")
    port: str = Field(title="Serial port", description="Device path of the relay board, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baud: int = Field(default=9600, title="Baud rate", description="Serial speed; LCUS boards run at 9600.")
    channel: int = Field(default=1, ge=1, le=8, title="Channel", description="Relay channel on the board, 1-8.")

    @property
    def output(self) -> Output:
        return Output(0, self.channel)

    def reads_inputs(self, port: str, unit: int) -> bool:
        """An LCUS board has no inputs."""
        return False


class ModbusRelay(SerialDevice):
    type: Literal["modbus"] = Field(title="Relay type", description="`modbus`: Modbus RTU relay/IO board (coils and discrete inputs).")
    port: str = Field(title="Serial port", description="Device path of the RS485 adapter, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baud: int = Field(default=9600, title="Baud rate", description="Serial speed of the board (8N1).")
    unit: int = Field(default=1, ge=1, le=247, title="Unit address", description="Modbus slave address of the board, 1-247.")
    coil: int = Field(default=0, ge=0, le=255, title="Lock coil", description="Coil number that releases the lock when on.")
    rs485: bool = Field(default=False, title="Kernel RS485 mode", description="Let the kernel drive DE/RE (adapters without auto-direction).")
    pulse_timer: Literal["gateway", "board"] = Field(
        default="gateway", title="Pulse timer",
        description="`gateway`: the gateway turns the lock coil off when a pulse ends; `board`: the board times the pulse itself "
                    "(the \"flash on\" write at coil address 0x0200 + coil, in 100 ms units, of Waveshare-style Modbus relay boards), "
                    "so the lock relocks on time even if the gateway dies mid-pulse. Check with `door-edge diag --pulse` first.")

    @property
    def output(self) -> Output:
        return Output(self.unit, self.coil)

    def reads_inputs(self, port: str, unit: int) -> bool:
        """The door's inputs are on this board: the same port and unit address."""
        return self.port == port and self.unit == unit


Relay = Annotated[LcusRelay | ModbusRelay, Field(discriminator="type")]


class DoorInputs(StrictModel):
    contact: int | None = Field(default=None, ge=0, le=255, title="Door contact input",
                                description="Discrete input of the door contact (on = door open).")
    exit_button: int | None = Field(default=None, ge=0, le=255, title="Exit button input",
                                    description="Discrete input of the request-to-exit button (on = pressed).")
    fire_alarm: int | None = Field(default=None, ge=0, le=255, title="Fire alarm input",
                                   description="Discrete input of the fire alarm panel (on = alarm): releases the door while on.")
    tamper: int | None = Field(default=None, ge=0, le=255, title="Tamper input",
                               description="Discrete input of the reader's or the lock's tamper switch (on = housing opened): raises "
                                           "the `tamper` alarm.")


class Door(StrictModel):
    id: str = Field(title="Door id", description="Short id used by readers, whitelists and events.", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    name: str = Field(default="", title="Name", description="Human name shown in diagnostics.")
    mode: Literal["card", "face", "card_or_face", "card_and_face", "plate", "plate_or_card"] = Field(
        default="card", title="Mode",
        description="How people are admitted: `card`; `face` and `card_or_face` (a face or a card); `card_and_face` (both, the "
                    "second within face.second_factor_s); for a vehicle gate `plate` or `plate_or_card`. Face is never the only "
                    "way in: a face door needs a card reader too.")
    relay: Relay = Field(title="Relay", description="The lock relay of this door.")
    pulse_ms: int = Field(default=3000, ge=100, le=60000, title="Pulse", description="How long the lock stays released after a grant, in ms.")
    inputs: DoorInputs = Field(default_factory=DoorInputs, title="Inputs", description="Door inputs on the Modbus board (discrete input numbers).")
    held_open_s: float = Field(default=30.0, gt=0, le=3600, title="Held-open alarm", description="Seconds a door may stand open before `held_open`.")
    fail_mode: Literal["secure", "safe"] = Field(default="secure", title="Fail mode",
                                                 description="`secure`: locked when the daemon stops; `safe`: released when it stops.")
    schedule: str | None = Field(default=None, title="Schedule", description="Name of a schedule (schedules.NAME) when cards are accepted; none = always.")
    when_stale: Literal["serve", "deny"] = Field(default="serve", title="When the whitelist is stale",
                                                 description="`serve`: keep deciding from the last list and raise an alarm; `deny`: refuse every "
                                                             "credential while central has been silent for longer than sync.stale_after_s.")
    antipassback: Literal["off", "soft", "hard"] = Field(
        default="off", title="Anti-passback",
        description="A credential that went in must go out before it goes in again (in and out readers needed): `hard` refuses "
                    "it (reason `antipassback`); `soft` opens and journals `antipassback_violation`; `off` does neither.")
    area: str | None = Field(default=None, title="Anti-passback area", pattern=r"^[A-Za-z0-9_.-]{1,32}$",
                             description="Doors with the same area share one in/out state (a building with several entrances); "
                                         "default: the door on its own.")
    antipassback_reset: str = Field(default="04:00", title="Anti-passback reset", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                                    description="Local time (HH:MM) each day from which every credential counts as out again.")

    @property
    def passback_area(self) -> str:
        return self.area or self.id


class Schedule(StrictModel):
    mon: list[str] = Field(default_factory=list, title="Monday", description='Time ranges like "07:00-22:00".')
    tue: list[str] = Field(default_factory=list, title="Tuesday", description='Time ranges like "07:00-22:00".')
    wed: list[str] = Field(default_factory=list, title="Wednesday", description='Time ranges like "07:00-22:00".')
    thu: list[str] = Field(default_factory=list, title="Thursday", description='Time ranges like "07:00-22:00".')
    fri: list[str] = Field(default_factory=list, title="Friday", description='Time ranges like "07:00-22:00".')
    sat: list[str] = Field(default_factory=list, title="Saturday", description='Time ranges like "07:00-22:00".')
    sun: list[str] = Field(default_factory=list, title="Sunday", description='Time ranges like "07:00-22:00".')
    holiday: list[str] = Field(default_factory=list, title="Holidays", description="Time ranges that apply on the dates listed in `holidays`.")

    @field_validator(*DAYS, "holiday")
    @classmethod
    def _ranges(cls, ranges: list[str]) -> list[str]:
        for r in ranges:
            m = _RANGE.match(r)
            if not m or (int(m[3]), int(m[4])) <= (int(m[1]), int(m[2])) or (m[3] == "24" and m[4] != "00"):
                raise ValueError(f'"{r}" is not a time range like "07:00-22:00" (start before end, 24:00 allowed as end)')
        return ranges

    def windows(self, day: str) -> list[tuple[time, time | None]]:
        """Parsed ranges for a day; an end of 24:00 is None (end of day)."""
        out: list[tuple[time, time | None]] = []
        for r in getattr(self, day):
            a, b = r.split("-")
            out.append((time.fromisoformat(a), None if b == "24:00" else time.fromisoformat(b)))
        return out


class SyncSection(StrictModel):
    host: str = Field(title="Broker host", description="MQTT broker host name or address.", min_length=1)
    port: int = Field(default=8883, ge=1, le=65535, title="Broker port", description="8883 for TLS, 1883 for a plain listener.")
    tls: bool = Field(default=True, title="TLS", description="Mutual TLS with ca_file, cert_file and key_file; turn off only on a trusted loopback.")
    ca_file: Path | None = Field(default=None, title="CA file", description="PEM CA certificate that signed the broker's certificate.")
    cert_file: Path | None = Field(default=None, title="Client certificate", description="PEM certificate of this gateway (CN = gateway.id).")
    key_file: Path | None = Field(default=None, title="Client key",
        description="PEM private key of this gateway; a relative path is looked up in $CREDENTIALS_DIRECTORY first.")
    trusted_keys: list[Path] = Field(default_factory=lambda: [Path("central.pub")], min_length=1, title="Trusted signing keys",
                                     description="PEM Ed25519 public keys of central (`door-edge central keygen`); two during a key rotation.")
    registration_key_file: Path | None = Field(
        default=None, title="Registration key",
        description="Central's registration public key (registration.pub from `door-edge central keygen`): a reader in "
                    "register mode seals each identity to it, so only central can read it. Looked up like key_file.")
    keepalive_s: int = Field(default=30, ge=5, le=600, title="Keepalive", description="MQTT keepalive in seconds.")
    session_expiry_s: int = Field(default=7 * 86400, ge=0, title="Session expiry",
                                  description="How long the broker keeps this gateway's session (queued downlink messages) while it is offline.")
    reconnect_max_s: float = Field(default=60.0, ge=0.001, le=3600, title="Reconnect backoff cap",
                                   description="Longest wait between reconnect attempts (jittered exponential backoff).")
    telemetry_s: float = Field(default=60.0, ge=1, le=3600, title="Telemetry interval", description="Seconds between telemetry messages.")
    batch_max: int = Field(default=500, ge=1, le=5000, title="Event batch size", description="Most events per evt/access message.")
    ack_timeout_s: float = Field(default=15.0, ge=1, le=600, title="Ack timeout",
        description="Resend a batch central has not acknowledged after this many seconds.")
    journal_max_events: int = Field(default=500_000, ge=1000, title="Journal cap",
                                    description="Most unacknowledged events kept; beyond it the oldest are dropped, counted and reported.")
    stale_after_s: float = Field(default=3 * 86400, ge=0, title="Whitelist stale after",
                                 description="Seconds without a signed head from central after which the list counts as stale (0: never).")


class CameraSection(StrictModel):
    id: str = Field(title="Camera id", description="Short id used in diagnostics and events.", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    source: str = Field(title="Source", description="/dev/videoN, an rtsp:// or http:// URL, a video file, or a folder of images (tests, demo).",
                        min_length=1)
    door: str = Field(title="Door", description="Id of the door this camera looks out from (one of doors[].id).")
    max_fps: float = Field(default=10.0, gt=0, le=60, title="Frame-rate cap", description="Frames per second handed to face matching.")
    loop: bool = Field(default=False, title="Loop", description="Play a file or folder source again from the start when it ends (demo).")
    passes: bool = Field(default=False, title="Visitor passes",
                         description="Read visitor passes (QR codes central signed) in this camera's frames; a pass opens the camera's "
                                     "door with no network. A camera at a card door then loads no face model.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        """Malformed sources are refused here; a well-formed one that is absent (unplugged) is retried at run time."""
        if "://" in v:
            scheme, _, rest = v.partition("://")
            if scheme.lower() not in CAMERA_SCHEMES or not rest.split("/")[0].split("@")[-1]:
                raise ValueError(f"a camera URL needs one of the schemes {', '.join(CAMERA_SCHEMES)} and a host")
        elif v != v.strip() or not v.strip():
            raise ValueError("a camera source must not be blank or padded with spaces")
        return v


class FaceSection(StrictModel):
    threshold: float = Field(default=0.6, gt=0.2, lt=1.0, title="Distance limit",
                             description="Largest embedding distance to the person's nearest template accepted at all: a sanity limit; "
                                         "the normalised score (`z_min`) decides.")
    z_min: float = Field(default=4.75, ge=0, le=20, title="Match score",
                         description="Least score accepted: the similarity to the person's best template, normalised against a fixed "
                                     "cohort of strangers (models/face_cohort.npz); higher = stricter. 4.75 lets in about 1 stranger's "
                                     "frame in 300 on people nobody tuned on, 4.0 about 1 in 20 (README: what z_min trades).")
    small_threshold: float | None = Field(default=None, gt=0.2, lt=1.0, title="(unused)",
                                          description="No longer used: the cohort is fixed, so a small gallery needs no stricter "
                                                      "threshold. Accepted so that older files load; remove it.")
    frames: int = Field(default=3, ge=1, le=30, title="Frames to agree", description="Consecutive frames that must give the same answer.")
    liveness: bool = Field(default=True, title="Liveness check",
                           description="Refuse a face that does not change across frames (a photo held up); see README for what it does not stop.")
    liveness_min: float = Field(default=10.0, gt=0, title="Liveness score", description="Least change across a walk-up that counts as a live face.")
    liveness_window_s: float = Field(default=3.0, gt=0, le=30, title="Liveness window",
                                     description="How long a recognised face may take to show it is live before `liveness_failed`.")
    low_quality_s: float = Field(default=4.0, gt=0, le=60, title="Low-quality patience",
                                 description="A face seen this long without a usable frame is recorded as `low_quality`.")
    gone_s: float = Field(default=1.5, gt=0, le=30, title="Walk-up ends after",
                          description="Seconds without a face that end a walk-up (the next face is a new decision).")
    second_factor_s: float = Field(default=10.0, gt=0, le=120, title="Second-factor window",
                                   description="card_and_face doors: the second credential must follow the first within this many seconds.")
    min_face_px: int = Field(default=40, ge=20, le=400, title="Smallest face", description="Face width in pixels below which a frame is `too_small`.")


class PlateSection(StrictModel):
    frames: int = Field(default=3, ge=1, le=30, title="Frames to agree", description="Frames on which a reading must be the best one to decide.")
    gone_s: float = Field(default=2.0, gt=0, le=60, title="Vehicle gone after",
                          description="Seconds without a plate in view that end a vehicle's visit (the next plate is a new decision).")
    unreadable_s: float = Field(default=4.0, gt=0, le=60, title="Unreadable after",
                                description="A plate in view this long without a reading that holds is recorded as `plate_unreadable`.")


class ReconnectSection(StrictModel):
    base_s: float = Field(default=0.2, ge=0.0001, le=60, title="First retry delay",
                          description="Delay before the second attempt to reach a lost part (reader service, relay port, camera, "
                                      "vision worker, broker); it doubles with each failure, jittered, up to cap_s.")
    cap_s: float = Field(default=5.0, ge=0.0001, le=600, title="Longest retry delay",
                         description="Longest delay between attempts for readers, relay ports, cameras and the vision worker "
                                     "(the broker uses sync.reconnect_max_s). Every part retries for as long as it takes.")


class RetentionSection(StrictModel):
    journal_days: float = Field(default=90.0, gt=0, le=3650, title="Journal kept (days)",
                                description="Without central (no [sync]), events older than this are purged from the journal. With "
                                            "central, events leave the journal when central acknowledges them (sync.journal_max_events caps it).")
    journal_max_events: int = Field(default=1_000_000, ge=1000, title="Journal kept (events)",
                                    description="Without central, the most events kept; the oldest beyond it are purged.")
    snapshot_days: float = Field(default=7.0, gt=0, le=3650, title="Diagnostic snapshots kept (days)",
                                 description="Camera snapshots that `door-edge diag` wrote under the state directory are removed after this.")


class AlarmsSection(StrictModel):
    denials: int = Field(default=5, ge=2, le=1000, title="Denials at a door",
                         description="Denied presentations at one door within window_s that raise `repeated_denials` (someone trying cards).")
    credential_denials: int = Field(default=3, ge=2, le=1000, title="Denials of one credential",
                                    description="Denials of one card, plate or pass within window_s that raise `credential_denied`.")
    window_s: float = Field(default=120.0, ge=10, le=86400, title="Denial window", description="Seconds over which denials are counted.")
    disk_free_min_mb: float = Field(default=200.0, ge=0, le=1_000_000, title="Disk floor (MB)",
                                    description="Free space in the state directory below which `disk_nearly_full` is raised (0: never).")


class GatewayConfig(StrictModel):
    gateway: GatewaySection = Field(title="Gateway", description="Identity of this gateway and where it keeps state.")
    readers: list[Reader] = Field(default_factory=list, title="Readers",
                                  description="Card readers (PC/SC, GA 467 ID-card readers) and the door each opens.")
    doors: list[Door] = Field(min_length=1, title="Doors", description="Doors and gates this gateway controls.")
    schedules: dict[str, Schedule] = Field(default_factory=dict, title="Schedules", description="Named weekly schedules.")
    holidays: list[date] = Field(default_factory=list, title="Holidays", description="Dates on which schedules use their `holiday` ranges.")
    sync: SyncSection | None = Field(default=None, title="Sync", description="Central server over MQTT; without it the gateway runs standalone.")
    cameras: list[CameraSection] = Field(default_factory=list, title="Cameras", description="Cameras and the door each looks out from.")
    face: FaceSection = Field(default_factory=FaceSection, title="Face", description="Face matching: thresholds, liveness, second factor.")
    plate: PlateSection = Field(default_factory=PlateSection, title="Plates", description="Plate reading at vehicle gates: the vote across frames.")
    reconnect: ReconnectSection = Field(default_factory=ReconnectSection, title="Reconnects",
                                        description="How lost parts are retried: jittered exponential backoff, never giving up.")
    retention: RetentionSection = Field(default_factory=RetentionSection, title="Retention",
                                        description="How long the gateway keeps what it writes; purged daily, and each purge is journaled.")
    alarms: AlarmsSection = Field(default_factory=AlarmsSection, title="Alarms",
                                  description="When repeated denials and a filling disk raise alarms for the office.")

    def door(self, door_id: str) -> Door:
        return next(d for d in self.doors if d.id == door_id)

    def state_dir(self) -> Path:
        return self.gateway.state_dir if self.gateway.state_dir is not None else paths.default_state_dir()


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where, what was there, what is wrong, and how to fix it."""

    path: str
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is _MISSING else repr(self.value)
        return f"{self.path}: {self.message} (value: {shown}). Fix: {self.fix}"


_MISSING = object()


class ConfigError(SetupError):
    """The configuration cannot be used; `problems` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fix_for(err: ErrorDetails, root: type[BaseModel]) -> str:
    loc = err["loc"]
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _parent_model(loc[:-1], root)
        valid = sorted(parent.model_fields) if parent else []
        guess = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return f"{hint}remove or rename it; valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return "add this key (see config/gateway.example.toml)"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = err.get("ctx", {}).get("expected") or err.get("ctx", {}).get("expected_tags", "")
        return f"use one of {expected}"
    parent = _parent_model(loc[:-1], root)
    leaf = next((p for p in reversed(loc) if isinstance(p, str)), None)
    if parent and leaf in parent.model_fields:
        return parent.model_fields[leaf].description or "see config/gateway.example.toml"
    return "see config/gateway.example.toml"


_TAGS: dict[str, type[BaseModel]] = {"lcus": LcusRelay, "modbus": ModbusRelay, "pcsc": PcscReader, "ga467": Ga467Reader}


def _inner_model(ann: Any) -> type[BaseModel] | None:
    """First BaseModel inside an annotation such as `list[Door]` or `Door | None`."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _parent_model(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model that owns the last key of `loc` (dict keys and list indexes are stepped over)."""
    model: type[BaseModel] | None = root
    in_dict = False
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int) or in_dict:
            in_dict = False
            continue
        if part in _TAGS:
            model = _TAGS[part]
            continue
        if part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        in_dict = getattr(ann, "__origin__", None) is dict
        model = _inner_model(ann)
    return model


def _from_validation(exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in _TAGS)
        value = _MISSING if err["type"] == "missing" else err.get("input")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        problems.append(Problem(_path(loc), value, msg, _fix_for(err, root)))
    return problems


def _cross_checks(cfg: GatewayConfig) -> list[Problem]:
    """Checks across sections that single-field validation cannot see."""
    problems: list[Problem] = []
    door_ids = [d.id for d in cfg.doors]
    for i, d in enumerate(cfg.doors):
        if door_ids.index(d.id) != i:
            problems.append(Problem(f"doors[{i}].id", d.id, "duplicate door id", "give every door its own id"))
        if d.schedule is not None and d.schedule not in cfg.schedules:
            problems.append(Problem(f"doors[{i}].schedule", d.schedule, "no such schedule",
                                    f"define [schedules.{d.schedule}] or use one of: {', '.join(cfg.schedules) or '(none defined)'}"))
        if isinstance(d.relay, LcusRelay) and any(v is not None for v in d.inputs.model_dump().values()):
            problems.append(Problem(f"doors[{i}].inputs", d.inputs.model_dump(exclude_none=True),
                                    "an LCUS relay has no inputs", "wire the inputs to a Modbus IO board (relay.type = \"modbus\") or remove them"))
    if cfg.reconnect.cap_s < cfg.reconnect.base_s:
        problems.append(Problem("reconnect.cap_s", cfg.reconnect.cap_s, f"below reconnect.base_s ({cfg.reconnect.base_s})",
                                "make cap_s at least base_s"))
    seen: dict[tuple[str, int, int], int] = {}
    bauds: dict[str, tuple[int, int]] = {}
    for i, d in enumerate(cfg.doors):
        r = d.relay
        key = (r.port, r.output.unit, r.output.index)
        if key in seen:
            problems.append(Problem(f"doors[{i}].relay", r.model_dump(), f"same output as doors[{seen[key]}]",
                                    "give each door its own coil/channel"))
        seen.setdefault(key, i)
        if r.port in bauds and bauds[r.port][0] != r.baud:
            problems.append(Problem(f"doors[{i}].relay.baud", r.baud, f"port shared with doors[{bauds[r.port][1]}] at {bauds[r.port][0]} baud",
                                    "boards on one port share one speed"))
        bauds.setdefault(r.port, (r.baud, i))
        other_types = {type(o.relay) for o in cfg.doors if o.relay.port == r.port}
        if len(other_types) > 1 and bauds[r.port][1] == i:
            problems.append(Problem(f"doors[{i}].relay.type", r.type, "LCUS and Modbus boards on the same port",
                                    "put each board on its own serial port"))
    if cfg.sync is not None and cfg.sync.tls:
        for tls_key in ("ca_file", "cert_file", "key_file"):
            if getattr(cfg.sync, tls_key) is None:
                problems.append(Problem(f"sync.{tls_key}", _MISSING, "required when sync.tls is on",
                                        "point it at the PEM file (see config/gateway.example.toml), or set sync.tls = false for a loopback broker"))
    for i, rd in enumerate(cfg.readers):
        if rd.door not in door_ids:
            problems.append(Problem(f"readers[{i}].door", rd.door, "no such door", f"use one of: {', '.join(door_ids)}"))
        if isinstance(rd, Ga467Reader):
            if rd.port in {d.relay.port for d in cfg.doors}:
                problems.append(Problem(f"readers[{i}].port", rd.port, "the port of a relay board", "give the ID-card reader its own serial port"))
            if rd.mode == "register" and (cfg.sync is None or cfg.sync.registration_key_file is None):
                problems.append(Problem(f"readers[{i}].mode", rd.mode, "registration needs central's registration key",
                                        "add [sync] with registration_key_file = \"registration.pub\" (from `door-edge central keygen`), "
                                        "or set mode = \"access\""))
    problems += _passback_checks(cfg)
    camera_ids = [c.id for c in cfg.cameras]
    for i, cam in enumerate(cfg.cameras):
        if cam.door not in door_ids:
            problems.append(Problem(f"cameras[{i}].door", cam.door, "no such door", f"use one of: {', '.join(door_ids)}"))
        if camera_ids.index(cam.id) != i:
            problems.append(Problem(f"cameras[{i}].id", cam.id, "duplicate camera id", "give every camera its own id"))
        if cam.passes and cfg.sync is None:
            problems.append(Problem(f"cameras[{i}].passes", True, "visitor passes are signed by central, and this gateway has no [sync] "
                                    "with central's key", 'add [sync] with trusted_keys = ["signing.pub"], or set passes = false'))
    for i, d in enumerate(cfg.doors):
        if d.mode in FACE_MODES:
            if not any(c.door == d.id for c in cfg.cameras):
                problems.append(Problem(f"doors[{i}].mode", d.mode, "a face door needs a camera",
                                        f'add a [[cameras]] table with door = "{d.id}", or set mode = "card"'))
            if not any(r.door == d.id for r in cfg.readers):
                problems.append(Problem(f"doors[{i}].mode", d.mode, "face is never the only way in: this door has no card reader",
                                        f'add a [[readers]] table with door = "{d.id}"'))
        if d.mode in PLATE_MODES and not any(c.door == d.id for c in cfg.cameras):
            problems.append(Problem(f"doors[{i}].mode", d.mode, "a plate gate needs a camera",
                                    f'add a [[cameras]] table with door = "{d.id}", or set mode = "card"'))
    return problems


def _passback_checks(cfg: GatewayConfig) -> list[Problem]:
    """An anti-passback area needs a way in and a way out, and its doors must agree on the rules."""
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, d in enumerate(cfg.doors):
        if d.antipassback == "off":
            continue
        area = d.passback_area
        if area in first:
            o = cfg.doors[first[area]]
            if (o.antipassback, o.antipassback_reset) != (d.antipassback, d.antipassback_reset):
                problems.append(Problem(f"doors[{i}].antipassback", d.antipassback, f"area {area!r} is {o.antipassback} with reset "
                                        f"{o.antipassback_reset} at doors[{first[area]}]", "give every door of an area the same "
                                        "antipassback and antipassback_reset"))
            continue
        first[area] = i
        area_doors = {x.id for x in cfg.doors if x.passback_area == area}
        directions = {r.direction for r in cfg.readers if r.door in area_doors and not (isinstance(r, Ga467Reader) and r.mode == "register")}
        if directions != {"in", "out"}:
            problems.append(Problem(f"doors[{i}].antipassback", d.antipassback, "anti-passback needs an `in` and an `out` reader",
                                    f"add [[readers]] with direction = \"in\" and \"out\" for door(s) {', '.join(sorted(area_doors))}, "
                                    "or set antipassback = \"off\""))
    return problems


def parse(data: dict[str, Any], source: str = "<config>") -> GatewayConfig:
    cfg = validate(GatewayConfig, data, source)
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem("(file)", str(path), f"not UTF-8 text (byte {exc.start})",
                                              "save the config as UTF-8 (TOML files are UTF-8)")]) from None
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem("(file)", str(path), "file not found", "pass the path of an existing config file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [Problem("(file)", str(path), f"not valid TOML: {exc}", "fix the TOML syntax at the position shown")]) from None


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """`model.model_validate` with every error turned into a Problem (key path, value, fix)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _from_validation(exc, model)) from None


def load(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a TOML config file; raise ConfigError listing every problem."""
    p = Path(path)
    cfg = parse(read_toml(p), str(p))
    if cfg.gateway.state_dir is not None:
        cfg = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={"state_dir": paths.state_dir(cfg.gateway.state_dir, p.parent)})})
    cfg = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={
        "site_key_file": credential_path(cfg.gateway.site_key_file, p.parent),
        "face_key_file": credential_path(cfg.gateway.face_key_file, p.parent)})})
    cams = [c.model_copy(update={"source": str((p.parent / c.source).resolve())}) if _is_relative_path(c.source) else c
            for c in cfg.cameras]
    cfg = cfg.model_copy(update={"cameras": cams})
    if cfg.sync is not None:
        s = cfg.sync
        cfg = cfg.model_copy(update={"sync": s.model_copy(update={
            "ca_file": s.ca_file and credential_path(s.ca_file, p.parent),
            "cert_file": s.cert_file and credential_path(s.cert_file, p.parent),
            "key_file": s.key_file and credential_path(s.key_file, p.parent),
            "trusted_keys": [credential_path(k, p.parent) for k in s.trusted_keys],
            "registration_key_file": s.registration_key_file and credential_path(s.registration_key_file, p.parent)})})
    return cfg


def _is_relative_path(source: str) -> bool:
    """A camera source that is a file or folder given relative to the config file."""
    return not (source.isdigit() or "://" in source or source.startswith("/"))


def credential_path(path: Path, config_dir: Path) -> Path:
    """A relative key or certificate path: $CREDENTIALS_DIRECTORY first (systemd LoadCredential=), then the config's folder."""
    if path.is_absolute():
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    cand = Path(creds) / path if creds else None
    return cand if cand is not None and cand.exists() else (config_dir / path).resolve()


def warnings(cfg: GatewayConfig) -> list[str]:
    """Things that are valid but probably not what the installer meant (checked on this machine)."""
    out = []
    for i, d in enumerate(cfg.doors):
        if "://" not in d.relay.port and not Path(d.relay.port).exists():
            out.append(f"doors[{i}].relay.port: {d.relay.port} does not exist on this machine (is the board plugged in?)")
    for i, r in enumerate(cfg.readers):
        if isinstance(r, Ga467Reader) and "://" not in r.port and not Path(r.port).exists():
            out.append(f"readers[{i}].port: {r.port} does not exist on this machine (is the ID-card reader plugged in?)")
    for i, c in enumerate(cfg.cameras):
        if c.source.startswith("/") and not Path(c.source).exists():
            out.append(f"cameras[{i}].source: {c.source} does not exist on this machine (is the camera plugged in?); "
                       "the gateway starts anyway and keeps trying it")
    if not cfg.readers:
        out.append("readers: no readers configured; only door inputs will be handled")
    return out
