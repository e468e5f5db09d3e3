"""dlib's face detectors (HOG + linear SVM, MMOD CNN) behind our `Detector` protocol.

dlib's detectors give boxes only; landmarks come from dlib's public-domain 5-point shape predictor,
which marks two corners of each eye and the base of the nose. The ArcFace-order five points (eye
centres, nose tip, mouth corners) are derived from those: see `landmarks_from_shape5`.

Everything here is dlib's public-domain models and our own code; no iBUG-trained (non-commercial)
68-point model is involved.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np

from facelens.align import ARCFACE_TEMPLATE, similarity_transform, transform_points
from facelens.detect.base import AUTO, Detector, DetSize, parse_det_size
from facelens.errors import ConfigError, FacelensError, ImageError
from facelens.models.store import model_path
from facelens.types import Face

# Where dlib's three measurable points sit, on average, in the ArcFace 112x112 template frame:
# left-eye centre (mean of its two corners), right-eye centre, base of the nose (subnasale).
# Derived, not guessed: on 297 faces of the shared fixtures (identity photos and group photos) we
# took SCRFD-500M's five points, fitted the similarity that maps them onto ARCFACE_TEMPLATE, pushed
# dlib's points through it and averaged (per-coordinate spread about 2 px). The eye-corner means sit
# ~2 px below ArcFace's eye points (the template marks the pupils), which is why the eyes here are
# not ARCFACE_TEMPLATE[:2]. These are six averaged numbers, not model weights.
DLIB5_TEMPLATE = np.array([[37.92, 53.64], [72.93, 53.61], [55.27, 80.73]], dtype=np.float32)

# dlib's 5-point model's part order (checked on real photos): 0, 1 = outer and inner corner of the
# eye on the image's right (the person's left eye); 2, 3 = outer and inner corner of the eye on the
# image's left; 4 = base of the nose. Index pairs below are in ArcFace order (image-left eye first).
_LEFT_EYE = (2, 3)
_RIGHT_EYE = (0, 1)
_NOSE_BASE = 4

# dlib's detectors were trained on ~80x80 windows: measured on a downscaled portrait, HOG finds faces
# down to ~60 px and the CNN to ~70 px at upsample 0 (half that per upsampling).
_SMALLEST_FACE = 80.0

KINDS = ("hog", "cnn")


def import_dlib() -> Any:
    """The dlib module, or an error naming the install command (dlib is an optional extra)."""
    try:
        import dlib
    except ImportError:
        raise FacelensError(
            "the dlib backends need the dlib module; run `pip install 'facelens[dlib]'` (or `pip install dlib-bin`)"
        ) from None
    return dlib


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Contiguous RGB uint8 copy of a BGR uint8 (H, W, 3) image: the layout dlib's functions take."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected a BGR uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image[:, :, ::-1])


def margin_to_score(margin: float) -> float:
    """Logistic squash of a dlib detection margin into (0, 1): monotone, and 0.5 is dlib's threshold.

    Both dlib detectors output a max-margin score (HOG: SVM value; CNN: MMOD confidence) and report a
    face when it is above 0. 1 / (1 + exp(-margin)) keeps their order, maps that threshold to 0.5 (the
    same cut as SCRFD's default) and makes scores comparable in range with other detectors. It is NOT
    a calibrated probability; the raw margin is kept in `attributes["dlib_margin"]`.
    """
    return 1.0 / (1.0 + math.exp(-margin))


def landmarks_from_shape5(shape5: np.ndarray) -> np.ndarray:
    """Five ArcFace-order points (left eye, right eye, nose tip, left and right mouth corner) from dlib's 5.

    Eye centres are the means of each eye's two corners. dlib marks neither the nose tip nor the
    mouth, so those are the template's points mapped by the similarity transform that best takes
    DLIB5_TEMPLATE (eye centres, nose base) onto the measured eye centres and nose base. A similarity
    cannot follow expression or the nose tip's larger swing under yaw. Measured against SCRFD-500M on
    the 161 single-face fixture photos, as a fraction of the inter-ocular distance: eyes 0.04-0.055,
    nose tip 0.11, mouth corners 0.12-0.13 (mean 0.09; SCRFD disagrees with itself by 0.05 on
    mirrored photos). Fine for alignment and display; not a substitute for a landmark model.
    """
    pts = np.asarray(shape5, dtype=np.float64).reshape(5, 2)
    measured = np.stack([pts[list(_LEFT_EYE)].mean(axis=0), pts[list(_RIGHT_EYE)].mean(axis=0), pts[_NOSE_BASE]])
    matrix = similarity_transform(DLIB5_TEMPLATE, measured)
    out = transform_points(ARCFACE_TEMPLATE, matrix)
    out[:2] = measured[:2]
    return out.astype(np.float32)


def shape_to_array(shape: Any) -> np.ndarray:
    """(N, 2) float array of a dlib full_object_detection's parts."""
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def bbox_to_rect(dlib: Any, bbox: np.ndarray) -> Any:
    """dlib.rectangle (inclusive right/bottom) for an (x1, y1, x2, y2) box."""
    x1, y1, x2, y2 = (round(float(v)) for v in bbox)
    return dlib.rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1))


class DlibDetector(Detector):
    """dlib HOG ("hog": frontal faces, ~0.4 s per megapixel at upsample 1 on one CPU core) or MMOD CNN
    ("cnn": more poses and harder light, ~80x slower than HOG on a CPU; dlib-bin has no CUDA).

    Parameters: `kind`; `upsample`, how many times dlib doubles the image first (each one halves the
    smallest face found, ~60-70 px at 0, and quadruples the work); `min_face`, drop boxes whose shorter
    side is below this many pixels. When `min_face` is larger than the smallest face the requested
    upsampling could find, the image is run at the lower scale that still sees faces of `min_face`
    (about 80 px there), so a large `min_face` also makes big photos much cheaper. `det_size` is
    checked like SCRFD's ("auto" or a multiple of 32) and has no effect: dlib scans every scale of the
    whole image at full resolution, so there is no input size to choose (`upsample` is its knob).
    """

    def __init__(self, kind: str = "hog", upsample: int = 1, min_face: int = 0, det_size: DetSize = AUTO) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown dlib detector kind {kind!r}; choose from {', '.join(KINDS)}")
        if int(upsample) != upsample or upsample < 0:
            raise ConfigError(f"upsample must be a non-negative integer, got {upsample}")
        if min_face < 0:
            raise ConfigError(f"min_face must be >= 0, got {min_face}")
        self.det_size = parse_det_size(det_size)
        self.kind = kind
        self.name = f"dlib-{kind}"
        self.upsample = int(upsample)
        self.min_face = min_face
        self._load_lock = threading.Lock()
        self._cnn_lock = threading.Lock()  # a dlib net keeps its activations inside: one call at a time
        # idle HOG detectors: dlib's scanner is not thread-safe and building one costs ~0.4 s, so each
        # call borrows one (building it only when all are busy) and gives it back
        self._hog_pool: list[Any] = []
        self._predictor: Any = None
        self._cnn: Any = None

    # -- lazily loaded models ------------------------------------------------------------------
    def _shape_predictor(self) -> Any:
        """The 5-point predictor; dlib documents it as safe to share between threads."""
        if self._predictor is None:
            dlib = import_dlib()
            with self._load_lock:
                if self._predictor is None:
                    self._predictor = dlib.shape_predictor(str(model_path("dlib-shape5")))
        return self._predictor

    @contextmanager
    def _hog(self) -> Iterator[Any]:
        with self._load_lock:
            detector = self._hog_pool.pop() if self._hog_pool else None
        if detector is None:
            detector = import_dlib().get_frontal_face_detector()
        try:
            yield detector
        finally:
            with self._load_lock:
                self._hog_pool.append(detector)

    def _cnn_model(self) -> Any:
        if self._cnn is None:
            dlib = import_dlib()
            with self._load_lock:
                if self._cnn is None:
                    self._cnn = dlib.cnn_face_detection_model_v1(str(model_path("dlib-cnn")))
        return self._cnn

    # -- detection -----------------------------------------------------------------------------
    def _scale(self) -> float:
        """Image scale at which to run: 2**upsample, lowered when min_face allows (never above it)."""
        scale = 2.0**self.upsample
        if self.min_face > 0:
            scale = min(scale, _SMALLEST_FACE / float(self.min_face))
        return scale

    def _raw_detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(box in rgb's pixels as x1, y1, x2, y2 floats, margin) for each detection."""
        scale = self._scale()
        if scale == 2.0**self.upsample:
            work, upsample, factor = rgb, self.upsample, 1.0  # dlib's own pyramid_up
        else:
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            work, upsample, factor = cv2.resize(rgb, size, interpolation=interp), 0, scale
        out: list[tuple[np.ndarray, float]] = []
        if self.kind == "hog":
            with self._hog() as hog:
                rects, margins, _ = hog.run(work, upsample, 0.0)
            pairs = zip(rects, margins, strict=True)
        else:
            model = self._cnn_model()
            with self._cnn_lock:
                dets = model(work, upsample)
            pairs = ((d.rect, d.confidence) for d in dets)
        for rect, margin in pairs:
            # dlib rectangles are inclusive: right/bottom are the last pixel inside
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
            out.append((box / factor, float(margin)))
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one BGR uint8 image, best score first; det_score = logistic(dlib margin)."""
        dlib = import_dlib()
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        predictor = self._shape_predictor()
        faces: list[Face] = []
        limits = np.array([width, height, width, height], dtype=np.float64)
        for box, margin in self._raw_detect(rgb):
            clipped = np.clip(box, 0.0, limits)
            if min(clipped[2] - clipped[0], clipped[3] - clipped[1]) < max(float(self.min_face), 1.0):
                continue
            # the predictor sees the unclipped box, as in training; the reported box is clipped
            shape5 = shape_to_array(predictor(rgb, bbox_to_rect(dlib, box)))
            faces.append(Face(
                bbox=clipped,
                det_score=margin_to_score(margin),
                landmarks=landmarks_from_shape5(shape5),
                attributes={"dlib_shape5": shape5.astype(int).tolist(), "dlib_margin": round(margin, 5)},
            ))
        faces.sort(key=lambda f: -f.det_score)
        return faces


__all__ = ["DLIB5_TEMPLATE", "DlibDetector", "landmarks_from_shape5", "margin_to_score"]
