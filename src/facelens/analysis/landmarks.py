"""Dense landmarks: InsightFace 2d106det (106 points, default), MediaPipe FaceMesh (468 points, the clean
profile's) or dlib's 68-point shape predictor.

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
from facelens.models.runtime import onnx_session, tflite_interpreter
from facelens.models.store import model_path
from facelens.types import Face

# semantic points each layout gives pose estimation: eye centres are ring means, the rest single points
LAYOUT_106 = {"left_eye": list(range(33, 43)), "right_eye": list(range(87, 97)), "nose_tip": [86],
              "mouth_left": [52], "mouth_right": [61], "chin": [0]}
LAYOUT_68 = {"left_eye": list(range(36, 42)), "right_eye": list(range(42, 48)), "nose_tip": [30],
             "mouth_left": [48], "mouth_right": [54], "chin": [8]}
# FaceMesh's canonical mesh indices ("left" = image left, i.e. the subject's right)
MESH_LEFT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
MESH_RIGHT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
MESH_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
LAYOUT_468 = {"left_eye": MESH_LEFT_EYE, "right_eye": MESH_RIGHT_EYE, "nose_tip": [1], "mouth_left": [61],
              "mouth_right": [291], "chin": [152]}
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


class LandmarksMesh(FaceAttribute):
    """MediaPipe FaceMesh: 468 points (x, y; the model's z is depth relative to the face, not kept) from a
    192×192 RGB crop in [0, 1], the box enlarged 1.5× and turned so the eyes are level, as MediaPipe's own
    graph frames it (its ROI from a detection: the eyes' angle, a square 1.5× the box). Apache-2.0: the clean
    profile's dense landmarks. Faces without five points are framed upright."""

    name = "landmarks_468"
    models = ("facemesh",)
    min_face = 16.0
    input_size = 192

    def _interpreter(self) -> Any:
        return tflite_interpreter("facemesh")

    def crop(self, image: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
        """The 192×192 crop and the 2×3 matrix that maps it back to the image."""
        x1, y1, x2, y2 = (float(v) for v in face.bbox)
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        angle = 0.0
        if face.landmarks is not None and len(face.landmarks) == 5:
            (lx, ly), (rx, ry) = np.asarray(face.landmarks, np.float64)[:2]
            angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
        matrix = cv2.getRotationMatrix2D(centre, angle, self.input_size / (max(x2 - x1, y2 - y1) * 1.5))
        matrix[:, 2] += np.array([self.input_size / 2 - centre[0], self.input_size / 2 - centre[1]])
        crop = cv2.warpAffine(image, matrix, (self.input_size, self.input_size), borderValue=0)
        return crop, cv2.invertAffineTransform(matrix)

    def points(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """(N, 468, 2) points in the image's pixels."""
        interp = self._interpreter()
        inp = interp.get_input_details()[0]["index"]
        out = interp.get_output_details()[0]["index"]
        result = []
        for face in faces:
            crop, inverse = self.crop(image, face)
            interp.set_tensor(inp, np.ascontiguousarray(crop[None, :, :, ::-1], dtype=np.float32) / 255.0)
            interp.invoke()
            pts = interp.get_tensor(out).reshape(-1, 3)[:, :2].astype(np.float64)
            result.append(pts @ inverse[:, :2].T + inverse[:, 2])
        return np.stack(result) if result else np.zeros((0, 468, 2))

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
        from facelens.profile import check_allowed

        check_allowed("dlib-shape68")  # also for a loaded predictor: the profile may have changed since
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
    for key, layout in (("landmarks_106", LAYOUT_106), ("landmarks_468", LAYOUT_468), ("landmarks_68", LAYOUT_68)):
        value = face.attributes.get(key)
        if isinstance(value, list):
            pts = np.asarray(value, np.float64)
            return {name: pts[idx].mean(axis=0) for name, idx in layout.items()}, key
    if face.landmarks is not None and len(face.landmarks) == 5:
        pts = np.asarray(face.landmarks, np.float64)
        return {name: pts[idx].mean(axis=0) for name, idx in LAYOUT_5.items()}, "landmarks_5"
    return None


def mesh_five_points(image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    """Five ArcFace-order points (eye-ring centres, nose tip, mouth corners) read off FaceMesh, one (5, 2) array
    per face; a face the mesh cannot be trusted on (under 24 px, or a mesh whose eyes disagree with the
    detector's by more than half their distance) keeps the detector's own points.

    Why: YuNet's five points are noisy (8.6 % of the eye distance from SCRFD's, median, on the fixtures; the
    mesh's eye centres 4.4 %) and drift on tilted faces, and recognizers pay for it: SFace on people_celeba
    verifies at 94.2 % aligned on YuNet's points, 95.5 % on these (README "Licence-clean profile")."""
    out = [np.asarray(f.landmarks, np.float32) for f in faces]
    todo = [i for i, f in enumerate(faces)
            if f.landmarks is not None and len(f.landmarks) == 5 and min(f.width, f.height) >= 24]
    if not todo:
        return out
    for i, pts in zip(todo, LandmarksMesh().points(image, [faces[i] for i in todo]), strict=True):
        five = np.stack([pts[MESH_LEFT_EYE].mean(0), pts[MESH_RIGHT_EYE].mean(0), pts[1], pts[61], pts[291]])
        detected = out[i].astype(np.float64)
        iod = float(np.linalg.norm(detected[1] - detected[0]))
        if iod > 0 and np.linalg.norm(five[:2] - detected[:2], axis=1).max() <= 0.5 * iod:
            out[i] = five.astype(np.float32)
    return out


def dense_landmarks() -> FaceAttribute:
    """The active profile's dense landmark model: 2d106det, or FaceMesh in the clean profile."""
    from facelens.profile import active_profile

    return LandmarksMesh() if active_profile().substitute("landmarks") == "landmarks468" else Landmarks106()


def eye_rings(face: Face) -> tuple[np.ndarray, np.ndarray] | None:
    """(image-left eye ring, image-right eye ring) from the face's dense landmarks, or None."""
    for key, n, (left, right) in (("landmarks_106", 106, (LAYOUT_106["left_eye"], LAYOUT_106["right_eye"])),
                                  ("landmarks_468", 468, (MESH_LEFT_EYE, MESH_RIGHT_EYE))):
        value = face.attributes.get(key)
        if isinstance(value, list) and len(value) == n:
            pts = np.asarray(value, np.float64)
            return pts[left], pts[right]
    return None
