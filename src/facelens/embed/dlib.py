"""dlib's ResNet face descriptor (the model behind `face_recognition`) behind our `Recognizer` protocol.

The network was trained on 150x150 chips cut by `dlib.get_face_chip` from the 5-point shape
predictor's points, so it is fed exactly that, whatever detector found the face: the shape
`DlibDetector` already measured is reused, otherwise the predictor runs in the face's box.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from facelens.detect.dlib import bbox_to_rect, import_dlib, shape_to_array, to_rgb
from facelens.embed.base import Recognizer, l2_normalize
from facelens.errors import ConfigError
from facelens.models.store import model_path
from facelens.types import Face

CHIP_SIZE = 150
CHIP_PADDING = 0.25


def _stored_shape(face: Face) -> np.ndarray | None:
    """The dlib 5-point shape kept by DlibDetector, if present and still in this face's pixels.

    A face whose box and landmarks were rescaled (e.g. from a reduced decode back to file pixels)
    after detection carries a stale shape; using it would embed the wrong patch silently, so it is
    checked against the face's own eye points (or box) and ignored when they disagree.
    """
    raw = face.attributes.get("dlib_shape5")
    if raw is None:
        return None
    pts = np.asarray(raw, dtype=np.float32)
    if pts.shape != (5, 2):
        return None
    eyes = np.stack([pts[2:4].mean(axis=0), pts[0:2].mean(axis=0)])
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    if face.landmarks is not None and len(face.landmarks) >= 2:
        ref_iod = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
        if np.abs(eyes - face.landmarks[:2]).max() > 0.25 * max(ref_iod, 1.0):
            return None
    else:
        x1, y1, x2, y2 = face.bbox
        cx, cy = pts.mean(axis=0)
        if not (x1 <= cx <= x2 and y1 <= cy <= y2 and 0.2 * face.width <= iod <= 1.2 * face.width):
            return None
    return pts


class DlibResNet(Recognizer):
    """128-d dlib ResNet-29 descriptor, L2-normalised (dlib's raw vectors have norm ~1.4; its own rule
    is Euclidean distance < 0.6 on raw vectors, which is not a cosine threshold).

    `jitter`: 0 or 1 embeds the chip as is; n > 1 averages n randomly jittered copies (dlib's option:
    n times slower, a little more robust, and no longer deterministic).
    """

    name = "dlib-resnet"
    dim = 128

    def __init__(self, jitter: int = 0) -> None:
        if int(jitter) != jitter or jitter < 0:
            raise ConfigError(f"jitter must be a non-negative integer, got {jitter}")
        self.jitter = int(jitter)
        self._load_lock = threading.Lock()
        self._net_lock = threading.Lock()  # a dlib net keeps its activations inside: one call at a time
        self._net: Any = None
        self._predictor: Any = None

    def _models(self) -> tuple[Any, Any]:
        if self._net is None or self._predictor is None:
            dlib = import_dlib()
            with self._load_lock:
                if self._predictor is None:
                    self._predictor = dlib.shape_predictor(str(model_path("dlib-shape5")))
                if self._net is None:
                    self._net = dlib.face_recognition_model_v1(str(model_path("dlib-resnet")))
        return self._net, self._predictor

    def shapes(self, rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """dlib 5-point shape of each face: the detector's own if valid, else predicted in the box."""
        dlib = import_dlib()
        _, predictor = self._models()
        out = []
        for face in faces:
            pts = _stored_shape(face)
            if pts is None:
                pts = shape_to_array(predictor(rgb, bbox_to_rect(dlib, face.bbox)))
            out.append(pts)
        return out

    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """(len(faces), 128) float32 unit vectors, one per face, in order."""
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        dlib = import_dlib()
        net, _ = self._models()
        rgb = to_rgb(image)
        detections = dlib.full_object_detections()
        for face, pts in zip(faces, self.shapes(rgb, faces), strict=True):
            points = dlib.points([dlib.point(round(float(x)), round(float(y))) for x, y in pts])
            detections.append(dlib.full_object_detection(bbox_to_rect(dlib, face.bbox), points))
        chips = dlib.get_face_chips(rgb, detections, size=CHIP_SIZE, padding=CHIP_PADDING)
        with self._net_lock:
            vectors = net.compute_face_descriptor(chips, self.jitter)
        return l2_normalize(np.array([np.asarray(v) for v in vectors], dtype=np.float32).reshape(len(faces), -1))


__all__ = ["DlibResNet"]
