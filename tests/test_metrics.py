"""Verification / identification metrics against scikit-learn and hand-worked cases, and the plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from facelens.evaluate.metrics import (
    best_threshold,
    cmc,
    det_curve,
    dir_at_fpir,
    eer,
    empirical_threshold,
    kfold_accuracy,
    roc,
    roc_auc,
    tar_at_far,
)
from facelens.evaluate.plots import plot_cmc, plot_det, plot_roc, plot_score_histograms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _random_scores(seed: int, n_gen: int, n_imp: int, decimals: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gen = rng.normal(0.6, 0.15, n_gen)
    imp = rng.normal(0.2, 0.15, n_imp)
    if decimals is not None:  # rounding makes many ties, within and across the two classes
        gen, imp = gen.round(decimals), imp.round(decimals)
    return gen, imp


CASES = [
    (seed, n_gen, n_imp, dec) for seed in range(5) for n_gen, n_imp, dec in ((50, 400, 2), (300, 300, 1), (7, 90, None))
]


@pytest.mark.parametrize(("seed", "n_gen", "n_imp", "decimals"), CASES)
def test_roc_matches_sklearn(seed: int, n_gen: int, n_imp: int, decimals: int | None) -> None:
    gen, imp = _random_scores(seed, n_gen, n_imp, decimals)
    labels = np.r_[np.ones(n_gen), np.zeros(n_imp)]
    scores = np.r_[gen, imp]
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    far, tar, thresholds = roc(gen, imp)
    # identical point for point, including sklearn's leading (0, 0) at threshold +inf
    np.testing.assert_allclose(far, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tar, tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thresholds, thr)
    assert (far[0], tar[0], far[-1], tar[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(thresholds) < 0)
    assert roc_auc(gen, imp) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    det_far, fnmr = det_curve(gen, imp)
    np.testing.assert_array_equal(det_far, far)
    np.testing.assert_allclose(fnmr, 1.0 - tar)


def test_roc_auc_counts_ties_half() -> None:
    assert roc_auc([0.5], [0.5]) == 0.5
    assert roc_auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_eer_exact_crossing() -> None:
    # at threshold 0.6: FAR = 1/4 (0.6), FNMR = 1/4 (0.4)
    rate, threshold = eer([0.9, 0.8, 0.7, 0.4], [0.6, 0.5, 0.3, 0.2])
    assert rate == pytest.approx(0.25)
    assert threshold == pytest.approx(0.6)


def test_eer_interpolated() -> None:
    # at 0.8: FAR 0, FNMR 1/3; at 0.6: FAR 1/2, FNMR 1/3. FAR - FNMR goes -1/3 -> 1/6, crossing at 2/3 of the way.
    rate, threshold = eer([0.9, 0.8, 0.4], [0.6, 0.1])
    assert rate == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.8 + (2 / 3) * (0.6 - 0.8))


def test_eer_separable_is_zero() -> None:
    rate, threshold = eer([0.7, 0.9], [0.1, 0.3])
    assert rate == 0.0
    assert 0.3 < threshold <= 0.7


def test_tar_at_far_hand_case() -> None:
    impostor = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    genuine = np.array([0.5, 0.85, 0.95, 0.99])
    tar, threshold = tar_at_far(genuine, impostor, 0.1)  # one impostor (1.0) may pass
    assert threshold == np.nextafter(0.9, np.inf) and tar == 0.5
    tar, threshold = tar_at_far(genuine, impostor, 0.2)
    assert threshold == np.nextafter(0.8, np.inf) and tar == 0.75
    assert threshold == empirical_threshold(impostor, 0.2)
    # far * N < 1: no impostor may pass, threshold just above the highest; still a number
    tar, threshold = tar_at_far(genuine, impostor, 0.05)
    assert threshold == np.nextafter(1.0, np.inf) and tar == 0.0
    assert not math.isnan(tar)
    tar, threshold = tar_at_far(genuine, impostor, 1.0)
    assert threshold == 0.1 and tar == 1.0
    with pytest.raises(ValueError):
        tar_at_far(genuine, impostor, -0.1)
    with pytest.raises(ValueError):
        tar_at_far(genuine, [], 0.1)


def test_best_threshold_tie_goes_to_lowest() -> None:
    # sorted: 0.1 diff, 0.35 same, 0.4 diff, 0.8 same. 0.225 and 0.6 both give 3/4; the lower wins.
    threshold, accuracy = best_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    assert threshold == pytest.approx(0.225)
    assert accuracy == 0.75


def test_best_threshold_separable_midpoint_and_ends() -> None:
    threshold, accuracy = best_threshold([0.1, 0.3, 0.7, 0.9], [False, False, True, True])
    assert (threshold, accuracy) == (pytest.approx(0.5), 1.0)
    # all same: accept everything (lowest score); all different: just above the top score
    assert best_threshold([0.2, 0.4], [True, True]) == (0.2, 1.0)
    assert best_threshold([0.2, 0.4], [False, False]) == (np.nextafter(0.4, np.inf), 1.0)


def test_kfold_perfectly_separable() -> None:
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(10), 60)
    same = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    scores = np.where(same, rng.uniform(0.6, 0.9, same.size), rng.uniform(-0.2, 0.4, same.size))
    result = kfold_accuracy(scores, same, folds)
    assert result["mean"] == 1.0 and result["std"] == 0.0
    assert result["accuracies"] == [1.0] * 10
    assert len(result["thresholds"]) == 10
    assert all(0.4 <= t <= 0.6 for t in result["thresholds"])


def test_kfold_one_fold_differs() -> None:
    # folds 0 and 1 are clean; fold 2 has a high-scoring impostor (0.7).
    scores = np.array([0.8, 0.9, 0.1, 0.2, 0.8, 0.9, 0.1, 0.2, 0.8, 0.9, 0.1, 0.7])
    same = np.array([1, 1, 0, 0] * 3, dtype=bool)
    folds = np.repeat([0, 1, 2], 4)
    result = kfold_accuracy(scores, same, folds)
    # held-out 0 or 1: training sees the 0.7 impostor -> threshold 0.75, perfect on the clean fold.
    # held-out 2: training is clean -> threshold 0.5, which accepts the 0.7 impostor: 3/4.
    assert result["thresholds"] == pytest.approx([0.75, 0.75, 0.5])
    assert result["accuracies"] == pytest.approx([1.0, 1.0, 0.75])
    assert result["mean"] == pytest.approx(2.75 / 3)
    assert result["std"] == pytest.approx(math.sqrt(1 / 72))  # population std; sample std would be sqrt(1/48)


def test_cmc_hand_case() -> None:
    gallery = np.array(["a", "b", "c", "a"])
    probes = np.array(["a", "b", "c", "d"])
    sim = np.array(
        [
            [0.5, 0.9, 0.1, 0.7],  # a: own best 0.7, b's 0.9 above -> rank 2
            [0.2, 0.8, 0.3, 0.1],  # b: rank 1
            [0.6, 0.5, 0.4, 0.45],  # c: own 0.4; labels a (0.6, 0.45) and b above -> rank 3, not 4
            [0.9, 0.9, 0.9, 0.9],  # d: not in gallery, excluded
        ]
    )
    np.testing.assert_allclose(cmc(sim, probes, gallery, max_rank=5), [1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    # a tie with another label counts in the probe's favour
    np.testing.assert_allclose(cmc(np.array([[0.5, 0.5]]), ["a"], ["b", "a"], max_rank=2), [1.0, 1.0])
    with pytest.raises(ValueError):
        cmc(sim, ["x", "y", "z", "w"], gallery)


def test_dir_at_fpir_hand_case() -> None:
    gallery = np.array([1, 2, 3])
    probes = np.array([1, 2, 3, 1, 7, 8, 9, 10])
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # mated, correct, high
            [0.6, 0.55, 0.1],  # mated, top-1 is the wrong label
            [0.1, 0.2, 0.52],  # mated, correct, passes only the looser threshold
            [0.45, 0.1, 0.1],  # mated, correct but low
            [0.3, 0.1, 0.0],  # non-mated: max scores 0.3, 0.5, 0.7, 0.2
            [0.1, 0.5, 0.2],
            [0.7, 0.1, 0.1],
            [0.2, 0.2, 0.1],
        ]
    )
    rate, threshold = dir_at_fpir(sim, probes, gallery, 0.25)  # one of four non-mated may pass
    assert threshold == np.nextafter(0.5, np.inf) and rate == 0.5
    rate, threshold = dir_at_fpir(sim, probes, gallery, 0.0)
    assert threshold == np.nextafter(0.7, np.inf) and rate == 0.25
    rate, threshold = dir_at_fpir(sim, probes, gallery, 1.0)
    assert threshold == 0.2 and rate == 0.75
    with pytest.raises(ValueError, match="non-mated"):
        dir_at_fpir(sim[:4], probes[:4], gallery, 0.1)
    with pytest.raises(ValueError, match="no mated"):
        dir_at_fpir(sim[4:], probes[4:], gallery, 0.1)


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


def test_plots_write_png(tmp_path) -> None:
    gen_a, imp_a = _random_scores(1, 500, 5000, None)
    gen_b, imp_b = _random_scores(2, 500, 5000, 2)
    far_a, tar_a, _ = roc(gen_a, imp_a)
    far_b, tar_b, _ = roc(gen_b, imp_b)
    out = plot_roc({"model-a": (far_a, tar_a), "model-b": (far_b, tar_b)}, tmp_path / "roc.png", title="ROC test")
    assert out == tmp_path / "roc.png"
    _assert_png(out)
    _assert_png(
        plot_det({"model-a": det_curve(gen_a, imp_a), "model-b": det_curve(gen_b, imp_b)}, tmp_path / "det.png")
    )
    threshold, _ = tar_at_far(gen_a, imp_a, 1e-3)
    _assert_png(plot_score_histograms(gen_a, imp_a, tmp_path / "sub" / "hist.png", threshold=threshold, title="h"))
    _assert_png(plot_score_histograms(gen_a, imp_a, tmp_path / "hist_nothr.png"))
    curves = {"model-a": np.linspace(0.8, 1.0, 20), "model-b": np.linspace(0.6, 0.95, 20)}
    _assert_png(plot_cmc(curves, tmp_path / "cmc.png"))


def test_long_curves_are_thinned_for_drawing(tmp_path) -> None:
    from facelens.evaluate.plots import MAX_CURVE_POINTS, _thin

    gen, imp = _random_scores(3, 20_000, 60_000, None)
    far, tar, _ = roc(gen, imp)
    x, y = _thin(far, tar)
    assert far.size > MAX_CURVE_POINTS and x.size < far.size
    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.isin(x, far)) and np.all(np.diff(x) >= 0)
    _assert_png(plot_roc({"big": (far, tar)}, tmp_path / "big_roc.png"))
    _assert_png(plot_det({"big": det_curve(gen, imp)}, tmp_path / "big_det.png"))
