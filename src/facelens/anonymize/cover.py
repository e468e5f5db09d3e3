"""Covering a face: the region (the whole head, or the face's own outline) and what is put over it.

Methods, each with levels 1 (weakest) to 5 (strongest), so a report can say which is the weakest setting
that still defeats the recognizer (see benchmarks/RESULTS.md, "Anonymization"):

| level | blur: Gaussian sigma, in face widths | pixelate: blocks across the face |
|---|---|---|
| 1 | 0.03 | 16 |
| 2 | 0.06 | 12 |
| 3 | 0.10 | 8 |
| 4 | 0.15 | 6 |
| 5 | 0.25 | 4 |

`fill` paints the region one flat grey (no level: nothing of the face is left). "Face width" is the
detector box's width, so a setting means the same for a face of 30 px and one of 300.

Regions: `head` (default) is an ellipse over the whole head, hair and ears included: from the detector box,
widened by `margin` and raised (boxes stop at the hairline), turned with the eye line. `face` follows the
face's own outline (the 106-point jaw line, closed over the forehead by mirroring the jaw about the brows),
grown by `margin`: less of the picture goes, but hair and ears stay.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from facelens.analysis.landmarks import MESH_OVAL
from facelens.errors import ConfigError
from facelens.types import Face

METHODS = ("blur", "pixelate", "fill")
REGIONS = ("head", "face")
BLUR_SIGMA = (0.03, 0.06, 0.10, 0.15, 0.25)  # of the face width, levels 1-5
PIXEL_BLOCKS = (16, 12, 8, 6, 4)  # across the face width, levels 1-5
FILL_GREY = 128


def check_cover(method: Any, level: Any, region: Any, margin: Any) -> None:
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 5:
        raise ConfigError(f"level must be a whole number from 1 (weakest) to 5 (strongest), got {level!r}")
    if region not in REGIONS:
        raise ConfigError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 2:
        raise ConfigError(f"margin must be a number from 0 to 2 (a fraction of the face's size), got {margin!r}")


def _face_axes(face: Face) -> tuple[float, np.ndarray]:
    """The eye line's angle (degrees) and the face's unit "up" vector (from the mouth towards the eyes), in
    image pixels; an upright face when there are no landmarks."""
    if face.landmarks is None or len(face.landmarks) < 5:
        return 0.0, np.array([0.0, -1.0])
    pts = np.asarray(face.landmarks, np.float64)
    eyes, mouth = (pts[0] + pts[1]) / 2, (pts[3] + pts[4]) / 2
    angle = math.degrees(math.atan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0]))
    up = eyes - mouth
    norm = float(np.linalg.norm(up))
    return angle, (up / norm if norm > 1e-6 else np.array([0.0, -1.0]))


def head_polygon(face: Face, margin: float) -> np.ndarray:
    """An ellipse (as a polygon, image pixels) over the whole head of a detected face, at any tilt."""
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    width, height = x2 - x1, y2 - y1
    angle, up = _face_axes(face)
    # SCRFD's box runs from about the hairline to the chin: the head reaches higher, along the face's own "up"
    size = max(width, height)
    cx, cy = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + up * 0.1 * size
    axes = (size * (0.62 + margin / 2), size * (0.68 + margin / 2))  # a turned face's box is squarer than its head
    # the ellipse's second axis runs along "up": its angle is the eye line's
    points = cv2.ellipse2Poly((round(cx), round(cy)), (max(1, round(axes[0])), max(1, round(axes[1]))),
                              round(angle), 0, 360, 8)
    return points.astype(np.int32)


def face_polygon(face: Face, margin: float) -> np.ndarray | None:
    """The face's outline from its dense landmarks (106 points: the jaw, closed over the forehead; FaceMesh's
    468: its face oval, which runs over the forehead itself), grown by `margin`; None without them or when the
    outline does not hold the face's own five points (a wrong fit: the head ellipse is used)."""
    mesh = face.attributes.get("landmarks_468")
    if isinstance(mesh, list) and len(mesh) == 468:
        return _grown_hull(np.asarray(mesh, np.float64)[MESH_OVAL], face, margin)
    points = face.attributes.get("landmarks_106")
    if not isinstance(points, list) or len(points) != 106:
        return None
    pts = np.asarray(points, np.float64)
    jaw = pts[[*range(16, 0, -1), 0, *range(17, 33)]]  # image-left temple, chin, image-right temple
    brows = np.concatenate([pts[43:52], pts[97:106]]).mean(axis=0)
    _, up = _face_axes(face)
    # the forehead: the jaw line mirrored across the brow line (along the face's own axis, so a tilted face
    # gets its forehead where it is), squashed to ~60 %: a forehead is shorter than a jaw
    along = (jaw - brows) @ up
    forehead = jaw - np.outer(along * 1.6, up)
    return _grown_hull(np.concatenate([jaw, forehead[::-1]]), face, margin)


def _grown_hull(outline: np.ndarray, face: Face, margin: float) -> np.ndarray | None:
    hull = cv2.convexHull(outline.astype(np.float32)).reshape(-1, 2)
    centre = hull.mean(axis=0)
    grown = np.round(centre + (hull - centre) * (1 + margin)).astype(np.int32)
    if face.landmarks is not None and any(
            cv2.pointPolygonTest(grown.reshape(-1, 1, 2), (float(x), float(y)), False) < 0 for x, y in face.landmarks):
        return None
    return grown


def region_mask(shape: tuple[int, int], faces: list[Face], region: str, margin: float) -> np.ndarray:
    """One uint8 mask (255 inside) covering every face's region."""
    mask = np.zeros(shape, np.uint8)
    for face in faces:
        polygon = face_polygon(face, margin) if region == "face" else None
        if polygon is None:
            polygon = head_polygon(face, margin)
        cv2.fillPoly(mask, [polygon], 255)
    return mask


def _blurred(patch: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a patch; large sigmas run on a shrunken copy (same result to the eye, far cheaper)."""
    factor = max(1.0, sigma / 3.0)
    if factor > 1.0:
        small = cv2.resize(patch, (max(1, round(patch.shape[1] / factor)), max(1, round(patch.shape[0] / factor))),
                           interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(small, (patch.shape[1], patch.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(patch, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def cover_faces(image: np.ndarray, faces: list[Face], method: str = "blur", level: int = 5,
                region: str = "head", margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """A copy of a BGR image with every face covered, and the mask of what was covered."""
    check_cover(method, level, region, margin)
    out = image.copy()
    height, width = image.shape[:2]
    total = np.zeros((height, width), np.uint8)
    for face in faces:
        mask = region_mask((height, width), [face], region, margin)
        ys, xs = np.nonzero(mask)
        if not len(xs):
            continue
        total |= mask
        face_width = max(float(face.bbox[2] - face.bbox[0]), 1.0)
        x1, x2, y1, y2 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        if method == "blur":
            sigma = BLUR_SIGMA[level - 1] * face_width
            pad = int(3 * sigma)  # blur from pixels around the region too, so its edge is not a hard seam
            px1, py1, px2, py2 = max(0, x1 - pad), max(0, y1 - pad), min(width, x2 + pad), min(height, y2 + pad)
            patch = _blurred(out[py1:py2, px1:px2], sigma)[y1 - py1 : y2 - py1, x1 - px1 : x2 - px1]
        elif method == "pixelate":
            block = max(1.0, face_width / PIXEL_BLOCKS[level - 1])
            region_px = out[y1:y2, x1:x2]
            small = cv2.resize(region_px, (max(1, round((x2 - x1) / block)), max(1, round((y2 - y1) / block))),
                               interpolation=cv2.INTER_AREA)
            patch = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        else:
            patch = np.full((y2 - y1, x2 - x1, 3), FILL_GREY, np.uint8)
        inside = mask[y1:y2, x1:x2] > 0
        out[y1:y2, x1:x2][inside] = patch[inside]
    return out, total
