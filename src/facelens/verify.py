"""1:1 verification: cosine similarity held against a threshold chosen by false-match rate."""

from __future__ import annotations

from typing import Any

import numpy as np

from facelens.errors import ConfigError, NoFaceError
from facelens.models.registry import threshold_for
from facelens.pipeline import FaceAnalyzer, largest_face, source_label
from facelens.types import Face, Verification


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ConfigError(f"embeddings of different sizes ({a.size} and {b.size}): different recognizers?")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _embedding_of(item: Any, analyzer: FaceAnalyzer) -> np.ndarray:
    """An embedding from a Face, a vector, or an image (its largest face)."""
    if isinstance(item, Face):
        if item.embedding is None:
            raise ConfigError("face has no embedding; run the analyzer on its image first")
        if item.recognizer and item.recognizer != analyzer.recognizer:
            raise ConfigError(f"face was embedded by {item.recognizer}, not {analyzer.recognizer}")
        return item.embedding
    if isinstance(item, np.ndarray) and item.ndim == 1:
        return item
    face = largest_face(analyzer.analyze(item))
    if face is None or face.embedding is None:
        raise NoFaceError(f"{source_label(item)}: no face found")
    return face.embedding


def verify(a: Any, b: Any, far: float = 1e-3, analyzer: FaceAnalyzer | None = None) -> Verification:
    """Are `a` and `b` the same person? Each may be an image (its largest face is used), a `Face` or
    an embedding. The threshold is the one calibrated for the recognizer at false-match rate `far`."""
    analyzer = analyzer or FaceAnalyzer()
    threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
    similarity = cosine_similarity(_embedding_of(a, analyzer), _embedding_of(b, analyzer))
    return Verification(
        similarity=similarity,
        threshold=threshold,
        far=far,
        same=similarity >= threshold,
        recognizer=analyzer.recognizer,
    )


def find(
    query: Any, images: list[Any], far: float = 1e-3, analyzer: FaceAnalyzer | None = None
) -> list[tuple[Any, list[Verification]]]:
    """Look for the person of `query` (an image's largest face, a Face or an embedding) among every face
    of `images`: for each image, its `ImageResult` and one `Verification` per face, in face order."""
    analyzer = analyzer or FaceAnalyzer()
    threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
    reference = _embedding_of(query, analyzer)
    out = []
    for result in analyzer.analyze_batch(images):
        checks = []
        for face in result.faces:
            similarity = cosine_similarity(reference, face.embedding)  # type: ignore[arg-type]
            checks.append(Verification(similarity, threshold, far, similarity >= threshold, analyzer.recognizer))
        out.append((result, checks))
    return out
