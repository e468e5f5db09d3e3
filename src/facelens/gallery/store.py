"""The gallery's source of truth: one SQLite file, WAL mode, every write in one transaction.

Schema (version 1): `meta` (schema version, the recognizer the gallery is bound to, its dimension),
`people` (id, unique name, JSON metadata, timestamps) and `faces` (embedding as float32 bytes, the
recognizer that made it, source image sha256, box, detection score, quality, JPEG thumbnail,
timestamp), faces deleted with their person by a foreign-key cascade.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from facelens.errors import FacelensError, NotFoundError
from facelens.sqlite import SQLiteDatabase

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    recognizer TEXT NOT NULL,
    image_sha256 TEXT,
    bbox TEXT,
    det_score REAL,
    quality REAL,
    thumbnail BLOB,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
"""


class GalleryError(FacelensError):
    """A gallery operation that cannot be done as asked (unknown person, wrong recognizer, ...)."""


class GalleryNotFound(GalleryError, NotFoundError):
    """No such person or face in the gallery."""


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    metadata: dict[str, Any]
    faces: int
    created: float
    updated: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "metadata": self.metadata, "faces": self.faces,
                "created": self.created, "updated": self.updated}


class SQLiteStore(SQLiteDatabase):
    """Connection handling, schema and the row-level operations; no search logic lives here."""

    kind = "gallery"
    error = GalleryError
    schema = _SCHEMA
    schema_version = SCHEMA_VERSION

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        # Every committed write bumps the generation: derived views (the search index) compare it.
        conn.execute("INSERT INTO meta VALUES ('generation', '1') "
                     "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def bind_recognizer(self, conn: sqlite3.Connection, recognizer: str, dim: int) -> None:
        """Bind an empty gallery to a recognizer; refuse embeddings of any other model."""
        bound = conn.execute("SELECT value FROM meta WHERE key='recognizer'").fetchone()
        if bound is None:
            conn.execute("INSERT INTO meta VALUES ('recognizer', ?), ('dim', ?)", (recognizer, str(dim)))
        elif bound[0] != recognizer:
            raise GalleryError(f"this gallery holds {bound[0]} embeddings; {recognizer} embeddings cannot be mixed in "
                               "(use a separate gallery)")

    # -- people ----------------------------------------------------------------------------------
    def person(self, name_or_id: str | int) -> Person:
        conn = self.connect()
        column = "id" if isinstance(name_or_id, int) else "name"
        row = conn.execute(
            f"SELECT p.id, p.name, p.metadata, COUNT(f.id), p.created, p.updated FROM people p "
            f"LEFT JOIN faces f ON f.person_id = p.id WHERE p.{column} = ? GROUP BY p.id", (name_or_id,)
        ).fetchone()
        if row is None:
            raise GalleryNotFound(f"no person {name_or_id!r} in the gallery")
        return Person(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def people(self) -> list[Person]:
        rows = self.connect().execute(
            "SELECT p.id, p.name, p.metadata, COUNT(f.id), p.created, p.updated FROM people p "
            "LEFT JOIN faces f ON f.person_id = p.id GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [Person(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    @staticmethod
    def ensure_person(conn: sqlite3.Connection, name: str, metadata: dict[str, Any] | None = None) -> int:
        row = conn.execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()
        now = time.time()
        if row:
            conn.execute("UPDATE people SET updated=? WHERE id=?", (now, row[0]))
            return int(row[0])
        cur = conn.execute("INSERT INTO people (name, metadata, created, updated) VALUES (?, ?, ?, ?)",
                           (name, json.dumps(metadata or {}), now, now))
        return int(cur.lastrowid or 0)

    @staticmethod
    def add_face(conn: sqlite3.Connection, person_id: int, embedding: np.ndarray, recognizer: str,
                 image_sha256: str | None, bbox: list[float] | None, det_score: float | None,
                 quality: float | None, thumbnail: bytes | None) -> int:
        # Face ids are never reused (SQLite would reuse a deleted maximum): the search index relies on
        # "id > last indexed id" meaning "new face".
        face_id = SQLiteStore._last_face_id(conn) + 1
        conn.execute(
            "INSERT INTO faces (id, person_id, embedding, recognizer, image_sha256, bbox, det_score, quality, "
            "thumbnail, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (face_id, person_id, np.asarray(embedding, dtype=np.float32).tobytes(), recognizer, image_sha256,
             json.dumps(bbox) if bbox is not None else None, det_score, quality, thumbnail, time.time()),
        )
        conn.execute("INSERT INTO meta VALUES ('last_face_id', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (str(face_id),))
        return int(face_id)

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(face ids, person ids, (N, dim) float32 matrix) of every face: the exact-search view."""
        rows = self.connect().execute("SELECT id, person_id, embedding FROM faces ORDER BY id").fetchall()
        dim = int(self.meta("dim") or 0)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        persons = np.array([r[1] for r in rows], dtype=np.int64)
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return ids, persons, matrix

    def iter_embeddings(self, after_id: int = 0, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(face ids, (n, dim) float32) in id order, `batch` rows at a time, of faces with id > `after_id`."""
        conn = self.connect()
        while True:
            rows = conn.execute("SELECT id, embedding FROM faces WHERE id > ? ORDER BY id LIMIT ?",
                                (after_id, batch)).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            after_id = int(ids[-1])

    def face_ids(self) -> np.ndarray:
        return np.array([r[0] for r in self.connect().execute("SELECT id FROM faces")], dtype=np.int64)

    @staticmethod
    def _last_face_id(conn: sqlite3.Connection) -> int:
        return int(conn.execute(
            "SELECT MAX(COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key='last_face_id'), 0), "
            "COALESCE((SELECT MAX(id) FROM faces), 0))").fetchone()[0])

    def last_face_id(self) -> int:
        return self._last_face_id(self.connect())

    def face_count(self) -> int:
        return int(self.connect().execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def face_owners(self, face_ids: list[int]) -> dict[int, tuple[int, str]]:
        """face id -> (person id, name) for those of `face_ids` still in the gallery."""
        if not face_ids:
            return {}
        marks = ",".join("?" * len(face_ids))
        rows = self.connect().execute(
            f"SELECT f.id, p.id, p.name FROM faces f JOIN people p ON p.id = f.person_id WHERE f.id IN ({marks})",
            face_ids,
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def generation(self) -> int:
        """Bumped by every committed write, from any process: the staleness check for derived views."""
        value = self.meta("generation") if self._conn is not None or self.path.exists() else None
        return int(value or 0)

    def compact(self) -> None:
        """Rewrite the database so deleted rows' bytes leave the files (WAL checkpoint + VACUUM)."""
        conn = self.connect()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
