"""The whole pipeline on real photos with the real models."""

import json

import numpy as np
import pytest
from PIL import Image

from facelens import Face, FaceAnalyzer, ImageResult, verify
from facelens.errors import ConfigError, NoFaceError
from facelens.evaluate.metrics import all_pair_scores, rates_at
from facelens.models.registry import calibration, threshold_for
from facelens.pipeline import largest_face

from .conftest import read_csv


def test_group_photo_face_counts(data, analyzer):
    rows = [r for r in read_csv("groups.csv") if r["faces"]]
    results = analyzer.analyze_batch([data / r["path"] for r in rows], embed=False)
    counts = [(r["path"], int(r["faces"]), len(res.faces)) for r, res in zip(rows, results, strict=True)]
    print("\n".join(f"{p}: expected {e}, found {f}" for p, e, f in counts))
    assert all(abs(found - expected) <= 1 for _, expected, found in counts)
    exact = sum(found == expected for _, expected, found in counts)
    assert exact >= 0.8 * len(counts)


def test_nonface_images(data, analyzer):
    paths = sorted((data / "nonface").iterdir())
    results = analyzer.analyze_batch(paths, embed=False)
    false_faces = {r.source: [round(f.det_score, 3) for f in r.faces] for r in results if r.faces}
    print(f"false detections on {len(paths)} non-face images: {false_faces}")
    assert all(r.ok for r in results)
    # Measured: one dog's face (dlib__dogs.jpg) scores 0.63 with SCRFD-500M at the authors' 0.5
    # threshold; every other non-face image gives nothing. Allow that one, not more.
    assert sum(len(v) for v in false_faces.values()) <= 1


def test_every_identity_photo_has_a_face(data, analyzer):
    rows = read_csv("identities.csv")
    results = analyzer.analyze_batch([data / r["path"] for r in rows], embed=False)
    missing = [r.source for r in results if not r.faces]
    assert not missing


@pytest.fixture(scope="module")
def identity_embeddings(data, analyzer):
    rows = read_csv("identities.csv")
    results = analyzer.analyze_batch([data / r["path"] for r in rows])
    embs, labels = [], []
    for row, res in zip(rows, results, strict=True):
        face = largest_face(res.faces)
        assert face is not None, res.source
        embs.append(face.embedding)
        labels.append(row["identity"])
    return np.stack(embs), np.array(labels)


def test_verification_all_pairs(identity_embeddings):
    embs, labels = identity_embeddings
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-4)
    genuine, impostor = all_pair_scores(embs, labels)
    threshold = threshold_for("arcface-mbf", 1e-3)
    rates = rates_at(genuine, impostor, threshold)
    print(f"\n{len(genuine)} genuine / {len(impostor)} impostor pairs at threshold {threshold:.4f} (FAR 1e-3): "
          f"accuracy {rates['accuracy']:.4%}, FMR {rates['fmr']:.4%}, FNMR {rates['fnmr']:.4%}")
    # Measured 99.94% / FMR 0.065% / FNMR 0.0% (threshold 0.2456, calibrated on these photos together
    # with people_celeba's 2,908), so the floors leave room rather than echo the figures.
    assert rates["accuracy"] >= 0.99
    assert rates["fmr"] <= 2e-3
    assert rates["fnmr"] <= 0.02
    assert genuine.mean() - impostor.mean() > 0.5


def test_thresholds_are_calibrated_records():
    record = calibration("arcface-mbf")
    assert record is not None and record["data"]["images"] > 100
    values = [record["thresholds"][k]["threshold"] for k in ("0.01", "0.001", "0.0001")]
    assert values == sorted(values)  # stricter FAR, higher threshold
    # any rate in (0, 1) is answered now (measured curve, fitted tail below it), in order
    assert threshold_for("arcface-mbf", 0.05) < values[0]
    with pytest.raises(ConfigError, match="far must be"):
        threshold_for("arcface-mbf", 1.5)


def test_verify_api(data, analyzer):
    a = data / "identities/facerecognition-obama/01.jpg"
    b = data / "identities/facerecognition-obama/02.jpg"
    c = data / "identities/facerecognition-biden/01.jpg"
    same = verify(a, b, analyzer=analyzer)
    diff = verify(a, c, analyzer=analyzer)
    assert same.same and not diff.same
    assert same.similarity > same.threshold > diff.similarity
    with pytest.raises(NoFaceError):
        verify(a, data / "nonface/skimage__brick.png", analyzer=analyzer)


def test_batch_goes_on_after_bad_files(data, analyzer):
    good = data / "groups/insightface__t1.jpg"
    sources = [data / "corrupt/truncated.jpg", good, data / "missing.jpg", *sorted((data / "corrupt").iterdir())]
    results = analyzer.analyze_batch(sources)
    assert [r.ok for r in results] == [False, True, False, False, False, False]
    assert len(results[1].faces) == 6 and all(f.embedding is not None for f in results[1].faces)
    assert all(r.error and "\n" not in r.error for r in results if not r.ok)


def test_exif_rotated_photo_matches_upright(data, analyzer, tmp_path):
    src = data / "identities/facerecognition-obama/01.jpg"
    upright = largest_face(analyzer.analyze(src))
    img = Image.open(src).convert("RGB").rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag that says "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    img.save(path, exif=exif, quality=95)
    rotated = largest_face(analyzer.analyze(path))
    assert float(upright.embedding @ rotated.embedding) > 0.9
    np.testing.assert_allclose(rotated.bbox, upright.bbox, atol=6)


def test_grayscale_and_small_copies_still_match(data, analyzer, tmp_path):
    src = data / "identities/facerecognition-obama/02.jpg"
    reference = largest_face(analyzer.analyze(src))
    gray = tmp_path / "gray.png"
    Image.open(src).convert("L").save(gray)
    small = tmp_path / "small.jpg"
    img = Image.open(src)
    img.resize((img.width // 4, img.height // 4)).save(small)
    for path in (gray, small):
        face = largest_face(analyzer.analyze(path))
        assert float(reference.embedding @ face.embedding) > 0.6, path.name


def test_flip_augmentation_changes_and_keeps_identity(data):
    src = data / "identities/facerecognition-obama/03.jpg"
    plain = largest_face(FaceAnalyzer(threads=1).analyze(src))
    flipped = largest_face(FaceAnalyzer(threads=1, flip=True).analyze(src))
    similarity = float(plain.embedding @ flipped.embedding)
    assert 0.8 < similarity < 0.99999


def test_face_json_round_trip(data, analyzer):
    result = analyzer.analyze_batch([data / "groups/CompreFace__010_2.jpg"])[0]
    text = json.dumps(result.to_dict())
    back = ImageResult.from_dict(json.loads(text))
    assert len(back.faces) == 2
    for a, b in zip(result.faces, back.faces, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
        np.testing.assert_allclose(a.bbox, b.bbox, atol=0.01)
    face = Face.from_json(result.faces[0].to_json())
    assert face.recognizer == "arcface-mbf"


def test_batched_detection_equals_single(data, analyzer):
    paths = [data / "groups/CompreFace__010_2.jpg", data / "groups/CompreFace__013_4.jpg"]
    from facelens.io import load_image

    images = [load_image(p) for p in paths]
    det = analyzer.detector_model
    batched = det.detect_batch(images)
    for image, faces in zip(images, batched, strict=True):
        single = det.detect(image)
        assert len(single) == len(faces)
        for a, b in zip(single, faces, strict=True):
            np.testing.assert_allclose(a.bbox, b.bbox, atol=1e-3)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="multiple of 32"):
        FaceAnalyzer(det_size=100).detect(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="unknown detector"):
        FaceAnalyzer(detector="nope").detect(np.zeros((64, 64, 3), np.uint8))


def test_reduced_decode_keeps_file_coordinates(data):
    path = data / "identities/compreface-compreface_person_a/01.jpg"  # 4912x7360 JPEG
    full = FaceAnalyzer(threads=1, decode_size=0).analyze_batch([path])[0]
    fast = FaceAnalyzer(threads=1, decode_size=2048).analyze_batch([path])[0]
    assert (fast.width, fast.height) == (full.width, full.height) == (4912, 7360)
    a, b = largest_face(full.faces), largest_face(fast.faces)
    np.testing.assert_allclose(a.bbox, b.bbox, atol=0.01 * a.width)
    assert float(a.embedding @ b.embedding) > 0.95


def test_rescale_moves_every_point():
    face = Face(bbox=[10, 10, 50, 50], det_score=0.9, landmarks=np.ones((5, 2)),
                attributes={"dlib_shape5": [[1, 2]] * 5, "dlib_margin": 0.3})
    face.rescale(2.0)
    np.testing.assert_allclose(face.bbox, [20, 20, 100, 100])
    np.testing.assert_allclose(face.landmarks, 2 * np.ones((5, 2)))
    assert face.attributes["dlib_shape5"][0] == [2, 4] and face.attributes["dlib_margin"] == 0.3


def test_flip_has_its_own_calibration(data):
    assert calibration("arcface-mbf", flip=True)["flip"] is True
    assert threshold_for("arcface-mbf", 1e-3, flip=True) != threshold_for("arcface-mbf", 1e-3)
    a = data / "identities/facerecognition-obama/01.jpg"
    result = verify(a, data / "identities/facerecognition-obama/04.jpg", analyzer=FaceAnalyzer(threads=1, flip=True))
    assert result.same and result.threshold == threshold_for("arcface-mbf", 1e-3, flip=True)
    with pytest.raises(ConfigError, match="arcface-mbf and sface, not dlib-resnet"):
        FaceAnalyzer(recognizer="dlib-resnet", flip=True).analyze(a)
