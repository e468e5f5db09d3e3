"""`evaluate identify --distractors`: FPIR and DIR at the decision threshold as the gallery grows, measured
on people_celeba (144 people, 2,912 in-the-wild photos): half the identities (every second, sorted) are the
folder-per-person root, the other half distractors. Everyone there has at least two photos, so --holdout 0.5
keeps half of the root's people out of the gallery as unknown probes (774 photos of 36 people with
--enroll 1). Embeddings come from the default embedding cache when it holds them."""

import csv
import json

import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.errors import ConfigError
from facelens.evaluate.cache import EmbeddingCache
from facelens.evaluate.protocols import (
    Embedder,
    _split_people,
    evaluate_identification,
    folder_per_person,
    gallery_sizes,
)
from facelens.gallery.openset import DEFAULT_FPIR, fpir_threshold

from .conftest import data_root
from .test_cli import run


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """(root, distractors): symlink folders, one per identity, alternating over the sorted identities."""
    shared = data_root().parent
    with open(shared / "people_celeba.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    people: dict[str, list[str]] = {}
    for row in rows:
        people.setdefault(row["identity"], []).append(row["path"])
    base = tmp_path_factory.mktemp("celeba_split")
    root, distractors = base / "root", base / "distractors"
    for i, who in enumerate(sorted(people)):
        folder = (root if i % 2 == 0 else distractors) / who
        folder.mkdir(parents=True)
        for path in people[who]:
            (folder / path.rsplit("/", 1)[-1]).symlink_to(shared / path)
    return root, distractors


@pytest.fixture(scope="module")
def embedder():
    return Embedder(FaceAnalyzer(threads=2), EmbeddingCache())


def test_gallery_sizes():
    assert gallery_sizes(144) == [10, 100, 144]
    assert gallery_sizes(1000) == [10, 100, 1000]
    assert gallery_sizes(5) == [5]


def test_fpir_follows_the_target_as_the_gallery_grows(split, embedder):
    root, distractors = split
    r = evaluate_identification(root, embedder, enroll=1, distractors=distractors, holdout=0.5)
    d = r["distractors"]
    assert d["fpir_target"] == DEFAULT_FPIR and d["people"] == 72
    sizes = d["sizes"]
    total = r["gallery_people"] + d["people"]
    assert [s["gallery_people"] for s in sizes] == gallery_sizes(total) and sizes[-1]["gallery_people"] == total
    for s in sizes:
        # 774 unknown probes: at the target 1% about 8 are named, so 0.3x-3x (2-23 named) is a bound the
        # counts support (measured 8, 8, 7 named at 10, 100, 108 people)
        assert s["unknown_probes"] > 700
        assert 0.3 * DEFAULT_FPIR <= s["fpir"] <= 3 * DEFAULT_FPIR, s
        assert s["threshold"] == fpir_threshold("arcface-mbf", DEFAULT_FPIR, s["gallery_faces"],
                                                s["gallery_people"]).threshold
        assert s["dir"] is not None and 0.8 < s["dir"] <= 1.0  # measured 0.92-0.93
        assert 0 <= s["fpir_per_person_mean"] <= s["unknown_people_named"] <= 1
    # a larger gallery needs a higher threshold; below the enrolled count only those people's probes are mated
    assert [s["threshold"] for s in sizes] == sorted(s["threshold"] for s in sizes)
    assert sizes[0]["mated_probes"] < sizes[-1]["mated_probes"] == r["mated_probes"]


def test_sweep_matches_a_plain_loop(split, embedder):
    """The vectorised sweep (running maxima over new gallery columns) against a direct recomputation at the
    full gallery, with two faces each and FPIR 0.05."""
    root, distractors = split
    r = evaluate_identification(root, embedder, enroll=2, distractors=distractors, holdout=0.5, fpir=0.05)
    people: dict[str, list] = {}
    for path, who in folder_per_person(root) + folder_per_person(distractors):
        people.setdefault(who, []).append(path)
    root_people = {who: people[who] for who in sorted(p.name for p in root.iterdir())}
    enrolled, unknown = _split_people(root_people, 2, 0.5)
    vectors = embedder.embed([p for ps in people.values() for p in ps]).vectors
    gallery_people = enrolled + [p.name for p in distractors.iterdir()]
    g = np.stack([vectors[p] for who in gallery_people for p in people[who][:2] if p in vectors])
    last = r["distractors"]["sizes"][-1]
    assert r["distractors"]["enroll"] == 2 and len(g) == last["gallery_faces"]
    assert last["gallery_people"] == len(gallery_people)
    threshold = fpir_threshold("arcface-mbf", 0.05, len(g), len(gallery_people)).threshold
    strangers = np.stack([vectors[p] for who in unknown for p in people[who] if p in vectors])
    named = int(((strangers @ g.T).max(axis=1) >= threshold).sum())
    assert (named, len(strangers)) == (last["unknown_named"], last["unknown_probes"])
    assert last["fpir"] == pytest.approx(named / len(strangers))


def test_cli_table_plot_and_json(split, tmp_path):
    root, distractors = split
    out = tmp_path / "report"
    proc = run("evaluate", "identify", "--root", root, "--distractors", distractors, "--holdout", "0.5",
               "--enroll", "3", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "FPIR" in proc.stdout and "gallery" in proc.stdout
    assert (out / "gallery_growth.png").stat().st_size > 10_000 and (out / "cmc.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    sizes = saved["results"][0]["distractors"]["sizes"]
    assert saved["distractors"] == str(distractors) and [s["gallery_people"] for s in sizes][:2] == [10, 100]
    # three faces each: per person, the share of strangers with at least one photo named is reported
    assert all(0 <= s["unknown_people_named"] <= 1 and s["unknown_people"] > 30 for s in sizes)
    report = (out / "report.md").read_text()
    assert "Gallery growth" in report and "gallery_growth.png" in report
    proc = run("evaluate", "identify", "--root", root, "--distractors", distractors, "--holdout", "0.5",
               "--fpir", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["results"][0]
    assert result["distractors"]["fpir_target"] == 0.05
    assert all(s["dir"] is not None and s["fpir"] is not None for s in result["distractors"]["sizes"])


def test_bad_distractors_are_one_clear_error(split, tmp_path, embedder):
    root, _ = split
    proc = run("evaluate", "identify", "--root", root, "--distractors", tmp_path / "missing")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--distractors" in proc.stderr and "missing" in proc.stderr
    with pytest.raises(ConfigError, match="also in"):  # the same people cannot be distractors
        evaluate_identification(root, embedder, distractors=root)
