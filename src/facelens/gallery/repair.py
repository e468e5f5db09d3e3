"""`Gallery.check()` and `Gallery.repair()`: find damage in a gallery database and recover what can be read.

Repair never edits the damaged file: it reads every row it can (a table scan, then row by row by id
where the scan breaks off), checks each, writes a fresh database under a temporary name and renames it
into place; the damaged file (with its -wal) is kept beside it as `gallery.sqlite.corrupt-<timestamp>`.
A file whose 100-byte header was overwritten is read through a copy with a rebuilt header.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from facelens.gallery.store import SQLiteStore, clean_name
from facelens.sqlite import SQLITE_MAGIC, private_file

_PROBE_SLACK = 1000  # ids probed past the highest known one, when the table scan broke off


def _readonly(path: Path) -> sqlite3.Connection:
    uri = "file:" + str(path.resolve()) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute("PRAGMA cell_size_check=ON")
    return conn


def _header(page_size: int) -> bytes:
    """A plausible 100-byte SQLite header (rollback journal, UTF-8, no freelist; size from the file)."""
    head = bytearray(100)
    head[0:16] = SQLITE_MAGIC
    struct.pack_into(">H", head, 16, 1 if page_size == 65536 else page_size)
    head[18], head[19], head[20], head[21], head[22], head[23] = 1, 1, 0, 64, 32, 32
    struct.pack_into(">I", head, 24, 1)  # change counter != version-valid-for: the page count comes from the file
    struct.pack_into(">I", head, 40, 1)  # schema cookie
    struct.pack_into(">I", head, 44, 4)  # schema format
    struct.pack_into(">I", head, 56, 1)  # UTF-8
    struct.pack_into(">I", head, 96, 3040001)
    return bytes(head)


def _open_damaged(db: Path, scratch: Path) -> sqlite3.Connection | None:
    """A read-only connection to whatever of `db` SQLite can still parse (None: nothing)."""
    if not db.is_file() or db.stat().st_size < 512:
        return None
    if db.read_bytes()[:16] == SQLITE_MAGIC:
        with contextlib.suppress(sqlite3.DatabaseError):
            conn = _readonly(db)
            conn.execute("SELECT name FROM sqlite_master").fetchall()
            return conn
    # the header is gone: try a copy with a rebuilt header at each page size
    for page_size in (16384, 4096, 1024, 2048, 8192, 32768, 65536, 512):
        shutil.copyfile(db, scratch)
        with open(scratch, "r+b") as fh:
            fh.write(_header(page_size))
        try:
            conn = _readonly(scratch)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if {"people", "faces"} <= tables:
                conn.execute("SELECT COUNT(*) FROM people").fetchone()
                return conn
            conn.close()
        except sqlite3.DatabaseError:
            continue
    return None


def _salvage(conn: sqlite3.Connection, table: str, columns: str, hint: int) -> tuple[dict[int, tuple], int]:
    """Rows of `table` by id that can be read, and how many could not (at least)."""
    rows: dict[int, tuple] = {}
    try:
        for row in conn.execute(f"SELECT id, {columns} FROM {table} ORDER BY id"):
            rows[int(row[0])] = row
        return rows, 0
    except (sqlite3.DatabaseError, TypeError, ValueError):
        pass
    highest = max([hint, *rows])
    with contextlib.suppress(sqlite3.DatabaseError, TypeError):
        highest = max(highest, int(conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0] or 0))
    lost, row_id, misses = 0, 0, 0
    while row_id < highest or misses < _PROBE_SLACK:
        row_id += 1
        if row_id in rows:
            misses = 0
            continue
        try:
            row = conn.execute(f"SELECT id, {columns} FROM {table} WHERE id=?", (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            row, broken = None, True
        else:
            broken = False
        if row is not None:
            rows[row_id] = row
            misses = 0
        elif row_id > highest:
            misses += 1  # past every id known to exist: a miss, readable or not (the probing has to end)
        elif broken:
            lost += 1
    return rows, lost


def _meta(conn: sqlite3.Connection | None) -> dict[str, str]:
    if conn is None:
        return {}
    with contextlib.suppress(sqlite3.DatabaseError):
        return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta").fetchall()}
    return {}


def check_gallery(gallery: Any) -> dict[str, Any]:
    store: SQLiteStore = gallery._existing()
    db = store.path
    report: dict[str, Any] = {"path": str(db), "ok": False, "integrity": [], "people": None, "faces": None,
                              "orphan_faces": None, "bad_embeddings": None, "index": None}
    with open(db, "rb") as fh:  # the header only: the file may be gigabytes
        head = fh.read(16)
    if not head:
        report["integrity"] = ["empty file"]
    elif head != SQLITE_MAGIC:
        report["integrity"] = ["not an SQLite file: bad header"]
    else:
        try:
            conn = _readonly(db)
            report["integrity"] = [r[0] for r in conn.execute("PRAGMA integrity_check(100)").fetchall()]
        except sqlite3.DatabaseError as exc:
            report["integrity"] = [str(exc)]
            conn = None
        if conn is not None:
            try:
                meta = _meta(conn)
                dim = int(meta.get("dim") or 0)
                report["people"] = conn.execute("SELECT COUNT(*) FROM people").fetchone()[0]
                report["faces"] = conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
                report["orphan_faces"] = conn.execute(
                    "SELECT COUNT(*) FROM faces WHERE person_id NOT IN (SELECT id FROM people)").fetchone()[0]
                bad, ids = 0, []
                for face_id, blob in conn.execute("SELECT id, embedding FROM faces ORDER BY id"):
                    ids.append(face_id)
                    if not isinstance(blob, bytes) or (dim and len(blob) != 4 * dim) or len(blob) % 4 or \
                            not np.isfinite(np.frombuffer(blob, np.float32)).all():
                        bad += 1
                report["bad_embeddings"] = bad
                report["index"] = _check_index(gallery, meta, np.array(ids, np.int64))
            except sqlite3.DatabaseError as exc:
                report["integrity"].append(f"while reading: {exc}")
            finally:
                conn.close()
    intact = report["integrity"] == ["ok"]
    report["ok"] = bool(intact and not report["orphan_faces"] and not report["bad_embeddings"]
                        and (report["index"] or {}).get("ok", True))
    if intact:
        store.clear_damaged()
    else:
        store.mark_damaged("; ".join(report["integrity"][:3]))
        report["advice"] = ("run `facelens gallery repair` to rebuild it from every row still readable (the "
                            "damaged file is kept beside it)")
    return report


def _check_index(gallery: Any, meta: dict[str, str], face_ids: np.ndarray) -> dict[str, Any]:
    """The persisted search index against the database: at its generation, it must hold exactly its faces."""
    if meta.get("milvus_uri"):
        return {"kind": "milvus", "ok": True, "note": "kept in Milvus: not checked here"}
    from facelens.gallery.index import INDEX_DIR

    state_path = gallery.path / INDEX_DIR / "state.json"
    if not state_path.exists():
        return {"kind": "local", "ok": True, "note": "no index on disk (built on the next search)"}
    try:
        state = json.loads(state_path.read_text())
        ids = np.load(gallery.path / INDEX_DIR / "ids.npy")
    except (OSError, ValueError) as exc:
        return {"kind": "local", "ok": False, "note": f"unreadable ({exc}); rebuilt on the next search"}
    current = str(state.get("generation")) == meta.get("generation")
    missing = int(np.setdiff1d(face_ids, ids).size)
    extra = int(np.setdiff1d(ids, face_ids).size)
    ok = not current or (missing == 0 and extra == 0)
    return {"kind": "local", "ok": ok, "current": current, "faces": int(ids.size), "missing": missing,
            "extra": extra, "note": "stale: catches up on the next search" if not current else
            ("matches the database" if ok else "differs from the database at the same generation")}


def repair_gallery(gallery: Any) -> dict[str, Any]:
    store: SQLiteStore = gallery._existing()
    db = store.path
    stamp = time.strftime("%Y%m%dT%H%M%S")
    scratch = db.with_name(f".{db.name}.header-{os.getpid()}")
    gallery._index = None  # not saved: it is derived from the file being replaced
    store.close()
    conn = _open_damaged(db, scratch)
    meta = _meta(conn)

    def counter(key: str) -> int:
        return int(meta[key]) if meta.get(key, "").isdigit() else 0

    people: dict[int, tuple] = {}
    faces: dict[int, tuple] = {}
    lost_people = lost_faces = 0
    if conn is not None:
        people, lost_people = _salvage(conn, "people", "name, metadata, created, updated", counter("last_person_id"))
        faces, lost_faces = _salvage(conn, "faces", "person_id, embedding, recognizer, image_sha256, bbox, det_score, "
                                     "quality, thumbnail, created", counter("last_face_id"))
        conn.close()
    with contextlib.suppress(OSError):
        scratch.unlink()
    dim = int(meta["dim"]) if meta.get("dim", "").isdigit() else 0
    recognizer = meta.get("recognizer")

    # check every row: damage can also read back as a well-formed row with garbage in it
    good_people: dict[int, tuple] = {}
    for pid, row in people.items():
        try:
            name = clean_name(row[1])
            metadata = row[2] if isinstance(row[2], str) and isinstance(json.loads(row[2]), dict) else "{}"
            good_people[pid] = (pid, name, metadata, float(row[3]), float(row[4]))
        except Exception:  # any garbage in any field: the row is lost
            lost_people += 1
    good_faces: list[tuple] = []
    placeholders: dict[int, str] = {}
    for fid, row in faces.items():
        _, person_id, blob, face_recognizer = row[0], row[1], row[2], row[3]
        if not isinstance(blob, bytes) or not isinstance(person_id, int) or len(blob) % 4 or \
                (dim and len(blob) != 4 * dim) or not np.isfinite(np.frombuffer(blob, np.float32)).all():
            lost_faces += 1
            continue
        dim = dim or len(blob) // 4
        recognizer = recognizer or face_recognizer
        if person_id not in good_people:
            # the face survived but its person row did not: kept under a placeholder name, so it can still
            # be seen, renamed or forgotten (dropping it would silently lose an enrollment)
            name = placeholders.setdefault(person_id, f"recovered person {person_id}")
            while any(p[1] == name for p in good_people.values()):
                name += "'"
            good_people[person_id] = (person_id, name, "{}", time.time(), time.time())
        good_faces.append((fid, person_id, blob,
                           face_recognizer if isinstance(face_recognizer, str) else recognizer, *row[4:]))

    # names must stay unique (a damaged page can resurrect an old name twice)
    seen: set[str] = set()
    for pid in sorted(good_people):
        pid_, name, *rest = good_people[pid]
        while name in seen:
            name += "'"
        seen.add(name)
        good_people[pid] = (pid_, name, *rest)

    fresh = SQLiteStore(db.with_name(f".{db.name}.repair-{os.getpid()}"))
    try:
        fresh.path.unlink(missing_ok=True)
        with fresh.transaction() as out:
            for key, value in meta.items():
                if key not in ("schema_version", "generation"):
                    out.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            if recognizer and dim:
                out.execute("INSERT OR REPLACE INTO meta VALUES ('recognizer', ?), ('dim', ?)",
                            (recognizer, str(dim)))
            # ids stay never-reused: the counters never go down, even past rows that were lost
            last_person = max([*good_people, *people, counter("last_person_id")])
            last_face = max([*faces, counter("last_face_id")])
            out.execute("INSERT OR REPLACE INTO meta VALUES ('last_person_id', ?), ('last_face_id', ?), "
                        "('generation', ?)", (str(last_person), str(last_face), str(int(time.time()))))
            out.executemany("INSERT INTO people (id, name, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                            list(good_people.values()))
            out.executemany("INSERT INTO faces (id, person_id, embedding, recognizer, image_sha256, bbox, det_score, "
                            "quality, thumbnail, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", good_faces)
        fresh.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fresh.close()
        kept = db.with_name(f"{db.name}.corrupt-{stamp}")
        os.link(db, kept)  # the damaged bytes stay, under a name nothing opens as the gallery
        for suffix in ("-wal", "-shm"):  # a stale -wal beside the new file would be replayed into it
            side = Path(f"{db}{suffix}")
            if side.exists():
                os.replace(side, f"{kept}{suffix}")
        os.replace(fresh.path, db)
    finally:
        fresh.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{fresh.path}{suffix}")
    store.clear_damaged()
    gallery._store = None
    from facelens.gallery.index import LocalIndex

    LocalIndex(gallery.path).drop()
    gallery._index = None
    report = {"path": str(db), "damaged_copy": str(kept),
              "recovered": {"people": len(good_people) - len(placeholders), "faces": len(good_faces)},
              "placeholder_people": len(placeholders), "lost": {"people": lost_people, "faces": lost_faces},
              "index": "dropped (rebuilt on the next search)",
              "note": "the damaged copy still holds everything it held, biometric data included: delete it "
                      "once nothing more is to be recovered from it"}
    with contextlib.suppress(OSError), private_file(db.with_name(f"repair-{stamp}.json")) as fh:
        fh.write(json.dumps(report, indent=2) + "\n")
    return report
