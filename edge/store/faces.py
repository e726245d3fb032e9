"""Face templates, encrypted at rest (AES-256-GCM), in their own database file.

Templates are enrolled on the gateway and never leave it. Each row is sealed with a random nonce
and the person id and slot as associated data, so a ciphertext cannot be moved to another person.
The key is 32 random bytes (hex) in a file, read from `$CREDENTIALS_DIRECTORY` like the site key;
without it the rows are noise. Removing a person deletes their rows and vacuums the file so the
ciphertexts do not linger in free pages.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import SetupError
from edge.privacy import SiteKeyError, load_key
from edge.store.db import Transaction, open_db

FACES_DB = "faces.db"
_MIGRATIONS = ["""
    CREATE TABLE templates (person TEXT NOT NULL, slot INTEGER NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL,
                            PRIMARY KEY (person, slot));
"""]
DIM = 128


class TemplateKeyError(SetupError):
    """The template key is missing, unusable, or not the key the templates were sealed with."""


def load_template_key(path: Path) -> bytes:
    try:
        key = load_key(path)
    except SiteKeyError as exc:
        fix = exc.fix.replace(" and give the central server the same key", " (it never leaves this gateway)")
        raise TemplateKeyError(exc.problem.replace("site key", "face template key"), fix.replace("site key", "face template key")) from None
    return key[:32]


class FaceStore:
    def __init__(self, state_dir: Path, key: bytes):
        self._conn: sqlite3.Connection = open_db(state_dir, name=FACES_DB, migrations=_MIGRATIONS)
        self._aead = AESGCM(key[:32])

    def close(self) -> None:
        self._conn.close()

    def enroll(self, person: str, templates: np.ndarray) -> int:
        """Replace the person's templates (rows of 128 float32); returns how many are stored."""
        rows = []
        for slot, t in enumerate(np.asarray(templates, dtype=np.float32).reshape(-1, DIM)):
            nonce = os.urandom(12)
            rows.append((person, slot, nonce, self._aead.encrypt(nonce, t.tobytes(), f"{person}\0{slot}".encode())))
        with Transaction(self._conn) as c:
            c.execute("DELETE FROM templates WHERE person=?", (person,))
            c.executemany("INSERT INTO templates VALUES (?,?,?,?)", rows)
        return len(rows)

    def remove(self, person: str) -> int:
        n = self._conn.execute("DELETE FROM templates WHERE person=?", (person,)).rowcount
        if n:
            self._conn.execute("VACUUM")
        return n

    def generation(self) -> int:
        """Changes when another connection (`door-edge enroll`) commits: the daemon polls it to reload."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def people(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT person, count(*) FROM templates GROUP BY person ORDER BY person"))

    def load(self) -> tuple[list[str], np.ndarray]:
        """Every template, decrypted: (person per row, matrix N x 128)."""
        people, out = [], []
        for person, slot, nonce, sealed in self._conn.execute("SELECT person, slot, nonce, sealed FROM templates ORDER BY person, slot"):
            try:
                raw = self._aead.decrypt(nonce, sealed, f"{person}\0{slot}".encode())
            except InvalidTag:
                raise TemplateKeyError("the face templates were sealed with another key (or were altered)",
                                       "re-enrol, or restore the key they were made with") from None
            people.append(person)
            out.append(np.frombuffer(raw, dtype=np.float32))
        return people, (np.vstack(out) if out else np.zeros((0, DIM), np.float32))
