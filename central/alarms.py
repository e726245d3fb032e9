"""Alarms on central: what gateways raise through their outbox, and the care rule central raises
itself; open until cleared, acknowledged by the office (who, when), forwarded once to a webhook.

A gateway raises an alarm as an event (type `alarm`, a severity, later the same alarm `cleared`);
central keeps one row per incident, keyed (gateway, name, door, subject): a second raise of an
alarm that is still open is the same incident (the partial unique index says so), and a resent
batch is no new incident because ingest sees only fresh events. A gateway that restarts raises
again whatever still stands, so its `started` event clears what it had open.

Care for residents living alone (独居老人关爱): with the resident's consent recorded, a person is
flagged with a quiet period; a period with no door event by any of that person's credentials raises
`care_quiet` (gateway `central`, subject the person's reference), and their next door event clears
it. Central computes it from the events it already has; the gateways learn nothing new.
"""

from __future__ import annotations

import json
import time
from typing import Any

from central.registrations import audit
from central.store import Db

CENTRAL = "central"  # the gateway column of the alarms central raises itself
CARE = "care_quiet"


def _queue(db: Db, alarm_id: int) -> None:
    """Into the webhook's queue, in the caller's transaction: forwarded once the commit holds."""
    db.execute("INSERT INTO webhook_queue(alarm) VALUES (?) ON CONFLICT DO NOTHING", (alarm_id,))


def raise_alarm(db: Db, gw: str, name: str, *, door: str = "", subject: str = "", severity: str = "major",
                ts: float | None = None, event_id: str | None = None) -> int | None:
    """A new incident's id, or None when the same alarm is already open."""
    row = db.execute("INSERT INTO alarms(gw, name, door, subject, severity, raised, raised_event) VALUES (?,?,?,?,?,?,?) "
                     "ON CONFLICT DO NOTHING RETURNING id",
                     (gw, name, door, subject, severity, time.time() if ts is None else ts, event_id)).fetchone()
    if row is None:
        return None
    alarm_id = int(row[0])
    _queue(db, alarm_id)
    return alarm_id


def clear(db: Db, gw: str, name: str, *, door: str = "", subject: str = "", ts: float | None = None,
          note: str = "") -> int:
    return db.execute("UPDATE alarms SET cleared=?, clear_note=? WHERE gw=? AND name=? AND door=? AND subject=? AND cleared IS NULL",
                      (time.time() if ts is None else ts, note or None, gw, name, door, subject)).rowcount


def ingest(db: Db, gw: str, event: dict[str, Any]) -> int | None:
    """Inside the ingest transaction, for a fresh event of a gateway."""
    if event.get("type") == "system" and event.get("reason") == "started":
        db.execute("UPDATE alarms SET cleared=?, clear_note='gateway restarted' WHERE gw=? AND cleared IS NULL AND raised < ?",
                   (event["ts"], gw, event["ts"]))
        return None
    if event.get("type") != "alarm" or not isinstance(event.get("reason"), str):
        return None
    door, subject = str(event.get("door") or ""), str(event.get("detail") or "")
    severity = str(event.get("severity") or "major")
    if severity == "cleared":
        clear(db, gw, event["reason"], door=door, subject=subject, ts=event["ts"])
        return None
    return raise_alarm(db, gw, event["reason"], door=door, subject=subject, severity=severity, ts=event["ts"], event_id=event["id"])


def acknowledge(db: Db, alarm_id: int, who: str) -> bool:
    with db.tx() as c:
        n = c.execute("UPDATE alarms SET acked_by=?, acked_at=? WHERE id=? AND acked_by IS NULL", (who, time.time(), alarm_id)).rowcount
        if n:
            audit(c, who, "alarm_acknowledged", str(alarm_id))
    return bool(n)


def listing(db: Db, *, open_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
    cur = db.execute("SELECT id, gw, name, door, subject, severity, raised, cleared, clear_note, acked_by, acked_at FROM alarms "
                     "WHERE cleared IS NULL OR ? = 0 ORDER BY raised DESC LIMIT ?", (int(open_only), limit))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


# -- care --------------------------------------------------------------------------------------
def set_care(db: Db, person: str, *, quiet_h: float, consent_by: str, who: str) -> None:
    """Flag a resident as cared-for; the consent (who recorded it, when) is kept with the flag."""
    if db.execute("SELECT 1 FROM persons WHERE ref=?", (person,)).fetchone() is None:
        raise ValueError(f"no resident {person!r}")
    if not 1 <= quiet_h <= 24 * 14:
        raise ValueError("a quiet period is 1 hour to 14 days")
    now = time.time()
    with db.tx() as c:
        c.execute("INSERT INTO care(person, quiet_s, consent_by, consent_at, last_seen) VALUES (?,?,?,?,NULL) "
                  "ON CONFLICT(person) DO UPDATE SET quiet_s=excluded.quiet_s, consent_by=excluded.consent_by, consent_at=excluded.consent_at",
                  (person, quiet_h * 3600, consent_by, now))
        audit(c, who, "care_set", person, json.dumps({"quiet_h": quiet_h, "consent_by": consent_by}))


def end_care(db: Db, person: str, who: str) -> None:
    with db.tx() as c:
        c.execute("DELETE FROM care WHERE person=?", (person,))
        clear(c, CENTRAL, CARE, subject=person, note="care ended")
        audit(c, who, "care_ended", person)


def seen(db: Db, token_short: str, ts: float) -> None:
    """Inside ingest: a door event by a credential (short token); a cared-for person's clock restarts,
    and their open care alarm is cleared."""
    row = db.execute(f"SELECT {db.json_text('row', 2)} FROM entries WHERE token >= ? AND token < ? LIMIT 1",  # noqa: S608 - our own column
                     (token_short, token_short + "g")).fetchone()
    if row is None:
        return
    person = row[0]
    if db.execute("UPDATE care SET last_seen=CASE WHEN coalesce(last_seen, 0) > ? THEN last_seen ELSE ? END WHERE person=?",
                  (ts, ts, person)).rowcount:
        clear(db, CENTRAL, CARE, subject=person, ts=ts, note="seen at a door")


def check_care(db: Db, now: float | None = None) -> list[int]:
    """Raise `care_quiet` for every cared-for person quiet for longer than their period."""
    now = time.time() if now is None else now
    raised = []
    with db.tx() as c:
        rows = c.execute("SELECT person, quiet_s, CASE WHEN consent_at > coalesce(last_seen, 0) THEN consent_at ELSE last_seen END "
                         "FROM care").fetchall()
        for person, quiet_s, since in rows:
            if now - since >= quiet_s:
                alarm_id = raise_alarm(c, CENTRAL, CARE, subject=person, severity="major", ts=now)
                if alarm_id is not None:
                    raised.append(alarm_id)
    return raised
