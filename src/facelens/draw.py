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
            cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), colour, -1)
            cv2.putText(canvas, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas


def save_image(path: Path, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower() or ".jpg"
    ok, buf = cv2.imencode(ext if ext in {".jpg", ".jpeg", ".png", ".bmp", ".webp"} else ".jpg", image)
    if not ok:
        raise ImageError(f"{path}: could not encode the image")
    path.write_bytes(buf.tobytes())
