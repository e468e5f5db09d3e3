"""Age and gender from HSE FaceRes (@vladmandic/human's `faceres` graph, converted to ONNX at pull).

Fed as its author (A. Savchenko, HSE_FaceRec_tf `facial_analysis.py`) feeds it:
- the crop: the detector's box widened by 10 px a side (on the ~125 px faces of his benchmark: 8 % of the box,
  the share used here), not squared, not rotated, stretched to 224x224; a face crop given whole
  (`crops=True`) is used whole, as his UTKFace evaluation does;
- the pixels: BGR minus the caffe channel means, no scaling (fed RGB x 255, the way the JS library feeds it,
  it loses about 3 years of MAE and 3 points of gender accuracy: shared/MODELS.md);
- the age bins: bin i is age i + 1 (his `min_age = 1`).
Age is the expectation over the 100 bins (DEX, Rothe et al. 2015), steadier than the arg-max, and `age_sd`
their spread: an honest error bar. Gender is "unknown" when the face reads as a child (age < 13) and the
model is less than 90 % sure: children's gender is where this model fails (61-69 % right on a standard
benchmark, against 96-99 % for adults); that floor is a policy from those published figures, not tuned here
(no labelled children are available here). Ages past 40 are known to be read younger.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from facelens.analysis.base import FaceAttribute
from facelens.detect.crop import is_whole_crop
from facelens.models.runtime import onnx_session
from facelens.types import Face

CAFFE_MEANS_BGR = np.array([103.939, 116.779, 123.68], np.float32)


class AgeGender(FaceAttribute):
    name = "age_gender"
    models = ("age-gender-faceres",)
    min_face = 32.0  # below this a 224 px input is mostly interpolation
    input_size = 224
    margin = 0.08  # share of the box added on each side (the author's 10 px on his ~125 px faces)
    child_age = 13.0  # below this, gender needs `child_gender_floor` confidence or it is "unknown"
    child_gender_floor = 0.9

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(male), age probabilities) of (N, 224, 224, 3) BGR uint8 crops."""
        session = onnx_session("age-gender-faceres")
        blob = crops.astype(np.float32) - CAFFE_MEANS_BGR
        outputs = [o.name for o in session.get_outputs()]
        male, ages = [], []
        for i in range(0, len(blob), self.batch_size):
            result = dict(zip(outputs, session.run(None, {session.get_inputs()[0].name: blob[i : i + self.batch_size]}),
                              strict=True))
            male.append(result["gender"][:, 0])
            ages.append(result["age"])
        return np.concatenate(male), np.concatenate(ages)

    def crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The author's crop: the box plus a margin, clipped to the image, stretched to 224x224 (BGR)."""
        height, width = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in face.bbox)
        if not is_whole_crop(face):
            dx, dy = (x2 - x1) * self.margin, (y2 - y1) * self.margin
            x1, y1, x2, y2 = x1 - dx, y1 - dy, x2 + dx, y2 + dy
        left, top = int(max(0, round(x1))), int(max(0, round(y1)))
        right, bottom = int(min(width, max(left + 1, round(x2)))), int(min(height, max(top + 1, round(y2))))
        region = image[top:bottom, left:right]
        size = self.input_size
        shrink = region.shape[0] > size or region.shape[1] > size
        return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        crops = np.stack([self.crop(image, f) for f in faces])
        p_male, age_probs = self.predict(crops)
        return [age_gender_value(float(p), probs, self.child_age, self.child_gender_floor)
                for p, probs in zip(p_male, age_probs, strict=True)]


def age_gender_value(p_male: float, age_probs: np.ndarray, child_age: float = AgeGender.child_age,
                     child_gender_floor: float = AgeGender.child_gender_floor) -> dict[str, Any]:
    """The reported value from the model's outputs: age as the expectation over the bins (bin i = age i + 1),
    its spread, and gender, left "unknown" on a face read as a child unless the model is sure."""
    probs = np.asarray(age_probs, np.float64)
    probs = probs / max(probs.sum(), 1e-12)
    years = np.arange(1, probs.size + 1, dtype=np.float64)
    age = float(probs @ years)
    spread = float(np.sqrt(max(probs @ (years - age) ** 2, 0.0)))
    confidence = max(p_male, 1 - p_male)
    value: dict[str, Any] = {"age": round(age, 1), "age_sd": round(spread, 1),
                             "gender": "male" if p_male >= 0.5 else "female",
                             "gender_score": round(confidence, 4), "p_male": round(p_male, 4),
                             "model": "age-gender-faceres"}
    if age < child_age and confidence < child_gender_floor:
        value["gender"] = "unknown"
        value["gender_note"] = (f"reads as a child (age {age:.0f}) and the model is only {confidence:.0%} sure: "
                                "gender is unreliable on children")
    return value
