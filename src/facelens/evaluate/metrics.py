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


# --------------------------------------------------------------------------------------------
# Curves and protocol metrics. Same convention throughout: "same" when score >= threshold.
# --------------------------------------------------------------------------------------------


def _scores(values: np.ndarray, name: str) -> np.ndarray:
    """1-D float64 copy of a score array; empty arrays are refused since no rate is defined on them."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} scores are empty")
    return arr


def roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC as (far, tar, thresholds), one point per distinct score, thresholds descending.

    Point i is the operating point "accept when score >= thresholds[i]". The first point is
    (0, 0) at threshold +inf (reject everything), so the arrays are exactly sklearn's
    `roc_curve(labels, scores, drop_intermediate=False)` with labels 1 = genuine, 0 = impostor:
    same fpr, tpr and thresholds, element for element. The last point is (1, 1) at the lowest
    score. Tied genuine/impostor scores form a single diagonal step, as in sklearn.
    O(n log n): one sort, then cumulative counts at the ends of each run of equal scores.
    """
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    scores = np.concatenate([gen, imp])
    is_gen = np.concatenate([np.ones(gen.size, dtype=np.int64), np.zeros(imp.size, dtype=np.int64)])
    order = np.argsort(-scores, kind="stable")
    scores, is_gen = scores[order], is_gen[order]
    # last index of each run of equal scores: everything up to it is accepted at that threshold
    ends = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    tp = np.cumsum(is_gen)[ends]
    fp = (ends + 1) - tp
    far = np.r_[0.0, fp / imp.size]
    tar = np.r_[0.0, tp / gen.size]
    thresholds = np.r_[np.inf, scores[ends]]
    return far, tar, thresholds


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC: P(genuine > impostor) + 0.5 * P(tie), i.e. the trapezoid rule on `roc`."""
    far, tar, _ = roc(genuine, impostor)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1])) / 2.0)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold, as (eer, threshold).

    Along the ROC, FAR rises and FNMR = 1 - TAR falls. At the first point where FAR >= FNMR the
    two curves have crossed; between it and the previous point both rates (and the threshold)
    are interpolated linearly, and the EER is the rate where they meet. When they meet exactly
    at an ROC point, that point's rate and score are returned. If the crossing lies between the
    +inf point and the first real one, the threshold of the first real point (the top score) is
    returned, since +inf cannot be interpolated.
    """
    far, tar, thresholds = roc(genuine, impostor)
    fnmr = 1.0 - tar
    diff = far - fnmr  # -1 at the +inf point, +1 at the lowest score: monotone non-decreasing
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0 or i == 0:
        return float(far[i]), float(thresholds[i])
    alpha = -diff[i - 1] / (diff[i] - diff[i - 1])
    rate = far[i - 1] + alpha * (far[i] - far[i - 1])
    if np.isinf(thresholds[i - 1]):
        threshold = thresholds[i]
    else:
        threshold = thresholds[i - 1] + alpha * (thresholds[i] - thresholds[i - 1])
    return float(rate), float(threshold)


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at a target false-accept rate, as (tar, threshold).

    The threshold is `empirical_threshold(impostor, far)`: the lowest one that accepts at most
    floor(far * N) of the N impostors. When far * N < 1 no impostor may pass, so the threshold
    is just above the highest impostor score (np.nextafter) and the TAR is measured there: the
    result is always a number, never NaN, but such a point says little about the true rate at
    `far` (see threshold_at_far for the fitted-tail alternative).
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    threshold = empirical_threshold(imp, far)
    return float((gen >= threshold).mean()), threshold


def _accuracy_at(sorted_same: np.ndarray, sorted_diff: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Accuracy at each threshold from pre-sorted same/different scores, by binary search."""
    accepted_same = sorted_same.size - np.searchsorted(sorted_same, thresholds, side="left")
    rejected_diff = np.searchsorted(sorted_diff, thresholds, side="left")
    return (accepted_same + rejected_diff) / (sorted_same.size + sorted_diff.size)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold that maximises accuracy on these pairs, as (threshold, accuracy).

    Candidates are the midpoints between consecutive distinct scores, plus the lowest score
    (accept all) and the value just above the highest (reject all): every distinct split of the
    pairs is tried once, with the threshold in the middle of its gap so it transfers to unseen
    scores as fairly as possible. Ties in accuracy go to the lowest threshold, as np.argmax over
    ascending thresholds does in the facenet/insightface LFW code.
    """
    scores = _scores(scores, "pair")
    same = np.asarray(same, dtype=bool).ravel()
    if same.shape != scores.shape:
        raise ValueError("scores and same must have the same length")
    distinct = np.unique(scores)
    candidates = np.r_[distinct[0], (distinct[:-1] + distinct[1:]) / 2.0, np.nextafter(distinct[-1], np.inf)]
    acc = _accuracy_at(np.sort(scores[same]), np.sort(scores[~same]), candidates)
    k = int(np.argmax(acc))
    return float(candidates[k]), float(acc[k])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, float | list[float]]:
    """LFW-style k-fold verification accuracy.

    For each fold id (in ascending order) the best threshold is chosen on all *other* folds
    (`best_threshold`) and the accuracy of that threshold is measured on the held-out fold.
    Returns {"mean", "std", "accuracies", "thresholds"}; "std" is the population standard
    deviation (np.std, ddof=0), which is what the LFW evaluation in facenet/insightface reports.
    """
    scores = _scores(scores, "pair")
    same = np.asarray(same, dtype=bool).ravel()
    folds = np.asarray(folds).ravel()
    if not (same.shape == folds.shape == scores.shape):
        raise ValueError("scores, same and folds must have the same length")
    fold_ids = np.unique(folds)
    if fold_ids.size < 2:
        raise ValueError("need at least two folds")
    accuracies: list[float] = []
    thresholds: list[float] = []
    for fold in fold_ids:
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], same[~test])
        predicted = scores[test] >= threshold
        accuracies.append(float((predicted == same[test]).mean()))
        thresholds.append(threshold)
    return {
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "accuracies": accuracies,
        "thresholds": thresholds,
    }


def _own_and_other_best(
    similarity: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe: is it mated, its best own-label score, and the own-label mask over the gallery."""
    sim = np.asarray(similarity, dtype=np.float64)
    probe_labels = np.asarray(probe_labels).ravel()
    gallery_labels = np.asarray(gallery_labels).ravel()
    if sim.ndim != 2 or sim.shape != (probe_labels.size, gallery_labels.size):
        raise ValueError(
            f"similarity must be (n_probe, n_gallery) = ({probe_labels.size}, {gallery_labels.size}), got {sim.shape}"
        )
    _, codes = np.unique(np.concatenate([probe_labels, gallery_labels]), return_inverse=True)
    probe_codes, gallery_codes = codes[: probe_labels.size], codes[probe_labels.size :]
    own = probe_codes[:, None] == gallery_codes[None, :]
    mated = own.any(axis=1)
    best_own = np.where(own, sim, -np.inf).max(axis=1, initial=-np.inf)
    return mated, best_own, own


def cmc(similarity: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, max_rank: int = 20) -> np.ndarray:
    """Closed-set cumulative match characteristic: identification rate at ranks 1..max_rank.

    `similarity` is (n_probe, n_gallery). Several entries per label are allowed; a label scores
    its best entry, and a probe's rank is 1 + the number of other labels whose best entry scores
    strictly higher than its own label's best (ranks are over identities, as a candidate list
    shows them; ties go in the probe's favour). Probes whose label is not in the gallery are left
    out: a closed-set rate is only defined for mated searches (use dir_at_fpir for open-set).
    """
    if max_rank < 1:
        raise ValueError("max_rank must be at least 1")
    sim = np.asarray(similarity, dtype=np.float64)
    mated, best_own, own = _own_and_other_best(sim, probe_labels, gallery_labels)
    if not mated.any():
        raise ValueError("no probe has its label in the gallery")
    labels, inverse = np.unique(np.asarray(gallery_labels).ravel(), return_inverse=True)
    sim_m = sim[mated]
    label_best = np.full((len(sim_m), len(labels)), -np.inf)
    np.maximum.at(label_best, (np.arange(len(sim_m))[:, None], inverse[None, :]), sim_m)
    own_label = np.zeros_like(label_best, dtype=bool)
    np.logical_or.at(own_label, (np.arange(len(sim_m))[:, None], inverse[None, :]), own[mated])
    ranks = 1 + ((label_best > best_own[mated, None]) & ~own_label).sum(axis=1)
    return (ranks[:, None] <= np.arange(1, max_rank + 1)[None, :]).mean(axis=0)


def dir_at_fpir(
    similarity: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray, fpir: float
) -> tuple[float, float]:
    """Open-set detection-and-identification rate at a false-positive identification rate.

    NIST FRVT / IJB-C definition. Non-mated probes (label not in the gallery) give one score
    each, their top gallery score; the threshold t is `empirical_threshold` of those at `fpir`
    (at most floor(fpir * n_nonmated) of them reach t). DIR is the fraction of mated probes
    whose top-1 gallery entry has their label (ties with another label count as correct, as in
    `cmc` rank 1) and whose top score is >= t. Returns (dir, t).
    """
    if not 0.0 <= fpir <= 1.0:
        raise ValueError(f"fpir must be in [0, 1], got {fpir}")
    sim = np.asarray(similarity, dtype=np.float64)
    mated, best_own, own = _own_and_other_best(sim, probe_labels, gallery_labels)
    if mated.all():
        raise ValueError("no non-mated probes: every probe label is in the gallery")
    if not mated.any():
        raise ValueError("no mated probes: no probe label is in the gallery")
    threshold = empirical_threshold(sim[~mated].max(axis=1), fpir)
    best_other = np.where(own[mated], -np.inf, sim[mated]).max(axis=1, initial=-np.inf)
    hit = (best_own[mated] >= best_other) & (best_own[mated] >= threshold)
    return float(hit.mean()), threshold


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DET points as (far, fnmr) with fnmr = 1 - tar, the same points (and order) as `roc`."""
    far, tar, _ = roc(genuine, impostor)
    return far, 1.0 - tar


# -- clustering ------------------------------------------------------------------------------------------
def _contingency(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_ij counts of each (true class, cluster) pair present, class sizes per pair, cluster sizes per pair)."""
    t = np.unique(np.asarray(truth), return_inverse=True)[1]
    p = np.unique(np.asarray(predicted), return_inverse=True)[1]
    pairs, n_ij = np.unique(np.stack([t, p], axis=1), axis=0, return_counts=True)
    b = np.bincount(t)[pairs[:, 0]]
    a = np.bincount(p)[pairs[:, 1]]
    return n_ij.astype(np.float64), b.astype(np.float64), a.astype(np.float64)


def _singletons(predicted: np.ndarray) -> np.ndarray:
    """Unassigned faces (label -1) count as clusters of their own: they were not grouped with anyone."""
    p = np.asarray(predicted).astype(np.int64).copy()
    lone = p < 0
    p[lone] = p.max(initial=0) + 1 + np.arange(lone.sum())
    return p


def clustering_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Pairwise precision/recall/F, BCubed precision/recall/F and NMI (arithmetic normalisation, as
    scikit-learn's default) of a clustering against true identities; label -1 = unassigned (singleton)."""
    truth = np.asarray(truth)
    pred = _singletons(predicted)
    n = len(truth)
    if n == 0:
        raise ValueError("no faces to score")
    n_ij, b, a = _contingency(truth, pred)
    tp = float((n_ij * (n_ij - 1) / 2).sum())
    _, t_counts = np.unique(truth, return_counts=True)
    _, p_counts = np.unique(pred, return_counts=True)
    true_pairs = float((t_counts * (t_counts - 1) / 2).sum())
    pred_pairs = float((p_counts * (p_counts - 1) / 2).sum())
    pp = tp / pred_pairs if pred_pairs else 1.0
    pr = tp / true_pairs if true_pairs else 1.0
    bp = float((n_ij**2 / a).sum() / n)
    br = float((n_ij**2 / b).sum() / n)

    def entropy(counts: np.ndarray) -> float:
        q = counts / n
        return float(-(q * np.log(q)).sum())

    mi = float((n_ij / n * np.log(n * n_ij / (a * b))).sum())
    h = (entropy(t_counts) + entropy(p_counts)) / 2
    nmi = mi / h if h > 0 else 1.0
    f = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0  # noqa: E731
    return {"pairwise_precision": pp, "pairwise_recall": pr, "pairwise_f": f(pp, pr),
            "bcubed_precision": bp, "bcubed_recall": br, "bcubed_f": f(bp, br), "nmi": max(0.0, min(1.0, nmi))}
