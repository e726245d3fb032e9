"""What the running parts look like, in the three places they are shown: telemetry to central, the
status socket that `door-edge diag` and the bench read (edge.status), and systemd's STATUS= line.
No personal data: states, counters and ids of devices only."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.app import Parts


def health(parts: Parts) -> dict:
    """For telemetry: readers, relays, every reconnecting part, the journal's storage."""
    w = parts.watcher
    readers = {"service_up": w.service_up, "readers": sorted(w.readers)} if w is not None else {}
    return {"readers": readers,
            "relays": {port: {"up": link.up, "corrections": link.stats.corrections} for port, link in parts.links.items()},
            "parts": reconnecting(parts), "storage": storage(parts)}


def reconnecting(parts: Parts) -> dict[str, dict]:
    """Every part that reconnects: up, since, attempts in the current outage, outages."""
    out: dict[str, dict] = {}
    if parts.watcher is not None:
        out["pcscd"] = dict(parts.watcher.reconnects.snapshot().as_dict(), readers=sorted(parts.watcher.readers))
    for idr in parts.id_readers:
        out[f"id-reader:{idr.port}"] = dict(idr.reconnects.snapshot().as_dict(), card=idr.present)
    for port, link in parts.links.items():
        out[f"relay:{port}"] = dict(link.reconnects.snapshot().as_dict(), writes=link.stats.writes,
                                    corrections=link.stats.corrections)
    if parts.sync is not None:
        out["mqtt"] = parts.sync.mqtt.reconnects.snapshot().as_dict()
    if parts.vision is not None:
        out.update(parts.vision.parts())
    return out


def storage(parts: Parts) -> dict:
    return dict(parts.outbox.storage(), flush_failures=parts.flusher.failures, durable_seq=parts.flusher.durable_seq)


def counters(parts: Parts) -> dict[str, int]:
    """What was refused or survived, by part: garbage from a reader, a board, the network."""
    out: dict[str, int] = {}
    if parts.watcher is not None:
        out.update({f"pcsc.{k}": v for k, v in parts.watcher.counters.items()})
    for idr in parts.id_readers:
        out.update({f"id-reader:{idr.port}.{k}": v for k, v in (idr.counters + idr.parser.counters).items()})
    if parts.passages.write_failures:
        out["passback.write_failures"] = parts.passages.write_failures
    for port, link in parts.links.items():
        parser = getattr(link, "parser", None)
        if parser is not None:
            out.update({f"relay:{port}.garbage_bytes": parser.stats.garbage_bytes, f"relay:{port}.bad_crc": parser.stats.bad_crc,
                        f"relay:{port}.frames": parser.stats.frames})
    if parts.sync is not None:
        out.update(parts.sync.counters())
        out["sync.malformed_total"] = parts.sync.malformed_total()
    return out


def snapshot(parts: Parts, **about) -> dict:
    """The status socket's document; `about`: the daemon's own (pid, start, config, watchdog, reloads)."""
    return {**about, "state": "running", "parts": reconnecting(parts), "heartbeats": parts.heartbeats.ages(),
            "stale": parts.heartbeats.stale(), "storage": storage(parts),
            "journal": {"last_seq": parts.outbox.last_seq(), "depth": parts.outbox.depth()},
            "whitelist": {"version": parts.whitelist.version, "count": len(parts.whitelist)},
            "retention": {"runs": parts.retention.runs, "failures": parts.retention.failures},
            "alarms": open_alarms(parts), "counters": counters(parts)}


def open_alarms(parts: Parts) -> list[dict[str, str]]:
    """The alarms standing now (edge.access.alarms), for diag and the status socket."""
    return [{"alarm": name, "door": door, "subject": subject} for name, door, subject in sorted(parts.controller.alarms.open)]


def status_line(p: Parts) -> str:
    """systemd's STATUS= (`systemctl status door-edge`)."""
    links = ", ".join(f"{port} {'up' if link.up else 'DOWN'}" for port, link in p.links.items())
    readers = "no pcscd" if p.watcher is not None and not p.watcher.service_up else f"{len(p.watcher.readers) if p.watcher else 0} reader(s)"
    central = ""
    if p.sync is not None:
        central = f"; central {'connected' if p.sync.mqtt.connected else 'OFFLINE'}{', list STALE' if p.sync.is_stale else ''}"
    cameras = ""
    if p.vision is not None:
        w = p.vision.worker.stats
        down = [cid for cid, cam in p.vision.cameras.items() if not cam.reconnects.is_up and not cam.ended]
        cameras = (f"; cameras: {len(p.vision.cameras) - len(down)}/{len(p.vision.cameras)} up, {p.vision.enrolled} face(s) "
                   f"enrolled, worker {'up' if p.vision.worker.ready else 'DOWN'}, {w.restarts} restart(s)")
    journal = "; JOURNAL NOT WRITABLE" if p.outbox.pending else ""
    alarms = f"; ALARMS: {', '.join(sorted({name for name, _, _ in p.controller.alarms.open}))}" if p.controller.alarms.open else ""
    return (f"{readers}; relays: {links}; whitelist v{p.whitelist.version}; journal seq {p.outbox.last_seq()}"
            f"{central}{cameras}{journal}{alarms}")
