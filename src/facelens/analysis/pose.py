"""Head pose (yaw, pitch, roll in degrees) from 2D landmarks and a 3D mean face, with `cv2.solvePnP`.

The 3D model is a generic adult face in millimetres (camera axes: x to the image's right, y down, z
away from the camera; origin at the nose tip): eye centres 62 mm apart and 34 mm above the nose tip,
28 mm behind it; mouth corners 50 mm apart, 29 mm below, 24 mm behind; chin 66 mm below, 13 mm
behind. These are round anthropometric figures, not fitted to any data set. The camera is a pinhole
at the image centre with focal length = the image's longer side (about a 53° field of view, a
normal lens); the pose is relative to the camera, so a frontal face at a photo's edge reads a few
degrees of yaw, as it physically should.

Conventions (all in the image's frame, so they read the same for any subject):
- yaw > 0: the nose points towards the image's right;
- pitch > 0: the face tilts up;
- roll > 0: the head is rotated counter-clockwise in the image (cv2.getRotationMatrix2D's sense).
A mirrored image therefore negates yaw and roll and keeps pitch.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from facelens.analysis.base import FaceAttribute, unknown
from facelens.analysis.landmarks import semantic_points
from facelens.types import Face

MEAN_FACE_MM = {
    "left_eye": (-31.0, -34.0, 28.0),
    "right_eye": (31.0, -34.0, 28.0),
    "nose_tip": (0.0, 0.0, 0.0),
    "mouth_left": (-25.0, 29.0, 24.0),
    "mouth_right": (25.0, 29.0, 24.0),
    "chin": (0.0, 66.0, 13.0),
}


def euler_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, image conventions above, of a model-to-camera rotation
    R = Rz(-roll) · Ry(-yaw) · Rx(-pitch) in camera axes."""
    r = np.asarray(rotation, np.float64)
    pitch_cam = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    yaw_cam = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    roll_cam = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    # camera axes have y down: a positive rotation about y turns the nose to the image's left, about x
    # tilts it down, about z turns the head clockwise; negate so the reported signs read naturally
    return -float(yaw_cam), -float(pitch_cam), -float(roll_cam)


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of `euler_from_rotation` (used to test it and to draw pose axes)."""
    a, b, c = np.radians([-pitch, -yaw, -roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_matrix(width: int, height: int) -> np.ndarray:
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def solve_pose(points_2d: dict[str, np.ndarray], width: int, height: int) -> dict[str, Any]:
    """Pose of the mean face that best projects onto `points_2d` (semantic name -> (x, y))."""
    names = [n for n in MEAN_FACE_MM if n in points_2d]
    model = np.array([MEAN_FACE_MM[n] for n in names], np.float64)
    image = np.array([points_2d[n] for n in names], np.float64)
    cam = camera_matrix(width, height)
    if not np.isfinite(image).all():
        return unknown("landmarks are not finite")
    if {"left_eye", "right_eye"} <= set(names) and np.linalg.norm(
            image[names.index("right_eye")] - image[names.index("left_eye")]) < 2.0:
        return unknown("eyes less than 2 px apart: too small to solve a pose")
    try:
        # SQPnP finds the global optimum for any number of points >= 3: no initial guess, no flipped solutions
        ok, rvec, tvec = cv2.solvePnP(model, image, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        # SQPnP refuses points whose spread in normalised camera coordinates is tiny: a face of a few
        # dozen pixels in a large photo. Such a face is far away, nearly weak-perspective, so Levenberg-
        # Marquardt started from a frontal pose at the distance its eye spacing implies converges safely.
        ok, rvec, tvec = _solve_from_frontal_guess(model, image, cam, names)
    if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
        return unknown("solvePnP found no pose")
    rotation, _ = cv2.Rodrigues(rvec)
    yaw, pitch, roll = euler_from_rotation(rotation)
    projected, _ = cv2.projectPoints(model, rvec, tvec, cam, None)
    residual = float(np.linalg.norm(projected.reshape(-1, 2) - image, axis=1).mean())
    eyes = np.linalg.norm(image[names.index("right_eye")] - image[names.index("left_eye")])
    return {"yaw": round(yaw, 2), "pitch": round(pitch, 2), "roll": round(roll, 2),
            # reprojection error as a fraction of the eye distance: large = the mean face fits badly
            "fit_error": round(float(residual / max(eyes, 1e-6)), 4),
            "rvec": np.round(rvec.ravel(), 5).tolist(), "tvec": np.round(tvec.ravel(), 3).tolist()}


def _solve_from_frontal_guess(model: np.ndarray, image: np.ndarray, cam: np.ndarray,
                              names: list[str]) -> tuple[bool, np.ndarray, np.ndarray]:
    """Iterative PnP from a frontal pose placed where the face is (fallback for tiny faces)."""
    focal = cam[0, 0]
    left, right = image[names.index("left_eye")], image[names.index("right_eye")]
    eye_px = max(float(np.linalg.norm(right - left)), 1e-3)
    eye_mm = float(np.linalg.norm(np.subtract(MEAN_FACE_MM["right_eye"], MEAN_FACE_MM["left_eye"])))
    depth = focal * eye_mm / eye_px
    centre = image[names.index("nose_tip")] if "nose_tip" in names else image.mean(axis=0)
    tvec = np.array([(centre[0] - cam[0, 2]) * depth / focal, (centre[1] - cam[1, 2]) * depth / focal, depth])
    rvec = np.zeros(3)
    try:
        ok, rvec, tvec = cv2.solvePnP(model, image, cam, None, rvec.reshape(3, 1), tvec.reshape(3, 1),
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error:
        return False, rvec, tvec
    return bool(ok), rvec, tvec


class HeadPose(FaceAttribute):
    """Yaw, pitch, roll from the densest landmarks the face carries (106, 468, 68, else the detector's 5)."""

    name = "pose"
    requires = ("landmarks_106", "landmarks_468")  # either, when asked for

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        height, width = image.shape[:2]
        out: list[Any] = []
        for face in faces:
            found = semantic_points(face)
            if found is None:
                out.append(unknown("no landmarks"))
                continue
            points, source = found
            pose = solve_pose(points, width, height)
            if "unknown" not in pose:
                pose["landmarks"] = source
            out.append(pose)
        return out
