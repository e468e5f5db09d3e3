"""Cluster a photo collection into people, and keep the user's corrections across runs.

A collection lives in one folder (`--out`): `collection.sqlite` holds every face found (image path and
content hash, box, detection score, embedding, thumbnail, cluster), the cluster names and the user's
corrections; `clusters.json` and `contact_sheet.html` are written from it after each run. Re-running on
the same folder embeds only images not seen before, places their faces among the existing people
(incremental Chinese whispers with the known faces frozen) and re-applies every correction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.analysis.quality import QUALITY_FLOOR, FaceQuality
from facelens.cluster.graph import chinese_whispers, cluster_labels, knn_graph, relabel
from facelens.errors import FacelensError, NotFoundError
from facelens.io import VIDEO_SUFFIXES, decode_image, expand_paths, sha256_file
from facelens.models.registry import threshold_for
from facelens.pipeline import FaceAnalyzer
from facelens.sqlite import SQLiteDatabase, private_file
from facelens.types import box_iou

DB_NAME = "collection.sqlite"
MIN_FACE_PX = 32  # shorter box side below which a face is set aside: too small to recognise reliably
MIN_DET_SCORE = 0.6  # detections less sure than this are set aside (they are often not faces at all)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, faces INTEGER NOT NULL,
    error TEXT, added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    bbox TEXT NOT NULL, det_score REAL NOT NULL, embedding BLOB NOT NULL, thumbnail BLOB,
    set_aside TEXT, cluster INTEGER NOT NULL DEFAULT -1
);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, face_a INTEGER NOT NULL, face_b INTEGER, name TEXT,
    created REAL NOT NULL
);
"""


class ClusterError(FacelensError):
    """A clustering request that cannot be done as asked."""


class ClusterNotFound(ClusterError, NotFoundError):
    """No such cluster or face in the collection."""


class CollectionDatabase(SQLiteDatabase):
    kind = "collection"
    error = ClusterError
    schema = _SCHEMA


@dataclass
class Cluster:
    id: int
    name: str | None
    face_ids: list[int]
    images: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "faces": len(self.face_ids), "face_ids": self.face_ids,
                "images": self.images}


class Collection:
    """A clustered photo collection in folder `path`.

    >>> c = Collection("out/")
    >>> c.scan("photos/")          # detect + embed new images
    >>> c.cluster()                # group faces into people, honouring corrections
    >>> c.name(0, "Ada"); c.merge(3, 5); c.split(face_id=42)
    """

    def __init__(self, path: str | os.PathLike[str], analyzer: FaceAnalyzer | None = None, far: float = 1e-4,
                 k: int = 16, min_size: int = 2, min_quality: float = QUALITY_FLOOR) -> None:
        self.path = Path(path)
        self.analyzer = analyzer
        self.min_quality = min_quality  # faces below it are set aside, with the reason (0: off)
        self.far = far
        self.k = k
        self.min_size = min_size
        self._db: CollectionDatabase | None = None

    # -- storage ---------------------------------------------------------------------------------
    @property
    def db(self) -> CollectionDatabase:
        if self._db is None:
            if self.path.exists() and not self.path.is_dir():
                raise ClusterError(f"{self.path}: not a directory")
            self._db = CollectionDatabase(self.path / DB_NAME)
        return self._db

    def connect(self) -> sqlite3.Connection:
        return self.db.connect()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _analyzer(self) -> FaceAnalyzer:
        if self.analyzer is None:
            # a collection keeps the recognizer it was started with, whichever profile is active now
            self.analyzer = FaceAnalyzer(recognizer=self.db.meta("recognizer"), threads=2)
        return self.analyzer

    def _recognizer(self) -> str:
        return self.db.meta("recognizer") or self._analyzer().recognizer

    # -- scanning --------------------------------------------------------------------------------
    def scan(self, root: str | os.PathLike[str],
             on_result: Callable[[dict[str, Any]], None] | None = None,
             confine_to: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """Detect and embed every face of every image under `root` not already in the collection; a video
        adds one face per track (its best frames' embedding, see `facelens.video`). One bad file is reported
        (status "error") and the rest go on. With `confine_to`, images whose
        real path (links followed) is outside that folder are left out (a server's photos root)."""
        root = Path(root)
        if not root.exists():
            raise ClusterError(f"{root}: no such folder")
        paths = expand_paths([str(root)], confine_to=confine_to, videos=True)
        analyzer = self._analyzer()
        conn = self.connect()
        bound = self.db.meta("recognizer")
        if bound and bound != analyzer.recognizer:
            raise ClusterError(f"this collection holds {bound} embeddings; cannot add {analyzer.recognizer}")
        report = []
        for path in paths:
            entry: dict[str, Any] = {"path": str(path)}
            try:
                digest = sha256_file(path)
                if conn.execute("SELECT 1 FROM images WHERE sha256=?", (digest,)).fetchone():
                    entry["status"] = "known"
                elif path.suffix.lower() in VIDEO_SUFFIXES:
                    entry.update(self._add_video(path, digest, analyzer))
                else:
                    entry.update(self._add_image(path, digest, analyzer))
            except (FacelensError, OSError) as exc:
                entry.update(status="error", error=str(exc))
            except Exception as exc:  # one odd image must not end the scan of a whole collection
                logging.getLogger("facelens").exception("unexpected error on %s", path)
                entry.update(status="error", error=f"{path}: internal error ({type(exc).__name__}: {exc})")
            report.append(entry)
            if on_result:
                on_result(entry)
        return report

    def _add_image(self, path: Path, digest: str, analyzer: FaceAnalyzer) -> dict[str, Any]:
        from facelens.gallery import face_thumbnail

        decoded = decode_image(str(path), max_side=analyzer.decode_size)
        faces = analyzer.detector_model.detect(decoded.pixels)
        if faces:
            analyzer.embed(decoded.pixels, faces)
            if self.min_quality > 0:
                FaceQuality().annotate(decoded.pixels, faces)
        rows = []
        for face in faces:
            thumb = face_thumbnail(decoded.pixels, face)
            face.rescale(decoded.scale)
            x1, y1, x2, y2 = face.bbox
            reason = None
            if min(x2 - x1, y2 - y1) < MIN_FACE_PX:
                reason = f"face smaller than {MIN_FACE_PX} px"
            elif face.det_score < MIN_DET_SCORE:
                reason = f"detection score below {MIN_DET_SCORE}"
            elif face.attributes.get("quality", {}).get("score", 1.0) < self.min_quality:
                reason = f"quality {face.attributes['quality']['score']:.2f} below {self.min_quality:.2f}"
            rows.append((json.dumps([round(float(v), 1) for v in face.bbox]), float(face.det_score),
                         np.asarray(face.embedding, np.float32).tobytes(), thumb, reason))
        self._store(path, digest, rows, analyzer.recognizer)
        return {"status": "added", "faces": len(rows), "set_aside": sum(r[4] is not None for r in rows)}

    def _store(self, path: Path, digest: str, rows: list[tuple[Any, ...]], recognizer: str,
               error: str | None = None) -> None:
        """One file and its faces (bbox JSON, det score, embedding bytes, thumbnail, set-aside reason), in one
        transaction: a crash leaves the file either fully in the collection or not at all."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('recognizer', ?)", (recognizer,))
            image_id = conn.execute("INSERT INTO images (path, sha256, faces, error, added) VALUES (?, ?, ?, ?, ?)",
                                    (str(path), digest, len(rows), error, time.time())).lastrowid
            conn.executemany("INSERT INTO faces (image_id, bbox, det_score, embedding, thumbnail, set_aside) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [(image_id, *r) for r in rows])

    def _add_video(self, path: Path, digest: str, analyzer: FaceAnalyzer) -> dict[str, Any]:
        """One face row per track of the video: the track's quality-weighted embedding of its best frames,
        its best frame's box and face. A video that breaks part way keeps the tracks before the break."""
        from facelens.video import VideoAnalyzer

        result = VideoAnalyzer(recognizer=analyzer.recognizer, detector=analyzer.detector).process(path)
        if result.interrupted:  # never stored half-seen: a rerun must process it again
            raise KeyboardInterrupt
        rows = []
        for track in result.tracks:
            best = track.best[0]
            reason = None
            if track.best_quality < self.min_quality:
                reason = f"quality {track.best_quality:.2f} below {self.min_quality:.2f}"
            rows.append((json.dumps(best.bbox), 1.0, np.asarray(track.embedding, np.float32).tobytes(),
                         track.thumbnail, reason))
        self._store(path, digest, rows, analyzer.recognizer, result.error)
        entry: dict[str, Any] = {"status": "added", "faces": len(rows), "tracks": len(rows),
                                 "set_aside": sum(r[4] is not None for r in rows)}
        if result.error:
            entry["warning"] = result.error
        return entry

    # -- clustering ------------------------------------------------------------------------------
    def threshold(self) -> float:
        return threshold_for(self._recognizer(), self.far, False)

    def cluster(self, incremental: bool = True, seed: int = 0) -> dict[str, Any]:
        """Group the collection's faces into people; returns counts. Faces already clustered stay where
        they are (unless `incremental=False`) and new faces join them or form new clusters."""
        conn = self.connect()
        rows = conn.execute("SELECT id, embedding, cluster FROM faces WHERE set_aside IS NULL ORDER BY id").fetchall()
        set_aside = conn.execute("SELECT COUNT(*) FROM faces WHERE set_aside IS NOT NULL").fetchone()[0]
        if not rows:
            return {"faces": 0, "clusters": 0, "unassigned": 0, "set_aside": set_aside, "mode": "empty"}
        ids = np.array([r[0] for r in rows], np.int64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)
        previous = np.array([r[2] for r in rows], np.int64)
        threshold = self.threshold()
        started = time.perf_counter()
        known = previous >= 0
        mode = "batch"
        if incremental and known.any() and not known.all():
            mode = "incremental"
            r, c, s = knn_graph(vectors, k=self.k, threshold=threshold)
            # new faces: labels of their own, above every cluster id in use (ids are not 0..C-1)
            start = np.where(known, previous, max(len(ids), int(previous.max()) + 1) + np.arange(len(ids)))
            raw = chinese_whispers(len(ids), r, c, s, seed=seed, labels=start, frozen=known)
            labels = raw
        elif incremental and known.all():
            mode = "unchanged"
            labels = previous.copy()
        else:
            labels = cluster_labels(vectors, threshold, k=self.k, min_size=1, seed=seed)
        labels = self._apply_corrections(ids, labels)
        labels = relabel(labels, self.min_size)
        with self.db.transaction() as tx:
            labels = self._stable_ids(tx, labels, previous)
            names = self._names_for(ids, labels)
            tx.executemany("UPDATE faces SET cluster=? WHERE id=?",
                           [(int(lab), int(i)) for i, lab in zip(ids, labels, strict=True)])
            tx.execute("INSERT INTO meta VALUES ('names', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (json.dumps({str(k): v for k, v in names.items()}),))
        return {"faces": len(ids), "clusters": int(labels.max() + 1) if (labels >= 0).any() else 0,
                "unassigned": int((labels < 0).sum()), "set_aside": set_aside, "mode": mode,
                "threshold": threshold, "far": self.far, "seconds": round(time.perf_counter() - started, 3)}

    @staticmethod
    def _stable_ids(tx: sqlite3.Connection, labels: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Cluster ids that are never reused: a cluster that carries on (most faces of an old cluster) keeps
        that cluster's id, every other cluster gets a new id from a counter in meta. A stale "name 5" or
        "merge 3 5" can then only mean the group it meant, or nothing ("no cluster 5")."""
        row = tx.execute("SELECT CAST(value AS INTEGER) FROM meta WHERE key='last_cluster_id'").fetchone()
        used_max = int(tx.execute("SELECT COALESCE(MAX(cluster), -1) FROM faces").fetchone()[0])
        last = max(int(row[0]) if row else -1, used_max)
        pairs = []
        for label in np.unique(labels[labels >= 0]):
            before = previous[(labels == label) & (previous >= 0)]
            values, counts = np.unique(before, return_counts=True)
            pairs += [(-int(c), int(label), int(v)) for v, c in zip(values, counts, strict=True)]
        mapping: dict[int, int] = {}
        taken: set[int] = set()
        for _, label, old in sorted(pairs):  # the biggest overlap keeps the old id
            if label not in mapping and old not in taken:
                mapping[label] = old
                taken.add(old)
        for label in np.unique(labels[labels >= 0]):  # by size: a first clustering numbers 0, 1, ... biggest first
            if int(label) not in mapping:
                last += 1
                mapping[int(label)] = last
        tx.execute("INSERT INTO meta VALUES ('last_cluster_id', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                   (str(last),))
        return np.array([mapping.get(int(x), -1) for x in labels], np.int64)

    def _corrections(self) -> list[tuple[str, int, int | None, str | None]]:
        return self.connect().execute("SELECT kind, face_a, face_b, name FROM corrections ORDER BY id").fetchall()

    def _apply_corrections(self, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Splits and "not this person" first (the face leaves), then merges and names (clusters join)."""
        labels = labels.astype(np.int64).copy()
        row_of = {int(f): i for i, f in enumerate(ids)}
        fresh = int(labels.max(initial=0)) + 1
        corrections = self._corrections()
        for kind, a, b, _ in corrections:
            if a not in row_of:
                continue
            if kind == "split" or (kind == "not" and b in row_of and labels[row_of[a]] == labels[row_of[b]]):
                labels[row_of[a]] = fresh
                fresh += 1
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.get(x, x) != x:
                x = parent[x]
            return x

        named: dict[str, int] = {}
        for kind, a, b, name in corrections:
            if kind == "merge" and a in row_of and b in row_of:
                parent[find(int(labels[row_of[a]]))] = find(int(labels[row_of[b]]))
            elif kind == "name" and a in row_of and name:
                lab = find(int(labels[row_of[a]]))
                if name in named and find(named[name]) != lab:  # one name = one person: join them
                    parent[lab] = find(named[name])
                named[name] = find(lab)
        return np.array([find(int(x)) for x in labels], np.int64)

    def _names_for(self, ids: np.ndarray, labels: np.ndarray) -> dict[int, str]:
        row_of = {int(f): i for i, f in enumerate(ids)}
        names: dict[int, str] = {}
        for kind, a, _, name in self._corrections():
            if kind == "name" and a in row_of and labels[row_of[a]] >= 0 and name:
                names[int(labels[row_of[a]])] = name  # later names win
        return names

    # -- corrections -----------------------------------------------------------------------------
    def _cluster_faces(self, cluster: int) -> list[int]:
        faces = [r[0] for r in self.connect().execute("SELECT id FROM faces WHERE cluster=? ORDER BY id",
                                                      (cluster,))]
        if not faces:
            raise ClusterNotFound(f"no cluster {cluster} in this collection")
        return faces

    def _face(self, face_id: int) -> int:
        row = self.connect().execute("SELECT cluster FROM faces WHERE id=?", (face_id,)).fetchone()
        if row is None:
            raise ClusterNotFound(f"no face {face_id} in this collection")
        return int(row[0])

    def thumbnail(self, face_id: int) -> bytes:
        """The JPEG thumbnail stored with a face of the collection."""
        row = self.connect().execute("SELECT thumbnail FROM faces WHERE id=?", (face_id,)).fetchone()
        if row is None or not row[0]:
            raise ClusterNotFound(f"no thumbnail for face {face_id} in this collection")
        return bytes(row[0])

    def _record(self, kind: str, a: int, b: int | None = None, name: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO corrections (kind, face_a, face_b, name, created) VALUES (?, ?, ?, ?, ?)",
                         (kind, a, b, name, time.time()))

    def merge(self, cluster_a: int, cluster_b: int) -> None:
        """Clusters `a` and `b` are the same person."""
        if cluster_a == cluster_b:
            raise ClusterError(f"cannot merge cluster {cluster_a} into itself")
        a, b = self._cluster_faces(cluster_a), self._cluster_faces(cluster_b)
        self._record("merge", a[0], b[0])
        self.cluster()

    def split(self, face_id: int) -> None:
        """Take a face out of its cluster: it becomes a person of its own."""
        self._take_out(face_id, "split")
        self.cluster()

    def not_person(self, face_id: int, cluster: int) -> None:
        """This face is not the person of `cluster`."""
        self._take_out(face_id, "not", self._cluster_faces(cluster)[0])
        self.cluster()

    def _take_out(self, face_id: int, kind: str, other: int | None = None) -> None:
        """Record a split / "not this person". Earlier merges and names that used this face to stand for
        its cluster are moved to another face of that cluster first, so the newer correction wins
        instead of the old merge pulling the face straight back in."""
        cluster = self._face(face_id)
        stand_in = next((f for f in self._cluster_faces(cluster) if f != face_id), None) if cluster >= 0 else None
        with self.db.transaction() as conn:
            if stand_in is not None:
                conn.execute("UPDATE corrections SET face_a=? WHERE face_a=? AND kind IN ('merge', 'name')",
                             (stand_in, face_id))
                conn.execute("UPDATE corrections SET face_b=? WHERE face_b=? AND kind='merge'", (stand_in, face_id))
            conn.execute("INSERT INTO corrections (kind, face_a, face_b, name, created) VALUES (?, ?, ?, ?, ?)",
                         (kind, face_id, other, None, time.time()))

    def name(self, cluster: int, name: str) -> None:
        from facelens.gallery.store import clean_name

        name = clean_name(name)  # the gallery's rules: a named cluster can be enrolled under this name
        self._record("name", self._cluster_faces(cluster)[0], name=name)
        self.cluster()

    # -- reading ---------------------------------------------------------------------------------
    def clusters(self) -> list[Cluster]:
        conn = self.connect()
        names = json.loads(self.db.meta("names") or "{}")
        rows = conn.execute("SELECT f.cluster, f.id, i.path FROM faces f JOIN images i ON i.id = f.image_id "
                            "WHERE f.cluster >= 0 ORDER BY f.cluster, f.id").fetchall()
        out: dict[int, Cluster] = {}
        for cluster, face_id, path in rows:
            c = out.setdefault(cluster, Cluster(cluster, names.get(str(cluster)), [], []))
            c.face_ids.append(face_id)
            if path not in c.images:
                c.images.append(path)
        # biggest first (ids are stable across runs, so they no longer say anything about size)
        return sorted(out.values(), key=lambda c: (-len(c.face_ids), c.id))

    def summary(self) -> dict[str, Any]:
        conn = self.connect()
        count = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {"images": count("SELECT COUNT(*) FROM images"),
                "faces": count("SELECT COUNT(*) FROM faces"),
                "clusters": count("SELECT COUNT(DISTINCT cluster) FROM faces WHERE cluster >= 0"),
                "unassigned": count("SELECT COUNT(*) FROM faces WHERE cluster < 0 AND set_aside IS NULL"),
                "set_aside": count("SELECT COUNT(*) FROM faces WHERE set_aside IS NOT NULL")}

    def enroll(self, cluster: int, gallery: Any) -> list[int]:
        """Enroll a named cluster's faces into a `Gallery` (embeddings and thumbnails as stored here)."""
        names = {c.id: c.name for c in self.clusters()}
        if cluster not in names:
            raise ClusterNotFound(f"no cluster {cluster} in this collection")
        if not names[cluster]:
            raise ClusterError(f"cluster {cluster} has no name yet: name it first")
        rows = self.connect().execute(
            "SELECT f.embedding, f.bbox, f.det_score, f.thumbnail, i.sha256 FROM faces f JOIN images i "
            "ON i.id = f.image_id WHERE f.cluster=? ORDER BY f.id", (cluster,)).fetchall()
        from facelens.gallery import DuplicateFace
        from facelens.gallery.store import clean_name

        store = gallery.store
        recognizer = self._recognizer()
        name = clean_name(names[cluster])
        ids = []
        with store.transaction() as conn:
            store.bind_recognizer(conn, recognizer, len(rows[0][0]) // 4)
            person = store.ensure_person(conn, name)
            for embedding, bbox, det_score, thumb, digest in rows:
                box = json.loads(bbox)
                # the same face of the same photo (image hash + overlapping box) is enrolled once: again for
                # this person it is skipped, under someone else it is refused (as `gallery enroll` does);
                # other faces of a group photo are other people and may be enrolled
                owner = _enrolled_face(conn, digest, box)
                if owner is not None and owner[1] == person:
                    continue
                if owner is not None:
                    raise DuplicateFace(f"cluster {cluster}: a face is already enrolled under {owner[2]!r} (person "
                                        f"{owner[1]}, face {owner[0]}); nothing enrolled", owner[0], owner[1],
                                        owner[2], False)
                ids.append(store.add_face(conn, person, np.frombuffer(embedding, np.float32), recognizer, digest,
                                          box, det_score, None, thumb))
        return ids

    def write_outputs(self) -> tuple[Path, Path]:
        from facelens.cluster.report import write_contact_sheet

        clusters = self.clusters()
        summary = self.summary()
        json_path = self.path / "clusters.json"
        # both outputs hold personal data (photo paths; the sheet inlines face thumbnails): owner-only
        with private_file(json_path) as fh:
            fh.write(json.dumps({"summary": summary, "clusters": [c.to_dict() for c in clusters]}, indent=1))
        html_path = self.path / "contact_sheet.html"
        write_contact_sheet(self, clusters, summary, html_path)
        return json_path, html_path


def _enrolled_face(conn: Any, digest: str | None, box: list[float]) -> tuple[int, int, str] | None:
    """(face id, person id, name) of a gallery face from the same image whose box overlaps `box`."""
    if not digest:
        return None
    rows = conn.execute("SELECT f.id, p.id, p.name, f.bbox FROM faces f JOIN people p ON p.id = f.person_id "
                        "WHERE f.image_sha256=?", (digest,)).fetchall()
    for face_id, person_id, name, bbox in rows:
        # a face enrolled from a whole photo without a box, or with an overlapping one, is this face
        if not bbox or box_iou(json.loads(bbox), box) > 0.5:
            return int(face_id), int(person_id), str(name)
    return None


__all__ = ["Cluster", "ClusterError", "Collection", "chinese_whispers", "cluster_labels", "knn_graph"]
