"""Face image quality: one score in [0, 1] for how useful a face is for recognition, training-free.

No pretrained face-quality model can be had here, so the score is built from what the recognizer
itself says plus geometric facts it under-reports (ISO/IEC 29794-5 asks the same question: how well
will this image compare?).

- `recognizability` (the core): how far the recognizer's embedding is from the "unrecognisable
  identity". Embeddings of faces with no identity left gather around one point (Chai et al., CVPR
  2023), and margin-trained recognizers give indistinct faces short feature vectors (Meng et al.,
  MagFace, 2021). So r = (1 - |e_0| / |e|) · (1 - max(0, cos(e, c_ui))), with c_ui the mean direction
  of faces destroyed on purpose (`scripts/build_ui_centre.py`: the faces shipped inside the model's
  own distribution, down-sampled to 4-8 px or blurred away) and |e_0| the norm the network gives
  featureless input (flat greys and noise, computed from the model itself). Nothing is fitted to
  any evaluation data.
- `size`: inter-ocular distance against the 35 px the recognizer's 112 px input holds (log scale from
  4 px = nothing to 35 px = everything the model can use).
- `pose`: 1 up to 30° from frontal, falling to 0 at profile (angle from the head pose): margin-trained
  recognizers lose little over the first 30° and much towards profile, where a face can still give a
  confident-looking embedding that matches frontal photos badly.
- `sharpness`: 1 - the no-reference blur metric of Crété-Roffet et al. (2007): how much detail a
  re-blur destroys; `exposure`: grey-level spread and distance from black/white clipping on the face.

quality = recognizability · size · pose. Sharpness and exposure are reported, not multiplied in: what
they measure reaches the score through the recognizer's own response. Measured on a mixed-quality set
(`benchmarks/bench_analyze.py`): the score ranks comparisons better than each of its parts and than
face size, sharpness or the detector's score. A flip-stability factor (SER-FIQ's idea without dropout)
was measured too and dropped: alone it ranked barely better than the detector score, in the product it
changed nothing (mean FNMR 0-20 % discarded 0.0552 with, 0.0555 without), and it cost an inference.
"""

from __future__ import annotations

import functools
import math
import threading
from importlib import resources
from typing import Any

import cv2
import numpy as np

from facelens.align import ARCFACE_TEMPLATE, norm_crop
from facelens.analysis.base import FaceAttribute, unknown
from facelens.analysis.landmarks import semantic_points
from facelens.analysis.pose import solve_pose
from facelens.errors import ConfigError
from facelens.types import Face

IOD_NONE, IOD_FULL = 4.0, float(ARCFACE_TEMPLATE[1, 0] - ARCFACE_TEMPLATE[0, 0])  # 35.2 px
POSE_FREE = 30.0  # degrees from frontal that cost nothing
QUALITY_RECOGNIZERS = ("arcface-mbf", "sface")  # those with a shipped reference (scripts/build_ui_centre.py)
QUALITY_FLOOR = 0.25  # see README "Face quality": enrollment refuses and clustering sets aside below this

_UI: dict[str, np.ndarray] = {}
_UI_LOCK = threading.Lock()


def raw_embeddings(crops: np.ndarray, model: str = "arcface-mbf") -> np.ndarray:
    """Un-normalised outputs of (N, 112, 112, 3) BGR ArcFace-aligned crops: the recognizer's own pass
    (arcface-mbf or sface: both take the five-point 112 px crop)."""
    from facelens.embed import create_recognizer

    return create_recognizer(model).embed_crops_raw(crops)[1]  # type: ignore[attr-defined]


def unrecognisable_reference(model: str = "arcface-mbf") -> np.ndarray:
    """Mean raw embedding of featureless 112×112 inputs (flat greys, grey noise): where a face with
    no usable detail lands. Deterministic and data-free."""
    with _UI_LOCK:
        if model not in _UI:
            rng = np.random.default_rng(0)
            inputs = [np.full((112, 112, 3), v, np.uint8) for v in (32, 64, 96, 128, 160, 192, 224)]
            inputs += [np.clip(128 + s * rng.standard_normal((112, 112, 3)), 0, 255).astype(np.uint8)
                       for s in (8, 16, 32, 64)]
            _UI[model] = raw_embeddings(np.stack(inputs), model).mean(axis=0)
        return _UI[model]


@functools.lru_cache(maxsize=4)  # read once per process, not once per face
def quality_reference(model: str = "arcface-mbf") -> tuple[np.ndarray, float, float]:
    """(unit centre of destroyed faces' embeddings, recognizability of destroyed faces, of clear ones):
    shipped with facelens, built by scripts/build_ui_centre.py (see the module docstring)."""
    path = resources.files("facelens.models").joinpath(f"quality_{model}.npz")
    if not path.is_file():
        raise ConfigError(f"face quality has no unrecognisable-identity reference for {model}; "
                          "run scripts/build_ui_centre.py")
    with path.open("rb") as fh, np.load(fh) as ref:
        return ref["centre"].astype(np.float32), float(ref["destroyed"]), float(ref["clear"])


def anchored_scale(value: np.ndarray, destroyed: float, clear: float) -> np.ndarray:
    """Logistic map putting a destroyed face's value at 0.1 and a clear photo's at 0.9: monotone (so
    rankings are kept, no ties at the ends), in (0, 1), and its middle means "half way between"."""
    mid, width = (destroyed + clear) / 2, (clear - destroyed) / (2 * math.log(9))
    return 1.0 / (1.0 + np.exp(-(np.asarray(value) - mid) / width))


def recognizability(raw: np.ndarray, featureless: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(1 - |e_0| / |e|) · (1 - max(0, cos(e, c_ui))) per row of `raw` (un-normalised embeddings)."""
    norm = np.linalg.norm(raw, axis=1)
    cos = raw @ centre / np.maximum(norm, 1e-12)
    length = np.clip(1.0 - np.linalg.norm(featureless) / np.maximum(norm, 1e-12), 0, 1)
    return length * (1.0 - np.clip(cos, 0, 1))


def size_score(landmarks: np.ndarray) -> float:
    iod = float(np.linalg.norm(np.asarray(landmarks)[1] - np.asarray(landmarks)[0]))
    return float(np.clip(math.log(max(iod, 1e-6) / IOD_NONE) / math.log(IOD_FULL / IOD_NONE), 0, 1))


def sharpness(grey: np.ndarray) -> float:
    """1 - blur metric of Crété-Roffet, Dolmiere, Ladret, Nicolas (2007), in [0, 1]: compares the
    neighbour differences of the image with those of its 9-tap box-blurred copy."""
    f = grey.astype(np.float64)
    blur_scores = []
    for axis, ksize in ((0, (1, 9)), (1, (9, 1))):  # cv2 ksize is (width, height): blur along `axis`
        b = cv2.blur(f, ksize)
        d_f = np.abs(np.diff(f, axis=axis))
        d_b = np.abs(np.diff(b, axis=axis))
        s_f = d_f[1:-1, 1:-1].sum()
        s_v = np.maximum(0, d_f - d_b)[1:-1, 1:-1].sum()
        blur_scores.append((s_f - s_v) / s_f if s_f > 0 else 1.0)
    return float(np.clip(1.0 - max(blur_scores), 0, 1))


def exposure(grey: np.ndarray) -> float:
    """Spread of grey levels (std / 32, capped) times headroom from clipping (mean within 48 of 0 or 255
    scores less), on the inner face (the crop's central 60 %)."""
    h, w = grey.shape
    inner = grey[int(0.2 * h) : int(0.8 * h), int(0.2 * w) : int(0.8 * w)].astype(np.float64)
    mean, std = inner.mean(), inner.std()
    return float(np.clip(std / 32.0, 0, 1) * np.clip(min(mean, 255.0 - mean) / 48.0, 0, 1))


def pose_angle(yaw: float, pitch: float) -> float:
    """Degrees between the face's forward direction and the line of sight (0 = frontal, 90 = profile)."""
    return math.degrees(math.acos(max(-1.0, min(1.0, math.cos(math.radians(yaw)) * math.cos(math.radians(pitch))))))


def pose_score(angle: float) -> float:
    """1 up to 30° from frontal (where margin-loss recognizers lose little), falling to 0 at profile."""
    if angle <= POSE_FREE:
        return 1.0
    return float(max(0.0, math.cos(math.radians((angle - POSE_FREE) * 90.0 / (90.0 - POSE_FREE)))))


class FaceQuality(FaceAttribute):
    """Quality in [0, 1] and its parts; needs the five detector landmarks (and uses pose if present)."""

    name = "quality"

    def __init__(self, model: str | None = None) -> None:
        self.model = model  # None: the active profile's recognizer (arcface-mbf, or sface in the clean profile)

    @property
    def models(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.recognizer,)

    @property
    def recognizer(self) -> str:
        from facelens.profile import default_recognizer

        model = self.model or default_recognizer()
        if model not in QUALITY_RECOGNIZERS:
            raise ConfigError(f"face quality reads the embeddings of {' or '.join(QUALITY_RECOGNIZERS)}, not {model}")
        return model

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        out: list[Any] = [None] * len(faces)
        usable = [i for i, f in enumerate(faces) if f.landmarks is not None and len(f.landmarks) == 5]
        for i in set(range(len(faces))) - set(usable):
            out[i] = unknown("no five-point landmarks")
        if not usable:
            return out
        crops = np.stack([norm_crop(image, faces[i].landmarks) for i in usable])
        # the pipeline's own pass gave the same crop's output already when it embedded with this model
        model = self.recognizer
        rows = [faces[i].raw_embedding if faces[i].recognizer == model else None for i in usable]
        todo = [j for j, row in enumerate(rows) if row is None]
        if todo:
            for j, row in zip(todo, raw_embeddings(crops[todo], model), strict=True):
                rows[j] = row
        plain = np.stack(rows).astype(np.float32)
        centre, destroyed, clear = quality_reference(model)
        recog = recognizability(plain, unrecognisable_reference(model), centre)
        recog = anchored_scale(recog, destroyed, clear)
        height, width = image.shape[:2]
        for j, i in enumerate(usable):
            face = faces[i]
            pose = face.attributes.get("pose")
            if not (isinstance(pose, dict) and "yaw" in pose):
                points = semantic_points(face)
                pose = solve_pose(points[0], width, height) if points else {}
            grey = cv2.cvtColor(crops[j], cv2.COLOR_BGR2GRAY)
            angle = pose_angle(pose["yaw"], pose["pitch"]) if "yaw" in pose else 0.0
            parts = {
                "recognizability": float(recog[j]),
                "size": size_score(face.landmarks),
                "pose": pose_score(angle),
                "pose_angle": angle,
                "sharpness": sharpness(grey),
                "exposure": exposure(grey),
            }
            score = parts["recognizability"] * parts["size"] * parts["pose"]
            out[i] = {"score": round(score, 4), **{k: round(v, 4) for k, v in parts.items()},
                      "embedding_norm": round(float(np.linalg.norm(plain[j])), 3)}
        return out


_PART_HINTS = {"recognizability": "the recognizer finds little identity in it: blurred, dark, noisy or occluded",
               "size": "too small", "pose": "turned too far from the camera"}


def quality_floor(min_quality: float | None) -> float:
    """The floor in force: the shipped QUALITY_FLOOR unless a value is given (0 turns the floor off)."""
    return QUALITY_FLOOR if min_quality is None else float(min_quality)


def measured_quality(pixels: np.ndarray, face: Face) -> dict[str, Any] | None:
    """The face's quality entry (measured now unless the pipeline already did), or None where it could not
    be scored: what every quality floor (enrollment, verify) decides on."""
    if "quality" not in face.attributes:
        FaceQuality().annotate(pixels, [face])
    quality = face.attributes["quality"]
    return quality if "score" in quality else None


def weakest_part(quality: dict[str, Any]) -> str:
    """The factor of the score that pulls it down most, in words."""
    part = min(_PART_HINTS, key=lambda k: quality.get(k, 1.0))
    return f"weakest: {part} {quality[part]:.2f}, {_PART_HINTS[part]}"
