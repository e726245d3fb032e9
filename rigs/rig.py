"""A whole virtual door installation: pcscd with vpcd, a Modbus door board on a pty, a site key,
a config and a residents list. Used by the demo, the benchmarks and the tests, so that all three
exercise the same real parts in the same way.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rigs.boards import ModbusBoard
from rigs.ga467 import Ga467Emulator
from rigs.pcscd import Pcscd
from rigs.pty import PtyPair

CONFIG_TEMPLATE = """\
holidays = []

[gateway]
id = "{gw}"
site = "rig"
state_dir = "{root}/state"
site_key_file = "{root}/site.key"
log_level = "{log_level}"

{readers}
[[doors]]
id = "lobby"
name = "Lobby"
mode = "{mode}"
pulse_ms = {pulse_ms}
held_open_s = {held_open_s}
fail_mode = "{fail_mode}"
when_stale = "{when_stale}"
antipassback = "{antipassback}"

[doors.relay]
type = "modbus"
port = "{root}/ttyGW"
baud = 9600
unit = 1
coil = 0

[doors.inputs]
contact = 0
exit_button = 1
fire_alarm = 2
"""

READERS = """\
[[readers]]
type = "pcsc"
match = "Virtual PCD 00 00"
door = "lobby"
direction = "in"

[[readers]]
type = "pcsc"
match = "Virtual PCD 00 01"
door = "lobby"
direction = "out"
"""

# Residents of the demo and the tests: fictitious people, fictitious numbers.
RESIDENTS_CSV = """\
person,kind,value,doors,valid_from,valid_to
R-0101 Li Wei,idcard,0102030405060708,*,,
R-0102 Zhang Min,ic,04A1B2C3,lobby,2024-01-01,
R-0203 former tenant,ic,04D4E5F6,lobby,2023-01-01,2024-06-30
R-0304 Wang Fang,idno,110101199003074514,lobby,,
"""


ID_READER = """\
[[readers]]
type = "ga467"
port = "{port}"
baud = 115200
door = "lobby"
direction = "{direction}"
mode = "{mode}"
"""


# a lobby camera that reads visitor passes (config to append after the [sync] section that gives central's key)
QR_CAMERA = """
[[cameras]]
id = "lobby-cam"
source = "{source}"
door = "lobby"
max_fps = 10
loop = true
passes = true
"""


@dataclass(frozen=True)
class IdReaderSpec:
    """A GA 467 reader of the rig: its emulator sits on the far end of its own pty pair."""

    direction: str = "in"
    mode: str = "access"


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.005) -> None:
    """Poll a condition with a deadline; raise TimeoutError naming what did not happen."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@dataclass
class Rig:
    root: Path
    pulse_ms: int = 1000
    held_open_s: float = 3.0
    fail_mode: str = "secure"
    log_level: str = "info"
    own_pcscd: bool = True
    gw: str = "gw-rig"
    when_stale: str = "serve"
    mode: str = "card"
    readers: bool = True  # False: no card readers (benchmarks that need no pcscd)
    id_readers: tuple[IdReaderSpec, ...] = ()  # GA 467 readers, each with an emulator (`ga467[i]`)
    antipassback: str = "off"
    extra_toml: str = ""  # appended to the config, e.g. a [sync] section from rigs.site
    pcscd: Pcscd | None = None
    pty: PtyPair | None = None
    board: ModbusBoard | None = None
    started: list[str] = field(default_factory=list)
    ga467: list[Ga467Emulator] = field(default_factory=list)
    id_ptys: list[PtyPair] = field(default_factory=list)

    def id_port(self, i: int) -> Path:
        return self.root / f"ttyID{i}"

    @property
    def config_path(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def residents_path(self) -> Path:
        return self.root / "residents.csv"

    def write_files(self) -> None:
        from edge.privacy import generate_key

        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(CONFIG_TEMPLATE.format(root=self.root, pulse_ms=self.pulse_ms, held_open_s=self.held_open_s,
                                                           fail_mode=self.fail_mode, log_level=self.log_level,
                                                           gw=self.gw, when_stale=self.when_stale, mode=self.mode,
                                                           antipassback=self.antipassback,
                                                           readers=(READERS if self.readers else "") + "".join(
                                                               ID_READER.format(port=self.id_port(i), direction=r.direction, mode=r.mode)
                                                               for i, r in enumerate(self.id_readers))) + self.extra_toml)
        if not (self.root / "site.key").exists():
            generate_key(self.root / "site.key")
        self.residents_path.write_text(RESIDENTS_CSV)

    def person_ref(self, person: str) -> str:
        """The opaque reference the gateway knows a resident by (edge.privacy.Tokenizer.person_ref)."""
        from edge.privacy import Tokenizer, load_key

        return Tokenizer(load_key(self.root / "site.key")).person_ref(person)

    def import_residents(self) -> int:
        """Load RESIDENTS_CSV into the rig's whitelist, as `door-edge whitelist import` does."""
        from edge import config
        from edge.privacy import Tokenizer, load_key
        from edge.store.db import open_whitelist_db
        from edge.store.whitelist import Whitelist, read_csv

        cfg = config.load(self.config_path)
        conn = open_whitelist_db(cfg.state_dir())
        try:
            return Whitelist(conn).replace(read_csv(self.residents_path, Tokenizer(load_key(cfg.gateway.site_key_file))))
        finally:
            conn.close()

    def start(self, *, board: bool = True) -> Rig:
        self.write_files()
        if self.own_pcscd:
            self.pcscd = Pcscd(self.root / "pcscd.log").start()
        self.pty = PtyPair(self.root / "ttyGW", self.root / "ttyBOARD").start()
        if board:
            self.board = ModbusBoard(self.root / "ttyBOARD")
            self.board.start()
        for i in range(len(self.id_readers)):
            self.id_ptys.append(PtyPair(self.id_port(i), self.root / f"ttyIDDEV{i}").start())
            emulator = Ga467Emulator(self.root / f"ttyIDDEV{i}")
            emulator.start()
            self.ga467.append(emulator)
        return self

    def stop(self) -> None:
        for emulator in self.ga467:
            emulator.stop()
        for pty in self.id_ptys:
            pty.stop()
        self.ga467, self.id_ptys = [], []
        if self.board is not None:
            self.board.stop()
            self.board = None
        if self.pty is not None:
            self.pty.stop()
            self.pty = None
        if self.pcscd is not None:
            self.pcscd.stop()
            self.pcscd = None

    def clean(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Environment for a daemon subprocess running from this checkout."""
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        return env
