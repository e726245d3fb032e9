"""What the community office does on central, for the console and the command line alike: visitor
passes, alarms, care flags, residents and events. Each call borrows a connection from central's
store (SQLite or PostgreSQL), and every view of identity data is audited.
"""

from __future__ import annotations

import json
from typing import Any

from central import alarms, passes, staff
from central.registrations import audit
from central.server import Central, Published


class Office:
    def __init__(self, central: Central):
        self.central = central
        self.store = central.store

    # -- staff ----------------------------------------------------------------------------------
    def log_in(self, name: str, password: str) -> str | None:
        """The account's role, None for a wrong password; staff.LockedOut after too many."""
        with self.store.use() as db:
            return staff.log_in(db, name, password)

    def refused(self, who: str, action: str, subject: str) -> None:
        """An action the user's role does not allow, written to the audit log."""
        with self.store.use() as db:
            audit(db, who, action, subject)

    def audit_log(self, limit: int = 300) -> list[tuple[Any, ...]]:
        with self.store.use() as db:
            return db.execute("SELECT ts, who, action, subject, detail FROM audit ORDER BY rowid DESC LIMIT ?", (limit,)).fetchall()

    # -- passes ---------------------------------------------------------------------------------
    def issue_pass(self, *, host: str, doors: tuple[str, ...], uses: int, hours: float, who: str) -> passes.Issued:
        with self.store.use() as db:
            return passes.issue(db, self.central.signer, self.central.site, host=host, doors=doors, uses=uses,
                                who=who, hours=hours)

    def revoke_pass(self, pass_id: str, who: str) -> Published:
        """Revoked on central, then on every gateway through the list (a delta at once)."""
        with self.store.use() as db:
            row = passes.revoke(db, self.central.tokenizer, pass_id, who)
        return self.central.apply_changes([row])

    def passes(self) -> list[dict[str, Any]]:
        with self.store.use() as db:
            return passes.listing(db)

    def hosts(self, who: str) -> list[tuple[str, str]]:
        """Residents (reference, name) a pass can name as its host; audited: names are shown."""
        with self.store.use() as db:
            rows = db.execute("SELECT ref, name FROM persons ORDER BY name").fetchall()
            audit(db, who, "hosts_listed", "", f"{len(rows)} shown")
        return rows

    # -- alarms ---------------------------------------------------------------------------------
    def alarms(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        with self.store.use() as db:
            return alarms.listing(db, open_only=open_only)

    def acknowledge(self, alarm_id: int, who: str) -> bool:
        with self.store.use() as db:
            return alarms.acknowledge(db, alarm_id, who)

    # -- care -----------------------------------------------------------------------------------
    def set_care(self, person: str, *, quiet_h: float, consent_by: str, who: str) -> None:
        with self.store.use() as db:
            alarms.set_care(db, person, quiet_h=quiet_h, consent_by=consent_by, who=who)

    def end_care(self, person: str, who: str) -> None:
        with self.store.use() as db:
            alarms.end_care(db, person, who)

    # -- residents and events -------------------------------------------------------------------
    def residents(self, who: str) -> list[dict[str, Any]]:
        """Households: each person's name, building and room (from an approved registration), lease
        end, credentials by kind (counts, never a number), care flag. Audited: names are shown."""
        with self.store.use() as db:
            people: dict[str, dict[str, Any]] = {
                ref: {"ref": ref, "name": name, "building": None, "room": None, "lease_end": None, "credentials": {}, "care": None}
                for ref, name in db.execute("SELECT ref, name FROM persons ORDER BY name")}
            for (row,) in db.execute("SELECT row FROM entries"):
                _, kind, person, *_ = json.loads(row)
                if person in people and kind != "pass_revoked":
                    creds = people[person]["credentials"]
                    creds[kind] = creds.get(kind, 0) + 1
            for person, building, room, lease_end in db.execute(
                    "SELECT person, building, room, lease_end FROM registrations WHERE state='approved' AND person IS NOT NULL"):
                if person in people:
                    people[person].update(building=building, room=room, lease_end=lease_end)
            for person, quiet_s, consent_by in db.execute("SELECT person, quiet_s, consent_by FROM care"):
                if person in people:
                    people[person]["care"] = {"quiet_h": quiet_s / 3600, "consent_by": consent_by}
            audit(db, who, "residents_viewed", "", f"{len(people)} shown")
        return list(people.values())

    def last_events(self) -> dict[str, float]:
        """Each gateway's newest event time."""
        with self.store.use() as db:
            return dict(db.execute("SELECT gw, max(ts) FROM events GROUP BY gw").fetchall())

    def events(self, *, door: str | None = None, reason: str | None = None, since: float | None = None, until: float | None = None,
               before_rowid: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """A page of events, newest first, filtered; `before_rowid` pages on (never everything at once)."""
        sql = "SELECT rowid, gw, body FROM events WHERE 1=1"
        args: list[Any] = []
        for clause, value in (("door = ?", door), ("__reason__ = ?", reason),
                              ("ts >= ?", since), ("ts < ?", until), ("rowid < ?", before_rowid)):
            if value is not None and value != "":
                sql += f" AND {clause}"
                args.append(value)
        sql += " ORDER BY rowid DESC LIMIT ?"
        args.append(limit)
        with self.store.use() as db:
            rows = db.execute(sql.replace("__reason__", db.json_text("body", "reason")), args).fetchall()
        return [{"rowid": rid, "gw": gw, **json.loads(body)} for rid, gw, body in rows]
