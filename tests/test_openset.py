"""Open-set identification by FPIR (issue 13): strangers named at about the target rate whatever the
gallery's size, measured on people_celeba (in-the-wild photos, often with bystanders) and the fixtures."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from facelens.evaluate.cache import EmbeddingCache
from facelens.evaluate.protocols import Embedder, embed_by_person, open_set_rates
from facelens.gallery import Gallery
from facelens.gallery.openset import DEFAULT_FPIR, fpir_threshold, per_comparison_fmr
from facelens.pipeline import FaceAnalyzer

from .conftest import data_root

OBAMA = "identities/facerecognition-obama"


def test_per_comparison_rate_arithmetic():
    assert per_comparison_fmr(0.01, 1) == pytest.approx(0.01)
    assert per_comparison_fmr(0.01, 1000) == pytest.approx(0.01 / 1000, rel=0.01)
    # back again: N comparisons at that rate name FPIR of strangers
    for n in (10, 1_000, 1_000_000):
        fmr = per_comparison_fmr(0.05, n)
        assert 1 - (1 - fmr) ** n == pytest.approx(0.05, rel=1e-6)
    # a larger gallery needs a higher threshold for the same FPIR
    thresholds = [fpir_threshold("arcface-mbf", 0.01, n, n).threshold for n in (1, 10, 1_000, 1_000_000)]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1]


@pytest.fixture(scope="module")
def celeba() -> dict[str, list[np.ndarray]]:
    """Embeddings of people_celeba (one face per photo, the pipeline's own choice), by identity."""
    shared = data_root().parent
    with open(shared / "people_celeba.csv", newline="") as fh:
        items = [(shared / r["path"], r["identity"]) for r in csv.DictReader(fh)]
    people = embed_by_person(items, Embedder(FaceAnalyzer(threads=2), EmbeddingCache()))
    assert len(people) == 144 and sum(map(len, people.values())) > 2700
    return people


def _open_set(people: dict[str, list[np.ndarray]], enrolled: list[str], strangers: list[str],
              faces_each: int, fpir: float) -> tuple[float, float, int]:
    """(strangers named, enrolled found, gallery faces) at the FPIR threshold for this gallery."""
    faces = sum(min(faces_each, len(people[p])) for p in enrolled)
    threshold = fpir_threshold("arcface-mbf", fpir, faces, len(enrolled)).threshold
    return open_set_rates(people, enrolled, strangers, faces_each, threshold)


def test_strangers_are_named_at_about_the_target_rate_at_every_gallery_size(celeba):
    ids = sorted(celeba)
    rng = np.random.default_rng(0)
    results = {}
    for n_people, faces_each in ((10, 1), (100, 1), (50, 20)):
        # averaged over random splits: ~1,500 stranger photos give only a handful of named ones per split
        runs = []
        for _ in range(8):
            order = list(rng.permutation(ids))
            enrolled = [p for p in order if len(celeba[p]) > faces_each][:n_people]
            strangers = [p for p in order if p not in enrolled]
            runs.append(_open_set(celeba, enrolled, strangers, faces_each, DEFAULT_FPIR))
        named, found, faces = (float(np.mean([r[0] for r in runs])), float(np.mean([r[1] for r in runs])),
                               runs[0][2])
        results[faces] = (named, found)
    print("gallery faces -> (strangers named, enrolled found):", results)
    for faces, (named, found) in results.items():
        assert 0.3 * DEFAULT_FPIR <= named <= 3 * DEFAULT_FPIR, (faces, named)
        assert found >= 0.80, (faces, found)  # measured floor: see README (in-the-wild photos, one face each)


def test_a_fixed_far_names_more_strangers_as_the_gallery_grows_and_fpir_does_not(celeba):
    ids = sorted(celeba)
    enrolled, strangers = ids[:72], ids[72:]
    named_fpir, _, faces = _open_set(celeba, enrolled, strangers, 10, DEFAULT_FPIR)
    from facelens.models.registry import threshold_at_fmr

    fixed = threshold_at_fmr("arcface-mbf", 1e-3)["threshold"]
    named_far = open_set_rates(celeba, enrolled, strangers, 10, fixed)[0]
    assert named_far > 5 * max(named_fpir, 1e-3), (named_far, named_fpir, faces)


def test_identify_answers_say_where_their_threshold_came_from(data, tmp_path, analyzer):
    obama = sorted((data / OBAMA).glob("*.jpg"))
    g = Gallery(tmp_path / "g", analyzer)
    g.enroll("obama", [str(obama[2]), str(obama[3])])
    found = g.identify(str(obama[4]))[0]
    assert found.identity == "obama"
    decision = found.to_dict()["decision"]
    assert decision["fpir"] == DEFAULT_FPIR and decision["gallery_faces"] == 2 and decision["gallery_people"] == 1
    assert math.isclose(decision["threshold"], found.threshold, abs_tol=1e-5)
    stricter = g.identify(str(obama[4]), fpir=1e-4)[0]
    assert stricter.threshold > found.threshold
    g.close()


def test_identify_cli_takes_fpir(data, tmp_path):
    from .test_cli import run

    obama = sorted((data / OBAMA).glob("*.jpg"))
    assert run("gallery", "enroll", "obama", obama[2], "--gallery", tmp_path / "g").returncode == 0
    proc = run("identify", obama[4], "--gallery", tmp_path / "g", "--fpir", "0.001", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    face = json.loads(proc.stdout)["faces"][0]
    assert face["identity"] == "obama" and face["decision"]["fpir"] == 0.001
    bad = run("identify", obama[4], "--gallery", tmp_path / "g", "--fpir", "2")
    assert bad.returncode == 2 and "fpir must be" in bad.stderr
    assert Path(tmp_path / "g").is_dir()
