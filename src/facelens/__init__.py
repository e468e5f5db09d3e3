"""facelens: find, align, embed and compare faces on a plain CPU.

The public API in a few names:

    import facelens
    faces = facelens.detect("group.jpg")           # boxes, 5 landmarks, scores
    faces = facelens.embed("group.jpg")            # ... plus 512-d embeddings
    result = facelens.verify("a.jpg", "b.jpg")     # same person? at FAR 1e-3
    faces = facelens.analyze("photo.jpg")          # + landmarks, pose, quality, expression, age, gender
    fa = facelens.FaceAnalyzer(threads=2)          # configure once, reuse
"""

from __future__ import annotations

from functools import lru_cache

from facelens.analysis import DEFAULT_ATTRIBUTES, resolve
from facelens.errors import FacelensError, ImageError, ModelNotFoundError, NoFaceError
from facelens.io import ImageSource, load_image
from facelens.pipeline import FaceAnalyzer
from facelens.profile import active_profile, default_detector, default_recognizer, set_profile
from facelens.types import Face, ImageResult, Verification
from facelens.verify import verify

__version__ = "0.1.0"


@lru_cache(maxsize=8)
def _analyzer(detector: str, recognizer: str, profile: str, attributes: tuple[str, ...] = (),
              crops: bool = False) -> FaceAnalyzer:
    # `profile` is part of the cache key: attribute substitutes differ between profiles
    return FaceAnalyzer(detector=detector, recognizer=recognizer, attributes=attributes, crops=crops)


def detect(image: ImageSource, detector: str | None = None) -> list[Face]:
    """Faces (box, five landmarks, score) in one image, best first. None: the active profile's detector."""
    return _analyzer(detector or default_detector(), default_recognizer(), active_profile().name).detect(image)


def embed(image: ImageSource, detector: str | None = None, recognizer: str | None = None) -> list[Face]:
    """Faces of one image with their L2-normalised embeddings (None: the active profile's models)."""
    return _analyzer(detector or default_detector(), recognizer or default_recognizer(),
                     active_profile().name).analyze(image)


def analyze(image: ImageSource, attributes: tuple[str, ...] | list[str] = DEFAULT_ATTRIBUTES,
            detector: str | None = None, crops: bool = False) -> list[Face]:
    """Faces of one image with `attributes` filled in: dense landmarks, head pose, quality, expression,
    age and gender by default (see `facelens.analysis`). `crops=True`: the image is one face crop."""
    return _analyzer(detector or default_detector(), default_recognizer(), active_profile().name,
                     tuple(resolve(list(attributes))), bool(crops)).detect(image)


__all__ = [
    "Face",
    "FaceAnalyzer",
    "FacelensError",
    "ImageError",
    "ImageResult",
    "ModelNotFoundError",
    "NoFaceError",
    "Verification",
    "__version__",
    "active_profile",
    "analyze",
    "detect",
    "embed",
    "load_image",
    "set_profile",
    "verify",
]
