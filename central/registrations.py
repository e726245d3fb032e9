"""New-tenant registrations on central (以房屋管人: every tenant of a rental home is registered).

A gateway's reader in register mode seals the identity on the ID card to central's registration key
and journals a `registration_sent` event carrying only the idno token and the sealed bytes. Central
opens it as the event is ingested, in the same transaction (so the gateway's event is acknowledged
only once the registration is on central's disk), and keeps it pending for the community office:

- `approve`: the household (building, room), the lease end and who approved; the tenant's `idno`
  (and an IC card issued at the desk) join the list under a new opaque person reference, valid to
  the lease end, pushed to the gateways as a delta: the next swipe opens.
- `reject`: with a note; nothing is listed.
- `export`: the residence-registration list (CSV) a police station asks for.

Central is the one place that holds identities; each listing and export is written to `audit`
(who, when, what), and the audit and the events keep tokens and registration ids, never names.
"""

from __future__ import annotations

import csv
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import protocol
from central.store import Db
from edge.privacy import Tokenizer, short
from edge.store.whitelist import Entry, from_row, to_row

log = logging.getLogger(__name__)

EXPORT_COLUMNS = ("registration", "name", "sex", "nation", "birth", "idno", "card_address", "card_authority", "card_valid_to",
                  "site", "building", "room", "lease_end", "approved_by", "approved_at", "gateway", "door")


class RegistrationError(Exception):
    """An office command that cannot be carried out (no such registration, already decided, a bad value)."""


@dataclass(frozen=True)
class Registration:
    id: str
    gw: str
    door: str | None
    token: str
    identity: protocol.RegisteredIdentity
    received: float
    state: str
    building: str | None
    room: str | None
    lease_end: str | None
    decided_by: str | None

    def summary(self) -> dict[str, Any]:
        """What the office's list shows: the name is needed to tell tenants apart (audited)."""
        return {"id": self.id, "state": self.state, "name": self.identity.name, "token": short(self.token), "gateway": self.gw,
                "door": self.door, "received": round(self.received, 3), "building": self.building, "room": self.room,
                "lease_end": self.lease_end, "decided_by": self.decided_by}


def audit(db: Db, who: str, action: str, subject: str = "", detail: str = "") -> None:
    db.execute("INSERT INTO audit(ts, who, action, subject, detail) VALUES (?,?,?,?,?)", (time.time(), who, action, subject, detail))


def ingest(db: Db, gw: str, event: dict[str, Any], private_key: bytes | None, tokenizer: Tokenizer) -> str | None:
    """Inside the caller's ingest transaction: open a `registration_sent` event and keep it pending.
    Returns the registration id, or None when it could not be opened (counted by the caller; the
    event is kept whole, sealed, so that it can be opened once the right key is installed)."""
    sealed = event.get("sealed")
    if private_key is None or not isinstance(sealed, str):
        return None
    ident = protocol.open_registration(private_key, sealed)  # Rejected("undecryptable" | "malformed")
    token = tokenizer.token("idno", ident.idno)
    row = db.execute("SELECT id FROM registrations WHERE token=? AND state='pending'", (token,)).fetchone()
    reg_id = row[0] if row else f"reg-{secrets.token_hex(4)}"
    if row:  # the tenant presented the card again before the office decided: the latest read wins
        db.execute("UPDATE registrations SET gw=?, event_id=?, door=?, identity=?, received=? WHERE id=?",
                   (gw, event["id"], event.get("door"), ident.model_dump_json(), time.time(), reg_id))
    else:
        db.execute("INSERT INTO registrations(id, gw, event_id, door, token, identity, received) VALUES (?,?,?,?,?,?,?)",
                   (reg_id, gw, event["id"], event.get("door"), token, ident.model_dump_json(), time.time()))
    event.pop("sealed")  # opened and kept in `registrations`: the event itself keeps the token only
    event["detail"] = reg_id
    return reg_id


def _load(row: tuple[Any, ...]) -> Registration:
    rid, gw, door, token, identity, received, state, building, room, lease_end, by = row
    return Registration(rid, gw, door, token, protocol.RegisteredIdentity.model_validate_json(identity), received, state, building,
                        room, lease_end, by)


_COLS = "id, gw, door, token, identity, received, state, building, room, lease_end, decided_by"


def listing(db: Db, who: str, *, states: tuple[str, ...] = ("pending",)) -> list[Registration]:
    """Registrations in `states`, oldest first; the view is audited."""
    marks = ",".join("?" * len(states))
    with db.tx() as c:
        rows = c.execute(f"SELECT {_COLS} FROM registrations WHERE state IN ({marks}) ORDER BY received", states).fetchall()  # noqa: S608 - placeholders only
        audit(c, who, "registrations_viewed", ",".join(states), f"{len(rows)} shown")
    return [_load(r) for r in rows]


def get(db: Db, reg_id: str) -> Registration:
    row = db.execute(f"SELECT {_COLS} FROM registrations WHERE id=?", (reg_id,)).fetchone()  # noqa: S608 - constant columns
    if row is None:
        raise RegistrationError(f"no registration {reg_id!r} (see `registrations`)")
    return _load(row)


def approval_entries(tokenizer: Tokenizer, reg: Registration, person: str, *, doors: frozenset[str] | None, until: date,
                     ic: str | None) -> list[Entry]:
    """The list rows an approval adds: the ID number, and the desk's IC card if one was issued,
    valid through the lease's last day."""
    end = datetime.combine(until + timedelta(days=1), clock_time())
    out = [Entry(reg.token, "idno", person, doors, None, end)]
    if ic:
        try:
            out.append(Entry(tokenizer.token("ic", ic), "ic", person, doors, None, end))
        except ValueError as exc:
            raise RegistrationError(f"--ic: {exc}") from None
    return out


def decide(db: Db, reg: Registration, *, approved: bool, who: str, building: str | None = None, room: str | None = None,
           lease_end: date | None = None, person: str | None = None, entries: list[Entry] | None = None, note: str = "") -> None:
    """Record the office's decision (inside no transaction of the caller's)."""
    entries = entries or []
    if reg.state != "pending":
        raise RegistrationError(f"{reg.id} was already {reg.state} by {reg.decided_by}")
    with db.tx() as c:
        c.execute("UPDATE registrations SET state=?, building=?, room=?, lease_end=?, person=?, entries=?, decided_by=?, decided_at=?, "
                  "note=? WHERE id=? AND state='pending'",
                  ("approved" if approved else "rejected", building, room, lease_end.isoformat() if lease_end else None, person,
                   json.dumps([to_row(e) for e in entries]), who, time.time(), note, reg.id))
        if approved and person is not None:
            c.execute("INSERT INTO persons VALUES (?,?) ON CONFLICT(ref) DO UPDATE SET name=excluded.name", (person, reg.identity.name))
        audit(c, who, "registration_approved" if approved else "registration_rejected", reg.id,
              json.dumps({"token": short(reg.token), "doors": sorted({d for e in entries for d in (e.doors or {"*"})}),
                          "until": lease_end.isoformat() if lease_end else None}))


def listed_entries(db: Db, now: datetime | None = None) -> list[Entry]:
    """The rows approvals added that are still within their lease: a residents CSV published later
    keeps them (the tenants registered through the office are not in the installer's file)."""
    now = now or datetime.now()
    out = []
    for (rows,) in db.execute("SELECT entries FROM registrations WHERE state='approved' AND entries IS NOT NULL"):
        for r in json.loads(rows):
            e = from_row(tuple(r))
            if e.valid_to is None or e.valid_to > now:
                out.append(e)
    return out


def export_csv(db: Db, path: Path, who: str, site: str) -> int:
    """The residence-registration list of approved tenants, for the police station; audited."""
    with db.tx() as c:
        rows = c.execute(f"SELECT {_COLS}, decided_at FROM registrations WHERE state='approved' ORDER BY decided_at").fetchall()  # noqa: S608
        audit(c, who, "registrations_exported", str(path), f"{len(rows)} row(s)")
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(EXPORT_COLUMNS)
        for r in rows:
            reg, at = _load(r[:-1]), r[-1]
            i = reg.identity
            w.writerow([reg.id, i.name, {"1": "男", "2": "女"}.get(i.sex, i.sex), i.nation, i.birth, i.idno, i.address, i.authority,
                        i.valid_to or "长期", site, reg.building or "", reg.room or "", reg.lease_end or "", reg.decided_by or "",
                        datetime.fromtimestamp(at).isoformat(timespec="seconds") if at else "", reg.gw, reg.door or ""])
    return len(rows)


def new_person_ref() -> str:
    """A random opaque reference (the same shape as Tokenizer.person_ref's): it says nothing of the person."""
    return "p-" + secrets.token_hex(8)
