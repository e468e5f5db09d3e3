"""Measuring verification thresholds from labelled data, so no threshold is a magic number.

A labelled set is a folder per person (`ROOT/<person>/<image>`, every pair of images is used) or a
CSV of pairs (`path1,path2,same`). Every image's largest face is embedded; each pair gives a genuine
or impostor score; the threshold for
each target false-match rate is read off the impostor scores (see `evaluate.metrics`). The record
says which data produced it, so a user can judge whether it fits theirs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import ConfigError
from facelens.evaluate.metrics import all_pair_scores, rates_at, threshold_at_far
from facelens.evaluate.protocols import folder_per_person, read_pairs_csv
from facelens.models.registry import calibration_key
from facelens.pipeline import FaceAnalyzer, largest_face
from facelens.types import ImageResult

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)


@dataclass
class LabelledEmbeddings:
    """Embeddings of the largest face of each usable image, with its person label."""

    embeddings: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: dict[str, str]  # path -> reason (unreadable, no face)


def embed_largest(
    images: list[Path],
    analyzer: FaceAnalyzer,
    on_result: Callable[[ImageResult], None] | None = None,
) -> tuple[dict[Path, np.ndarray], dict[str, str]]:
    """The embedding of each image's largest face, and why the others have none (unreadable, no face)."""
    embeddings: dict[Path, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for path, result in zip(images, analyzer.analyze_batch(images, on_result=on_result), strict=True):
        face = largest_face(result.faces) if result.ok else None
        if face is None or face.embedding is None:
            skipped[str(path)] = result.error or "no face found"
        else:
            embeddings[path] = face.embedding
    return embeddings, skipped


def embed_labelled(
    items: list[tuple[Path, str]],
    analyzer: FaceAnalyzer,
    on_result: Callable[[ImageResult], None] | None = None,
) -> LabelledEmbeddings:
    found, skipped = embed_largest([p for p, _ in items], analyzer, on_result)
    kept = [(path, person) for path, person in items if path in found]
    embeddings = [found[path] for path, _ in kept]
    labels = [person for _, person in kept]
    paths = [str(path) for path, _ in kept]
    if not embeddings:
        raise ConfigError("no usable face in the labelled set")
    return LabelledEmbeddings(np.stack(embeddings), np.asarray(labels), paths, skipped)


def dataset_fingerprint(paths: list[str]) -> str:
    """A short hash of the file names and sizes, so a record can be matched to its data."""
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update(Path(p).name.encode())
        digest.update(str(Path(p).stat().st_size).encode())
    return digest.hexdigest()[:16]


def _record(
    genuine: np.ndarray, impostor: np.ndarray, analyzer: FaceAnalyzer, data: dict[str, Any], fars: tuple[float, ...]
) -> dict[str, Any]:
    if len(genuine) == 0 or len(impostor) < 2:
        raise ConfigError("need at least one genuine pair and two impostor pairs to calibrate")
    thresholds = {}
    for far in fars:
        estimate = threshold_at_far(genuine, impostor, far)
        entry = estimate.to_dict()
        entry["accuracy"] = round(rates_at(genuine, impostor, estimate.threshold)["accuracy"], 6)
        thresholds[f"{far:g}"] = entry
    return {
        "recognizer": analyzer.recognizer,
        "detector": analyzer.detector,
        "flip": analyzer.flip,
        "data": data,
        "pairs": {"genuine": len(genuine), "impostor": len(impostor)},
        "scores": {
            "genuine_mean": round(float(genuine.mean()), 5),
            "impostor_mean": round(float(impostor.mean()), 5),
            "impostor_std": round(float(impostor.std(ddof=1)), 5),
            "impostor_max": round(float(impostor.max()), 5),
        },
        "thresholds": thresholds,
        "date": _dt.date.today().isoformat(),
    }


def calibrate(
    root: Path,
    analyzer: FaceAnalyzer,
    fars: tuple[float, ...] = DEFAULT_FARS,
    on_result: Callable[[ImageResult], None] | None = None,
) -> dict[str, Any]:
    """A calibration record for the analyzer's recognizer, from a folder-per-person set (every pair)."""
    data = embed_labelled(folder_per_person(root), analyzer, on_result)
    genuine, impostor = all_pair_scores(data.embeddings, data.labels)
    info = {
        "root": Path(root).name,
        "people": len(set(data.labels.tolist())),
        "images": len(data.paths),
        "skipped": len(data.skipped),
        "fingerprint": dataset_fingerprint(data.paths),
    }
    return _record(genuine, impostor, analyzer, info, fars)


def calibrate_pairs(
    pairs_file: Path,
    analyzer: FaceAnalyzer,
    fars: tuple[float, ...] = DEFAULT_FARS,
    on_result: Callable[[ImageResult], None] | None = None,
) -> dict[str, Any]:
    """A calibration record from a list of labelled pairs; pairs with an unusable image are skipped."""
    pairs = read_pairs_csv(pairs_file)
    images = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    embedding, _ = embed_largest(images, analyzer, on_result)
    genuine, impostor = [], []
    for pair in pairs:
        if pair.a in embedding and pair.b in embedding:
            (genuine if pair.same else impostor).append(float(embedding[pair.a] @ embedding[pair.b]))
    info = {
        "pairs_file": Path(pairs_file).name,
        "images": len(embedding),
        "skipped": len(images) - len(embedding),
        "skipped_pairs": len(pairs) - len(genuine) - len(impostor),
        "fingerprint": dataset_fingerprint([str(p) for p in embedding]),
    }
    return _record(np.asarray(genuine), np.asarray(impostor), analyzer, info, fars)


def save_record(record: dict[str, Any], path: Path) -> None:
    """Merge the record into a thresholds file (one entry per recognizer), written atomically."""
    path = Path(path)
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ConfigError(f"{path}: existing thresholds file is not valid JSON; move it away first") from None
    existing[calibration_key(record["recognizer"], record["flip"])] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
