"""Annotated images: boxes, landmarks and labels drawn on a copy of the picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelens.errors import ImageError
from facelens.types import Face

LANDMARK_COLOURS = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]  # BGR


def draw_faces(
    image: np.ndarray,
    faces: list[Face],
    labels: list[str] | None = None,
    colours: list[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """A copy of a BGR image with each face's box, five points and label drawn; line width scales with size."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for i, face in enumerate(faces):
        colour = colours[i] if colours else (0, 200, 0)
        x1, y1, x2, y2 = (round(v) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        if face.landmarks is not None:
            for j, (x, y) in enumerate(face.landmarks):
                cv2.circle(canvas, (round(x), round(y)), thickness + 1,
                           LANDMARK_COLOURS[j % 5], -1, cv2.LINE_AA)
        text = labels[i] if labels else f"{face.det_score:.2f}"
        if text:
            scale = 0.4 * thickness + 0.1
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            top = max(0, y1 - th - base - 2)
            left = max(0, min(x1, canvas.shape[1] - tw - 3))  # keep the label inside the picture
            cv2.rectangle(canvas, (left, top), (left + tw + 2, top + th + base + 2), colour, -1)
            cv2.putText(canvas, text, (left + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas


def _pose_axes(canvas: np.ndarray, face: Face, thickness: int) -> None:
    """X (red, image right), Y (green, down) and Z (blue, towards the camera) axes of the head, 60 mm
    long from the nose tip, projected with the pose's own camera."""
    from facelens.analysis.pose import camera_matrix

    pose = face.attributes.get("pose")
    if not (isinstance(pose, dict) and "rvec" in pose):
        return
    height, width = canvas.shape[:2]
    axes = np.array([[0, 0, 0], [60, 0, 0], [0, 60, 0], [0, 0, -60]], np.float64)
    pts, _ = cv2.projectPoints(axes, np.array(pose["rvec"]), np.array(pose["tvec"]),
                               camera_matrix(width, height), None)
    pts = pts.reshape(-1, 2)
    if not np.isfinite(pts).all() or np.abs(pts).max() > 1e6:
        return
    origin = tuple(round(v) for v in pts[0])
    for end, colour in zip(pts[1:], [(0, 0, 255), (0, 255, 0), (255, 0, 0)], strict=True):
        cv2.arrowedLine(canvas, origin, tuple(round(v) for v in end), colour, thickness + 1, cv2.LINE_AA, 0, 0.15)


def draw_analysis(image: np.ndarray, faces: list[Face], labels: list[str]) -> np.ndarray:
    """Boxes, dense landmarks, pose axes and a label line per face (`facelens analyze --draw`)."""
    canvas = draw_faces(image, faces, labels)
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for face in faces:
        for key in ("landmarks_106", "landmarks_68"):
            points = face.attributes.get(key)
            if isinstance(points, list):
                for x, y in points:
                    cv2.circle(canvas, (round(x), round(y)), max(1, thickness // 2), (0, 255, 255), -1, cv2.LINE_AA)
        _pose_axes(canvas, face, thickness)
    return canvas


def save_image(path: Path, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower() or ".jpg"
    ok, buf = cv2.imencode(ext if ext in {".jpg", ".jpeg", ".png", ".bmp", ".webp"} else ".jpg", image)
    if not ok:
        raise ImageError(f"{path}: could not encode the image")
    path.write_bytes(buf.tobytes())
