"""Issue 14: crop input, FER-2013 framing, expression and age/gender evaluation, facelens's expression model.

Accuracy floors use a seeded sample of FER-2013 PublicTest (../shared/fer2013; the validation split, never
used in training). The floors sit a few points under what was measured on the same sample (see each test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.align import FER_SIZE, FER_TEMPLATE, template_crop
from facelens.analysis.age_gender import age_gender_value
from facelens.analysis.expression import EXPRESSIONS
from facelens.detect.crop import face_of_crop
from facelens.errors import ConfigError
from facelens.evaluate.attributes import (
    evaluate_age_gender,
    evaluate_expression,
    expression_items,
    face_in_photo,
    read_age_gender_labels,
)
from facelens.io import load_image
from facelens.pipeline import largest_face

from .test_cli import run

PER_CLASS = 40  # PublicTest images per class in the sample (disgust has 56 in all)
# measured on this sample with the shipped model: direct 72.5 % (macro recall the same: balanced), photo path
# 64.3 % (faces not found in their photo count as wrong: FER-2013 holds blank and extreme close-up crops)
DIRECT_FLOOR, PHOTO_FLOOR = 0.69, 0.61


@pytest.fixture(scope="module")
def fer_root(data) -> Path:
    root = data.parent / "fer2013" / "PublicTest"
    if not root.is_dir():
        raise RuntimeError(f"FER-2013 PublicTest not found at {root} (see ../shared/DATA.md)")
    return root


@pytest.fixture(scope="module")
def fer_sample(fer_root, tmp_path_factory) -> Path:
    """A seeded sample of PublicTest, PER_CLASS per class (symlinks, folder per class)."""
    out = tmp_path_factory.mktemp("fer-sample")
    rng = np.random.default_rng(0)
    for name in EXPRESSIONS:
        files = sorted((fer_root / name).iterdir())
        (out / name).mkdir()
        for f in rng.permutation(files)[:PER_CLASS]:
            (out / name / f.name).symlink_to(f)
    return out


@pytest.fixture(scope="module")
def photo_sample(data, fer_sample, tmp_path_factory) -> Path:
    """The same faces pasted, enlarged, into 640x480 cuts of the fixtures' non-face images."""
    out = tmp_path_factory.mktemp("fer-photos")
    backgrounds = [load_image(p) for p in sorted((data / "nonface").iterdir()) if p.suffix.lower() in
                   {".jpg", ".jpeg", ".png"}]
    rng = np.random.default_rng(0)
    items, _ = expression_items(fer_sample)
    for path, label in items:
        photo = face_in_photo(load_image(path), backgrounds[int(rng.integers(len(backgrounds)))], rng)
        (out / label).mkdir(exist_ok=True)
        cv2.imwrite(str(out / label / (path.stem + ".jpg")), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return out


# -- crop input ----------------------------------------------------------------------------------------
def test_crops_never_answer_no_face_on_48px_crops(fer_root, tmp_path):
    """Every 48x48 crop gets exactly one face (the whole image), even a blank one the detector cannot use."""
    files = [sorted((fer_root / name).iterdir())[0] for name in EXPRESSIONS]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((48, 48), 128, np.uint8))
    result = run("analyze", "--crops", "--json", "--attributes", "expression,age-gender", *map(str, files),
                 str(blank))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(files) + 1
    for line in lines:
        assert len(line["faces"]) == 1, line["source"]
        face = line["faces"][0]
        assert face["bbox"] == [0, 0, 48, 48]
        assert face["attributes"]["expression"]["label"] in EXPRESSIONS
        assert face["attributes"]["crop"]["landmarks"] in {"detected", "template"}
    assert lines[-1]["faces"][0]["attributes"]["crop"]["landmarks"] == "template"  # nothing to detect on grey
    # most real crops have their points detected (enlarged in a replicated border)
    assert sum(line["faces"][0]["attributes"]["crop"]["landmarks"] == "detected" for line in lines[:-1]) >= 5
    # the same crops without --crops: the detector alone misses some 48 px faces (the reason for the flag)
    plain = run("analyze", "--json", "--attributes", "expression", *map(str, files))
    found = [len(json.loads(line)["faces"]) for line in plain.stdout.splitlines() if line.startswith("{")]
    assert len(found) == len(files)


def test_face_of_crop_finds_the_points_of_a_face_crop(data, analyzer):
    """A crop cut around a detected face: the points found on the crop are the photo's points, moved."""
    image = load_image(str(data / "identities/facerecognition-obama/01.jpg"))
    face = largest_face(analyzer.detect(image))
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    crop = np.ascontiguousarray(image[y1:y2, x1:x2])
    found = face_of_crop(crop, analyzer.detector_model)
    assert found.attributes["crop"]["landmarks"] == "detected"
    assert np.allclose(found.bbox, [0, 0, x2 - x1, y2 - y1])
    error = np.abs(found.landmarks - (face.landmarks - [x1, y1])).max()
    assert error < 0.06 * (x2 - x1), error


def test_embed_crops_writes_one_vector_per_crop(fer_root, tmp_path):
    files = [str(sorted((fer_root / name).iterdir())[1]) for name in EXPRESSIONS]
    out = tmp_path / "e.npy"
    result = run("embed", "--crops", *files, "--out", str(out))
    assert result.returncode == 0, result.stderr
    matrix = np.load(out)
    assert matrix.shape == (len(files), 512)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)


def test_photo_crop_lands_the_face_on_the_fer_framing(data, analyzer):
    """The photo path's crop puts the five points where FER-2013's crops have them: re-detected on the
    (enlarged) crop, they sit within 2 px (of 48) of the template."""
    image = load_image(str(data / "identities/facerecognition-obama/01.jpg"))
    face = largest_face(analyzer.detect(image))
    crop = template_crop(image, face.landmarks, FER_TEMPLATE, FER_SIZE, 192)  # 4x the 48 px framing
    again = face_of_crop(crop, analyzer.detector_model)
    assert again.attributes["crop"]["landmarks"] == "detected"
    assert np.abs(again.landmarks / 4 - FER_TEMPLATE).max() < 2.0


# -- evaluate expression --------------------------------------------------------------------------------
def test_evaluate_expression_agrees_with_analyze(fer_root, tmp_path):
    """A small labelled folder: the command's accuracy and confusion are what analyze's own answers give,
    the matrix sums to the number of images, and an unknown class folder is reported, not scored."""
    root = tmp_path / "set"
    truth = {}
    for name in ("happy", "surprise", "sad"):
        (root / name).mkdir(parents=True)
        for f in sorted((fer_root / name).iterdir())[:4]:
            shutil.copy(f, root / name / f.name)
            truth[f.name] = name
    (root / "contempt").mkdir()
    shutil.copy(sorted((fer_root / "angry").iterdir())[0], root / "contempt" / "x.jpg")
    (root / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out"
    result = run("evaluate", "expression", "--root", str(root), "--input", "crops", "--out", str(out), "--json")
    assert result.returncode == 2  # EXIT_ERROR: the broken file is reported, the rest scored
    summary = json.loads(result.stdout)["results"][0]
    assert "contempt" in result.stderr and "broken.jpg" in result.stderr
    assert summary["unknown_classes"] == {"contempt": 1}
    counts = np.array(summary["confusion"]["counts"])
    assert counts.sum() == summary["images"] == 13
    assert (out / "confusion.png").stat().st_size > 5000 and (out / "report.md").is_file()
    analyzed = run("analyze", "--crops", "--json", "--attributes", "expression",
                   *[str(p) for p in sorted(root.glob("*/*.jpg")) if p.name in truth])
    predicted = {Path(json.loads(line)["source"]).name: json.loads(line)["faces"][0]["attributes"]["expression"]
                 ["label"] for line in analyzed.stdout.splitlines() if line.startswith("{")}
    hits = sum(predicted[name] == label for name, label in truth.items())
    assert summary["accuracy"] == pytest.approx(hits / 13)
    assert summary["no_face"] == 1  # the broken file: a row of the matrix's "no face" column


def test_evaluate_expression_bad_root(tmp_path):
    (tmp_path / "cats").mkdir()
    cv2.imwrite(str(tmp_path / "cats" / "a.png"), np.zeros((8, 8), np.uint8))
    result = run("evaluate", "expression", "--root", str(tmp_path))
    assert result.returncode != 0 and "no images in class folders" in result.stderr
    result = run("evaluate", "expression", "--root", str(tmp_path / "nope"))
    assert result.returncode != 0 and "not a folder" in result.stderr
    with pytest.raises(ConfigError, match="--input"):
        evaluate_expression(tmp_path, FaceAnalyzer(attributes=["expression"]), "sideways")


# -- evaluate age-gender ---------------------------------------------------------------------------------
def _labels(path: Path, rows: list[str], header: str = "path,age,gender,group") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_evaluate_age_gender_scores_known_answers(data, tmp_path):
    """Labels set to the model's own answers shifted by +4 years and with genders swapped: MAE 4, bias -4,
    gender accuracy 0 (on the faces whose gender is decided)."""
    photos = [data / "identities/facerecognition-obama/01.jpg", data / "identities/facerecognition-biden/01.jpg"]
    photos += sorted((data / "identities").glob("*/01.*"))[:4]
    analyzed = run("analyze", "--json", "--attributes", "age-gender", *map(str, photos))
    rows = []
    for line in analyzed.stdout.splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        face = max(r["faces"], key=lambda f: (f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]))
        a = face["attributes"]["age_gender"]
        swapped = {"male": "f", "female": "m"}.get(a["gender"], "")
        rows.append(f"{r['source']},{a['age'] + 4},{swapped},{'A' if len(rows) % 2 else 'B'}")
    labels = _labels(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    result = run("evaluate", "age-gender", "--labels", str(labels), "--input", "photos", "--out", str(out),
                 "--json")
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)["results"][0]
    assert r["overall"]["age_mae"] == pytest.approx(4, abs=0.06)
    assert r["overall"]["age_bias"] == pytest.approx(-4, abs=0.06)
    assert r["overall"]["gender_accuracy"] == 0
    assert set(r["by_group"]) == {"A", "B"} and sum(g["faces"] for g in r["by_group"].values()) == len(rows)
    assert (out / "age_bands.png").stat().st_size > 5000 and "By true age band" in (out / "report.md").read_text()


@pytest.mark.parametrize(("header", "row", "message"), [
    ("path,age", "x.jpg,30", "line 1: the header must name path, age, gender"),
    ("path,age,gender", "x.jpg,thirty,m", "line 2: age 'thirty' is not a number"),
    ("path,age,gender", "x.jpg,30,robot", "line 2: gender 'robot' is not male/female"),
    ("path,age,gender", "missing.jpg,30,m", "line 2: image"),
    ("path,age,gender", "x.jpg,300,m", "line 2: age 300 is outside 0-130"),
])
def test_bad_labels_files_name_the_line(tmp_path, header, row, message):
    cv2.imwrite(str(tmp_path / "x.jpg"), np.zeros((64, 64, 3), np.uint8))
    labels = _labels(tmp_path / "labels.csv", [row], header)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        read_age_gender_labels(labels)
    result = run("evaluate", "age-gender", "--labels", str(labels))
    assert result.returncode != 0 and message.split(":")[0] in result.stderr


def test_unreadable_image_in_labels_is_reported_with_its_line(data, tmp_path):
    shutil.copy(data / "identities/facerecognition-obama/01.jpg", tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    labels = _labels(tmp_path / "labels.csv", ["ok.jpg,60,m,", "bad.jpg,30,f,"])
    result = evaluate_age_gender(labels, FaceAnalyzer(threads=1, attributes=["age-gender"]), "photos")
    assert set(result["errors"]) == {"line 3"} and result["overall"]["faces"] == 1
    cli = run("evaluate", "age-gender", "--labels", str(labels))
    assert cli.returncode == 2 and "line 3" in cli.stderr


def test_age_is_the_expectation_over_bins_from_one_and_children_get_no_confident_gender():
    probs = np.zeros(100)
    probs[29] = 1.0  # bin 29 is age 30 (the author's min_age = 1)
    v = age_gender_value(0.97, probs)
    assert v["age"] == 30 and v["age_sd"] == 0 and v["gender"] == "male"
    probs = np.zeros(100)
    probs[[5, 7]] = 0.5  # ages 6 and 8: a child
    v = age_gender_value(0.7, probs)
    assert v["age"] == 7 and v["age_sd"] == 1 and v["gender"] == "unknown" and "child" in v["gender_note"]
    assert age_gender_value(0.95, probs)["gender"] == "male"  # sure enough: kept
    assert age_gender_value(0.7, np.roll(probs, 30))["gender"] == "male"  # an adult: kept


# -- facelens's expression model on FER-2013 PublicTest ---------------------------------------------------
def test_expression_accuracy_direct_and_photo_paths(fer_sample, photo_sample):
    """The default expression model on a seeded PublicTest sample (40 per class): the crops given whole, and
    the same faces pasted into larger photos and found by the detector (a face not found counts as wrong)."""
    analyzer = FaceAnalyzer(threads=2, attributes=["expression"])
    direct = evaluate_expression(fer_sample, analyzer, "crops").summary
    photo = evaluate_expression(photo_sample, FaceAnalyzer(threads=2, attributes=["expression"]), "photos").summary
    assert direct["model"] == "expression-facelens"
    assert np.array(direct["confusion"]["counts"]).sum() == direct["images"] == 7 * PER_CLASS
    assert direct["accuracy"] >= DIRECT_FLOOR and direct["macro_recall"] >= DIRECT_FLOOR
    assert direct["per_class"]["disgust"]["recall"] >= 0.3 and direct["per_class"]["fear"]["recall"] >= 0.3
    assert photo["accuracy"] >= PHOTO_FLOOR


def test_ten_crop_views_are_the_standard_ten_and_agree_with_flip(fer_sample):
    from facelens.analysis.expression import FacelensExpression

    crops = np.stack([np.asarray(load_image(p))[..., 0] for p in sorted(fer_sample.rglob("*.*"))[:8]])
    ten = FacelensExpression(ten_crop=True)
    views = ten.views(crops)
    assert len(views) == 10 and all(v.shape == crops.shape for v in views)
    assert np.array_equal(views[1], views[0][:, :, ::-1])  # each crop is followed by its mirror image
    p_ten, p_flip = ten.probabilities(crops), FacelensExpression().probabilities(crops)
    assert np.allclose(p_ten.sum(1), 1) and (p_ten.argmax(1) == p_flip.argmax(1)).mean() >= 0.75
