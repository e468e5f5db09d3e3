"""The detector protocol: an image in, `Face`s (box, five ArcFace-order points, score) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np

from facelens.errors import ConfigError
from facelens.types import Face

AUTO = "auto"
DetSize = int | Literal["auto"]


def parse_det_size(value: object) -> DetSize:
    """A detection size as given by code, a command line or a request: "auto" or a positive multiple
    of 32 (an int, or a string of digits); anything else raises `ConfigError`."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit():
            value = int(text)
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 32 and value % 32 == 0:
        return int(value)
    raise ConfigError(f"det_size must be 'auto' or a positive multiple of 32 (e.g. 640, 1280), got {value!r}")


class Detector(ABC):
    """Constructors only store parameters; models load lazily on first use."""

    name: str = ""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one BGR uint8 image (H, W, 3), sorted by detection score, best first."""

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces in each image; detectors that can batch inference override this."""
        return [self.detect(image) for image in images]
