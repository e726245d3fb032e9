"""The first thing `door-edge run` does: every lock output back to its resting (locked) state,
before anything heavy is imported.

A daemon killed mid-pulse (SIGKILL, the OOM killer, the watchdog, a power cut of the Pi alone)
leaves the lock coil on, and nothing on the board will turn it off. The restarted daemon needs the
better part of a second (several on a Pi) to import its libraries and validate its config before
its relay links start, so each run leaves a plan in the state directory: the outputs it drives, on
which ports, in which protocol. The next start reads the plan with the standard library and
pyserial alone and writes every output off, then starts as usual (the links assert the same state
again from the validated config). The plan holds no personal data: ports, units and coils.

A missing or unreadable plan (a first start, a wiped state directory) only means the doors relock
a little later, when the links open. A plan that names a port that is gone is skipped.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from drivers import modbus
from edge import paths

PLAN_NAME = "relock.json"


@dataclass(frozen=True, slots=True)
class PlannedOutput:
    type: str        # "modbus" | "lcus"
    port: str
    baud: int
    unit: int        # Modbus unit (0 for LCUS)
    index: int       # Modbus coil, or LCUS channel


@dataclass(frozen=True, slots=True)
class Relocked:
    outputs: int     # outputs written to their resting state
    failed: int      # outputs whose port or board did not take the write
    ms: float        # from the start of the step to its end
    plan: str        # "used" | "none" | "unreadable"

    def describe(self) -> str:
        if self.plan != "used":
            return f"no relock plan ({self.plan})"
        return f"{self.outputs} output(s) relocked in {self.ms:.0f} ms at start" + (f", {self.failed} not reached" if self.failed else "")


def state_dir_of(config_path: Path) -> Path | None:
    """The state directory the config names, read without validating the config (None if unreadable)."""
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    gateway = raw.get("gateway")
    configured = gateway.get("state_dir") if isinstance(gateway, dict) else None
    return paths.state_dir(configured if isinstance(configured, str) else None, config_path.parent)


def write_plan(state_dir: Path, outputs: list[PlannedOutput]) -> None:
    """Atomically replace the plan (OSError when the state directory cannot be written)."""
    tmp = state_dir / (PLAN_NAME + ".tmp")
    tmp.write_text(json.dumps({"v": 1, "outputs": [asdict(o) for o in outputs]}))
    os.replace(tmp, state_dir / PLAN_NAME)


def read_plan(state_dir: Path) -> list[PlannedOutput] | None:
    """The plan's outputs; [] when there is none; None when it cannot be used."""
    try:
        data = json.loads((state_dir / PLAN_NAME).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return None
    try:
        outs = [PlannedOutput(str(o["type"]), str(o["port"]), int(o["baud"]), int(o["unit"]), int(o["index"]))
                for o in data["outputs"]]
    except (KeyError, TypeError, ValueError):
        return None
    return outs if all(o.type in ("modbus", "lcus") and 0 <= o.unit <= 247 and 0 <= o.index <= 255 for o in outs) else None


def relock(config_path: Path) -> Relocked:
    """Write every planned output off. Never raises for a missing port or a silent board."""
    t0 = time.perf_counter()
    state = state_dir_of(config_path)
    plan = read_plan(state) if state is not None else None
    if not plan:
        return Relocked(0, 0, (time.perf_counter() - t0) * 1000, "none" if plan == [] else "unreadable")
    import serial

    from drivers.relay import exchange, lcus_frame, open_port

    done = failed = 0
    by_port: dict[tuple[str, int], list[PlannedOutput]] = {}
    for o in plan:
        by_port.setdefault((o.port, o.baud), []).append(o)
    for (name, baud), outs in by_port.items():
        try:
            port = open_port(name, baud)
        except (serial.SerialException, OSError, ValueError):
            failed += len(outs)
            continue
        try:
            for o in outs:
                if o.type == "lcus":
                    port.write(lcus_frame(o.index, False))
                    port.flush()
                    done += 1
                    continue
                request = modbus.write_coil(o.unit, o.index, False)
                timeout = modbus.transaction_timeout_s(8, 8, baud)
                parser = modbus.FrameParser(request=False)
                if any(exchange(port, parser, request, timeout) == request for _ in range(2)):
                    done += 1
                else:
                    failed += 1
        except (serial.SerialException, OSError):
            failed += len(outs)
        finally:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
    return Relocked(done, failed, (time.perf_counter() - t0) * 1000, "used")
