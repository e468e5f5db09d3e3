"""Dense landmarks: InsightFace 2d106det (106 points, default) or dlib's 68-point shape predictor.

Point layout of 2d106det (indices read off the model's output on the fixture photos; "left" = image
left): 0 chin, 1-16 image-left jaw (top to chin), 17-32 image-right jaw, 33-42 image-left eye,
43-51 image-left brow, 52-71 mouth (52 and 61 the corners), 72-86 nose (86 the tip), 87-96
image-right eye, 97-105 image-right brow. dlib's 68 follow the iBUG 300-W markup.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from facelens.analysis.base import FaceAttribute
from facelens.models.runtime import onnx_session
from facelens.models.store import model_path
from facelens.types import Face

# semantic points each layout gives pose estimation: eye centres are ring means, the rest single points
LAYOUT_106 = {"left_eye": list(range(33, 43)), "right_eye": list(range(87, 97)), "nose_tip": [86],
              "mouth_left": [52], "mouth_right": [61], "chin": [0]}
LAYOUT_68 = {"left_eye": list(range(36, 42)), "right_eye": list(range(42, 48)), "nose_tip": [30],
             "mouth_left": [48], "mouth_right": [54], "chin": [8]}
LAYOUT_5 = {"left_eye": [0], "right_eye": [1], "nose_tip": [2], "mouth_left": [3], "mouth_right": [4]}


class Landmarks106(FaceAttribute):
    """106 points from a 192×192 crop around the box (side 1.5× the box's longer side, as the model
    was trained on "loosely cropped detection boxes"). The graph subtracts 127.5 and scales itself,
    so it takes raw RGB pixels; RGB agreed better with SCRFD's five points than BGR on the fixture
    photos (normalised error 0.045 vs 0.053 of the inter-ocular distance)."""

    name = "landmarks_106"
    models = ("landmarks-2d106",)
    min_face = 16.0
    input_size = 192

    def __init__(self, threads: int = 1, batch_size: int = 32) -> None:
        self.threads = threads
        self.batch_size = batch_size

    def crops(self, image: np.ndarray, faces: list[Face]) -> tuple[np.ndarray, list[np.ndarray]]:
        half = self.input_size / 2
        crops, inverses = [], []
        for face in faces:
            x1, y1, x2, y2 = (float(v) for v in face.bbox)
            scale = self.input_size / (max(x2 - x1, y2 - y1) * 1.5)
            matrix = np.array([[scale, 0, half - (x1 + x2) / 2 * scale],
                               [0, scale, half - (y1 + y2) / 2 * scale]], np.float32)
            crops.append(cv2.warpAffine(image, matrix, (self.input_size, self.input_size), borderValue=0))
            inverses.append(cv2.invertAffineTransform(matrix))
        return np.stack(crops), inverses

    def points(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """(N, 106, 2) points in the image's pixels."""
        crops, inverses = self.crops(image, faces)
        session = onnx_session("landmarks-2d106", self.threads)
        blob = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
        raw = np.concatenate([session.run(None, {"data": blob[i : i + self.batch_size]})[0]
                              for i in range(0, len(blob), self.batch_size)])
        pts = (raw.reshape(len(faces), -1, 2) + 1.0) * (self.input_size / 2)  # [-1, 1] -> crop pixels
        return np.stack([p @ inv[:, :2].T + inv[:, 2] for p, inv in zip(pts, inverses, strict=True)])

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        return [np.round(p, 2).tolist() for p in self.points(image, faces)]


class Landmarks68(FaceAttribute):
    """dlib's 68-point shape predictor (iBUG 300-W markup). Its training data is licensed for
    non-commercial use only; needs the `dlib` extra."""

    name = "landmarks_68"
    models = ("dlib-shape68",)
    min_face = 16.0

    def __init__(self) -> None:
        self._predictor: Any = None
        self._lock = threading.Lock()

    def _model(self) -> Any:
        from facelens.detect.dlib import import_dlib

        with self._lock:
            if self._predictor is None:
                self._predictor = import_dlib().shape_predictor(str(model_path("dlib-shape68")))
        return self._predictor

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        from facelens.detect.dlib import bbox_to_rect, import_dlib, shape_to_array, to_rgb

        dlib, predictor, rgb = import_dlib(), self._model(), to_rgb(image)
        return [np.round(shape_to_array(predictor(rgb, bbox_to_rect(dlib, f.bbox))), 2).tolist() for f in faces]


def semantic_points(face: Face) -> tuple[dict[str, np.ndarray], str] | None:
    """Eye centres, nose tip, mouth corners (and chin) from the densest landmarks the face has."""
    for key, layout in (("landmarks_106", LAYOUT_106), ("landmarks_68", LAYOUT_68)):
        value = face.attributes.get(key)
        if isinstance(value, list):
            pts = np.asarray(value, np.float64)
            return {name: pts[idx].mean(axis=0) for name, idx in layout.items()}, key
    if face.landmarks is not None and len(face.landmarks) == 5:
        pts = np.asarray(face.landmarks, np.float64)
        return {name: pts[idx].mean(axis=0) for name, idx in LAYOUT_5.items()}, "landmarks_5"
    return None
