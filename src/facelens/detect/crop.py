"""Input that is already a face: each image is one face crop (FER-2013, UTKFace, LFW-style datasets).

The whole image is the face's box, so the answer is never "no face". The detector is still asked for the
five points, which alignment needs: on the crop enlarged to about 192 px (detectors miss most 48 px faces)
inside a replicated border (a face touching the frame's edge looks like a face, not like a cut-out). A
detection is taken only when it is plainly the crop's face: its centre in the middle half of the crop and
its side between a quarter and one and a half of the crop's. Otherwise the points are FER-2013's median
framing (`align.FER_TEMPLATE`) stretched to the crop, and the face says so in `attributes["crop"]`.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelens.align import FER_SIZE, FER_TEMPLATE
from facelens.detect.base import Detector
from facelens.types import Face

WORK_SIDE = 192  # the crop's longer side as the detector sees it
BORDER = 0.5  # replicated border on each side, as a share of the crop's side


def face_of_crop(pixels: np.ndarray, detector: Detector) -> Face:
    """The one face of a face crop (BGR uint8): box = the whole image, five points found or templated."""
    height, width = pixels.shape[:2]
    scale = WORK_SIDE / max(height, width)
    work = cv2.resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    pad_y, pad_x = round(work.shape[0] * BORDER), round(work.shape[1] * BORDER)
    canvas = cv2.copyMakeBorder(work, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    box = np.array([0, 0, width, height], np.float32)
    best: Face | None = None
    for found in detector.detect(canvas):
        if found.landmarks is None:
            continue
        fx1, fy1, fx2, fy2 = (found.bbox - np.array([pad_x, pad_y, pad_x, pad_y], np.float32)) / scale
        cx, cy, side = (fx1 + fx2) / 2, (fy1 + fy2) / 2, max(fx2 - fx1, fy2 - fy1)
        central = abs(cx - width / 2) <= width / 4 and abs(cy - height / 2) <= height / 4
        plausible = central and 0.25 * max(width, height) <= side <= 1.5 * max(width, height)
        if plausible and (best is None or found.det_score > best.det_score):
            best = found
    if best is not None:
        points = (best.landmarks - np.array([pad_x, pad_y], np.float32)) / scale
        return Face(bbox=box, det_score=best.det_score, landmarks=points,
                    attributes={"crop": {"landmarks": "detected"}})
    points = FER_TEMPLATE * np.array([width / FER_SIZE, height / FER_SIZE], np.float32)
    return Face(bbox=box, det_score=0.0, landmarks=points, attributes={"crop": {"landmarks": "template"}})


def is_whole_crop(face: Face) -> bool:
    """Whether the face came from crop input (its box is the whole image)."""
    return "crop" in face.attributes
