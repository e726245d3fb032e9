"""The office's staff accounts: names, argon2 password hashes, and a role.

Two roles: `staff` (the office's daily work) and `police` (the police liaison, who alone may export
identities for the residence-registration list). Accounts are made on the server's command line
(`door-edge central user add`), never through the web.
"""

from __future__ import annotations

import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from central.store import Db

ROLES = ("staff", "police")
LOCKOUT_AFTER, LOCKOUT_S = 5, 900  # five wrong passwords for a name within 15 minutes lock it for the rest of them
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("a password nobody has")  # an unknown name costs as long as a wrong password


class StaffError(Exception):
    """An account that cannot be made (a bad name or role, a short password)."""


class LockedOut(Exception):
    """Too many wrong passwords for this name lately: no password is checked."""


def add(db: Db, name: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise StaffError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if not name.isidentifier() or len(name) > 32:
        raise StaffError(f"name {name!r}: letters, digits and _ only, at most 32")
    if len(password) < 10:
        raise StaffError("a password has at least 10 characters")
    with db.tx() as c:
        c.execute("INSERT INTO staff VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE SET hash=excluded.hash, role=excluded.role",
                  (name, _hasher.hash(password), role, time.time()))


def check(db: Db, name: str, password: str) -> str | None:
    """The account's role if the password is right, else None."""
    row = db.execute("SELECT hash, role FROM staff WHERE name=?", (name,)).fetchone()
    try:
        _hasher.verify(row[0] if row else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    return row[1] if row else None


def log_in(db: Db, name: str, password: str) -> str | None:
    """The role for a right password, None for a wrong one, LockedOut after too many wrong ones;
    every attempt is in the audit log (which is also what the lockout counts)."""
    from central.registrations import audit

    failed = db.execute("SELECT count(*) FROM audit WHERE who=? AND action='login_failed' AND ts > ?",
                        (name, time.time() - LOCKOUT_S)).fetchone()[0]
    if failed >= LOCKOUT_AFTER:
        audit(db, name, "login_locked")
        raise LockedOut(name)
    role = check(db, name, password)
    audit(db, name, "login" if role else "login_failed")
    return role
