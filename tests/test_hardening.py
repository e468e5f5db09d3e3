"""Regression tests for the failures an adversarial run found (issue 12), with the real models and files.

Each test names the item of the report it guards. Gallery-store items live in test_gallery_hardening.py,
large-photo detection in test_detect_large.py; the service's in test_service_hardening.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.analysis.base import FaceAttribute
from facelens.analysis.pose import MEAN_FACE_MM, camera_matrix, rotation_from_euler, solve_pose
from facelens.errors import ConfigError, QualityError
from facelens.service.jobs import JobRunner
from facelens.types import Face
from facelens.verify import verify

from .test_cli import run

OBAMA = "identities/facerecognition-obama"


@pytest.fixture(scope="module")
def tiled(data, tmp_path_factory) -> Path:
    """The crowd of the report: a group photo tiled 4x4 (3200x2132 px, 128 faces, many of them tiny)."""
    image = cv2.imread(str(data / "groups/CompreFace__016_8.jpg"))
    path = tmp_path_factory.mktemp("tiled") / "tiled.jpg"
    cv2.imwrite(str(path), np.tile(image, (4, 4, 1)))
    return path


@pytest.fixture(scope="module")
def blurred(data, tmp_path_factory) -> Path:
    """A portrait blurred until the face is barely recognisable (quality ~0.1, still detected)."""
    image = cv2.imread(str(data / OBAMA / "01.jpg"))
    path = tmp_path_factory.mktemp("blur") / "blurred.jpg"
    cv2.imwrite(str(path), cv2.GaussianBlur(image, (0, 0), 32))
    return path


# -- 1: one face's attribute failure never loses other faces or images ---------------------------------
def test_pose_of_a_tiny_far_face_is_solved_not_crashed():
    # SQPnP asserts on points this close together in normalised camera coordinates (an 18 px face in a
    # 6000x4000 photo); the fallback must still recover the pose
    model = np.array(list(MEAN_FACE_MM.values()), np.float64)
    for yaw, pitch, roll in [(0, 0, 0), (30, -10, 5), (-40, 15, -10)]:
        rvec, _ = cv2.Rodrigues(rotation_from_euler(yaw, pitch, roll))
        pts, _ = cv2.projectPoints(model, rvec, np.array([300.0, -200.0, 20000.0]), camera_matrix(6000, 4000), None)
        pts = pts.reshape(-1, 2)
        assert np.ptp(pts[:, 0]) < 25
        pose = solve_pose(dict(zip(MEAN_FACE_MM, pts, strict=True)), 6000, 4000)
        assert np.allclose([pose["yaw"], pose["pitch"], pose["roll"]], (yaw, pitch, roll), atol=0.5), pose
    degenerate = solve_pose({name: np.array([5.0, 5.0]) for name in MEAN_FACE_MM}, 6000, 4000)
    assert "unknown" in degenerate


def test_analyze_of_a_tiny_crowd_and_a_portrait_loses_nothing(data, tiled):
    proc = run("analyze", tiled, data / OBAMA / "01.jpg", "--json")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["source"]).name for r in results] == ["tiled.jpg", "01.jpg"]
    assert all("error" not in r for r in results)
    crowd, portrait = results
    assert len(crowd["faces"]) >= 14 and len(portrait["faces"]) == 1
    for face in crowd["faces"] + portrait["faces"]:
        pose = face["attributes"]["pose"]
        assert "yaw" in pose or "unknown" in pose
    assert "yaw" in portrait["faces"][0]["attributes"]["pose"]


class _FailsOnSmallFaces(FaceAttribute):
    """A real attribute (box width) that raises the way a model does on a face it cannot handle."""

    name = "width_check"

    def measure(self, image: np.ndarray, faces: list[Face]) -> list[Any]:
        if any(face.width < 100 for face in faces):
            raise cv2.error("point_coordinate_variance >= POINT_VARIANCE_THRESHOLD")
        return [round(face.width) for face in faces]


def test_an_attribute_failing_on_one_face_marks_only_that_face_unknown(data, analyzer):
    image = cv2.imread(str(data / "groups/CompreFace__016_8.jpg"))
    faces = analyzer.detect(image)
    big = Face(bbox=np.array([0, 0, 200, 200], np.float32), det_score=0.9, landmarks=None)
    everyone = [big, *faces]
    _FailsOnSmallFaces().annotate(image, everyone)
    assert everyone[0].attributes["width_check"] == 200
    for face in faces:
        assert "failed on this face" in face.attributes["width_check"]["unknown"]


def test_gallery_import_largest_and_cluster_go_past_the_crowd(data, tiled, tmp_path):
    people = tmp_path / "people"
    (people / "crowd").mkdir(parents=True)
    (people / "crowd" / "tiled.jpg").write_bytes(tiled.read_bytes())
    (people / "obama").mkdir()
    (people / "obama" / "01.jpg").write_bytes((data / OBAMA / "01.jpg").read_bytes())
    proc = run("gallery", "import", people, "--largest", "--gallery", tmp_path / "g", "--json")
    assert "unexpected" not in proc.stderr, proc.stderr
    listing = run("gallery", "list", "--gallery", tmp_path / "g", "--json")
    names = {p["name"] for p in json.loads(listing.stdout)}
    assert "obama" in names
    proc = run("cluster", people, "--out", tmp_path / "clusters", "--json")
    assert proc.returncode == 0, proc.stderr


# -- 18: verify says "cannot decide" below the quality floor -------------------------------------------
def test_verify_refuses_to_decide_on_an_unusable_face(data, blurred, analyzer):
    good = data / OBAMA / "01.jpg"
    with pytest.raises(QualityError, match="cannot decide"):
        verify(str(good), str(blurred), analyzer=analyzer)
    # with the floor off it answers, and (the point of the floor) wrongly: the same person reads different
    forced = verify(str(good), str(blurred), analyzer=analyzer, min_quality=0)
    assert not forced.same
    same = verify(str(good), str(data / OBAMA / "02.jpg"), analyzer=analyzer)
    assert same.same and all(q is not None and q > 0.5 for q in same.quality)


def test_verify_rejects_a_far_that_is_not_a_rate(data, analyzer):
    image = str(data / OBAMA / "01.jpg")
    for bad in ("abc", 0, 1.5, None):
        with pytest.raises(ConfigError, match="far must"):
            verify(image, image, far=bad, analyzer=analyzer)


# -- 2: a cluster job that fails ends as failed, with the reason ---------------------------------------
class _BrokenService:
    """A service whose collection cannot even be opened, failing with an error no one planned for."""

    @property
    def collection(self) -> Any:
        raise RuntimeError("disk controller on fire")


def test_a_failing_cluster_job_ends_failed_with_its_reason(tmp_path):
    runner = JobRunner(_BrokenService())
    job = runner.start_cluster(tmp_path, 1e-4)
    deadline = time.time() + 10
    while runner.get(job.id).status in ("queued", "running") and time.time() < deadline:
        time.sleep(0.05)
    runner.shutdown()
    final = runner.get(job.id).to_dict()
    assert final["status"] == "failed" and "disk controller on fire" in final["error"]
    assert final["finished"] is not None
    assert len(job.id) == 32  # 128 random bits: not guessable, never reused


def test_analyzer_survives_a_whole_batch_with_the_crowd(data, tiled):
    fa = FaceAnalyzer(threads=2, attributes=["landmarks", "pose", "quality"])
    results = fa.analyze_batch([str(tiled), str(data / OBAMA / "01.jpg"), str(data / "corrupt")])
    assert results[0].error is None and results[1].error is None and len(results[1].faces) == 1
    assert results[2].error


# -- the command line: exit codes and one clear line for every misuse of the report ------------------------
def test_verify_cli_cannot_decide_has_its_own_exit_code(data, blurred):
    proc = run("verify", data / OBAMA / "01.jpg", blurred)
    assert proc.returncode == 3 and "cannot decide" in proc.stdout, proc.stdout + proc.stderr
    proc = run("verify", data / OBAMA / "01.jpg", blurred, "--json")
    answer = json.loads(proc.stdout)
    assert proc.returncode == 3 and answer["decided"] is False and answer["same"] is None
    proc = run("verify", data / OBAMA / "01.jpg", blurred, "--min-quality", "0")
    assert proc.returncode == 1  # floor off: it answers (wrongly, which is why the floor exists)


def test_cli_misuse_gets_one_clear_line(data, tmp_path):
    image = data / OBAMA / "03.jpg"
    (tmp_path / "faces.npy").mkdir()
    cases = [
        (("embed", image, "--out", tmp_path / "faces.npy"), "is a folder"),
        (("embed", image, "--out", tmp_path / "x.txt"), "must end in .npy"),
        (("gallery", "remove-face", "9223372036854775808", "--gallery", tmp_path / "g"), "no gallery"),
        (("identify", image, "--gallery", tmp_path / "missing"), "no gallery"),
        (("gallery", "list", "--gallery", image), "not a directory"),
        (("detect", image, "--det-size", "huge"), "det_size must be"),
        (("detect", image, "--det-size", "100"), "det_size must be"),
        (("gallery", "enroll", "\x1b[31mred", image, "--gallery", tmp_path / "g"), "control"),
        (("gallery", "enroll", "Eve\u202egnp.exe", image, "--gallery", tmp_path / "g"), "control"),
    ]
    for args, message in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "unexpected" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "missing").exists()  # a read never creates a gallery


def test_forget_asks_on_a_terminal_and_needs_yes_in_a_script(data, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    g = tmp_path / "g"
    assert run("gallery", "enroll", "ada", data / OBAMA / "03.jpg", "--gallery", g).returncode == 0
    proc = run("gallery", "forget", "ada", "--gallery", g)
    assert proc.returncode == 2 and "--yes" in proc.stderr
    master, slave = pty.openpty()
    os.write(master, b"n\n")
    answered = subprocess.run([sys.executable, "-m", "facelens", "gallery", "forget", "ada", "--gallery", str(g)],
                              stdin=slave, capture_output=True, text=True, timeout=120)
    os.close(master)
    os.close(slave)
    assert answered.returncode == 2 and "Forget ada" in answered.stdout + answered.stderr
    assert "ada" in run("gallery", "list", "--gallery", g).stdout
    assert run("gallery", "rename", "ada", "ada", "--gallery", g).returncode == 0  # same name: nothing to do
    assert run("gallery", "rename", "ada", "Ada", "--gallery", g).returncode == 0  # case only
    assert run("gallery", "forget", "Ada", "--yes", "--gallery", g).returncode == 0
    assert "Ada" not in run("gallery", "list", "--gallery", g).stdout


def test_gallery_check_and_repair_from_the_command_line(data, tmp_path):
    g = tmp_path / "g"
    for person in ("facerecognition-obama", "facerecognition-biden"):
        photo = sorted((data / "identities" / person).glob("*.jpg"))[2]
        assert run("gallery", "enroll", person, photo, "--gallery", g).returncode == 0
    assert run("gallery", "check", "--gallery", g).returncode == 0
    db = g / "gallery.sqlite"
    raw = bytearray(db.read_bytes())
    raw[:16] = b"garbage garbage!"
    db.write_bytes(bytes(raw))
    for args in (("identify", data / OBAMA / "04.jpg"), ("gallery", "forget", "facerecognition-obama", "--yes"),
                 ("gallery", "export", tmp_path / "e.jsonl"), ("gallery", "check")):
        proc = run(*args, "--gallery", g)
        assert proc.returncode == 2 and "unexpected" not in proc.stderr, (args, proc.stderr)
    assert "repair" in proc.stderr
    assert run("gallery", "repair", "--gallery", g).returncode == 2  # asks for --yes in a script
    repaired = run("gallery", "repair", "--yes", "--json", "--gallery", g)
    assert repaired.returncode == 0, repaired.stderr
    assert run("gallery", "check", "--gallery", g).returncode == 0
    # after repair the person can be erased, which was the point
    assert run("gallery", "forget", "facerecognition-obama", "--yes", "--gallery", g).returncode == 0


# -- the second adversarial run ------------------------------------------------------------------------
def test_python_api_misuse_gets_clear_errors(data, tmp_path):
    import facelens
    from facelens.errors import FacelensError, ImageError
    from facelens.gallery import Gallery

    image = str(data / OBAMA / "03.jpg")
    with pytest.raises(ConfigError, match="list of images"):
        FaceAnalyzer().analyze_batch(image)
    results = FaceAnalyzer(threads=1).analyze_batch([5, None, image])
    assert [bool(r.error) for r in results] == [True, True, False] and "not an image" in results[0].error
    for bad in ({"threads": -1}, {"threads": "2"}, {"flip": "no"}, {"attributes": None},
                {"attributes": "pose"}, {"det_size": 33}):
        with pytest.raises(ConfigError):
            FaceAnalyzer(**bad).analyze_batch([image])
    with pytest.raises(ConfigError):
        facelens.verify(5, image)
    with pytest.raises(ImageError):
        facelens.detect([image, image])
    g = Gallery(tmp_path / "g")
    with pytest.raises(ConfigError, match="list of images"):
        g.enroll("x", image)
    g.enroll("x", [image])
    for kwargs in ({"fpir": "abc"}, {"fpir": float("nan")}, {"fpir": 1.5}, {"top_k": 0}, {"top_k": "3"},
                   {"top_k": -1}):
        with pytest.raises(ConfigError):
            g.identify(image, **kwargs)
    with pytest.raises(ConfigError, match="finite"):
        g.search(np.full(512, np.nan, np.float32))
    with pytest.raises(FacelensError, match="given twice"):
        g.enroll("y", [str(data / OBAMA / "04.jpg"), str(data / OBAMA / "04.jpg")])
    assert [p.name for p in g.people()] == ["x"]
    g.close()


def test_cli_file_system_refusals_are_one_line(data, tmp_path):
    a, b = data / OBAMA / "03.jpg", data / OBAMA / "04.jpg"
    existing = tmp_path / "out.json"
    existing.write_text("{}")
    for args in (("embed", a, "--out", "/proc/nope/x.npy"), ("detect", a, b, "--draw", existing),
                 ("detect", a, "--json", "--draw", "/dev/full")):
        proc = run(*args)
        assert proc.returncode == 2 and "unexpected" not in proc.stderr, (args, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr
    assert existing.read_text() == "{}"
    proc = run("identify", a, "--gallery", tmp_path / "none")
    assert proc.returncode == 2 and proc.stdout == "" and "no gallery" in proc.stderr


# -- the verification pass after the fixes -----------------------------------------------------------------
def test_an_index_left_from_a_deleted_database_is_never_trusted(data, tmp_path, analyzer):
    from facelens.gallery import Gallery

    folder = tmp_path / "g"
    obama = sorted((data / OBAMA).glob("*.jpg"))
    g = Gallery(folder, analyzer)
    g.enroll("Obama", [str(obama[2]), str(obama[3])])
    assert g.identify(str(obama[4]))[0].identity == "Obama"
    g.close()  # saves index/
    assert (folder / "index").is_dir()
    for path in folder.glob("gallery.sqlite*"):
        path.unlink()
    other = sorted((data / "identities/facerecognition-biden").glob("*.jpg"))[2]
    g = Gallery(folder, analyzer)
    g.enroll("Biden", [str(other)])
    found = g.identify(str(obama[4]))[0]
    assert found.identity is None and all(m.person == "Biden" for m in found.matches)
    assert found.matches[0].similarity < 0.5  # the deleted Obama vectors did not come back as Biden's
    assert g.index_info()["faces"] == 1
    # a vector of any length searches by direction: no similarity above 1
    probe = g.search(np.ones(512, np.float32) * 100, top_k=1)
    assert probe and probe[0].similarity <= 1.0 + 1e-5
    g.close()


def test_refusals_create_no_gallery_and_repair_leaves_a_sound_gallery_alone(data, tmp_path):
    import subprocess
    import sys

    photo = data / OBAMA / "03.jpg"
    for args in (("gallery", "enroll", "x", photo, photo), ("gallery", "import", tmp_path / "nope.jsonl")):
        assert run(*args, "--gallery", tmp_path / "g").returncode == 2
        assert not (tmp_path / "g" / "gallery.sqlite").exists(), args
    assert run("cluster", data / OBAMA, "--out", tmp_path / "c", "--det-size", "bad").returncode == 2
    assert not (tmp_path / "c").exists()  # checked before anything is read or written
    # a name whose bytes are not UTF-8 (a shell passes them through): one line, nothing created
    bad = subprocess.run([sys.executable, "-m", "facelens", "gallery", "enroll", b"Bad\xffName", str(photo),
                          "--gallery", str(tmp_path / "g")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "UTF-8" in bad.stderr and "unexpected" not in bad.stderr, bad.stderr
    assert not (tmp_path / "g" / "gallery.sqlite").exists()
    assert run("gallery", "enroll", "x", photo, "--gallery", tmp_path / "g").returncode == 0
    healthy = run("gallery", "repair", "--yes", "--json", "--gallery", tmp_path / "g")
    assert healthy.returncode == 0 and json.loads(healthy.stdout)["repaired"] is False
    assert not list((tmp_path / "g").glob("*.corrupt-*"))  # no extra copy of the biometric data
