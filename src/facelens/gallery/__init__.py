"""The gallery: enroll people, identify faces 1:N (top-k or "unknown"), and forget people completely.

One directory holds a gallery: `gallery.sqlite` (the source of truth), `index/` (the persisted
search index, rebuilt from the database whenever it is missing, stale or corrupt; see
`gallery/index.py` for the method and why) and erasure receipts. A gallery created with
`milvus_uri` keeps its vectors and search in Milvus instead (`gallery/milvus.py`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.errors import ConfigError, FacelensError, NoFaceError, QualityError
from facelens.gallery.store import GalleryError, GalleryNotFound, Person, SQLiteStore
from facelens.io import ImageSource, decode_image, sha256_file
from facelens.models.registry import threshold_for
from facelens.pipeline import FaceAnalyzer, source_label
from facelens.types import Face

DB_NAME = "gallery.sqlite"
THUMBNAIL_SIZE = 112


def default_gallery_path() -> Path:
    from facelens.models.registry import facelens_home

    return Path(os.environ.get("FACELENS_GALLERY") or facelens_home() / "gallery")


@dataclass(frozen=True)
class Match:
    person: str
    person_id: int
    similarity: float
    face_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"person": self.person, "person_id": self.person_id, "similarity": round(self.similarity, 5),
                "face_id": self.face_id}


@dataclass
class Identification:
    """One face of a probe image: its box, the best matches (one per person) and the decision."""

    face: Face
    matches: list[Match]
    threshold: float

    @property
    def identity(self) -> str | None:
        """The best match's name if it clears the threshold, else None ("unknown")."""
        return self.matches[0].person if self.matches and self.matches[0].similarity >= self.threshold else None

    def to_dict(self) -> dict[str, Any]:
        return {"bbox": self.face.to_dict(embedding=False)["bbox"], "det_score": round(self.face.det_score, 4),
                "identity": self.identity or "unknown", "threshold": round(self.threshold, 5),
                "matches": [m.to_dict() for m in self.matches]}


def face_thumbnail(pixels: np.ndarray, face: Face) -> bytes:
    """A 112x112 JPEG of the face's box (gallery records and clustering contact sheets)."""
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    crop = pixels[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
    crop = cv2.resize(crop, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else b""


class Gallery:
    """A gallery directory bound to one recognizer (the first enrollment's).

    >>> g = Gallery("people/")
    >>> g.enroll("Ada", ["ada1.jpg", "ada2.jpg"])
    >>> [r.identity for r in g.identify("group.jpg")]
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, analyzer: FaceAnalyzer | None = None,
                 min_quality: float | None = None) -> None:
        self.path = Path(path) if path else default_gallery_path()
        self.analyzer = analyzer
        # faces below this quality are refused at enrollment (None: the shipped QUALITY_FLOOR; 0: off)
        self.min_quality = min_quality
        self._store: SQLiteStore | None = None
        self._index: Any = None
        self._lock = threading.Lock()
        # seconds spent reading photos and running the models vs writing to the store, summed over
        # enrollments: the benchmark's "the store adds < 5 %" figure comes from here
        self.timings = {"analyze_s": 0.0, "store_s": 0.0}

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def store(self) -> SQLiteStore:
        if self._store is None:
            if self.path.exists() and not self.path.is_dir():
                raise GalleryError(f"{self.path}: not a directory")
            self._store = SQLiteStore(self.path / DB_NAME)
        return self._store

    def _analyzer(self) -> FaceAnalyzer:
        if self.analyzer is None:
            bound = self.store.meta("recognizer") if (self.path / DB_NAME).exists() else None
            self.analyzer = FaceAnalyzer(recognizer=bound or "arcface-mbf")
        return self.analyzer

    @property
    def recognizer(self) -> str | None:
        return self.store.meta("recognizer") if (self.path / DB_NAME).exists() else None

    def _check_recognizer(self) -> None:
        bound = self.recognizer
        if bound and bound != self._analyzer().recognizer:
            raise GalleryError(f"this gallery holds {bound} embeddings; an analyzer with "
                               f"{self._analyzer().recognizer} cannot search or extend it")

    @property
    def index(self) -> Any:
        """The search index (`LocalIndex`, or `MilvusIndex` for a gallery bound to Milvus)."""
        if self._index is None:
            uri = self.store.meta("milvus_uri") if (self.path / DB_NAME).exists() else None
            if uri:
                from facelens.gallery.milvus import MilvusIndex

                self._index = MilvusIndex(self._resolve_uri(uri), self.store.meta("milvus_collection") or "faces")
            else:
                from facelens.gallery.index import LocalIndex

                self._index = LocalIndex(self.path)
        return self._index

    def _resolve_uri(self, uri: str) -> str:
        # A relative milvus-lite file lives inside the gallery directory, so the directory stays movable.
        if "://" in uri or os.path.isabs(uri):
            return uri
        return str(self.path / uri)

    def use_milvus(self, uri: str, collection: str = "faces") -> None:
        """Bind this gallery's vectors and search to Milvus: a server/cluster URI (`http://host:19530`)
        or a milvus-lite file (`milvus.db`, relative to the gallery). Existing faces are copied over."""
        from facelens.gallery.milvus import MilvusIndex

        with self.store.transaction() as conn:
            for key, value in (("milvus_uri", uri), ("milvus_collection", collection)):
                conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             (key, value))
        if self._index is not None and not isinstance(self._index, MilvusIndex):
            self._index.drop()
        self._index = None
        with self._lock:
            self.index.sync(self.store)

    def index_info(self, rebuild: bool = False) -> dict[str, Any]:
        """What the search index is and holds; `rebuild` drops it and builds it again from SQLite."""
        if not (self.path / DB_NAME).exists():
            raise GalleryError(f"{self.path}: no gallery here yet")
        with self._lock:
            if rebuild:
                self.index.drop()
            self.index.sync(self.store)
            if rebuild:
                self.index.save(self.store, force=True)
        self.save_index()
        index = self.index
        info: dict[str, Any] = {"faces": index.size, "generation": index.generation}
        if hasattr(index, "dir"):
            info["kind"] = "pq-fastscan+rerank" if index._pq is not None else "exact"
            info["path"] = str(index.dir)
            info["on_disk_bytes"] = sum(p.stat().st_size for p in index.dir.glob("*")) if index.dir.exists() else 0
        else:
            info.update(kind="milvus", uri=index.uri, collection=index.collection)
        return info

    def save_index(self) -> None:
        """Persist the search index if this process changed it (the CLI calls this before exiting)."""
        if self._index is not None and getattr(self._index, "dirty", False) and (self.path / DB_NAME).exists():
            started = time.perf_counter()
            try:
                with self._lock:
                    self._index.save(self.store)
            except OSError as exc:  # a read-only gallery still answers; the index is only a cache
                logging.getLogger("facelens").warning("search index not saved: %s", exc)
            self.timings["store_s"] += time.perf_counter() - started

    def close(self) -> None:
        self.save_index()
        if self._index is not None and hasattr(self._index, "close"):
            self._index.close()
        if self._store is not None:
            self._store.close()

    # -- enroll ----------------------------------------------------------------------------------
    def enroll(self, name: str, images: list[ImageSource], largest: bool = False,
               metadata: dict[str, Any] | None = None) -> list[int]:
        """Add one face per image to `name` (created if new), all in one transaction.

        An image with no face, with several faces unless `largest`, or whose face is below the quality
        floor, is refused with the reason and nothing is written: a gallery polluted by a wrong or
        unusable face is worse than a retry.
        """
        name = name.strip()
        if not name:
            raise ConfigError("a person's name cannot be empty")
        if not images:
            raise ConfigError("enroll needs at least one image")
        analyzer = self._analyzer()
        self._check_recognizer()
        started = time.perf_counter()
        prepared = []
        for image in images:
            label = source_label(image)
            decoded = decode_image(image, max_side=analyzer.decode_size)
            faces = analyzer.detector_model.detect(decoded.pixels)
            if not faces:
                raise NoFaceError(f"{label}: no face found; nothing enrolled")
            if len(faces) > 1 and not largest:
                raise GalleryError(f"{label}: {len(faces)} faces found; enroll needs one (or pass --largest)")
            face = max(faces, key=lambda f: f.area)
            analyzer.embed(decoded.pixels, [face])
            quality = self._check_quality(label, decoded.pixels, face)
            digest = sha256_file(image) if isinstance(image, str | os.PathLike) else None
            thumb = face_thumbnail(decoded.pixels, face)
            face.rescale(decoded.scale)
            prepared.append((face, digest, thumb, quality))
        dim = len(prepared[0][0].embedding)  # type: ignore[arg-type]
        analyzed = time.perf_counter()
        self.timings["analyze_s"] += analyzed - started
        with self.store.transaction() as conn:
            self.store.bind_recognizer(conn, analyzer.recognizer, dim)
            person_id = self.store.ensure_person(conn, name, metadata)
            ids = [self.store.add_face(conn, person_id, f.embedding, analyzer.recognizer, digest,  # type: ignore[arg-type]
                                       [round(float(v), 2) for v in f.bbox], f.det_score, quality, thumb)
                   for f, digest, thumb, quality in prepared]
        self.timings["store_s"] += time.perf_counter() - analyzed
        return ids

    def _check_quality(self, label: str, pixels: np.ndarray, face: Face) -> float | None:
        """The face's quality score; a `QualityError` naming the weakest part if below the floor."""
        from facelens.analysis.quality import QUALITY_FLOOR, FaceQuality, weakest_part

        floor = QUALITY_FLOOR if self.min_quality is None else self.min_quality
        if floor <= 0:
            return None
        FaceQuality().annotate(pixels, [face])
        quality = face.attributes["quality"]
        if "score" not in quality:
            return None
        if quality["score"] < floor:
            raise QualityError(f"{label}: face quality {quality['score']:.2f} is below the enrollment floor "
                               f"{floor:.2f} ({weakest_part(quality)}); nothing enrolled")
        return float(quality["score"])

    def import_folder(
        self, root: str | os.PathLike[str], largest: bool = False,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Enroll a folder-per-person tree, one transaction per image, so an interrupted import leaves a
        consistent gallery and a rerun picks up where it stopped (images already enrolled for that
        person, by content hash, are skipped). Returns one report entry per file."""
        from facelens.evaluate.protocols import folder_per_person

        report = []
        for path, person in folder_per_person(Path(root)):
            entry: dict[str, Any] = {"path": str(path), "person": person}
            try:
                digest = sha256_file(path)
                if self._has_image(person, digest):
                    entry["status"] = "already enrolled"
                else:
                    entry["face_ids"] = self.enroll(person, [path], largest=largest)
                    entry["status"] = "enrolled"
            except (FacelensError, OSError) as exc:
                entry["status"] = "error"
                entry["error"] = str(exc)
            report.append(entry)
            if on_result:
                on_result(entry)
        return report

    def _has_image(self, person: str, digest: str) -> bool:
        if not (self.path / DB_NAME).exists():
            return False
        row = self.store.connect().execute(
            "SELECT 1 FROM faces f JOIN people p ON p.id = f.person_id WHERE p.name=? AND f.image_sha256=?",
            (person, digest),
        ).fetchone()
        return row is not None

    # -- search ----------------------------------------------------------------------------------
    def search(self, embedding: np.ndarray, top_k: int = 5) -> list[Match]:
        """The best face of each of the `top_k` closest people, by cosine similarity."""
        if not (self.path / DB_NAME).exists():
            return []
        with self._lock:
            self.index.sync(self.store)
            total = self.index.size
            k = min(total, 2 * top_k + 8)  # people have 1-3 faces: usually enough; widened below if not
            while True:
                sims, face_ids = self.index.search(embedding, k)
                # Owners are read at query time, so renames and merges never make the index stale.
                owners = self.store.face_owners([int(i) for i in face_ids])
                matches, seen = [], set()
                for sim, face_id in zip(sims, face_ids, strict=True):
                    owner = owners.get(int(face_id))
                    if owner is None or owner[0] in seen:  # deleted since the sync, or a person's weaker face
                        continue
                    seen.add(owner[0])
                    matches.append(Match(owner[1], owner[0], float(sim), int(face_id)))
                    if len(matches) == top_k:
                        return matches
                if k >= total:
                    return matches
                k = min(total, 4 * k)

    def identify(self, image: ImageSource, top_k: int = 5, far: float = 1e-3) -> list[Identification]:
        """Every face of an image against the gallery: top-k people and a name, or unknown below the
        threshold calibrated for the recognizer at false-match rate `far`."""
        analyzer = self._analyzer()
        self._check_recognizer()
        threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
        return [Identification(face, self.search(face.embedding, top_k), threshold)  # type: ignore[arg-type]
                for face in analyzer.analyze(image)]

    # -- management ------------------------------------------------------------------------------
    def people(self) -> list[Person]:
        return self.store.people() if (self.path / DB_NAME).exists() else []

    def person(self, name: str) -> Person:
        return self.store.person(name)

    def faces(self, name: str) -> list[dict[str, Any]]:
        """The enrolled faces of a person: id, box, detection score, source image hash, date (no vectors)."""
        person = self.store.person(name)
        rows = self.store.connect().execute(
            "SELECT id, bbox, det_score, image_sha256, recognizer, created FROM faces WHERE person_id=? ORDER BY id",
            (person.id,),
        ).fetchall()
        return [{"face_id": r[0], "bbox": json.loads(r[1]) if r[1] else None, "det_score": r[2],
                 "image_sha256": r[3], "recognizer": r[4], "created": r[5]} for r in rows]

    def export(self, target: str | os.PathLike[str]) -> int:
        """Write every person and face (embeddings and thumbnails included) as JSON lines; returns faces."""
        conn = self.store.connect()
        count = 0
        tmp = Path(target).with_name(Path(target).name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"facelens_gallery": 1, "recognizer": self.recognizer}) + "\n")
            for person in self.store.people():
                rows = conn.execute("SELECT embedding, recognizer, image_sha256, bbox, det_score, quality, thumbnail "
                                    "FROM faces WHERE person_id=? ORDER BY id", (person.id,)).fetchall()
                faces = [{"embedding": base64.b64encode(r[0]).decode(), "recognizer": r[1], "image_sha256": r[2],
                          "bbox": json.loads(r[3]) if r[3] else None, "det_score": r[4], "quality": r[5],
                          "thumbnail": base64.b64encode(r[6]).decode() if r[6] else None} for r in rows]
                fh.write(json.dumps({"name": person.name, "metadata": person.metadata, "faces": faces}) + "\n")
                count += len(faces)
        tmp.replace(target)
        return count

    def import_export(self, source: str | os.PathLike[str]) -> int:
        """Load a file written by `export` in one transaction (all or nothing); returns faces added."""
        lines = Path(source).read_text().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
            records = [json.loads(line) for line in lines[1:] if line.strip()]
        except json.JSONDecodeError as exc:
            raise GalleryError(f"{source}: not a facelens gallery export ({exc})") from None
        if header.get("facelens_gallery") != 1:
            raise GalleryError(f"{source}: not a facelens gallery export")
        added = 0
        with self.store.transaction() as conn:
            for record in records:
                person_id = self.store.ensure_person(conn, record["name"], record.get("metadata"))
                for face in record["faces"]:
                    vector = np.frombuffer(base64.b64decode(face["embedding"]), dtype=np.float32)
                    self.store.bind_recognizer(conn, face["recognizer"], len(vector))
                    thumb = base64.b64decode(face["thumbnail"]) if face.get("thumbnail") else None
                    self.store.add_face(conn, person_id, vector, face["recognizer"], face.get("image_sha256"),
                                        face.get("bbox"), face.get("det_score"), face.get("quality"), thumb)
                    added += 1
        return added

    def create_person(self, name: str, metadata: dict[str, Any] | None = None) -> Person:
        """A person with no face yet (faces are added by `enroll`)."""
        name = name.strip()
        if not name:
            raise ConfigError("a person's name cannot be empty")
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM people WHERE name=?", (name,)).fetchone():
                raise GalleryError(f"a person named {name!r} already exists")
            self.store.ensure_person(conn, name, metadata)
        return self.store.person(name)

    def set_metadata(self, name: str, metadata: dict[str, Any]) -> Person:
        person = self.store.person(name)
        with self.store.transaction() as conn:
            conn.execute("UPDATE people SET metadata=?, updated=? WHERE id=?",
                         (json.dumps(metadata), time.time(), person.id))
        return self.store.person(person.id)

    def thumbnail(self, face_id: int) -> bytes:
        """The JPEG thumbnail stored with a face."""
        row = self.store.connect().execute("SELECT thumbnail FROM faces WHERE id=?", (face_id,)).fetchone()
        if row is None or not row[0]:
            raise GalleryNotFound(f"no thumbnail for face {face_id} in the gallery")
        return bytes(row[0])

    def rename(self, old: str, new: str) -> None:
        new = new.strip()
        if not new:
            raise ConfigError("a person's name cannot be empty")
        person = self.store.person(old)
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM people WHERE name=?", (new,)).fetchone():
                raise GalleryError(f"a person named {new!r} already exists; merge instead")
            conn.execute("UPDATE people SET name=?, updated=? WHERE id=?", (new, time.time(), person.id))

    def merge(self, source: str, target: str) -> int:
        """Move every face of `source` to `target` and delete `source`; returns the faces moved."""
        a, b = self.store.person(source), self.store.person(target)
        if a.id == b.id:
            raise GalleryError("cannot merge a person into itself")
        with self.store.transaction() as conn:
            moved = conn.execute("UPDATE faces SET person_id=? WHERE person_id=?", (b.id, a.id)).rowcount
            conn.execute("DELETE FROM people WHERE id=?", (a.id,))
        return int(moved)

    def remove_face(self, face_id: int) -> None:
        with self.store.transaction() as conn:
            if conn.execute("DELETE FROM faces WHERE id=?", (face_id,)).rowcount == 0:
                raise GalleryNotFound(f"no face with id {face_id} in the gallery")
        self._erase_from_index()

    def _erase_from_index(self) -> None:
        """Deleted rows leave the index files too (rewritten without them), not just the search results."""
        with self._lock:
            self.index.sync(self.store)
            self.index.erase(self.store)

    def forget(self, name: str) -> dict[str, Any]:
        """Erase a person completely: rows, embeddings, thumbnails; then compact the files so the bytes
        are gone, and write an erasure receipt (what, when, counts — no biometric data)."""
        person = self.store.person(name)
        with self.store.transaction() as conn:
            faces = conn.execute("DELETE FROM faces WHERE person_id=?", (person.id,)).rowcount
            conn.execute("DELETE FROM people WHERE id=?", (person.id,))
        self.store.compact()
        self._erase_from_index()
        receipt = {
            "action": "forget",
            "person_id": person.id,
            "name_sha256": hashlib.sha256(person.name.encode()).hexdigest(),
            "faces_removed": int(faces),
            "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "storage_compacted": True,
        }
        folder = self.path / "receipts"
        folder.mkdir(exist_ok=True)
        target = folder / f"forget-{receipt['at'].replace(':', '')}-{person.id}.json"
        target.write_text(json.dumps(receipt, indent=2) + "\n")
        receipt["receipt"] = str(target)
        return receipt


__all__ = ["FacelensError", "Gallery", "GalleryError", "Identification", "Match", "Person"]
