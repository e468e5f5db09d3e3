"""Face recognizers behind one protocol; `create_recognizer(name)` is the one way to get any of them."""

from __future__ import annotations

from typing import Any

from facelens.embed.base import Recognizer, l2_normalize
from facelens.errors import ConfigError

RECOGNIZERS = ("arcface-mbf", "sface", "dlib-resnet")


def create_recognizer(name: str | None = None, **params: Any) -> Recognizer:
    """A recognizer by name: arcface-mbf, sface (licence-clean) or dlib-resnet (needs `facelens[dlib]`)."""
    if name is None:
        from facelens.profile import default_recognizer

        name = default_recognizer()
    if name == "arcface-mbf":
        from facelens.embed.arcface import ArcFace

        return ArcFace(**params)
    if name == "sface":
        from facelens.embed.arcface import SFace

        return SFace(**{k: v for k, v in params.items() if k in {"flip", "batch_size", "threads", "refine", "model"}})
    if name == "dlib-resnet":
        from facelens.embed.dlib import DlibResNet

        return DlibResNet(**{k: v for k, v in params.items() if k in {"jitter"}})
    raise ConfigError(f"unknown recognizer {name!r}; choose from {', '.join(RECOGNIZERS)}")


__all__ = ["RECOGNIZERS", "Recognizer", "create_recognizer", "l2_normalize"]
