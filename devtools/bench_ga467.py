"""`door-edge bench card --reader ga467`: the GA 467 reader's whole exchange against the emulator.

Find, select and read base information through the driver's own `exchange`, over a real pty pair,
with the emulator sending its answers no faster than 115200 baud allows (`pace`), as a module's
UART does. `ga467_read_ms` is that exchange as the driver sees it; `ga467_line_ms` is the time
its bytes need on the line, both ways (10 bits a byte): what is left between the two is our
software. What the emulator does not model is the module's own time to read the card over the
air (several hundred ms on real modules, by their data sheets): add that for a real reader.
"""

from __future__ import annotations

from pathlib import Path

from drivers import sam_ga467 as ga
from rigs.ga467 import CHEN_JING, Ga467Emulator
from rigs.pty import PtyPair

BAUD = 115200


def exchange_bytes() -> int:
    """Bytes on the line for find, select and read: three 10-byte commands and their answers."""
    commands = 3 * len(ga.command(ga.FIND))
    answers = len(ga.answer(ga.FIND_OK, bytes(4))) + len(ga.answer(ga.OK, bytes(8))) + 7 + 3 + 4 + ga.TEXT_BYTES + ga.PHOTO_BYTES + 1
    return commands + answers


def bench_ga467(root: Path, reads: int, pct) -> dict:
    pty = PtyPair(root / "ttyID", root / "ttyIDDEV").start()
    emulator = Ga467Emulator(root / "ttyIDDEV", baud=BAUD, pace=True)
    emulator.start()
    if not emulator.wait_ready():
        raise RuntimeError("the GA 467 emulator could not open its end of the pty")
    times: list[float] = []
    failed = 0
    try:
        emulator.present(CHEN_JING)
        watcher = ga.Ga467Watcher(str(root / "ttyID"), lambda read: None, baud=BAUD)
        with watcher.session():
            import time

            for _ in range(reads):
                t0 = time.perf_counter_ns()
                try:
                    ident = watcher.read_once()
                except (ga.ReadAborted, ga.SamError):
                    ident = None
                if ident is None or ident.idno != CHEN_JING.idno:
                    failed += 1
                    continue
                times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        emulator.stop()
        pty.stop()
    if failed:
        raise RuntimeError(f"{failed} of {reads} GA 467 reads failed against the emulator")
    return {"ga467_read_ms": {"p50": pct(times, 50), "p99": pct(times, 99)},
            "ga467_line_ms": round(ga.wire_ms(exchange_bytes(), BAUD), 2)}
