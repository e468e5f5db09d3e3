"""Age and gender from HSE FaceRes (@vladmandic/human's `faceres` graph, converted to ONNX at pull).

Fed as its authors trained it (Savchenko's HSE models follow keras-vggface): 224×224, BGR, minus the
caffe channel means, no scaling. Fed the way the JS library feeds it (RGB × 255) it loses about 3
years of MAE and 3 points of gender accuracy (shared/MODELS.md). The crop is aligned on the five
points with a looser framing than the recognizer's (VGGFace2-style crops show the whole head).
Age is the expectation over the 100 one-year bins (DEX, Rothe et al. 2015) rather than the arg-max,
which is steadier between neighbouring bins. Known weaknesses, measured on a standard benchmark:
ages past 40 are read younger, and gender is unreliable on children (61-69 % vs 96-99 % for adults).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facelens.align import loose_crop
from facelens.analysis.base import FaceAttribute, unknown
from facelens.models.runtime import onnx_session
from facelens.types import Face

CAFFE_MEANS_BGR = np.array([103.939, 116.779, 123.68], np.float32)


class AgeGender(FaceAttribute):
    name = "age_gender"
    models = ("age-gender-faceres",)
    min_face = 32.0  # below this a 224 px input is mostly interpolation
    input_size = 224
    margin = 1.3

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

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        if any(f.landmarks is None for f in faces):
            return [unknown("no five-point landmarks") for _ in faces]
        crops = np.stack([loose_crop(image, f.landmarks, self.input_size, self.margin) for f in faces])
        p_male, age_probs = self.predict(crops)
        years = np.arange(age_probs.shape[1], dtype=np.float64)
        out = []
        for p, probs in zip(p_male, age_probs, strict=True):
            probs = probs / max(probs.sum(), 1e-12)
            age = float(probs @ years)
            spread = float(np.sqrt(max(probs @ (years - age) ** 2, 0.0)))
            out.append({"age": round(age, 1), "age_sd": round(spread, 1),
                        "gender": "male" if p >= 0.5 else "female",
                        "gender_score": round(float(max(p, 1 - p)), 4), "p_male": round(float(p), 4),
                        "model": "age-gender-faceres"})
        return out
