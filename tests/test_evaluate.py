"""Evaluation protocols end to end with the real models, on LFW-format files built from the fixtures."""

import json
import random

import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.errors import ConfigError
from facelens.evaluate.cache import EmbeddingCache
from facelens.evaluate.protocols import (
    Embedder,
    evaluate_identification,
    evaluate_pairs,
    fallback_face,
    read_lfw_pairs,
    read_pairs_csv,
)

from .conftest import read_csv
from .test_cli import run


@pytest.fixture(scope="module")
def lfw_layout(tmp_path_factory):
    """identities.csv laid out as LFW does (name/name_0001.jpg, links to the real photos) + pairs.txt."""
    root = tmp_path_factory.mktemp("lfw")
    people: dict[str, list[str]] = {}
    from .conftest import data_root

    for row in read_csv("identities.csv"):
        people.setdefault(row["identity"], []).append(row["path"])
    for name, paths in people.items():
        (root / name).mkdir()
        for i, path in enumerate(paths, start=1):
            (root / name / f"{name}_{i:04d}.jpg").symlink_to(data_root() / path)
    rng = random.Random(0)
    multi = sorted(n for n, p in people.items() if len(p) > 1)
    names = sorted(people)
    folds, per = 10, 6
    lines = [f"{folds} {per}"]
    for _ in range(folds):
        for _ in range(per):
            name = rng.choice(multi)
            i, j = rng.sample(range(1, len(people[name]) + 1), 2)
            lines.append(f"{name}\t{i}\t{j}")
        for _ in range(per):
            a, b = rng.sample(names, 2)
            lines.append(f"{a}\t{rng.randint(1, len(people[a]))}\t{b}\t{rng.randint(1, len(people[b]))}")
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs


def test_lfw_pairs_end_to_end(lfw_layout, tmp_path):
    root, pairs_file = lfw_layout
    pairs = read_lfw_pairs(pairs_file, root)
    assert len(pairs) == 120 and sum(p.same for p in pairs) == 60
    assert sorted({p.fold for p in pairs}) == list(range(10))
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    embedder = Embedder(FaceAnalyzer(threads=2), cache)
    result = evaluate_pairs(pairs, embedder, probe_sizes=(16, 112))
    s = result.summary
    print(json.dumps({k: s[k] for k in ("accuracy_mean", "accuracy_std", "auc", "eer", "fallback_images")}))
    # measured: 100.00 +- 0.00 %, AUC 1.0, no fallback (these fixtures are easy; the floor leaves room)
    assert s["accuracy_mean"] >= 0.97 and s["auc"] >= 0.99
    assert len(s["fold_accuracies"]) == 10 and s["fallback_images"] == 0 and s["pairs_skipped"] == 0
    low = s["low_resolution"]
    # a 16-px face must hurt; 112 px is about full resolution for these faces
    assert low["16"]["accuracy_mean"] < low["112"]["accuracy_mean"] or low["16"]["auc"] < low["112"]["auc"]
    # second run: every image comes from the cache, same figures
    again = evaluate_pairs(pairs, embedder).summary
    assert again["cached_images"] == s["images"] and again["accuracy_mean"] == s["accuracy_mean"]


def test_identification_end_to_end(lfw_layout, tmp_path):
    root, _ = lfw_layout
    embedder = Embedder(FaceAnalyzer(threads=2), EmbeddingCache(tmp_path / "c.sqlite"))
    r = evaluate_identification(root, embedder, probe_sizes=(24,))
    print(json.dumps({k: r[k] for k in ("rank1", "rank5", "gallery_images", "mated_probes", "unknown_probes")}))
    assert r["gallery_people"] == r["gallery_images"] == 29 and r["unknown_probes"] == 4
    assert r["rank1"] >= 0.95 and r["rank5"] >= r["rank1"]
    assert 0.0 <= r["dir_at_fpir_0.1"]["dir"] <= r["rank1"]
    assert r["low_resolution"]["24"]["rank1"] <= r["rank1"]


def test_fallback_face_is_centred_template():
    face = fallback_face(250, 250)
    assert face.attributes["fallback"] and face.width == pytest.approx(112.5)
    eyes = face.landmarks[:2].mean(axis=0)
    assert abs(eyes[0] - 125) < 2 and 100 < eyes[1] < 125


def test_bad_pairs_files(lfw_layout, tmp_path):
    root, pairs_file = lfw_layout
    lines = pairs_file.read_text().splitlines()
    missing = tmp_path / "missing.txt"
    name = lines[1].split("\t")[0]
    missing.write_text("\n".join([lines[0], f"{name}\t1\t999", *lines[2:]]) + "\n")
    with pytest.raises(ConfigError, match=r"missing.txt:2: image .*_0999.jpg not found"):
        read_lfw_pairs(missing, root)
    malformed = tmp_path / "malformed.txt"
    malformed.write_text("\n".join([*lines[:5], "just two", *lines[6:]]) + "\n")
    with pytest.raises(ConfigError, match=r"malformed.txt:6: expected a 'name i j' line"):
        read_lfw_pairs(malformed, root)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty file"):
        read_lfw_pairs(empty, root)
    short = tmp_path / "short.txt"
    short.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(ConfigError, match="header promises 120 pairs, the file has 117"):
        read_lfw_pairs(short, root)
    csv_empty = tmp_path / "e.csv"
    csv_empty.write_text("path1,path2,same\n")
    with pytest.raises(ConfigError, match="no pairs"):
        read_pairs_csv(csv_empty)


def test_cli_evaluate_pairs_writes_report(lfw_layout, tmp_path):
    root, pairs_file = lfw_layout
    out = tmp_path / "report"
    groups = tmp_path / "groups.csv"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    groups.write_text("identity,group\n" + "".join(f"{n},{n.split('-')[0]}\n" for n in names))
    proc = run("evaluate", "pairs", "--pairs", pairs_file, "--root", root, "--recognizer", "arcface-mbf,dlib-resnet",
               "--groups", groups, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["recognizer"] for r in results] == ["arcface-mbf", "dlib-resnet"]
    assert all(r["accuracy_mean"] >= 0.9 for r in results)
    assert "groups" in results[0]["bias"]
    for name in ("results.json", "report.md", "roc.png", "det.png"):
        assert (out / name).stat().st_size > 100, name
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "accuracy % (10-fold)" in report and "dlib-resnet" in report


def test_cli_evaluate_bad_input(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("10 300\n")
    proc = run("evaluate", "pairs", "--pairs", bad, "--root", tmp_path)
    assert proc.returncode == 2 and "header promises 6000 pairs" in proc.stderr
    proc = run("evaluate", "pairs", "--pairs", bad)
    assert proc.returncode == 2 and "needs --root" in proc.stderr
    proc = run("evaluate", "identify", "--root", tmp_path)
    assert proc.returncode == 2 and "no images" in proc.stderr



def test_cli_evaluate_identify_writes_cmc(lfw_layout, tmp_path):
    root, _ = lfw_layout
    out = tmp_path / "id"
    proc = run("evaluate", "identify", "--root", root, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["results"][0]
    assert result["rank1"] >= 0.95 and len(result["cmc"]) == 20
    assert (out / "cmc.png").read_bytes()[:4] == b"\x89PNG"
    assert "rank-1 %" in (out / "report.md").read_text()


def test_group_error_rates_at_one_threshold():
    from pathlib import Path

    from facelens.evaluate.protocols import Pair, group_error_rates

    def pair(a, b, same):
        return Pair(Path(a) / "1.jpg", Path(b) / "2.jpg", same, 0)

    pairs = [pair("A1", "A1", True), pair("A2", "A2", True), pair("A1", "A2", False), pair("A2", "A1", False),
             pair("B1", "B1", True), pair("B2", "B2", True), pair("B1", "B2", False), pair("B2", "B1", False),
             pair("A1", "B1", False)]  # a cross-group impostor: counts for the threshold, for no group
    scores = np.array([0.9, 0.9, 0.1, 0.1, 0.3, 0.9, 0.1, 0.6, 0.2])
    groups = {"A1": "A", "A2": "A", "B1": "B", "B2": "B"}
    bias = group_error_rates(pairs, scores, groups, far=0.0)
    # FAR 0 over all impostors: threshold just above the highest impostor score, 0.6
    assert 0.6 < bias["threshold"] < 0.6001
    assert bias["groups"]["A"] == {"genuine_pairs": 2, "impostor_pairs": 2, "fnmr": 0.0, "fmr": 0.0}
    assert bias["groups"]["B"] == {"genuine_pairs": 2, "impostor_pairs": 2, "fnmr": 0.5, "fmr": 0.0}
    assert bias["fnmr_worst_best_ratio"] == float("inf") and bias["fmr_worst_best_ratio"] == 1.0


def test_cli_evaluate_reports_unreadable_images_and_goes_on(data, tmp_path):
    import shutil

    biden = sorted((data / "identities/facerecognition-biden").iterdir())
    lennon = sorted((data / "identities/openface-john_lennon").iterdir())
    for i, src in enumerate([biden[0], biden[1], lennon[0], data / "corrupt/truncated.jpg"]):
        shutil.copy(src, tmp_path / f"{i}.jpg")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("0.jpg,1.jpg,1\n0.jpg,2.jpg,0\n1.jpg,2.jpg,0\n3.jpg,0.jpg,1\n1.jpg,3.jpg,0\n")
    proc = run("evaluate", "pairs", "--pairs", pairs, "--no-cache", "--json")
    assert proc.returncode == 2
    result = json.loads(proc.stdout)["results"][0]
    assert result["pairs_skipped"] == 2 and result["genuine_pairs"] == 1 and result["impostor_pairs"] == 2
    assert "3.jpg: corrupt or truncated" in proc.stderr
