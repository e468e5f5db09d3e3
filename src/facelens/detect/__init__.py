"""Face detectors behind one protocol; `create_detector(name)` is the one way to get any of them."""

from __future__ import annotations

from typing import Any

from facelens.detect.base import Detector
from facelens.errors import ConfigError

DETECTORS = ("scrfd-500m", "dlib-hog", "dlib-cnn")


def create_detector(name: str = "scrfd-500m", **params: Any) -> Detector:
    """A detector by name: scrfd-500m (default), dlib-hog, dlib-cnn (the latter two need `facelens[dlib]`)."""
    if name == "scrfd-500m":
        from facelens.detect.scrfd import SCRFD

        return SCRFD(**params)
    if name in {"dlib-hog", "dlib-cnn"}:
        from facelens.detect.dlib import DlibDetector

        allowed = {k: v for k, v in params.items() if k in {"upsample", "min_face"}}
        return DlibDetector(kind=name.removeprefix("dlib-"), **allowed)
    raise ConfigError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")


__all__ = ["DETECTORS", "Detector", "create_detector"]
