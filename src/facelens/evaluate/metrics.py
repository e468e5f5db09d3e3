"""Verification metrics on similarity scores. Convention: a pair is declared "same" when score >= threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# An empirical threshold is trusted when at least this many impostor scores lie above it;
# below that, the FAR estimate is mostly noise and a fitted tail is used instead.
MIN_TAIL_COUNT = 10


def all_pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of every unordered pair, split into (genuine, impostor)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    sims = emb @ emb.T
    iu = np.triu_indices(len(emb), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    scores = sims[iu]
    return scores[same].astype(np.float64), scores[~same].astype(np.float64)


def empirical_threshold(impostor: np.ndarray, far: float) -> float:
    """The lowest threshold at which the fraction of impostor scores >= threshold is at most `far`."""
    scores = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    allowed = math.floor(far * len(scores) + 1e-9)
    if allowed >= len(scores):
        return float(scores[-1])
    # just above the (allowed+1)-th highest impostor score, so exactly `allowed` impostors pass
    return float(np.nextafter(scores[allowed], np.inf))


def gaussian_tail_threshold(impostor: np.ndarray, far: float) -> float:
    """Threshold from a normal fit to the impostor scores: mean + z(1 - far) * std."""
    scores = np.asarray(impostor, dtype=np.float64)
    return float(scores.mean() + NormalDist().inv_cdf(1.0 - far) * scores.std(ddof=1))


@dataclass(frozen=True)
class ThresholdEstimate:
    far: float
    threshold: float
    method: str  # "empirical" or "gaussian-tail"
    measured_far: float
    fnmr: float

    def to_dict(self) -> dict[str, float | str]:
        return {
            "threshold": round(self.threshold, 6),
            "method": self.method,
            "measured_far": self.measured_far,
            "fnmr": round(self.fnmr, 6),
        }


def threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> ThresholdEstimate:
    """Threshold for a target false-match rate, with how it was obtained.

    Empirical when the impostor set is large enough to have MIN_TAIL_COUNT scores above it;
    otherwise the stricter of the empirical value and a normal fit to the impostor scores, since a
    threshold set by one or two impostor pairs says little about the rate on new data.
    """
    impostor = np.asarray(impostor, dtype=np.float64)
    genuine = np.asarray(genuine, dtype=np.float64)
    if len(impostor) < 2:
        raise ValueError("need at least two impostor scores to set a threshold")
    threshold = empirical_threshold(impostor, far)
    method = "empirical"
    if far * len(impostor) < MIN_TAIL_COUNT:
        fitted = gaussian_tail_threshold(impostor, far)
        if fitted > threshold:
            threshold, method = fitted, "gaussian-tail"
    return ThresholdEstimate(
        far=far,
        threshold=threshold,
        method=method,
        measured_far=float((impostor >= threshold).mean()),
        fnmr=float((genuine < threshold).mean()) if len(genuine) else float("nan"),
    )


def rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> dict[str, float]:
    """False-match rate, false-non-match rate and accuracy over all pairs at one threshold."""
    genuine = np.asarray(genuine)
    impostor = np.asarray(impostor)
    fmr = float((impostor >= threshold).mean()) if len(impostor) else float("nan")
    fnmr = float((genuine < threshold).mean()) if len(genuine) else float("nan")
    correct = int((genuine >= threshold).sum() + (impostor < threshold).sum())
    return {"fmr": fmr, "fnmr": fnmr, "accuracy": correct / max(1, len(genuine) + len(impostor))}
