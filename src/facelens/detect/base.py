"""The detector protocol: an image in, `Face`s (box, five ArcFace-order points, score) out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from facelens.types import Face


class Detector(ABC):
    """Constructors only store parameters; models load lazily on first use."""

    name: str = ""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one BGR uint8 image (H, W, 3), sorted by detection score, best first."""

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces in each image; detectors that can batch inference override this."""
        return [self.detect(image) for image in images]
