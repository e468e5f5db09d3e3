"""Face analysis: dense landmarks, head pose, quality, expression, age and gender.

Each part is a `FaceAttribute` (see `base.py`) that writes one entry of `Face.attributes`; the
pipeline (`FaceAnalyzer(attributes=...)`) runs the chosen parts after detection, in dependency order.

>>> faces = facelens.analysis("photo.jpg")                    # every part
>>> faces[0].attributes["pose"]["yaw"], faces[0].attributes["quality"]["score"]
"""

from __future__ import annotations

from typing import Any

from facelens.analysis.base import FaceAttribute, is_known, unknown
from facelens.errors import ConfigError

# name -> (module, class); the order is the order they run in (pose after landmarks, ...)
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "landmarks": ("facelens.analysis.landmarks", "Landmarks106"),
    "landmarks468": ("facelens.analysis.landmarks", "LandmarksMesh"),
    "landmarks68": ("facelens.analysis.landmarks", "Landmarks68"),
    "pose": ("facelens.analysis.pose", "HeadPose"),
    "quality": ("facelens.analysis.quality", "FaceQuality"),
    "expression": ("facelens.analysis.expression", "FacelensExpression"),
    "expression-fer": ("facelens.analysis.expression", "FerExpression"),
    "expression-human": ("facelens.analysis.expression", "HumanExpression"),
    "age-gender": ("facelens.analysis.age_gender", "AgeGender"),
    "liveness": ("facelens.analysis.liveness", "Liveness"),
}
DEFAULT_ATTRIBUTES = ("landmarks", "pose", "quality", "expression", "age-gender")


def create_attribute(name: str, **options: Any) -> FaceAttribute:
    """An attribute model by name (see `ATTRIBUTES`), with its constructor's options. The active profile
    may answer a name with its own model of the same thing (the clean profile: "landmarks" is FaceMesh,
    "expression" the fer model), see `facelens.profile`."""
    import importlib

    from facelens.profile import active_profile

    module, cls = ATTRIBUTES[active_profile().substitute(resolve([name])[0])]
    try:
        return getattr(importlib.import_module(module), cls)(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for attribute {name!r}: {exc}") from None


def resolve(names: list[str] | tuple[str, ...]) -> list[str]:
    """Known names, deduplicated, in running order."""
    for name in names:
        if name not in ATTRIBUTES:
            raise ConfigError(f"unknown face attribute {name!r}; choose from {', '.join(ATTRIBUTES)}")
    return [n for n in ATTRIBUTES if n in names]


__all__ = ["ATTRIBUTES", "DEFAULT_ATTRIBUTES", "FaceAttribute", "create_attribute", "is_known", "resolve",
           "unknown"]
