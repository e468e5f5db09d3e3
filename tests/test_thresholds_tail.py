"""Thresholds at low false-match rates: the GPD tail fit, its held-out check on real photos, and the
registry's answer for any rate.

Real data: people_celeba (../shared/people_celeba, 2,912 photos of 144 people) and the fixtures'
identities. Every face of every photo is embedded once and kept in $FACELENS_HOME/cache
(calib-*.npz, the same files scripts/calibrate_shipped.py uses), so only the first run pays the
one to two minutes of embedding.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from facelens.calibrate import calibrate, face_table, select_faces
from facelens.errors import ConfigError
from facelens.evaluate.metrics import all_pair_scores, empirical_threshold
from facelens.evaluate.protocols import folder_per_person
from facelens.models.registry import calibration, facelens_home, threshold_at_fmr, threshold_for
from facelens.tail import (
    MIN_EMPIRICAL,
    build_tail_model,
    fit_gpd,
    fit_tail,
    gpd_pwm,
    gpd_threshold,
    identity_bootstrap,
    n_exceedances,
    pair_bootstrap,
)

from .conftest import data_root


def gpd_sample(xi: float, sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draws from a GPD by inverting its distribution function."""
    u = rng.random(n)
    return sigma * -np.log(u) if xi == 0 else sigma / xi * (u ** -xi - 1.0)


@pytest.mark.parametrize("xi", [-0.3, -0.1, 0.0, 0.2])
def test_gpd_fit_recovers_known_parameters(xi):
    rng = np.random.default_rng(7)
    sample = gpd_sample(xi, 0.05, 20_000, rng)
    fitted_xi, fitted_sigma = fit_gpd(sample)
    assert fitted_xi == pytest.approx(xi, abs=0.03)
    assert fitted_sigma == pytest.approx(0.05, rel=0.05)
    pwm_xi, pwm_sigma = gpd_pwm(sample)
    assert pwm_xi == pytest.approx(xi, abs=0.05) and pwm_sigma == pytest.approx(0.05, rel=0.08)


def test_tail_extrapolates_a_known_distribution():
    """Scores = 0.2 + GPD(xi=-0.2, sigma=0.04) above the top 1% of a body: the true threshold at any
    rate below 1% is known, and the fitted one (from the top sqrt(N) scores) must bracket it."""
    rng = np.random.default_rng(3)
    n, p_tail, xi, sigma, u = 400_000, 0.01, -0.2, 0.04, 0.2
    k = int(n * p_tail)
    scores = np.r_[rng.uniform(-0.2, u, n - k), u + gpd_sample(xi, sigma, k, rng)]
    model = build_tail_model(scores, pair_bootstrap(scores, 60, seed=1))
    assert model.tail is not None and model.tail[4] == n_exceedances(n) == math.ceil(math.sqrt(n))
    for fmr in (1e-5, 1e-6, 1e-7, 1e-9):
        answer = model.threshold_at(fmr)
        truth = float(gpd_threshold(u, p_tail, xi, sigma, fmr))
        assert answer["method"] == "tail-fit"
        assert answer["interval"][0] <= truth <= answer["interval"][1], (fmr, answer, truth)
    # measured where at least MIN_EMPIRICAL scores reach the threshold
    assert model.threshold_at(MIN_EMPIRICAL / n * 1.01)["method"] == "empirical"
    assert model.threshold_at(MIN_EMPIRICAL / n * 0.99)["method"] == "tail-fit"


def test_too_few_scores_have_no_tail():
    assert fit_tail(np.linspace(0, 1, 300)) is None  # sqrt(300) < 50 exceedances
    model = build_tail_model(np.linspace(0, 1, 300))
    assert model.threshold_at(0.2)["method"] == "empirical"
    with pytest.raises(ValueError, match="measured only down to"):
        model.threshold_at(1e-4)


# -- real photos ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def celeba(analyzer):
    """(embeddings, labels) of the largest face of every people_celeba photo and fixture identity."""
    shared = data_root().parent
    with open(shared / "people_celeba.csv", newline="") as fh:
        celeb = sorted((shared / row["path"], row["identity"]) for row in csv.DictReader(fh))
    cache = facelens_home() / "cache"
    sets = [
        (folder_per_person(data_root() / "identities"), cache / "calib-identities-arcface-mbf.npz"),
        (celeb, cache / "calib-people_celeba-arcface-mbf.npz"),
    ]
    chosen = [select_faces(face_table(items, analyzer, path)) for items, path in sets]
    return np.concatenate([c.embeddings for c in chosen]), np.concatenate([c.labels for c in chosen]).astype(str)


def test_tail_fit_on_half_the_people_predicts_the_other_half(celeba):
    embeddings, labels = celeba
    ids = np.unique(labels)
    half = set(np.random.default_rng(0).permutation(ids)[: len(ids) // 2].tolist())
    a = np.array([x in half for x in labels])
    _, imp_a = all_pair_scores(embeddings[a], labels[a])
    _, imp_b = all_pair_scores(embeddings[~a], labels[~a])
    assert len(imp_a) > 1_000_000 and len(imp_b) > 1_000_000
    model = build_tail_model(imp_a, identity_bootstrap(embeddings[a], labels[a], 60, seed=0))
    for fmr in (1e-4, 1e-5):
        answer = model.threshold_at(fmr)
        held_out = empirical_threshold(imp_b, fmr)
        fitted = model.fitted_threshold(fmr)  # the GPD alone, even where the data still measure
        low, high = answer["interval"]
        print(f"\nFMR {fmr:g}: fit half {answer['threshold']:.4f} [{low:.4f}, {high:.4f}] ({answer['method']}), "
              f"GPD {fitted:.4f}, measured on the other half {held_out:.4f}")
        assert low <= held_out <= high
        assert low <= fitted <= high
    assert model.threshold_at(1e-5)["method"] == "tail-fit"  # 1.3M pairs measure only down to ~1.6e-5


def test_calibrate_with_an_impostor_only_set(analyzer, data, tmp_path):
    root, extra = tmp_path / "people", tmp_path / "strangers"
    for base, people in ((root, ("facerecognition-biden", "openface-eric_clapton")),
                         (extra, ("openface-john_lennon", "dlib-john_simm", "facerecognition-biden"))):
        for person in people:
            (base / person).mkdir(parents=True)
            for img in sorted((data / "identities" / person).iterdir())[:3]:
                (base / person / img.name).symlink_to(img)
    record = calibrate(root, analyzer, impostors=extra)
    sets = {s["name"]: s for s in record["data"]["sets"]}
    assert sets["strangers"]["use"] == "impostor" and sets["people"]["use"] == "genuine+impostor"
    # genuine pairs only inside --root (2 people x 3 photos); the same name in both sets is one person,
    # so biden-vs-biden pairs are neither genuine nor impostor
    assert record["pairs"]["genuine"] == 2 * 3
    by_label = {"biden": 6, "clapton": 3, "lennon": 3, "simm": 3}
    n = sum(by_label.values())
    same = sum(c * (c - 1) // 2 for c in by_label.values())
    assert record["data"]["skipped"] == 0
    assert record["pairs"]["impostor"] == n * (n - 1) // 2 - same


# -- the shipped record ---------------------------------------------------------------------------------
def test_shipped_record_names_data_method_and_interval():
    record = calibration("arcface-mbf")
    assert {s["name"] for s in record["data"]["sets"]} == {"identities", "people_celeba"}
    assert record["pairs"]["impostor"] > 4_000_000
    methods = {k: v["method"] for k, v in record["thresholds"].items()}
    assert methods == {"0.01": "empirical", "0.001": "empirical", "0.0001": "empirical", "1e-05": "empirical",
                       "1e-06": "tail-fit", "1e-07": "tail-fit"}
    for entry in record["thresholds"].values():
        low, high = entry["interval"]
        assert low <= entry["threshold"] <= high
        if entry["method"] == "empirical":
            assert entry["impostors_above"] >= MIN_EMPIRICAL


@pytest.mark.parametrize("flip", [False, True])
def test_threshold_at_any_fmr_is_monotone_and_reaches_far_below_the_data(flip):
    rates = np.logspace(-0.5, -10, 60)
    answers = [threshold_at_fmr("arcface-mbf", f, flip) for f in rates]
    thresholds = [a["threshold"] for a in answers]
    assert thresholds == sorted(thresholds)  # stricter rate, higher (or equal) threshold
    deep = threshold_at_fmr("arcface-mbf", 1e-8, flip)
    assert deep["method"] == "tail-fit" and deep["interval"][0] <= deep["threshold"] <= deep["interval"][1]
    assert deep["threshold"] > threshold_at_fmr("arcface-mbf", 1e-6, flip)["threshold"]
    assert "people_celeba" in deep["data"]["root"]
    assert threshold_at_fmr("arcface-mbf", 1e-3, flip)["method"] == "empirical"
    # verify's lookup is the same answer, for listed and unlisted rates alike
    for far in (1e-3, 0.05, 3e-7):
        assert threshold_for("arcface-mbf", far, flip) == threshold_at_fmr("arcface-mbf", far, flip)["threshold"]


@pytest.mark.parametrize("bad", [0, 1, -1e-3, float("nan"), "x"])
def test_threshold_at_fmr_refuses_rates_outside_0_1(bad):
    with pytest.raises(ConfigError, match="far must be"):
        threshold_at_fmr("arcface-mbf", bad)


def test_old_records_answer_only_their_listed_rates(tmp_path, monkeypatch):
    old = {"arcface-mbf": {"recognizer": "arcface-mbf", "flip": False, "data": {"root": "x"},
                           "thresholds": {"0.001": {"threshold": 0.3, "method": "empirical"}}}}
    (tmp_path / "thresholds.json").write_text(json.dumps(old))
    monkeypatch.setenv("FACELENS_HOME", str(tmp_path))
    assert threshold_for("arcface-mbf", 1e-3) == 0.3
    with pytest.raises(ConfigError, match="no threshold calibrated for FAR=1e-05"):
        threshold_for("arcface-mbf", 1e-5)
