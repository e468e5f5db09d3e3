"""The gallery's source of truth: one SQLite file, WAL mode, every write in one transaction.

Schema (version 1): `meta` (schema version, the recognizer the gallery is bound to, its dimension),
`people` (id, unique name, JSON metadata, timestamps) and `faces` (embedding as float32 bytes, the
recognizer that made it, source image sha256, box, detection score, quality, JPEG thumbnail,
timestamp), faces deleted with their person by a foreign-key cascade.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from facelens.errors import ConfigError, FacelensError, LicenceError, NotFoundError
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
CREATE INDEX IF NOT EXISTS faces_image ON faces(image_sha256);
"""

NAME_MAX = 200  # characters
METADATA_MAX = 64 * 1024  # bytes of a person's metadata as JSON
SQLITE_INT_MAX = 2**63 - 1
# bidirectional-text controls: a name containing them can display as another name
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_RECEIPT_ID = re.compile(r"^forget-.*-(\d+)\.json$")


def check_profile_write(recognizer: str) -> None:
    """The clean profile writes no embedding of a model it may not run (an import, a collection's stored
    embeddings, an analyzer built before the switch): one place every face passes on its way into a gallery."""
    from facelens.profile import active_profile, profile_of_recognizer

    active = active_profile()
    if active.commercial_only and profile_of_recognizer(recognizer) != "clean":
        raise GalleryProfileError(f"{recognizer} embeddings come from a model the {active.name} profile may not "
                                  f"use; a gallery in this profile holds {active.recognizer} embeddings")


class GalleryError(FacelensError):
    """A gallery operation that cannot be done as asked (unknown person, wrong recognizer, ...)."""


class GalleryProfileError(GalleryError, LicenceError):
    """Embeddings of a model the active profile may not use, going into or out of a gallery (HTTP 403)."""


class GalleryNotFound(GalleryError, NotFoundError):
    """No such person or face in the gallery."""


class GalleryMissing(GalleryNotFound):
    """No gallery at that path at all (reads do not create one; the first write does)."""


class GalleryCorrupt(GalleryError):
    """The gallery database is damaged: `Gallery.check()` says how, `Gallery.repair()` recovers what it can."""


class GalleryReadOnly(GalleryError):
    """A write to a gallery whose files or folder cannot be written."""


class DuplicateFace(GalleryError):
    """The same image (by content hash) is already enrolled, for this person or another one."""

    def __init__(self, message: str, face_id: int | None, person_id: int, person: str, same_person: bool) -> None:
        super().__init__(message)
        self.face_id, self.person_id, self.person, self.same_person = face_id, person_id, person, same_person


def clean_name(name: object) -> str:
    """A person's name as stored: surrounding whitespace stripped; refused (ConfigError) if empty, over
    NAME_MAX characters, or holding control characters (category Cc: ESC, NUL, newlines, ...) or
    bidirectional-text controls (which make a name display as something else)."""
    if not isinstance(name, str):
        raise ConfigError("a person's name must be a string")
    name = name.strip()
    if not name:
        raise ConfigError("a person's name cannot be empty")
    if len(name) > NAME_MAX:
        raise ConfigError(f"a person's name cannot be longer than {NAME_MAX} characters ({len(name)} given)")
    for ch in name:
        if unicodedata.category(ch) == "Cc" or ch in _BIDI:
            raise ConfigError(f"a person's name cannot contain control character U+{ord(ch):04X}")
    if not _is_utf8(name):
        raise ConfigError("a person's name must be valid UTF-8 text (it holds undecodable bytes)")
    return name


def _is_utf8(text: str) -> bool:
    """False for strings with lone surrogates: undecodable bytes of a command line (surrogateescape) or a
    "\ud800" escape in JSON. They cannot be stored or sent as UTF-8 anywhere later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


METADATA_DEPTH = 16


def _depth(value: object, limit: int = METADATA_DEPTH + 1) -> int:
    """Nesting depth of lists/dicts, counted iteratively (no recursion to overflow), stopping past `limit`.
    Raises ConfigError on a string (key or value) that is not valid UTF-8 text."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str) and not _is_utf8(item):
            raise ConfigError("a person's metadata must be valid UTF-8 text (it holds a lone surrogate)")
        if isinstance(item, dict):
            stack.extend((key, level) for key in item)
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def metadata_json(metadata: object) -> str:
    """A person's metadata as stored: a JSON object of at most METADATA_MAX bytes (ConfigError otherwise)."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ConfigError("a person's metadata must be a JSON object")
    if _depth(metadata) > METADATA_DEPTH:
        # deeper than any record needs, and deep enough nesting breaks every JSON reader that recurses
        raise ConfigError(f"a person's metadata may nest at most {METADATA_DEPTH} levels deep")
    try:
        text = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"a person's metadata must be plain JSON ({type(exc).__name__})") from None
    if len(text.encode()) > METADATA_MAX:
        raise ConfigError(f"a person's metadata is {len(text.encode())} bytes as JSON; the limit is "
                          f"{METADATA_MAX // 1024} KiB")
    return text


def valid_id(value: object) -> bool:
    """Whether `value` can be a row id at all (an int in SQLite's range); others are simply not found."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= SQLITE_INT_MAX


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
    corrupt_error = GalleryCorrupt
    readonly_error = GalleryReadOnly
    missing_error = GalleryMissing
    repair_hint = ("run `facelens gallery check` to see the damage and `facelens gallery repair` to rebuild the "
                   "gallery from every row that can still be read (Gallery.check() / Gallery.repair())")
    schema = _SCHEMA
    schema_version = SCHEMA_VERSION
    required_tables = ("meta", "people", "faces")

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        # Every committed write bumps the generation: derived views (the search index) compare it.
        conn.execute("INSERT INTO meta VALUES ('generation', '1') "
                     "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
        # A random id per database file, set by its first write: a derived view (the search index) built
        # from another file (deleted and re-created, restored, repaired) has a generation that may match
        # by chance, but never this id.
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('database_id', ?)", (secrets.token_hex(16),))

    def database_id(self) -> str:
        """The id set by the database's first write ("" for an older file not written since)."""
        return (self.meta("database_id") or "") if self._conn is not None or self.path.exists() else ""

    def bind_recognizer(self, conn: sqlite3.Connection, recognizer: str, dim: int) -> None:
        """Bind an empty gallery to a recognizer, and record that recognizer's profile (`clean` when its
        weights allow commercial use); refuse embeddings of any other model."""
        from facelens.profile import profile_of_recognizer

        check_profile_write(recognizer)
        bound = conn.execute("SELECT value FROM meta WHERE key='recognizer'").fetchone()
        if bound is None:
            conn.execute("INSERT INTO meta VALUES ('recognizer', ?), ('dim', ?), ('profile', ?)",
                         (recognizer, str(dim), profile_of_recognizer(recognizer)))
        elif bound[0] != recognizer:
            raise GalleryError(f"this gallery holds {bound[0]} embeddings; {recognizer} embeddings cannot be mixed in "
                               "(use a separate gallery)")

    # -- people ----------------------------------------------------------------------------------
    def person(self, name_or_id: str | int, conn: sqlite3.Connection | None = None) -> Person:
        """A person by name or id (`conn`: inside a transaction, so the answer holds until it commits)."""
        if isinstance(name_or_id, int) and not valid_id(name_or_id):
            raise GalleryNotFound(f"no person {name_or_id!r} in the gallery")
        conn = conn or self.connect()
        column = "id" if isinstance(name_or_id, int) else "name"
        row = conn.execute(
            f"SELECT p.id, p.name, p.metadata, COUNT(f.id), p.created, p.updated FROM people p "
            f"LEFT JOIN faces f ON f.person_id = p.id WHERE p.{column} = ? GROUP BY p.id", (name_or_id,)
        ).fetchone()
        if row is None:
            raise GalleryNotFound(f"no person {name_or_id!r} in the gallery")
        return Person(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def people(self, limit: int | None = None, offset: int = 0, after_id: int | None = None) -> list[Person]:
        """People by name; a page of them with `limit` and `offset`, or (stable under concurrent writes)
        by id with `after_id`: the first `limit` people whose id is greater, in id order."""
        sql = ("SELECT p.id, p.name, p.metadata, COUNT(f.id), p.created, p.updated FROM people p "
               "LEFT JOIN faces f ON f.person_id = p.id")
        params: list[Any] = []
        if after_id is not None:
            sql += " WHERE p.id > ? GROUP BY p.id ORDER BY p.id"
            params.append(min(max(int(after_id), 0), SQLITE_INT_MAX))
        else:
            sql += " GROUP BY p.id ORDER BY p.name"
        if limit is not None or offset:
            if (limit is not None and limit < 0) or offset < 0:
                raise ConfigError("limit and offset cannot be negative")
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else min(limit, SQLITE_INT_MAX), min(offset, SQLITE_INT_MAX)]
        rows = self.connect().execute(sql, params).fetchall()
        return [Person(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def _last_person_id(self, conn: sqlite3.Connection) -> int:
        """The highest person id ever handed out. Ids are never reused (a stale "forget 13" must not erase
        whoever got 13 next): a counter in meta, seeded for older galleries from the highest id still
        there and the ids named by erasure receipts."""
        highest = self._highest_id(conn, "last_person_id", "people")
        if conn.execute("SELECT 1 FROM meta WHERE key='last_person_id'").fetchone() is not None:
            return highest
        receipts = self.path.parent / "receipts"
        if receipts.is_dir():
            for entry in receipts.iterdir():
                match = _RECEIPT_ID.match(entry.name)
                if match:
                    highest = max(highest, int(match.group(1)))
        return highest

    def new_person(self, conn: sqlite3.Connection, name: str, metadata: dict[str, Any] | None = None) -> int:
        """Insert a person (name already checked and free) with a never-used id; returns the id."""
        person_id = self._last_person_id(conn) + 1
        now = time.time()
        conn.execute("INSERT INTO people (id, name, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                     (person_id, name, metadata_json(metadata), now, now))
        self._record_id(conn, "last_person_id", person_id)
        return person_id

    def ensure_person(self, conn: sqlite3.Connection, name: str, metadata: dict[str, Any] | None = None) -> int:
        """The id of the person called `name`, created (with `metadata`) if there is none; inside `conn`'s
        transaction, so the name cannot change hands between the lookup and the write."""
        name = clean_name(name)
        row = conn.execute("SELECT id FROM people WHERE name=?", (name,)).fetchone()
        if row:
            conn.execute("UPDATE people SET updated=? WHERE id=?", (time.time(), row[0]))
            return int(row[0])
        return self.new_person(conn, name, metadata)

    @staticmethod
    def image_owner(conn: sqlite3.Connection, digest: str) -> tuple[int, int, str] | None:
        """(face id, person id, name) of a face enrolled from the image with this content hash, if any."""
        row = conn.execute("SELECT f.id, p.id, p.name FROM faces f JOIN people p ON p.id = f.person_id "
                           "WHERE f.image_sha256=? ORDER BY f.id LIMIT 1", (digest,)).fetchone()
        return (int(row[0]), int(row[1]), str(row[2])) if row else None

    @staticmethod
    def add_face(conn: sqlite3.Connection, person_id: int, embedding: np.ndarray, recognizer: str,
                 image_sha256: str | None, bbox: list[float] | None, det_score: float | None,
                 quality: float | None, thumbnail: bytes | None) -> int:
        check_profile_write(recognizer)
        # Face ids are never reused (SQLite would reuse a deleted maximum): the search index relies on
        # "id > last indexed id" meaning "new face".
        face_id = SQLiteStore._highest_id(conn, "last_face_id", "faces") + 1
        conn.execute(
            "INSERT INTO faces (id, person_id, embedding, recognizer, image_sha256, bbox, det_score, quality, "
            "thumbnail, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (face_id, person_id, np.asarray(embedding, dtype=np.float32).tobytes(), recognizer, image_sha256,
             json.dumps(bbox) if bbox is not None else None, det_score, quality, thumbnail, time.time()),
        )
        SQLiteStore._record_id(conn, "last_face_id", face_id)
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
    def _highest_id(conn: sqlite3.Connection, key: str, table: str) -> int:
        """The highest id ever handed out from `table`: its counter in meta, or the table's own maximum
        where that is higher (a gallery written before the counter existed)."""
        return int(conn.execute(
            f"SELECT MAX(COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key=?), 0), "
            f"COALESCE((SELECT MAX(id) FROM {table}), 0))", (key,)).fetchone()[0])

    @staticmethod
    def _record_id(conn: sqlite3.Connection, key: str, value: int) -> None:
        conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, str(value)))

    def last_face_id(self) -> int:
        return self._highest_id(self.connect(), "last_face_id", "faces")

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
