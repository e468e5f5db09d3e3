"""1:1 verification: cosine similarity held against a threshold chosen by false-match rate."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from facelens.errors import ConfigError, NoFaceError, QualityError
from facelens.io import decode_image
from facelens.models.registry import check_far, threshold_for
from facelens.pipeline import FaceAnalyzer, check_subject_rule, main_face, source_label
from facelens.types import Face, Verification


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ConfigError(f"embeddings of different sizes ({a.size} and {b.size}): different recognizers?")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _embedding_of(item: Any, analyzer: FaceAnalyzer, min_quality: float = 0.0,
                  label: str | None = None, subject: str = "main") -> tuple[np.ndarray, float | None]:
    """An embedding from a Face, a vector, or an image (its subject by the `subject` rule, see
    `facelens.pipeline.main_face`), and the face's quality when it was measured here (images only).
    Below `min_quality` the comparison would be a guess: QualityError."""
    if isinstance(item, Face):
        if item.embedding is None:
            raise ConfigError("face has no embedding; run the analyzer on its image first")
        if item.recognizer and item.recognizer != analyzer.recognizer:
            raise ConfigError(f"face was embedded by {item.recognizer}, not {analyzer.recognizer}")
        return item.embedding, None
    if isinstance(item, np.ndarray) and item.ndim == 1:
        if not np.isfinite(item).all() or not np.any(item):
            raise ConfigError("embedding must be finite and non-zero")
        from facelens.gallery import RECOGNIZER_DIMS

        dim = RECOGNIZER_DIMS.get(analyzer.recognizer)
        if dim and item.size != dim:  # another recognizer's vector: its scores mean nothing at this threshold
            raise ConfigError(f"a {item.size}-d embedding is not {analyzer.recognizer}'s ({dim}-d)")
        return item, None
    if not isinstance(item, str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | Image.Image):
        raise ConfigError(f"cannot verify a {type(item).__name__}: give an image (path, bytes, array), a Face "
                          "or an embedding")
    label = label or source_label(item)
    decoded = decode_image(item, label=label if not isinstance(item, str | os.PathLike) else None,
                           max_side=analyzer.decode_size)
    height, width = decoded.pixels.shape[:2]
    face = main_face(analyzer.analyze(decoded.pixels), width, height, subject)
    if face is None or face.embedding is None:
        raise NoFaceError(f"{label}: no face found")
    if min_quality <= 0:
        return face.embedding, None
    from facelens.analysis.quality import measured_quality, weakest_part

    quality = measured_quality(decoded.pixels, face)
    if quality is None:
        return face.embedding, None
    if quality["score"] < min_quality:
        raise QualityError(f"cannot decide: the face in {label} has quality {quality['score']:.2f}, below the "
                           f"floor {min_quality:.2f} ({weakest_part(quality)}); a similarity from it would be a guess")
    return face.embedding, float(quality["score"])


def verify(a: Any, b: Any, far: float = 1e-3, analyzer: FaceAnalyzer | None = None,
           min_quality: float | None = None, labels: tuple[str, str] | None = None,
           subject: str = "main") -> Verification:
    """Are `a` and `b` the same person? Each may be an image (its subject is used: by default the main
    subject, size weighed by closeness to the centre; `subject="largest"`: the largest face), a `Face` or
    an embedding. The threshold is the one calibrated for the recognizer at false-match rate `far`.

    A face from an image whose quality is below `min_quality` (None: the shipped floor, 0: off) raises
    `QualityError` ("cannot decide") instead of answering "different people": a blurred photo of the
    right person would otherwise be rejected with the same confidence as an impostor.
    """
    from facelens.analysis.quality import quality_floor

    far = check_far(far)
    check_subject_rule(subject)
    floor = quality_floor(min_quality)
    analyzer = analyzer or FaceAnalyzer()
    threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
    label_a, label_b = labels or (None, None)  # how errors name the two sides (e.g. upload field names)
    (emb_a, q_a), (emb_b, q_b) = (_embedding_of(a, analyzer, floor, label_a, subject),
                                  _embedding_of(b, analyzer, floor, label_b, subject))
    similarity = cosine_similarity(emb_a, emb_b)
    return Verification(
        similarity=similarity,
        threshold=threshold,
        far=far,
        same=similarity >= threshold,
        recognizer=analyzer.recognizer,
        quality=(q_a, q_b),
    )


def find(
    query: Any, images: list[Any], far: float = 1e-3, analyzer: FaceAnalyzer | None = None
) -> list[tuple[Any, list[Verification]]]:
    """Look for the person of `query` (an image's main subject, a Face or an embedding) among every face
    of `images`: for each image, its `ImageResult` and one `Verification` per face, in face order."""
    far = check_far(far)
    analyzer = analyzer or FaceAnalyzer()
    threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
    reference = _embedding_of(query, analyzer)[0]
    out = []
    for result in analyzer.analyze_batch(images):
        checks = []
        for face in result.faces:
            similarity = cosine_similarity(reference, face.embedding)  # type: ignore[arg-type]
            checks.append(Verification(similarity, threshold, far, similarity >= threshold, analyzer.recognizer))
        out.append((result, checks))
    return out
