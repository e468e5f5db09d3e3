"""Shared fixtures: the photo fixtures beside the checkout and one analyzer for the session.

Tests that need `../shared/faces` or the pulled models fail loudly when they are missing: a
silently skipped accuracy test is worse than a red one.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from facelens import FaceAnalyzer
from facelens.models.registry import REQUIRES
from facelens.models.store import is_installed

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("FACELENS_TEST_DATA") or REPO.parent / "shared" / "faces")
    if not (root / "identities.csv").is_file():
        raise RuntimeError(
            f"test photos not found at {root}: put the shared fixtures beside the checkout "
            "(../shared/faces) or set FACELENS_TEST_DATA"
        )
    return root


@pytest.fixture(scope="session")
def data() -> Path:
    return data_root()


def read_csv(name: str) -> list[dict[str, str]]:
    with open(data_root() / name, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    missing = [m for m in REQUIRES["scrfd-500m"] + REQUIRES["arcface-mbf"] if not is_installed(m)]
    if missing:
        raise RuntimeError(f"models not installed: {missing}; run `make models` or `facelens models pull`")
    return FaceAnalyzer(threads=2)
