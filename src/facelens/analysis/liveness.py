"""Passive liveness: is the face a live person, or a photo, a screen or a replayed video?

Two presentation-attack models from the registries, each fed as it was trained (measured: fed otherwise
both say "attack" for everything, live faces included):
- `liveness-minifas` (primary): a MiniFASNet-style classifier, 128x128 **BGR**, raw 0..255, on a crop 2.7x
  the detector box (centred, shifted inside the image); P(attack) = 1 - softmax[0]. It reads the context
  around the face (screen edges, moire, paper borders): where the image holds less than 1.7x the box around
  the face (a tight face crop, a face filling the frame) its output is unreliable, even inverted, so the
  answer is then undecided rather than a guess.
- `liveness-dtn` (second opinion, used when installed): the Deep Tree Network, 256x256 RGB / 255 on the box
  made square; score = |cls| of the active leaf. It saturates (~0.99) on every attack, but also on many
  bona fide images that are not webcam selfies (small chips, MPEG-1 frames, CCTV), so it never decides
  alone: the fused score is (DTN + 2 P_minifas) / 3.
The decision threshold is taken at a stated bona fide presentation classification error rate (BPCER) on
live captures, recorded in `liveness_thresholds.json` by `scripts/calibrate_liveness.py` (like the
verification thresholds): which data, how many samples, which rate.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import cv2
import numpy as np

from facelens.analysis.base import FaceAttribute
from facelens.errors import ConfigError
from facelens.models.runtime import onnx_session, tflite_interpreter
from facelens.models.store import is_installed, model_path
from facelens.types import Face

MINIFAS_SCALE = 2.7  # the vendor's crop (Silent-Face's CropImage convention)
MIN_CONTEXT = 1.7  # below this reached scale MiniFAS's output is unreliable (measured: inverted at 1.0-1.4)
DTN_WEIGHT = 1.0 / 3.0  # fused = DTN / 3 + 2/3 MiniFAS: a DTN false alarm alone cannot reach a decision
DEFAULT_BPCER = 0.01


def minifas_crop(image: np.ndarray, box: np.ndarray, scale: float = MINIFAS_SCALE) -> tuple[np.ndarray, float]:
    """(128x128 BGR crop, the scale reached): the box grown `scale` times about its centre, or as far as the
    image allows, shifted back inside the image, end pixels included (the vendor's arithmetic, kept exactly:
    measured, a crop two pixels shorter moves P(live) on a live face from 0.81 to 0.69)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    reached = min((height - 1) / h, (width - 1) / w, scale)
    cx, cy = x1 + w / 2, y1 + h / 2
    left, top, right, bottom = cx - w * reached / 2, cy - h * reached / 2, cx + w * reached / 2, cy + h * reached / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), width - 1.0
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), height - 1.0
    left_i, top_i, right_i, bottom_i = int(left), int(top), int(right), int(bottom)
    region = image[max(top_i, 0) : bottom_i + 1, max(left_i, 0) : right_i + 1]
    return cv2.resize(region, (128, 128), interpolation=cv2.INTER_LINEAR), float(reached)


def dtn_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """256x256 RGB crop as the package cuts it: the integer box made square about its centre (the shorter
    side grown), moved back inside the image, no margin."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    if bw > bh:
        y1, y2 = y1 - (bw - bh) // 2, y2 + (bw - bh + 1) // 2
    else:
        x1, x2 = x1 - (bh - bw) // 2, x2 + (bh - bw + 1) // 2
    if x1 < 0 or y1 < 0:
        shift = max(-x1, -y1)
        x1, y1 = x1 + shift, y1 + shift
    if x2 >= width or y2 >= height:
        shift = max(x2 - width + 1, y2 - height + 1)
        x2, y2 = x2 - shift, y2 - shift
    x1, y1 = max(x1, 0), max(y1, 0)
    region = image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    return cv2.cvtColor(cv2.resize(region, (256, 256), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=1)
def liveness_thresholds() -> dict[str, Any]:
    """The shipped record (`models/liveness_thresholds.json`)."""
    path = resources.files("facelens.models") / "liveness_thresholds.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def liveness_threshold(method: str, bpcer: float = DEFAULT_BPCER) -> float:
    record = liveness_thresholds().get(method)
    if not record:
        raise ConfigError(f"no liveness threshold recorded for {method!r}; run scripts/calibrate_liveness.py")
    table = record["thresholds"]
    if f"{bpcer:g}" not in table:
        raise ConfigError(f"no liveness threshold at BPCER {bpcer:g}; recorded: {', '.join(table)}")
    return float(table[f"{bpcer:g}"]["threshold"])


class Liveness(FaceAttribute):
    """`liveness`: {"live": bool | None, "score": P(attack)-like, "threshold", "decision", per-model scores}."""

    name = "liveness"
    models = ("liveness-minifas",)
    min_face = 32.0

    def __init__(self, bpcer: float = DEFAULT_BPCER, use_dtn: bool | None = None) -> None:
        self.bpcer = bpcer
        self.use_dtn = use_dtn  # None: whenever liveness-dtn is installed

    def dtn_enabled(self) -> bool:
        return is_installed("liveness-dtn") if self.use_dtn is None else bool(self.use_dtn)

    @property
    def method(self) -> str:
        return "minifas+dtn" if self.dtn_enabled() else "minifas"

    def check_models(self) -> None:
        super().check_models()
        if self.use_dtn:
            model_path("liveness-dtn")
        liveness_threshold(self.method, self.bpcer)  # a missing record or rate is one error up front
        if self.dtn_enabled():
            liveness_threshold("dtn", self.bpcer)

    def minifas_scores(self, image: np.ndarray, faces: list[Face]) -> list[tuple[float, float]]:
        """(P(attack), scale reached) per face."""
        session = onnx_session("liveness-minifas")
        crops, reached = [], []
        for face in faces:
            crop, scale = minifas_crop(image, face.bbox)
            crops.append(crop.transpose(2, 0, 1).astype(np.float32))
            reached.append(scale)
        logits = session.run(None, {session.get_inputs()[0].name: np.stack(crops)})[0].astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        live = e[:, 0] / e.sum(1)
        return [(float(1 - p), s) for p, s in zip(live, reached, strict=True)]

    def _interpreter(self) -> Any:
        return tflite_interpreter("liveness-dtn")

    def dtn_scores(self, image: np.ndarray, faces: list[Face]) -> list[float]:
        interp = self._interpreter()
        inp = interp.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in interp.get_output_details()}
        cls_index, mask_index = outputs["Identity"], outputs["Identity_1"]  # by name, as the package does
        scores = []
        for face in faces:
            x = dtn_crop(image, face.bbox).astype(np.float32)[None] / 255.0
            interp.set_tensor(inp, x)
            interp.invoke()
            cls, mask = interp.get_tensor(cls_index)[0], interp.get_tensor(mask_index)[0]
            scores.append(float(np.clip(np.abs(cls) @ mask, 0.0, 1.0)))
        return scores

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        method = self.method
        threshold = liveness_threshold(method, self.bpcer)
        fas = self.minifas_scores(image, faces)
        dtn = self.dtn_scores(image, faces) if method == "minifas+dtn" else [None] * len(faces)
        out = []
        for (p_fas, reached), p_dtn in zip(fas, dtn, strict=True):
            score = p_fas if p_dtn is None else DTN_WEIGHT * p_dtn + (1 - DTN_WEIGHT) * p_fas
            value: dict[str, Any] = {"score": round(score, 4), "threshold": round(threshold, 4), "method": method,
                                     "bpcer": self.bpcer, "minifas": {"p_attack": round(p_fas, 4),
                                                                      "context": round(reached, 2)}}
            if p_dtn is not None:
                value["dtn"] = {"score": round(p_dtn, 4)}
            if reached >= MIN_CONTEXT:
                live = score < threshold
                value.update(live=live, decision="live" if live else "attack", basis=method)
            elif p_dtn is not None:
                # MiniFASNet cannot read a face without its surroundings; the DTN can, alone, at its own
                # recorded threshold (it errs towards "attack" on images that are not camera selfies)
                dtn_threshold = liveness_threshold("dtn", self.bpcer)
                live = p_dtn < dtn_threshold
                value.update(live=live, decision="live" if live else "attack", basis="dtn",
                             threshold=round(dtn_threshold, 4),
                             reason=f"too little image around the face for MiniFASNet ({reached:.2f}x the box, it "
                                    f"needs {MIN_CONTEXT}x): decided by the DTN alone")
            else:
                value.update(live=None, decision="undecided",
                             reason=f"too little image around the face ({reached:.2f}x the box; MiniFASNet needs "
                                    f"{MIN_CONTEXT}x): show more of the scene, or install liveness-dtn")
            out.append(value)
        return out
