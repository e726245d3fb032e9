"""`bench faults`, the watchdog part: a stall of each watched part, each one seen.

The daemon's App runs in this process (systemd's notify socket is ours: `rigs.watchdog`)
with every part it has: readers, relay link, journal, sync and MQTT threads, the vision thread, two
cameras and the worker. Each vital part's own thread is made to block (as a driver call that never
returns would) and must stop the WATCHDOG=1 pings; the loop is blocked and no ping may come; a
camera stuck in its driver must be replaced, a hung worker killed and started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from rigs.rig import wait_until
from rigs.vcard import VPCD_PORTS, VirtualCard
from rigs.watchdog import NotifySocket, stall, vital_stalls

if TYPE_CHECKING:
    from devtools.bench_faults import FaultRig

WATCHDOG_USEC = 3_000_000  # pings every 1.5 s; a part silent for 5 s is stalled


def watchdog_stalls(fr: FaultRig) -> int:
    from devtools.bench_faults import RESIDENTS, say
    from edge.app import App
    from edge.vision import service as vision_service
    from edge.vision import worker as vision_worker

    fr.stop()
    fr.write_config(cameras=True)
    notify = NotifySocket(fr.root / "notify.sock")
    saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DOOR_EDGE_MODELS")}
    old_stall, old_hang = vision_service.CAMERA_STALL_S, vision_worker.HANG_S
    os.environ.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(WATCHDOG_USEC), WATCHDOG_PID=str(os.getpid()),
                      DOOR_EDGE_MODELS=str(fr.models))
    vision_service.CAMERA_STALL_S, vision_worker.HANG_S = 2.0, 3.0
    app = App(fr.rig.config_path)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(app.run(),), name="app", daemon=True)
    runner.start()
    seen: list[str] = []
    try:
        wait_until(lambda: app.parts is not None and app.parts.vision is not None and app.parts.vision.worker.ready
                   and app.parts.sync is not None and app.parts.sync.mqtt.connected, 120, "the app with every part")
        parts = app.parts
        assert parts is not None and parts.vision is not None and parts.sync is not None and parts.watcher is not None
        wait_until(lambda: notify.pings >= 2 and all(c.frames > 3 for c in parts.vision.cameras.values()), 30, "pings, frames")
        held: list[VirtualCard] = []

        def card() -> None:
            c = VirtualCard(RESIDENTS[1], port=VPCD_PORTS[0])
            c.insert()
            held.append(c)

        vital = vital_stalls(parts, card)
        for name, (obj, attr, trigger) in vital.items():
            release = threading.Event()
            restore = stall(obj, attr, release)
            if trigger is not None:
                trigger()
            wait_until(lambda: name in parts.heartbeats.stale(), 20, f"{name} seen stalled")
            before = notify.pings
            time.sleep(2 * WATCHDOG_USEC / 2e6 + 0.2)  # two ping intervals
            if notify.pings == before:
                seen.append(name)
            restore()
            release.set()
            for c in held:
                c.remove()
            held.clear()
            wait_until(lambda: not parts.heartbeats.stale(), 20, f"{name} beating again")
            wait_until(lambda: notify.pings > before, 10, f"pings after {name}")
        release = threading.Event()
        before = notify.pings
        loop.call_soon_threadsafe(release.wait, 4.0)  # the event loop itself
        time.sleep(3.5)
        if notify.pings == before:
            seen.append("loop")
        release.set()
        wait_until(lambda: notify.pings > before, 15, "pings after the loop")
        cam = parts.vision.cameras["lobby-cam"]
        stuck = threading.Event()
        cam._src.read = stuck.wait  # type: ignore[union-attr]  # an RTSP read that never returns
        replaced = parts.vision.replaced
        wait_until(lambda: parts.vision.replaced > replaced, 20, "the stuck camera replaced")
        seen.append("camera")
        stuck.set()
        worker = parts.vision.worker
        hangs, pid = worker.stats.hangs, worker.pid
        os.kill(pid, signal.SIGSTOP)  # a native hang with frames in it
        wait_until(lambda: worker.stats.hangs > hangs, 20, "the hung worker killed")
        wait_until(lambda: worker.ready and worker.pid != pid, 60, "a fresh worker")
        seen.append("worker")
        say(f"watchdog: stalls seen for {', '.join(seen)} ({len(seen)} of {len(vital) + 3} watched parts)")
    finally:
        loop.call_soon_threadsafe(app.stop)
        runner.join(30)
        notify.close()
        vision_service.CAMERA_STALL_S, vision_worker.HANG_S = old_stall, old_hang
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return len(seen)
