"""Anonymization that a recognizer cannot undo: faces in photos and video, covered and then checked.

    from facelens.anonymize import Anonymizer
    anon = Anonymizer(method="blur", level=4)                 # the whole head, blurred
    result = anon.anonymize_file("crowd.jpg", "out/crowd.jpg")   # metadata-free output
    result = Anonymizer(keep=["ada"], gallery=Gallery("~/g")).anonymize_file(...)   # spare who consented

Faces are found with the detector's threshold lowered to 0.3 (a missed face is a leak; a covered patch of
wall costs little), covered by `cover.cover_faces`, and written without any metadata (EXIF GPS, camera
serials, embedded thumbnails that still show the face). `verify` measures what a recognizer can still do
with the result; `video` does the same to every frame of a video, with tracks so that no frame leaks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.anonymize.cover import METHODS, REGIONS, check_cover, cover_faces
from facelens.errors import ConfigError, ImageError
from facelens.io import ImageSource, decode_image
from facelens.pipeline import FaceAnalyzer, source_label
from facelens.types import Face

TILE, TILE_OVERLAP = 640, 160  # native-resolution tiles for large pictures; faces up to ~160 px may straddle
TILE_ABOVE = 2400  # pictures with a longer side than this are also scanned in tiles
DETECT_THRESHOLD = 0.3  # lower than the detector's 0.5: for anonymization a miss costs more than a false hit
IMAGE_OUTPUTS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".png": [],
                 ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95], ".bmp": [], ".tif": [], ".tiff": []}


@dataclass
class AnonymizedImage:
    source: str
    pixels: np.ndarray = field(repr=False)
    covered: list[Face] = field(default_factory=list)
    spared: list[tuple[Face, str]] = field(default_factory=list)  # (face, the enrolled name that spared it)
    mask: np.ndarray | None = field(default=None, repr=False)
    original: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "covered": [f.to_dict(embedding=False) for f in self.covered],
                "spared": [{"name": name, **f.to_dict(embedding=False)} for f, name in self.spared]}


class Anonymizer:
    """Cover faces in images and videos.

    Parameters: `method` ("blur", "pixelate", "fill"), `level` (1 weakest to 5 strongest; see `cover`),
    `region` ("head": an ellipse over the whole head; "face": the face's own outline, from the 106 points),
    `margin` (grows the region, a fraction of the face's size), `keep` (enrolled names to spare: everyone
    else is covered) or `only` (enrolled names to cover: everyone else is left), both with `gallery`;
    `fpir` (how sure an identification must be, the gallery's open-set rule), `det_threshold`, `det_size`.
    With `keep`, a face is spared only when the gallery names it; with `only`, a face is left only when the
    gallery names it as someone else enrolled (unknown faces are covered), so doubt always covers.
    """

    def __init__(self, method: str = "blur", level: int = 5, region: str = "head", margin: float = 0.25,
                 keep: list[str] | tuple[str, ...] = (), only: list[str] | tuple[str, ...] = (), gallery: Any = None,
                 fpir: float = 0.01, det_threshold: float = DETECT_THRESHOLD, det_size: int | str = "auto",
                 threads: int | None = None) -> None:
        self.method = method
        self.level = level
        self.region = region
        self.margin = margin
        self.keep = tuple(keep)
        self.only = tuple(only)
        self.gallery = gallery
        self.fpir = fpir
        self.det_threshold = det_threshold
        self.det_size = det_size
        self.threads = threads
        self._analyzer: FaceAnalyzer | None = None
        self._tiler: FaceAnalyzer | None = None
        self._threshold: float | None = None
        self._checked = False  # check() has passed: a batch of thousands checks once, not per picture

    # -- set-up -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise now for a bad option, a name not in the gallery, or a missing model."""
        check_cover(self.method, self.level, self.region, self.margin)
        if self.keep and self.only:
            raise ConfigError("give names to keep or names to cover (--only), not both")
        if (self.keep or self.only) and self.gallery is None:
            raise ConfigError("--keep and --only need a gallery the named people are enrolled in")
        if self.gallery is not None and (self.keep or self.only):
            self._threshold = self.gallery.threshold_for_search(self.analyzer.recognizer, self.fpir).threshold
            for name in self.keep + self.only:
                self.gallery.person(name)  # NotFoundError naming it: a typo must not spare or expose anyone
        self.analyzer.check_models(embed=bool(self.keep or self.only))
        if self.region == "face":
            from facelens.analysis.landmarks import dense_landmarks

            dense_landmarks().check_models()
        self._checked = True

    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            # the gallery's recognizer when there is one: --keep/--only search it with that model's embeddings
            bound = getattr(self.gallery, "recognizer", None) if self.gallery is not None else None
            self._analyzer = FaceAnalyzer(recognizer=bound, det_threshold=self.det_threshold, det_size=self.det_size,
                                          threads=self.threads or 1)
        return self._analyzer

    @property
    def selective(self) -> bool:
        return bool(self.keep or self.only)

    def detect(self, pixels: np.ndarray) -> list[Face]:
        """Every face, however small in however large a picture: the detector's own passes, plus, on pictures
        larger than it can see whole at full detail, overlapping 640 px tiles at native resolution (the
        detector's fine pass is capped in pixels, so on a 75 MP photo it would miss 20 px faces)."""
        faces = self.analyzer.detector_model.detect(pixels)
        height, width = pixels.shape[:2]
        if max(height, width) <= TILE_ABOVE:
            return faces
        if self._tiler is None:
            self._tiler = FaceAnalyzer(det_threshold=self.det_threshold, det_size=TILE, threads=self.threads or 1)
        step = TILE - TILE_OVERLAP
        for top in range(0, max(1, height - TILE_OVERLAP), step):
            for left in range(0, max(1, width - TILE_OVERLAP), step):
                tile = pixels[top : top + TILE, left : left + TILE]
                if min(tile.shape[:2]) < 32:
                    continue
                for face in self._tiler.detector_model.detect(np.ascontiguousarray(tile)):
                    face.bbox = face.bbox + np.array([left, top, left, top], np.float32)
                    if face.landmarks is not None:
                        face.landmarks = face.landmarks + np.array([left, top], np.float32)
                    faces.append(face)
        from facelens.detect.scrfd import nms

        boxes = np.stack([f.bbox for f in faces]) if faces else np.zeros((0, 4), np.float32)
        keep = nms(boxes, np.array([f.det_score for f in faces], np.float32), 0.4) if faces else []
        return [faces[i] for i in keep]

    # -- deciding who is covered ----------------------------------------------------------------------
    def identity(self, face: Face) -> str | None:
        """The enrolled name of an embedded face under the gallery's rule, or None."""
        if self.gallery is None or face.embedding is None:
            return None
        if self._threshold is None:
            self._threshold = self.gallery.decision_threshold(self.fpir).threshold
        matches = self.gallery.search(face.embedding, top_k=1)
        return matches[0].person if matches and matches[0].similarity >= self._threshold else None

    def covers(self, name: str | None, settled: bool = True) -> bool:
        """Is a face with this identity covered? `settled`: the identity is final (video tracks decide late;
        until then a face is treated as the riskier case)."""
        if self.keep:
            return not (settled and name in self.keep)
        if self.only:
            # left only when confidently someone else who is enrolled: a listed person the gallery fails to
            # name is "unknown", and unknown faces are covered
            return name is None or name in self.only or not settled
        return True

    def prepare(self, pixels: np.ndarray, faces: list[Face]) -> None:
        """Embeddings (for --keep/--only) and the dense landmarks (for the face-shaped region) the faces need."""
        if self.selective and faces:
            self.analyzer.embed(pixels, faces)
        if self.region == "face" and faces:
            from facelens.analysis.landmarks import dense_landmarks

            dense_landmarks().annotate(pixels, faces)

    # -- images ---------------------------------------------------------------------------------------
    def anonymize(self, image: ImageSource) -> AnonymizedImage:
        """Every face of one image covered (or spared as asked); boxes in the image's pixels."""
        if not self._checked:
            self.check()
        label = source_label(image)
        decoded = decode_image(image, max_side=0)  # full size: the output is the user's picture
        pixels = decoded.pixels
        faces = self.detect(pixels)
        self.prepare(pixels, faces)
        covered, spared = [], []
        for face in faces:
            name = self.identity(face) if self.selective else None
            if self.covers(name):
                covered.append(face)
            else:
                spared.append((face, name or "unknown"))
        out, mask = cover_faces(pixels, covered, self.method, self.level, self.region, self.margin)
        return AnonymizedImage(label, out, covered, spared, mask, pixels)

    def anonymize_file(self, source: ImageSource, target: str | os.PathLike[str]) -> AnonymizedImage:
        result = self.anonymize(source)
        write_image(target, result.pixels)
        return result


def write_image(target: str | os.PathLike[str], pixels: np.ndarray) -> Path:
    """Encode pixels into a new file with no metadata at all (OpenCV writes none: no EXIF, XMP, ICC or
    thumbnail), through a temporary file so a failure never leaves half an image."""
    path = Path(target)
    params = IMAGE_OUTPUTS.get(path.suffix.lower())
    if params is None:
        raise ConfigError(f"{path}: write .jpg, .png, .webp, .bmp or .tif")
    ok, buf = cv2.imencode(path.suffix.lower(), pixels, params)
    if not ok:
        raise ImageError(f"{path}: could not encode the image")
    import tempfile

    # a fresh, unpredictable name opened exclusively: a link planted in the folder cannot redirect the write
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(handle, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


__all__ = ["METHODS", "REGIONS", "AnonymizedImage", "Anonymizer", "write_image"]
