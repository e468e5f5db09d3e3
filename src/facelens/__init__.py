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
from facelens.types import Face, ImageResult, Verification
from facelens.verify import verify

__version__ = "0.1.0"


@lru_cache(maxsize=8)
def _analyzer(detector: str, recognizer: str, attributes: tuple[str, ...] = (), crops: bool = False) -> FaceAnalyzer:
    return FaceAnalyzer(detector=detector, recognizer=recognizer, attributes=attributes, crops=crops)


def detect(image: ImageSource, detector: str = "scrfd-500m") -> list[Face]:
    """Faces (box, five landmarks, score) in one image, best first."""
    return _analyzer(detector, "arcface-mbf").detect(image)


def embed(image: ImageSource, detector: str = "scrfd-500m", recognizer: str = "arcface-mbf") -> list[Face]:
    """Faces of one image with their L2-normalised embeddings."""
    return _analyzer(detector, recognizer).analyze(image)


def analyze(image: ImageSource, attributes: tuple[str, ...] | list[str] = DEFAULT_ATTRIBUTES,
            detector: str = "scrfd-500m", crops: bool = False) -> list[Face]:
    """Faces of one image with `attributes` filled in: 106 landmarks, head pose, quality, expression,
    age and gender by default (see `facelens.analysis`). `crops=True`: the image is one face crop."""
    return _analyzer(detector, "arcface-mbf", tuple(resolve(list(attributes))), bool(crops)).detect(image)


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
    "analyze",
    "detect",
    "embed",
    "load_image",
    "verify",
]
