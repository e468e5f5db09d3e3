"""The face-attribute protocol: an image and its faces in, one named entry per face in `Face.attributes`.

Every attribute model (landmarks, pose, quality, expression, age/gender) follows it, so `Analyzer`
can run any set of them in order and a new one needs no change anywhere else.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from facelens.errors import FacelensError
from facelens.models.store import model_path
from facelens.types import Face


def unknown(reason: str) -> dict[str, Any]:
    """The value of an attribute that could not be measured on this face, with the reason."""
    return {"unknown": reason}


def is_known(value: Any) -> bool:
    return value is not None and not (isinstance(value, dict) and "unknown" in value)


def face_side(face: Face) -> float:
    """Shorter side of the box in pixels: what decides whether a face is too small for a model."""
    return min(face.width, face.height)


class FaceAttribute(ABC):
    """One analysis. Constructors only store parameters; models load on first use.

    `name` is the key written into `Face.attributes`; `models` the registry entries it loads (checked
    up front, so a missing model is one clear error naming `facelens models pull`); `requires` the
    attributes that must run first (pose needs landmarks); `min_face` the shorter box side in pixels
    below which the face is marked unknown instead of guessed.
    """

    name: str = ""
    models: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    min_face: float = 0.0

    def check_models(self) -> None:
        for model in self.models:
            model_path(model)

    def annotate(self, image: np.ndarray, faces: list[Face]) -> None:
        """Write `face.attributes[self.name]` for every face of one BGR uint8 image (in place)."""
        usable = []
        for face in faces:
            if face_side(face) < self.min_face:
                face.attributes[self.name] = unknown(
                    f"face is {face_side(face):.0f} px, {self.name} needs at least {self.min_face:.0f} px")
            else:
                usable.append(face)
        if not usable:
            return
        try:
            values = self.measure(image, usable)
        except FacelensError:
            raise  # a missing model or a bad option: the user must fix it, not one face
        except Exception:
            values = [self._measure_one(image, face) for face in usable]
        for face, value in zip(usable, values, strict=True):
            face.attributes[self.name] = value

    def _measure_one(self, image: np.ndarray, face: Face) -> Any:
        """One face alone: a model failing on one odd face marks that face's attribute unknown, with the
        reason, instead of losing every other face and image of the batch."""
        try:
            return self.measure(image, [face])[0]
        except FacelensError:
            raise
        except Exception as exc:
            logging.getLogger("facelens").warning("%s failed on a face at %s: %s", self.name,
                                                  [round(float(v)) for v in face.bbox], exc)
            return unknown(f"{self.name} failed on this face ({type(exc).__name__}: {str(exc).strip()[:200]})")

    @abstractmethod
    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        """One JSON-serialisable value per face (faces already checked for size)."""
