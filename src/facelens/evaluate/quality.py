"""`facelens evaluate quality`: error-versus-discard curves (EDC) for face quality measures.

The protocol of ISO/IEC 29794-1 and of the FIQA literature (Schlett et al., "Considerations on the
evaluation of biometric quality assessment algorithms", 2023): fix the comparison threshold first
(here the recognizer's calibrated threshold for a false-match rate), give every genuine comparison the
lower quality of its two samples, discard the lowest-quality fraction of comparisons and measure the
false non-match rate of what is left. A useful quality measure makes FNMR fall quickly; the area under
the curve up to 20 % discarded (as mean FNMR over that window) sums it up.

Compared: facelens quality, its parts alone, and the baselines people reach for first (face size,
sharpness, the detector's score, the recognizer's embedding norm as MagFace-style quality).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facelens.detect.crop import face_of_crop
from facelens.errors import FacelensError
from facelens.evaluate.protocols import folder_per_person
from facelens.io import decode_image
from facelens.models.registry import threshold_for
from facelens.pipeline import FaceAnalyzer, main_face

FRACTIONS = np.round(np.arange(0.0, 0.505, 0.01), 2)
PAUC_LIMIT = 0.2
# name -> how to read the measure from a sample record
MEASURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "facelens": lambda r: r["quality"]["score"],
    "face size": lambda r: r["size_px"],
    "sharpness": lambda r: r["quality"]["sharpness"],
    "detection score": lambda r: r["det_score"],
    "embedding norm": lambda r: r["quality"]["embedding_norm"],
    "recognizability (part)": lambda r: r["quality"]["recognizability"],
    "pose (part)": lambda r: r["quality"]["pose"],
    "exposure (part)": lambda r: r["quality"]["exposure"],
}


def edc(similarity: np.ndarray, pair_quality: np.ndarray, threshold: float,
        fractions: np.ndarray = FRACTIONS) -> np.ndarray:
    """FNMR of the genuine comparisons left after discarding each fraction of the lowest-quality ones.
    Ties in quality are discarded in a fixed pseudo-random order, so a constant measure scores like
    random discarding instead of like a lucky or unlucky sort."""
    rng = np.random.default_rng(0)
    order = np.lexsort((rng.random(len(pair_quality)), pair_quality))
    misses = (similarity[order] < threshold).astype(np.float64)
    # suffix sums: misses among the comparisons kept when the first `d` are discarded
    kept_misses = np.r_[np.cumsum(misses[::-1])[::-1], 0.0]
    n = len(misses)
    out = []
    for f in fractions:
        d = min(int(np.floor(f * n)), n - 1)
        out.append(kept_misses[d] / (n - d))
    return np.array(out)


def partial_auc(fractions: np.ndarray, fnmr: np.ndarray, limit: float = PAUC_LIMIT) -> float:
    """Mean FNMR over discard fractions 0..limit (trapezoidal area / limit)."""
    keep = fractions <= limit + 1e-9
    x, y = fractions[keep], fnmr[keep]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / limit)


def measure_samples(root: Path, analyzer: FaceAnalyzer,
                    on_done: Callable[[Path], None] | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Largest face of every image of a folder-per-person set: embedding, detection score, size, quality.
    Images where no face is found are reported (failure to acquire), not scored."""
    items = folder_per_person(Path(root))
    analyzer.check_models()
    records: dict[Path, dict[str, Any]] = {}
    errors: dict[str, str] = {}

    def work(item: tuple[Path, str]) -> None:
        path, person = item
        try:
            decoded = decode_image(path, max_side=analyzer.decode_size)
            pixels = decoded.pixels
            face = (face_of_crop(pixels, analyzer.detector_model) if analyzer.crops else
                    main_face(analyzer.detector_model.detect(pixels), pixels.shape[1], pixels.shape[0]))
            if face is None:
                errors[str(path)] = f"{path}: no face found"
            else:
                analyzer.embed(decoded.pixels, [face])
                for part in analyzer.attribute_models:
                    part.annotate(decoded.pixels, [face])
                records[path] = {"path": str(path), "person": person, "embedding": face.embedding,
                                 "det_score": face.det_score, "size_px": min(face.width, face.height) * decoded.scale,
                                 "quality": face.attributes["quality"]}
        except FacelensError as exc:
            errors[str(path)] = str(exc)
        if on_done:
            on_done(path)

    with ThreadPoolExecutor(max_workers=analyzer.n_threads) as pool:
        list(pool.map(work, items))
    return [records[p] for p, _ in items if p in records], errors


def evaluate_quality(root: Path, analyzer: FaceAnalyzer, far: float = 1e-3,
                     on_done: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """EDC of every measure in `MEASURES` on a folder-per-person set; see the module docstring."""
    if "quality" not in analyzer.attributes:
        raise FacelensError("evaluate quality needs an analyzer with attributes=['quality']")
    records, errors = measure_samples(root, analyzer, on_done)
    records = [r for r in records if "score" in r["quality"]]
    if len(records) < 3:
        raise FacelensError(f"{root}: fewer than 3 faces could be measured")
    vectors = np.stack([r["embedding"] for r in records]).astype(np.float32)
    people = np.array([r["person"] for r in records])
    i, j = np.triu_indices(len(records), 1)
    genuine = people[i] == people[j]
    i, j = i[genuine], j[genuine]
    if len(i) == 0:
        raise FacelensError(f"{root}: no person has two measurable photos; EDC needs genuine pairs")
    similarity = np.einsum("nd,nd->n", vectors[i], vectors[j])
    threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
    methods = {}
    for name, read in MEASURES.items():
        q = np.array([read(r) for r in records], np.float64)
        curve = edc(similarity, np.minimum(q[i], q[j]), threshold)
        methods[name] = {"fnmr": curve.tolist(), "pauc_20": partial_auc(FRACTIONS, curve),
                         "fnmr_at": {f"{f:.2f}": float(curve[k]) for k, f in enumerate(FRACTIONS)
                                     if f in (0.0, 0.05, 0.1, 0.2, 0.3)}}
    scores = np.array([r["quality"]["score"] for r in records])
    return {"root": str(root), "recognizer": analyzer.recognizer, "far": far, "threshold": threshold,
            "images": len(records) + len(errors), "faces": len(records), "errors": errors,
            "genuine_pairs": len(i), "fractions": FRACTIONS.tolist(), "methods": methods,
            "quality_percentiles": {p: float(np.percentile(scores, p)) for p in (5, 25, 50, 75, 95)}}
