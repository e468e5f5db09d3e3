"""The analyzer: a detector and a recognizer configured once, loaded once, used many times.

Parallelism is across images, not inside a model: each onnxruntime session runs one intra-op
thread (on these small models one thread is as fast as two), and `threads` images are processed
at once. onnxruntime releases the GIL, so plain threads use every core.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from facelens.analysis import FaceAttribute, create_attribute, resolve
from facelens.detect import create_detector
from facelens.detect.base import AUTO, Detector, parse_det_size
from facelens.detect.crop import face_of_crop
from facelens.embed import create_recognizer
from facelens.embed.base import Recognizer
from facelens.errors import ConfigError, FacelensError
from facelens.io import Decoded, ImageSource, decode_image, load_image
from facelens.models.registry import REQUIRES
from facelens.models.store import model_path
from facelens.profile import default_detector, default_recognizer
from facelens.types import Face, ImageResult

# decode_size when not given: with det_size "auto" the fine pass looks for ~24 px faces, which a JPEG
# decoded at 1/2 scale (every photo from 4096 px up at 2048) would have shrunk to 12 px
AUTO_DECODE_SIZE = 4096
FIXED_DECODE_SIZE = 2048
# recognizers with an INT8 build in the registry (made at pull time, see facelens.models.graph)
INT8_RECOGNIZERS = {"arcface-mbf": "arcface-mbf-int8", "sface": "sface-int8"}


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def source_label(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array{tuple(source.shape)}"
    return type(source).__name__


class FaceAnalyzer:
    """Detect, align and embed faces.

    >>> fa = FaceAnalyzer()                        # SCRFD-500M + ArcFace MobileFaceNet
    >>> faces = fa.analyze("group.jpg")            # boxes, 5 points, scores, 512-d embeddings
    >>> results = fa.analyze_batch(paths)          # one ImageResult per path, bad files reported

    Parameters: `detector`, `recognizer` (registry names), `threads` (images processed at once;
    default: the CPUs this process may use), `flip` (flip test-time augmentation of embeddings),
    `det_size` ("auto", the default: a 640 px first pass, plus a tiled fine pass on large photos
    that finds faces down to ~24 px, see `facelens.detect.scrfd`; or an int, a multiple of 32: the
    longest side of the only detection input, 640 being the behaviour before "auto"; strings of digits
    are accepted; the dlib detectors always scan the full image and ignore it), `det_threshold`,
    `min_face` (pixels), `decode_size` (JPEGs at least twice this long are decoded at 1/2, 1/4 or 1/8
    scale, never below it: a 36 MP photo decodes several times faster and its faces keep far more
    than the 112 px the recognizer uses; 0 always decodes in full; None, the default, is 4096 with
    det_size "auto", so a 24 MP photo keeps its small faces for the fine pass, and 2048 with a fixed
    det_size). Boxes and landmarks are always in the file's pixels. `crops=True`: every image is one
    face crop, as in most face datasets (see `facelens.detect.crop`): the whole image is the face,
    never "no face"; the detector only supplies its five points where it can. `attribute_options`:
    constructor options per attribute, e.g. {"liveness": {"bpcer": 0.05}}. `int8=True`: the recognizer's
    INT8 build (`arcface-mbf-int8` or `sface-int8`, made at pull time): the same embedding space and
    thresholds, faster embedding on CPUs with VNNI, verification accuracy within 0.1 point
    (benchmarks/RESULTS.md, "Throughput" and "Licence-clean profile").
    """

    def __init__(
        self,
        detector: str | None = None,
        recognizer: str | None = None,
        threads: int | None = None,
        flip: bool = False,
        det_size: int | str = AUTO,
        det_threshold: float | None = None,
        min_face: float = 0.0,
        decode_size: int | None = None,
        attributes: Sequence[str] = (),
        crops: bool = False,
        attribute_options: dict[str, dict[str, Any]] | None = None,
        int8: bool = False,
    ) -> None:
        # None: the active profile's model (`facelens.profile`), fixed here so the analyzer keeps it
        self.detector = detector or default_detector()
        self.recognizer = recognizer or default_recognizer()
        self.threads = threads
        self.flip = flip
        self.det_size = det_size
        self.det_threshold = det_threshold
        self.min_face = min_face
        if decode_size is None:
            auto = isinstance(det_size, str) and det_size.strip().lower() == AUTO
            decode_size = AUTO_DECODE_SIZE if auto else FIXED_DECODE_SIZE
        self.decode_size = decode_size
        # a list becomes a tuple (hashable, fixed); anything else is kept as given and refused at use
        self.attributes = tuple(attributes) if isinstance(attributes, list | tuple) else attributes
        self.crops = crops
        self.attribute_options = attribute_options
        self.int8 = int8
        self._detector: Detector | None = None
        self._recognizer: Recognizer | None = None
        self._parts: list[FaceAttribute] | None = None

    # -- lazily built parts ------------------------------------------------------------------
    @property
    def detector_model(self) -> Detector:
        if self._detector is None:
            det_size = parse_det_size(self.det_size)
            threshold = self.det_threshold
            if threshold is not None and not (isinstance(threshold, int | float) and 0.0 < threshold < 1.0):
                raise ConfigError(f"det_threshold must be between 0 and 1, got {threshold}")
            params: dict[str, Any] = {"min_face": self.min_face, "det_size": det_size}
            if self.detector in {"scrfd-500m", "yunet"} and threshold is not None:
                params.update(score_threshold=threshold)  # None: the detector's own calibrated default
            self._detector = create_detector(self.detector, **params)
        return self._detector

    @property
    def recognizer_model(self) -> Recognizer:
        if self._recognizer is None:
            if not isinstance(self.flip, bool | np.bool_):
                raise ConfigError(f"flip must be True or False, got {self.flip!r}")
            flippable = ("arcface-mbf", "sface")
            if self.flip and self.recognizer not in flippable:
                raise ConfigError(f"flip augmentation is implemented for arcface-mbf and sface, not {self.recognizer}")
            params: dict[str, Any] = {"flip": self.flip} if self.recognizer in flippable else {}
            int8 = self.int8_model
            if int8:
                params["model"] = int8
            self._recognizer = create_recognizer(self.recognizer, **params)
        return self._recognizer

    @property
    def int8_model(self) -> str | None:
        """The registry name of the recognizer's INT8 build when `int8` is set, else None."""
        if not isinstance(self.int8, bool | np.bool_):
            raise ConfigError(f"int8 must be True or False, got {self.int8!r}")
        if not self.int8:
            return None
        if self.recognizer not in INT8_RECOGNIZERS:
            from facelens.profile import allowed

            available = [name for name in INT8_RECOGNIZERS if allowed(name)]  # the clean profile's only
            raise ConfigError(f"int8 is available for {', '.join(available)}, not {self.recognizer}")
        return INT8_RECOGNIZERS[self.recognizer]

    @property
    def attribute_models(self) -> list[FaceAttribute]:
        if self._parts is None:
            names = self.attributes
            if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
                raise ConfigError(f"attributes must be a list of names such as ['pose', 'quality'], got {names!r}")
            options = self.attribute_options or {}
            self._parts = [create_attribute(name, **options.get(name, {})) for name in resolve(names)]
        return self._parts

    @property
    def n_threads(self) -> int:
        # checked at use, not in the constructor (which only stores parameters, scikit-learn style)
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 0):
            raise ConfigError(f"threads must be a whole number >= 0 (0 or None: every CPU), got {self.threads!r}")
        return self.threads if self.threads else default_threads()

    def check_models(self, embed: bool = True) -> None:
        """Raise `ModelNotFoundError` (naming the pull command) unless every model needed is installed.

        Called before a batch, so a missing model is one error rather than one per file.
        """
        int8 = self.int8_model if embed else None
        names = [self.detector] + ([self.recognizer] if embed else [])
        for name in names:
            for model in REQUIRES.get(name, ()):
                if not (int8 and model == self.recognizer):  # with int8, its INT8 build instead of its file
                    model_path(model)
        if int8:
            model_path(int8)
        _ = self.detector_model
        if embed:
            _ = self.recognizer_model
        for part in self.attribute_models:
            part.check_models()

    # -- one image ---------------------------------------------------------------------------
    def _faces(self, image: ImageSource, embed: bool) -> tuple[list[Face], Decoded]:
        """Detect (and embed) on the decoded pixels, then map boxes back to the file's pixels."""
        decoded = decode_image(image, max_side=self.decode_size)
        if self.crops:
            faces = [face_of_crop(decoded.pixels, self.detector_model)]
        else:
            faces = self.detector_model.detect(decoded.pixels)
        if embed:
            self.embed(decoded.pixels, faces)
        for part in self.attribute_models:
            part.annotate(decoded.pixels, faces)
        if decoded.scale != 1.0:
            for face in faces:
                face.rescale(decoded.scale)
        return faces, decoded

    def detect(self, image: ImageSource) -> list[Face]:
        """Faces (box, five landmarks, score) in one image, best score first."""
        return self._faces(image, embed=False)[0]

    def embed(self, image: ImageSource, faces: list[Face]) -> list[Face]:
        """Fill in the embedding of each face of `image` (in place) and return the faces.

        The faces' coordinates must be in the pixels of `image` as given (an array is used as is).
        """
        if not faces:
            return faces
        pixels = load_image(image)
        recognizer = self.recognizer_model
        raw_of = getattr(recognizer, "embed_faces_raw", None)
        if raw_of is not None:
            vectors, raw = raw_of(pixels, faces)
            for face, r in zip(faces, raw, strict=True):
                face.raw_embedding = r
        else:
            vectors = recognizer.embed_faces(pixels, faces)
        for face, vector in zip(faces, vectors, strict=True):
            face.embedding = vector
            face.recognizer = self.recognizer
        return faces

    def analyze(self, image: ImageSource) -> list[Face]:
        """Detect and embed every face of one image."""
        return self._faces(image, embed=True)[0]

    def _analyze_one(self, source: ImageSource, embed: bool) -> ImageResult:
        label = source_label(source)
        try:
            faces, decoded = self._faces(source, embed)
        except FacelensError as exc:
            return ImageResult(source=label, error=str(exc))
        except Exception as exc:  # one odd image must not end a batch of thousands
            logging.getLogger("facelens").exception("unexpected error on %s", label)
            return ImageResult(source=label, error=f"{label}: internal error ({type(exc).__name__}: {exc}); "
                               "the rest of the batch goes on (please report this)")
        return ImageResult(source=label, faces=faces, width=decoded.width, height=decoded.height)

    # -- many images -------------------------------------------------------------------------
    def analyze_batch(
        self,
        sources: Sequence[ImageSource] | Iterable[ImageSource],
        embed: bool = True,
        on_result: Callable[[ImageResult], None] | None = None,
    ) -> list[ImageResult]:
        """One `ImageResult` per source, in order; a bad file becomes a result with `error` set.

        `on_result` is called as each image finishes (for progress bars and streaming output).
        Errors a user must fix before anything can work (a missing model, a bad option) are raised
        at once rather than repeated for every file.
        """
        if isinstance(sources, str | os.PathLike | bytes | np.ndarray):
            raise ConfigError("analyze_batch takes a list of images; for one image use analyze()")
        sources = list(sources)
        _ = self.n_threads  # a bad `threads` is one error now, not one per image
        if not isinstance(self.crops, bool | np.bool_):
            raise ConfigError(f"crops must be True or False, got {self.crops!r}")
        self.check_models(embed)
        if self.n_threads == 1 or len(sources) <= 1:
            results = []
            for src in sources:
                results.append(self._analyze_one(src, embed))
                if on_result:
                    on_result(results[-1])
            return results
        with ThreadPoolExecutor(max_workers=self.n_threads) as pool:
            futures = [pool.submit(self._analyze_one, src, embed) for src in sources]
            results = []
            for future in futures:
                results.append(future.result())
                if on_result:
                    on_result(results[-1])
        return results

    def __repr__(self) -> str:
        return (f"FaceAnalyzer(detector={self.detector!r}, recognizer={self.recognizer!r}, "
                f"threads={self.threads}, flip={self.flip}, det_size={self.det_size!r}"
                + (", int8=True" if self.int8 else "")
                + (", crops=True)" if self.crops else ")"))


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (`main_face` also weighs closeness to the image centre)."""
    return max(faces, key=lambda f: f.area, default=None)


# -- the photo's subject -----------------------------------------------------------------------------
SUBJECT_RULES = ("main", "largest")
# a photo's subject is taken as clear when its score is at least this many times the next face's (scores
# are areas, so 3x is ~1.7x in width at equal centrality): on crops cut around the faces of the group
# photos the smallest margin with no wrong pick (2x kept 2 wrong of 187); it refuses 7 of the 79 CelebA
# photos with several faces (2x: 3)
SUBJECT_MARGIN = 3.0


def check_subject_rule(rule: str) -> str:
    if rule not in SUBJECT_RULES:
        raise ConfigError(f"subject rule must be one of {', '.join(SUBJECT_RULES)}, got {rule!r}")
    return rule


def subject_score(face: Face, width: float, height: float, rule: str = "main") -> float:
    """How much `face` looks like the subject of a `width` x `height` photo.

    "largest": the box's area. "main" (the default): the area times (1 - d)², d being the distance of the
    box centre from the image centre as a fraction of the half-diagonal (0 at the centre, 1 in a corner):
    the face's width, shrunk in proportion to its distance from the centre, squared. No fitted constant:
    photographers centre their subject, and a bystander cut by the frame's edge loses to it.
    """
    check_subject_rule(rule)
    if rule == "largest" or width <= 0 or height <= 0:
        return face.area
    x1, y1, x2, y2 = face.bbox[:4]
    dx = ((x1 + x2) / 2 - width / 2) / (width / 2)
    dy = ((y1 + y2) / 2 - height / 2) / (height / 2)
    d = min(1.0, float(np.hypot(dx, dy)) / np.sqrt(2.0))
    return face.area * (1.0 - d) ** 2


def main_face(faces: list[Face], width: float, height: float, rule: str = "main") -> Face | None:
    """The face a single-subject photo of `width` x `height` is about (see `subject_score`); None if no face.

    The coordinates of the faces and the size must be in the same pixels."""
    check_subject_rule(rule)
    return max(faces, key=lambda f: subject_score(f, width, height, rule), default=None)


def clear_subject(faces: list[Face], width: float, height: float, rule: str = "main",
                  margin: float = SUBJECT_MARGIN) -> tuple[Face | None, str]:
    """The photo's subject if it is clearly the one: the only face, or one scoring at least `margin` times
    the next. Otherwise (None, why): an enrollment should refuse an ambiguous photo, not guess."""
    if not faces:
        return None, "no face found"
    if len(faces) == 1:
        return faces[0], ""
    ranked = sorted(faces, key=lambda f: -subject_score(f, width, height, rule))
    best, second = (subject_score(f, width, height, rule) for f in ranked[:2])
    if best >= margin * second and best > 0:
        return ranked[0], ""
    what = "largest" if rule == "largest" else "main-subject"
    ratio = f"{best / second:.1f}x" if second > 0 else "no"
    return None, (f"{len(faces)} faces found and none is clearly the subject (the best {what} score is {ratio} the "
                  f"next one's; {margin:g}x needed)")
