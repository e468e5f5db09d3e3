"""The recognizer protocol: faces in an image in, L2-normalised identity embeddings out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from facelens.types import Face


class Recognizer(ABC):
    """Constructors only store parameters; models load lazily on first use.

    A recognizer aligns faces its own way (ArcFace warps the five points to its 112x112 template,
    dlib fits its own shape predictor in the box), so it takes the image and the detected faces
    rather than pre-aligned crops.
    """

    name: str = ""
    dim: int = 0

    @abstractmethod
    def embed_faces(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """(len(faces), dim) float32 array of L2-normalised embeddings, one row per face, in order."""


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
