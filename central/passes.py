"""Visitor passes on central: issued by the office for a host, signed, shown as a QR code; revoked
through the list, so that a revocation reaches every gateway like any other list change.

Central keeps what it issued (pass id, host reference, doors, window, uses, who issued it) and
never the token's text: the QR code is shown once, to be handed to the visitor. A revocation is a
list row of kind `pass_revoked` (token = the site key's HMAC of "pass:" + the pass id), kept in the
list until the pass's window has ended.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from central.registrations import audit
from central.store import Db
from edge.privacy import Tokenizer
from edge.store.whitelist import Entry
from protocol import Signer
from protocol import passes as tokens
from protocol.passes import VisitorPass

DEFAULT_HOURS = 2.0   # a forwarded photo of the code opens the door within its window: keep it short
MAX_HOURS = 72.0


class PassError(Exception):
    """A pass that cannot be issued or revoked (a bad window, no such pass, already revoked)."""


@dataclass(frozen=True)
class Issued:
    visitor_pass: VisitorPass
    text: str  # the QR code's content: a bearer credential, shown once and never stored

    def png(self, scale: int = 6) -> bytes:
        import segno  # central's extra: a gateway install has no QR writer

        buf = io.BytesIO()
        segno.make(self.text, error="m").save(buf, kind="png", scale=scale, border=4)
        return buf.getvalue()

    def terminal(self) -> str:
        import segno

        buf = io.StringIO()
        segno.make(self.text, error="m").terminal(out=buf, compact=True)
        return buf.getvalue()


def issue(db: Db, signer: Signer, site: str, *, host: str, doors: tuple[str, ...], uses: int, who: str,
          hours: float = DEFAULT_HOURS, start: float | None = None) -> Issued:
    if not site:
        raise PassError("central.site is empty: a pass names its site; set [central] site = \"...\" in central.toml")
    if not 0 < hours <= MAX_HOURS:
        raise PassError(f"a pass lasts more than 0 and at most {MAX_HOURS:g} hours (got {hours:g})")
    known = db.execute("SELECT 1 FROM persons WHERE ref=?", (host,)).fetchone()
    if known is None:
        raise PassError(f"no resident {host!r}: the host is a resident's reference (see the residents page)")
    begin = int(time.time() if start is None else start)
    try:
        p = VisitorPass(tokens.new_id(), site, tuple(doors), begin, begin + int(hours * 3600), uses, host)
    except ValueError as exc:
        raise PassError(str(exc)) from None
    with db.tx() as c:
        c.execute("INSERT INTO passes(id, host, doors, not_before, not_after, uses, issued_by, issued_at) VALUES (?,?,?,?,?,?,?,?)",
                  (p.id, p.host, json.dumps(list(p.doors)), p.not_before, p.not_after, p.uses, who, time.time()))
        audit(c, who, "pass_issued", p.id, json.dumps({"host": host, "doors": list(doors), "hours": hours, "uses": uses}))
    return Issued(p, tokens.issue(signer, p))


def revoke(db: Db, tokenizer: Tokenizer, pass_id: str, who: str) -> Entry:
    """Mark a pass revoked; the list row the caller publishes."""
    row = db.execute("SELECT host, not_after, revoked_by FROM passes WHERE id=?", (pass_id,)).fetchone()
    if row is None:
        raise PassError(f"no pass {pass_id!r}")
    host, not_after, revoked_by = row
    if revoked_by:
        raise PassError(f"pass {pass_id} was already revoked by {revoked_by}")
    with db.tx() as c:
        c.execute("UPDATE passes SET revoked_by=?, revoked_at=? WHERE id=?", (who, time.time(), pass_id))
        audit(c, who, "pass_revoked", pass_id)
    return revocation(tokenizer, pass_id, host, not_after)


def revocation(tokenizer: Tokenizer, pass_id: str, host: str, not_after: float) -> Entry:
    return Entry(tokenizer.token_raw("pass", pass_id), "pass_revoked", host, None, None, datetime.fromtimestamp(not_after))


def revocations(db: Db, tokenizer: Tokenizer, now: float | None = None) -> list[Entry]:
    """The revocations still worth listing (the pass's window has not ended): a list published
    from the residents file keeps them."""
    now = time.time() if now is None else now
    return [revocation(tokenizer, pid, host, na) for pid, host, na in
            db.execute("SELECT id, host, not_after FROM passes WHERE revoked_by IS NOT NULL AND not_after > ?", (now,))]


def listing(db: Db, *, limit: int = 200) -> list[dict[str, Any]]:
    cur = db.execute("SELECT id, host, doors, not_before, not_after, uses, issued_by, issued_at, revoked_by, revoked_at "
                     "FROM passes ORDER BY issued_at DESC LIMIT ?", (limit,))
    names = [d[0] for d in cur.description]
    out = []
    for r in cur.fetchall():
        d = dict(zip(names, r, strict=True))
        d["doors"] = json.loads(d["doors"])
        out.append(d)
    return out
