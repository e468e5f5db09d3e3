"""Face detectors behind one protocol; `create_detector(name)` is the one way to get any of them."""

from __future__ import annotations

from typing import Any

from facelens.detect.base import AUTO, Detector, DetSize, parse_det_size
from facelens.errors import ConfigError

DETECTORS = ("scrfd-500m", "yunet", "dlib-hog", "dlib-cnn")


def create_detector(name: str | None = None, **params: Any) -> Detector:
    """A detector by name: scrfd-500m, yunet (licence-clean), dlib-hog, dlib-cnn (the dlib ones need
    `facelens[dlib]`)."""
    if name is None:
        from facelens.profile import default_detector

        name = default_detector()
    if name == "scrfd-500m":
        from facelens.detect.scrfd import SCRFD

        return SCRFD(**params)
    if name == "yunet":
        from facelens.detect.yunet import YuNet

        return YuNet(**{k: v for k, v in params.items() if k != "model"})
    if name in {"dlib-hog", "dlib-cnn"}:
        from facelens.detect.dlib import DlibDetector

        allowed = {k: v for k, v in params.items() if k in {"upsample", "min_face", "det_size"}}
        return DlibDetector(kind=name.removeprefix("dlib-"), **allowed)
    raise ConfigError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")


__all__ = ["AUTO", "DETECTORS", "DetSize", "Detector", "create_detector", "parse_det_size"]
