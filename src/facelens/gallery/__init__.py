"""The gallery: enroll people, identify faces 1:N (top-k or "unknown"), and forget people completely.

One directory holds a gallery: `gallery.sqlite` (the source of truth), `index/` (the persisted
search index, rebuilt from the database whenever it is missing, stale or corrupt; see
`gallery/index.py` for the method and why) and erasure receipts. A gallery created with
`milvus_uri` keeps its vectors and search in Milvus instead (`gallery/milvus.py`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.errors import ConfigError, FacelensError, ImageError, NoFaceError, NotLiveError, QualityError
from facelens.gallery.openset import DEFAULT_FPIR, OpenSetThreshold, check_fpir, fpir_threshold
from facelens.gallery.store import (
    DuplicateFace,
    GalleryCorrupt,
    GalleryError,
    GalleryMissing,
    GalleryNotFound,
    GalleryProfileError,
    GalleryReadOnly,
    Person,
    SQLiteStore,
    check_profile_write,
    clean_name,
    metadata_json,
    valid_id,
)
from facelens.io import ImageSource, decode_image, sha256_file
from facelens.pipeline import FaceAnalyzer, check_subject_rule, clear_subject, main_face, source_label
from facelens.sqlite import make_private_dir, private_file
from facelens.types import Face

DB_NAME = "gallery.sqlite"
THUMBNAIL_SIZE = 112
# the embedding size of each recognizer (an import is checked against it before the gallery is bound)
RECOGNIZER_DIMS = {"arcface-mbf": 512, "sface": 128, "dlib-resnet": 128}
NORM_TOLERANCE = 1e-2  # stored embeddings are unit vectors: |norm - 1| below this
IMPORT_LINE_MAX = 4 << 20  # bytes: a record holds a few faces (~5 KiB each) and <= 64 KiB of metadata
THUMBNAIL_MAX = 256 * 1024


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
    decision: OpenSetThreshold | None = None  # the FPIR and gallery size the threshold came from

    @property
    def identity(self) -> str | None:
        """The best match's name if it clears the threshold, else None ("unknown")."""
        return self.matches[0].person if self.matches and self.matches[0].similarity >= self.threshold else None

    def to_dict(self) -> dict[str, Any]:
        out = {"bbox": self.face.to_dict(embedding=False)["bbox"], "det_score": round(self.face.det_score, 4),
               "identity": self.identity or "unknown", "threshold": round(self.threshold, 5),
               "matches": [m.to_dict() for m in self.matches]}
        if self.decision is not None:
            out["decision"] = self.decision.to_dict()
        return out


def image_digest(image: ImageSource) -> str | None:
    """The content hash that identifies an enrolled image: sha256 of a file's (or a byte string's) bytes;
    of the pixels (with their shape) for an array or a PIL image."""
    if isinstance(image, str | os.PathLike):
        return sha256_file(image)
    if isinstance(image, bytes | bytearray | memoryview):
        return hashlib.sha256(image).hexdigest()
    pixels = np.ascontiguousarray(np.asarray(image))
    digest = hashlib.sha256(f"pixels:{pixels.shape}:{pixels.dtype}:".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


class AmbiguousSubject(GalleryError):
    """A photo with several faces, none clearly its subject: refused rather than guessed."""


def face_thumbnail(pixels: np.ndarray, face: Face) -> bytes:
    """A 112x112 JPEG of the face's box (gallery records and clustering contact sheets)."""
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    crop = pixels[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
    crop = cv2.resize(crop, (THUMBNAIL_SIZE, THUMBNAIL_SIZE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else b""


REFUSAL_REASONS = ("no face", "ambiguous subject", "below the quality floor", "duplicate image", "unreadable",
                   "other")


def _refusal_reason(exc: BaseException) -> str:
    """The short reason of an import's refused file (the per-file report's `reason`)."""
    if isinstance(exc, NoFaceError):
        return "no face"
    if isinstance(exc, AmbiguousSubject):
        return "ambiguous subject"
    if isinstance(exc, QualityError):
        return "below the quality floor"
    if isinstance(exc, DuplicateFace):
        return "duplicate image"
    if isinstance(exc, OSError | ImageError):
        return "unreadable"
    return "other"


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
        self._size_cache: tuple[int, int, int] | None = None  # (generation, faces, people)
        self._liveness: Any = None  # built on the first enrollment that requires a live face
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

    def _existing(self) -> SQLiteStore:
        """The store of a gallery that exists. Reads never create one: a typo in a path must not answer
        "nobody here" (every face "unknown"), it must say there is no gallery."""
        if self.path.exists() and not self.path.is_dir():
            raise GalleryError(f"{self.path}: not a directory, so not a gallery")
        if not (self.path / DB_NAME).exists():
            raise GalleryMissing(f"no gallery at {self.path}; enroll someone first")
        return self.store

    def init(self) -> Gallery:
        """Create the gallery (an empty database) if there is none yet; a server calls this at start-up
        so that listing an empty gallery answers an empty list rather than "no gallery"."""
        self.store.connect()
        return self

    def _analyzer(self) -> FaceAnalyzer:
        if self.analyzer is None:
            bound = self.recognizer
            self._check_profile()
            self.analyzer = FaceAnalyzer(recognizer=bound)
        return self.analyzer

    @property
    def recognizer(self) -> str | None:
        return self.store.meta("recognizer") if (self.path / DB_NAME).exists() else None

    @property
    def profile(self) -> str | None:
        """The profile of the gallery's recognizer, as recorded when it was bound (None: not bound yet)."""
        from facelens.profile import profile_of_recognizer

        recognizer = self.recognizer
        if recognizer is None:
            return None
        return self.store.meta("profile") or profile_of_recognizer(recognizer)  # galleries made before profiles

    def _check_profile(self) -> None:
        """A gallery made in the default profile cannot be used in the clean one: its embeddings come from a
        model that profile may not run, so neither searching nor enrolling could be done with one recognizer."""
        from facelens.profile import active_profile

        active = active_profile()
        if active.commercial_only and self.profile not in (None, "clean"):
            raise GalleryProfileError(f"this gallery was made in the {self.profile} profile ({self.recognizer} "
                                      f"embeddings); the {active.name} profile cannot use it: enroll the people "
                                      f"again into a new gallery with {active.recognizer}")

    def _check_recognizer(self) -> None:
        self._check_profile()
        bound = self.recognizer
        if bound and bound != self._analyzer().recognizer:
            raise GalleryError(f"this gallery holds {bound} embeddings (profile {self.profile}); an analyzer with "
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
        self._existing()
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
               metadata: dict[str, Any] | None = None, allow_duplicate: bool = False,
               subject: str = "main", require_live: bool = False) -> list[int]:
        """Add one face per image to `name` (created if new, with `metadata`), all in one transaction.

        Of several faces in an image, the photo's subject is taken when it is clearly the one (by the
        `subject` rule, "main": size weighed by closeness to the centre, or "largest"; a margin of
        `SUBJECT_MARGIN` over the next face, see `facelens.pipeline.clear_subject`); `largest` takes the
        subject even without that margin. An image with no face, an ambiguous one (`AmbiguousSubject`)
        unless `largest`, or whose face is below the quality floor, is refused with the reason and nothing
        is written: a gallery polluted by a wrong or unusable face is worse than a retry. So is an image
        already enrolled (same content hash), for this person or another one (`DuplicateFace`), unless
        `allow_duplicate`: identical biometric data under two names survives forgetting one of them.
        `require_live`: each face must pass passive liveness (`facelens.analysis.liveness`), else
        `NotLiveError` and nothing is written.
        """
        name = clean_name(name)
        if metadata is not None:
            metadata_json(metadata)
        prepared = self._prepare(images, largest, subject, require_live)
        started = time.perf_counter()
        with self.store.transaction() as conn:
            # the name is resolved inside the write transaction: a concurrent rename or forget cannot
            # slip between the lookup and the insert
            self.store.bind_recognizer(conn, self._analyzer().recognizer, len(prepared[0][0].embedding))  # type: ignore[arg-type]
            person_id = self.store.ensure_person(conn, name, metadata)
            ids = self._add_prepared(conn, person_id, name, prepared, allow_duplicate)
        self.timings["store_s"] += time.perf_counter() - started
        return ids

    def add_faces(self, person_id: int, images: list[ImageSource], largest: bool = False,
                  allow_duplicate: bool = False, subject: str = "main", require_live: bool = False) -> list[int]:
        """Add one face per image to the existing person `person_id` (same refusals as `enroll`).

        The person is looked up by id inside the write transaction: if they were forgotten (or merged
        away) meanwhile, `GalleryNotFound` is raised and nothing is written; a forgotten person never
        comes back, and a rename meanwhile does not matter."""
        if not valid_id(person_id):
            raise GalleryNotFound(f"no person {person_id!r} in the gallery")
        self._existing().person(person_id)  # fail before running the models
        prepared = self._prepare(images, largest, subject, require_live)
        started = time.perf_counter()
        with self.store.transaction() as conn:
            person = self.store.person(person_id, conn)
            self.store.bind_recognizer(conn, self._analyzer().recognizer, len(prepared[0][0].embedding))  # type: ignore[arg-type]
            conn.execute("UPDATE people SET updated=? WHERE id=?", (time.time(), person.id))
            ids = self._add_prepared(conn, person.id, person.name, prepared, allow_duplicate)
        self.timings["store_s"] += time.perf_counter() - started
        return ids

    def _prepare(self, images: list[ImageSource], largest: bool, subject: str = "main", require_live: bool = False
                 ) -> list[tuple[Face, str | None, bytes, float | None, str]]:
        """Detect, check and embed one face per image (outside any transaction: this is the slow part)."""
        check_subject_rule(subject)
        if isinstance(images, str | os.PathLike | bytes | np.ndarray):
            raise ConfigError("images must be a list of images (one face each), e.g. [path], not one image")
        if not images:
            raise ConfigError("enroll needs at least one image")
        analyzer = self._analyzer()
        self._check_recognizer()
        started = time.perf_counter()
        prepared = []
        given: dict[str, str] = {}
        for image in images:
            label = source_label(image)
            decoded = decode_image(image, max_side=analyzer.decode_size)
            # the same image twice in one call: refused before any model runs or any file is created
            digest = image_digest(image)
            if digest in given:
                raise DuplicateFace(f"{label}: the same image as {given[digest]} is given twice; nothing enrolled",
                                    None, 0, "", True)
            given[digest or label] = label
            faces = analyzer.detector_model.detect(decoded.pixels)
            if not faces:
                raise NoFaceError(f"{label}: no face found; nothing enrolled")
            height, width = decoded.pixels.shape[:2]
            if largest:
                face = main_face(faces, width, height, subject)
            else:
                face, why = clear_subject(faces, width, height, subject)
                if face is None:
                    raise AmbiguousSubject(f"{label}: {why}; nothing enrolled (pass --largest to take the "
                                           f"{'largest' if subject == 'largest' else 'main'} face anyway)")
            if require_live:
                self._check_live(label, decoded.pixels, face)
            analyzer.embed(decoded.pixels, [face])
            quality = self._check_quality(label, decoded.pixels, face)
            thumb = face_thumbnail(decoded.pixels, face)
            face.rescale(decoded.scale)
            prepared.append((face, digest, thumb, quality, label))
        self.timings["analyze_s"] += time.perf_counter() - started
        return prepared

    def _check_live(self, label: str, pixels: np.ndarray, face: Face) -> None:
        if self._liveness is None:
            from facelens.analysis.liveness import Liveness

            part = Liveness()
            part.check_models()
            self._liveness = part
        (value,) = self._liveness.measure(pixels, [face])
        if value["decision"] != "live":
            why = value.get("reason") or f"score {value['score']:.3f} >= threshold {value['threshold']:.3f}"
            raise NotLiveError(f"{label}: liveness check says {value['decision']} ({why}); nothing enrolled")

    def _add_prepared(self, conn: Any, person_id: int, name: str, prepared: list[Any],
                      allow_duplicate: bool) -> list[int]:
        ids = []
        recognizer = self._analyzer().recognizer
        for face, digest, thumb, quality, label in prepared:
            if digest and not allow_duplicate:
                self._refuse_duplicate(conn, digest, person_id, name, label)
            ids.append(self.store.add_face(conn, person_id, face.embedding, recognizer, digest,  # type: ignore[arg-type]
                                           [round(float(v), 2) for v in face.bbox], face.det_score, quality, thumb))
        return ids

    def _refuse_duplicate(self, conn: Any, digest: str, person_id: int, name: str, label: str) -> None:
        """Checked inside the write transaction, so two writers cannot both add the same image."""
        owner = self.store.image_owner(conn, digest)
        if owner is None:
            return
        face_id, owner_id, owner_name = owner
        if owner_id == person_id:
            raise DuplicateFace(f"{label}: already enrolled for {name!r} (face {face_id}); nothing enrolled",
                                face_id, owner_id, owner_name, True)
        raise DuplicateFace(f"{label}: this image is already enrolled under another person, {owner_name!r} "
                            f"(person {owner_id}, face {face_id}); nothing enrolled (in Python, allow_duplicate=True "
                            "enrolls it anyway)", face_id, owner_id, owner_name, False)

    def _floor(self) -> float:
        from facelens.analysis.quality import quality_floor

        return quality_floor(self.min_quality)

    def _check_quality(self, label: str, pixels: np.ndarray, face: Face) -> float | None:
        """The face's quality score; a `QualityError` naming the weakest part if below the floor."""
        from facelens.analysis.quality import measured_quality, weakest_part

        floor = self._floor()
        if floor <= 0:
            return None
        quality = measured_quality(pixels, face)
        if quality is None:
            return None
        if quality["score"] < floor:
            raise QualityError(f"{label}: face quality {quality['score']:.2f} is below the enrollment floor "
                               f"{floor:.2f} ({weakest_part(quality)}); nothing enrolled")
        return float(quality["score"])

    def import_folder(
        self, root: str | os.PathLike[str], largest: bool = False,
        on_result: Callable[[dict[str, Any]], None] | None = None, subject: str = "main",
    ) -> list[dict[str, Any]]:
        """Enroll a folder-per-person tree, one transaction per image, so an interrupted import leaves a
        consistent gallery and a rerun picks up where it stopped (images already enrolled for that
        person, by content hash, are skipped). Each photo's subject is chosen as `enroll` does. Returns
        one report entry per file; a refused one has `error` (the message) and `reason` (one of
        `REFUSAL_REASONS`)."""
        check_subject_rule(subject)
        from facelens.evaluate.protocols import folder_per_person

        report = []
        for path, person in folder_per_person(Path(root)):
            entry: dict[str, Any] = {"path": str(path), "person": person}
            try:
                digest = sha256_file(path)
                if self._has_image(person, digest):  # a quick skip before the models; enroll re-checks
                    entry["status"] = "already enrolled"
                else:
                    entry["face_ids"] = self.enroll(person, [path], largest=largest, subject=subject)
                    entry["status"] = "enrolled"
            except DuplicateFace as exc:
                # the same person: enrolled by a concurrent import meanwhile, or the same file twice
                entry["status"] = "already enrolled" if exc.same_person else "error"
                if not exc.same_person:
                    entry["error"], entry["reason"] = str(exc), "duplicate image"
            except (FacelensError, OSError) as exc:
                entry["status"] = "error"
                entry["error"], entry["reason"] = str(exc), _refusal_reason(exc)
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
        top_k = _check_top_k(top_k)
        store = self._existing()
        self._check_profile()
        dim = int(store.meta("dim") or 0)
        vector = np.asarray(embedding)
        if vector.dtype.kind not in "fiu" or not np.isfinite(vector).all() or not vector.any():
            raise ConfigError("an embedding to search with must be finite numbers, not all zero")
        # cosine similarity: a vector of any length searches by its direction (an unnormalised one would
        # otherwise score above 1 against everyone)
        embedding = (vector / np.linalg.norm(vector.astype(np.float64))).astype(np.float32)
        if dim and embedding.size != dim:
            raise GalleryError(f"a {embedding.size}-d embedding cannot search this gallery of {dim}-d ones")
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

    def identify(self, image: ImageSource, top_k: int = 5, fpir: float = DEFAULT_FPIR) -> list[Identification]:
        """Every face of an image against the gallery: top-k people and a name, or unknown.

        A name is given when the best match clears the threshold that names at most about `fpir` of
        strangers (people never enrolled) in a gallery of this size (see `gallery/openset.py`): the
        threshold rises as the gallery grows, where a fixed per-comparison FAR would name ever more
        strangers. Each answer carries the FPIR, the gallery size and the threshold it used."""
        top_k = _check_top_k(top_k)
        fpir = check_fpir(fpir)
        self._existing()
        analyzer = self._analyzer()
        self._check_recognizer()
        decision = self.decision_threshold(fpir)
        return [Identification(face, self.search(face.embedding, top_k), decision.threshold, decision)  # type: ignore[arg-type]
                for face in analyzer.analyze(image)]

    def threshold_for_search(self, recognizer: str, fpir: float = DEFAULT_FPIR) -> OpenSetThreshold:
        """For a caller that embeds faces itself (video tracks, anonymization): the gallery must exist (a missing
        one is an error, not "everyone unknown") and hold `recognizer`'s embeddings; its open-set threshold."""
        fpir = check_fpir(fpir)
        self._existing()
        if self.recognizer and self.recognizer != recognizer:
            raise ConfigError(f"the gallery holds {self.recognizer} embeddings; {recognizer} embeddings cannot "
                              "search it")
        return self.decision_threshold(fpir)

    def decision_threshold(self, fpir: float = DEFAULT_FPIR) -> OpenSetThreshold:
        """The open-set threshold for this gallery's current size at `fpir`."""
        faces, people = self.size()
        analyzer = self._analyzer()
        return fpir_threshold(analyzer.recognizer, fpir, faces, people, analyzer.flip)

    def size(self) -> tuple[int, int]:
        """(faces, people) enrolled; counted once per database generation (a 1M-row COUNT is not free)."""
        store = self._existing()
        generation = store.generation()
        cached = self._size_cache
        if cached is None or cached[0] != generation:
            conn = store.connect()
            faces = int(conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0])
            people = int(conn.execute("SELECT COUNT(*) FROM people").fetchone()[0])
            cached = self._size_cache = (generation, faces, people)
        return cached[1], cached[2]

    # -- management ------------------------------------------------------------------------------
    def people(self, limit: int | None = None, offset: int = 0, after_id: int | None = None) -> list[Person]:
        """Everyone, by name; `limit`/`offset` for a page, or `after_id` (with `limit`) for a cursor in id
        order that stays stable while others enroll or forget (next page: after the last id seen)."""
        return self._existing().people(limit, offset, after_id)

    def person(self, name: str | int) -> Person:
        """A person by name, or by id (an int)."""
        return self._existing().person(name)

    def faces(self, name: str | int) -> list[dict[str, Any]]:
        """The enrolled faces of a person: id, box, detection score, source image hash, date (no vectors)."""
        store = self._existing()
        person = store.person(name)
        rows = store.connect().execute(
            "SELECT id, bbox, det_score, image_sha256, recognizer, created FROM faces WHERE person_id=? ORDER BY id",
            (person.id,),
        ).fetchall()
        return [{"face_id": r[0], "bbox": json.loads(r[1]) if r[1] else None, "det_score": r[2],
                 "image_sha256": r[3], "recognizer": r[4], "created": r[5]} for r in rows]

    def export(self, target: str | os.PathLike[str]) -> int:
        """Write every person and face (embeddings and thumbnails included) as JSON lines; returns faces.
        Written to `<target>.tmp` (0600: it holds biometric data) and renamed, so a reader never sees
        half a file."""
        store = self._existing()
        target = Path(target)
        if target.is_dir():
            raise GalleryError(f"{target}: is a directory; give a file name to export to")
        conn = store.connect()
        tmp = target.with_name(target.name + ".tmp")
        count = 0
        try:
            with private_file(tmp) as fh:
                fh.write(json.dumps({"facelens_gallery": 1, "recognizer": self.recognizer}) + "\n")
                conn.execute("BEGIN")  # one snapshot: a concurrent write cannot tear the export
                try:
                    for person in store.people():
                        rows = conn.execute(
                            "SELECT embedding, recognizer, image_sha256, bbox, det_score, quality, thumbnail "
                            "FROM faces WHERE person_id=? ORDER BY id", (person.id,)).fetchall()
                        faces = [{"embedding": base64.b64encode(r[0]).decode(), "recognizer": r[1],
                                  "image_sha256": r[2], "bbox": json.loads(r[3]) if r[3] else None,
                                  "det_score": r[4], "quality": r[5],
                                  "thumbnail": base64.b64encode(r[6]).decode() if r[6] else None} for r in rows]
                        fh.write(json.dumps({"name": person.name, "metadata": person.metadata, "faces": faces}) + "\n")
                        count += len(faces)
                finally:
                    conn.execute("COMMIT")
            tmp.replace(target)
        except OSError as exc:
            _remove(tmp)
            raise GalleryError(f"{target}: cannot write the export ({exc.strerror or exc}); nothing written") from None
        except BaseException:
            _remove(tmp)
            raise
        return count

    def import_export(self, source: str | os.PathLike[str], allow_duplicate: bool = False,
                      recognizer: str | None = None) -> int:
        """Load a file written by `export` in one transaction; returns faces added.

        Every record is checked before anything is written (a JSON object; a valid name and metadata;
        faces of the file's recognizer, which must be the gallery's; embeddings that decode to finite unit
        vectors of the recognizer's size; boxes, scores, hashes and thumbnails of the right types) and the
        first bad one refuses the whole file with its line number: nothing is imported, and no gallery is
        created. A face whose image is already enrolled for the same person is skipped (a re-import adds
        nothing); for another person it refuses the file unless `allow_duplicate`."""
        source = Path(source)
        checking = self._export_records(source)
        expected, recognizer = recognizer, next(checking)
        if expected is not None and recognizer is not None and expected != recognizer:
            raise GalleryError(f"{source}: the file holds {recognizer} embeddings, not {expected}; nothing imported")
        if recognizer is not None:
            check_profile_write(recognizer)  # before anything, so no gallery is created for a refused file
        for _ in checking:  # a first pass: validation only, no gallery touched
            pass
        added = 0
        records = self._export_records(source)
        next(records)  # the header, checked above
        with self.store.transaction() as conn:
            bound = conn.execute("SELECT value FROM meta WHERE key='recognizer'").fetchone()
            if bound and recognizer is not None and bound[0] != recognizer:
                raise GalleryError(f"{source}: the file holds {recognizer} embeddings; this gallery holds "
                                   f"{bound[0]} ones; nothing imported")
            dim = RECOGNIZER_DIMS.get(recognizer or "", 0)
            for lineno, name, metadata, faces in records:  # type: ignore[misc]
                if faces:
                    self.store.bind_recognizer(conn, recognizer, dim)  # type: ignore[arg-type]
                person_id = self.store.ensure_person(conn, name, metadata)
                for face in faces:
                    digest = face["image_sha256"]
                    owner = self.store.image_owner(conn, digest) if digest and not allow_duplicate else None
                    if owner and owner[1] == person_id:
                        continue
                    if owner:
                        raise GalleryError(f"{source}, line {lineno}: a face of {name!r} is an image already "
                                           f"enrolled under {owner[2]!r} (person {owner[1]}, face {owner[0]}); "
                                           "nothing imported")
                    self.store.add_face(conn, person_id, face["vector"], recognizer, digest,  # type: ignore[arg-type]
                                        face["bbox"], face["det_score"], face["quality"], face["thumbnail"])
                    added += 1
        return added

    def _export_records(self, source: Path) -> Iterator[Any]:
        """The recognizer named by an export's header, then (line number, name, metadata, faces) for each
        record, every one checked; the first bad one raises GalleryError with its line number."""
        try:
            fh = open(source, encoding="utf-8", errors="strict")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise GalleryError(f"{source}: cannot read ({exc.strerror or exc})") from None
        with fh:
            lineno = 1

            def bad(reason: str) -> GalleryError:
                return GalleryError(f"{source}, line {lineno}: {reason}; nothing imported")

            try:
                header = _json_object(fh.readline(IMPORT_LINE_MAX + 1), "header")
                if header.get("facelens_gallery") != 1:
                    raise ValueError("not a facelens gallery export")
                recognizer = header.get("recognizer")
                if recognizer is not None and recognizer not in RECOGNIZER_DIMS:
                    raise ValueError(f"unknown recognizer {recognizer!r}")
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise GalleryError(f"{source}: not a facelens gallery export (line 1: {exc})") from None
            yield recognizer
            dim = RECOGNIZER_DIMS.get(recognizer or "", 0)
            floor = self._floor()
            while True:
                lineno += 1
                try:
                    line = fh.readline(IMPORT_LINE_MAX + 1)
                except UnicodeDecodeError:
                    raise bad("not UTF-8 text") from None
                if not line:
                    return
                if len(line) > IMPORT_LINE_MAX:
                    raise bad(f"line longer than {IMPORT_LINE_MAX >> 20} MiB")
                if not line.strip():
                    continue
                try:
                    name, metadata, faces = _check_record(line, recognizer, dim, floor)
                except RecursionError:
                    raise bad("JSON nested too deeply") from None
                except (ValueError, ConfigError) as exc:
                    message = str(exc)
                    if "int_max_str_digits" in message:  # Python's own wording for a 5,000-digit number
                        message = "a number with too many digits"
                    raise bad(message) from None
                yield lineno, name, metadata, faces

    def create_person(self, name: str, metadata: dict[str, Any] | None = None) -> Person:
        """A person with no face yet (faces are added by `add_faces` or `enroll`)."""
        name = clean_name(name)
        metadata_json(metadata)
        with self.store.transaction() as conn:
            if conn.execute("SELECT 1 FROM people WHERE name=?", (name,)).fetchone():
                raise GalleryError(f"a person named {name!r} already exists")
            person_id = self.store.new_person(conn, name, metadata)
        return self.store.person(person_id)

    def set_metadata(self, name: str | int, metadata: dict[str, Any]) -> Person:
        text = metadata_json(metadata)
        store = self._existing()
        with store.transaction() as conn:
            person = store.person(name, conn)
            conn.execute("UPDATE people SET metadata=?, updated=? WHERE id=?", (text, time.time(), person.id))
        return store.person(person.id)

    def thumbnail(self, face_id: int) -> bytes:
        """The JPEG thumbnail stored with a face."""
        store = self._existing()
        row = store.connect().execute("SELECT thumbnail FROM faces WHERE id=?", (face_id,)).fetchone() \
            if valid_id(face_id) else None
        if row is None or not row[0]:
            raise GalleryNotFound(f"no thumbnail for face {face_id} in the gallery")
        return bytes(row[0])

    def rename(self, old: str | int, new: str) -> None:
        """Rename a person. Renaming to the current name does nothing; changing only the case works."""
        new = clean_name(new)
        store = self._existing()
        with store.transaction() as conn:
            person = store.person(old, conn)
            if new == person.name:
                return
            other = conn.execute("SELECT id FROM people WHERE name=?", (new,)).fetchone()
            if other and other[0] != person.id:
                raise GalleryError(f"a person named {new!r} already exists; merge instead")
            conn.execute("UPDATE people SET name=?, updated=? WHERE id=?", (new, time.time(), person.id))

    def merge(self, source: str | int, target: str | int) -> int:
        """Move every face of `source` to `target` and delete `source`; returns the faces moved."""
        store = self._existing()
        with store.transaction() as conn:
            a, b = store.person(source, conn), store.person(target, conn)
            if a.id == b.id:
                raise GalleryError("cannot merge a person into itself")
            moved = conn.execute("UPDATE faces SET person_id=? WHERE person_id=?", (b.id, a.id)).rowcount
            conn.execute("DELETE FROM people WHERE id=?", (a.id,))
        return int(moved)

    def remove_face(self, face_id: int) -> None:
        store = self._existing()
        if not valid_id(face_id):
            raise GalleryNotFound(f"no face with id {face_id} in the gallery")
        with store.transaction() as conn:
            if conn.execute("DELETE FROM faces WHERE id=?", (face_id,)).rowcount == 0:
                raise GalleryNotFound(f"no face with id {face_id} in the gallery")
        self._erase_from_index()

    def _erase_from_index(self) -> None:
        """Deleted rows leave the index files too (rewritten without them), not just the search results."""
        with self._lock:
            self.index.sync(self.store)
            self.index.erase(self.store)

    def forget(self, name: str | int) -> dict[str, Any]:
        """Erase a person (by name, or by id: an int) completely: rows, embeddings, thumbnails; then compact
        the files so the bytes are gone, and write an erasure receipt (what, when, counts — no biometric
        data)."""
        store = self._existing()
        with store.transaction() as conn:
            person = store.person(name, conn)
            faces = conn.execute("DELETE FROM faces WHERE person_id=?", (person.id,)).rowcount
            conn.execute("DELETE FROM people WHERE id=?", (person.id,))
        store.compact()
        self._erase_from_index()
        receipt = {
            "action": "forget",
            "person_id": person.id,
            "name_sha256": hashlib.sha256(person.name.encode()).hexdigest(),
            "faces_removed": int(faces),
            "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "storage_compacted": True,
        }
        # copies set aside by `repair` still hold whatever they held: say so rather than claim otherwise
        damaged = sorted(p.name for p in self.path.glob(DB_NAME + ".corrupt-*")
                         if not p.name.endswith(("-wal", "-shm")))
        if damaged:
            receipt["damaged_copies_not_erased"] = damaged
        folder = self.path / "receipts"
        make_private_dir(folder)
        target = folder / f"forget-{receipt['at'].replace(':', '')}-{person.id}.json"
        with private_file(target) as fh:
            fh.write(json.dumps(receipt, indent=2) + "\n")
        receipt["receipt"] = str(target)
        return receipt

    # -- integrity -------------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """A full check: SQLite's integrity_check, then consistency (faces without a person, embeddings of
        the wrong length or not finite, the search index against the database). Returns a report with
        `ok`; a damaged database is marked so (writes refused) until `repair`."""
        from facelens.gallery.repair import check_gallery

        return check_gallery(self)

    def repair(self) -> dict[str, Any]:
        """Rebuild the database from every row that can still be read (in a new file, renamed into place),
        keep the damaged file as `gallery.sqlite.corrupt-<timestamp>`, drop the search index (rebuilt on
        the next search); returns what was recovered and lost. Run it with no other process writing."""
        from facelens.gallery.repair import check_gallery, repair_gallery

        # a sound gallery is left alone: a rebuild would also keep one more full copy of its biometric data
        try:
            sound = bool(check_gallery(self).get("ok"))
        except GalleryError:
            sound = False
        if sound:
            return {"ok": True, "repaired": False, "note": "the gallery is sound: nothing to repair"}
        return repair_gallery(self)


def _check_top_k(top_k: object) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or not 1 <= int(top_k) <= 10_000:
        raise ConfigError(f"top_k must be a whole number from 1 to 10000, got {top_k!r}")
    return int(top_k)


def _remove(path: Path) -> None:
    if path.is_file():
        path.unlink(missing_ok=True)


def _json_object(line: str, what: str) -> dict[str, Any]:
    if not line.strip():
        raise ValueError(f"empty {what}")
    value = json.loads(line)  # JSONDecodeError is a ValueError
    if not isinstance(value, dict):
        raise ValueError(f"the {what} is not a JSON object")
    return value


def _finite_number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number")
    return float(value)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


def _check_record(line: str, recognizer: str | None, dim: int,
                  floor: float = 0.0) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """One person line of an export, checked field by field (ValueError/ConfigError name the problem)."""
    record = _json_object(line, "record")
    name = clean_name(record.get("name"))
    metadata = record.get("metadata") or {}
    metadata_json(metadata)
    faces = record.get("faces", [])
    if not isinstance(faces, list):
        raise ValueError("faces must be a list")
    checked = []
    for i, face in enumerate(faces, 1):
        what = f"face {i} of {name!r}"
        if not isinstance(face, dict):
            raise ValueError(f"{what} is not a JSON object")
        if recognizer is None:
            raise ValueError("the header names no recognizer but the file holds faces")
        if face.get("recognizer") != recognizer:
            raise ValueError(f"{what}: recognizer {face.get('recognizer')!r} is not the file's {recognizer}")
        raw = _b64(face.get("embedding"), f"{what}: the embedding")
        if len(raw) != 4 * dim:
            raise ValueError(f"{what}: the embedding has {len(raw) / 4:g} values; {recognizer} makes {dim}")
        vector = np.frombuffer(raw, dtype=np.float32)
        if not np.isfinite(vector).all():
            raise ValueError(f"{what}: the embedding holds NaN or infinite values")
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if abs(norm - 1) >= NORM_TOLERANCE:
            # a scaled vector would outscore every real match (similarity is a dot product)
            raise ValueError(f"{what}: the embedding is not a unit vector (norm {norm:.4g})")
        digest = face.get("image_sha256")
        if digest is not None and (not isinstance(digest, str) or len(digest) != 64
                                   or any(c not in "0123456789abcdef" for c in digest)):
            raise ValueError(f"{what}: image_sha256 must be 64 lowercase hex digits")
        bbox = face.get("bbox")
        if bbox is not None:
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f"{what}: bbox must be a list of 4 numbers")
            bbox = [_finite_number(v, f"{what}: a bbox value") for v in bbox]
        thumb = face.get("thumbnail")
        if thumb is not None:
            thumb = _b64(thumb, f"{what}: the thumbnail")
            if len(thumb) > THUMBNAIL_MAX or not thumb.startswith(b"\xff\xd8"):
                raise ValueError(f"{what}: the thumbnail is not a JPEG of at most {THUMBNAIL_MAX // 1024} KiB")
        quality = _finite_number(face.get("quality"), f"{what}: quality")
        if quality is not None and not 0.0 <= quality <= 1.0:
            raise ValueError(f"{what}: quality {quality:g} is outside [0, 1]")
        if quality is not None and quality < floor:
            # the same floor as enrollment: an export must not carry in a face enrollment would refuse
            raise ValueError(f"{what}: quality {quality:.4g} is below the enrollment floor {floor:g}")
        det_score = _finite_number(face.get("det_score"), f"{what}: det_score")
        if det_score is not None and not 0.0 <= det_score <= 1.0:
            raise ValueError(f"{what}: det_score {det_score:g} is outside [0, 1]")
        checked.append({"vector": vector, "image_sha256": digest, "bbox": bbox, "thumbnail": thumb or None,
                        "det_score": det_score, "quality": quality})
    return name, metadata, checked


__all__ = ["DuplicateFace", "FacelensError", "Gallery", "GalleryCorrupt", "GalleryError", "GalleryMissing",
           "GalleryNotFound", "GalleryReadOnly", "Identification", "Match", "Person"]
