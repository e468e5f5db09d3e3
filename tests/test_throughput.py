"""Issue 19: the load-time PRelu rewrite, the INT8 recognizer, and `facelens index` on one machine and on Ray."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from facelens import FaceAnalyzer
from facelens.errors import ConfigError
from facelens.evaluate.protocols import folder_per_person
from facelens.index import IndexOptions, index_local, index_ray, read_index
from facelens.io import expand_paths
from facelens.models.graph import fast_graph
from facelens.models.runtime import onnx_session
from facelens.models.store import model_path
from facelens.pipeline import main_face
from facelens.profile import set_profile


@pytest.mark.parametrize("name", ["arcface-mbf", "sface", "landmarks-2d106"])
def test_prelu_rewrite_gives_the_published_graphs_outputs(name: str) -> None:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    published = ort.InferenceSession(str(model_path(name)), opts, providers=["CPUExecutionProvider"])
    rewritten = onnx_session(name)
    assert not any(n.op_type == "PRelu" for n in onnx.load_from_string(fast_graph(model_path(name))).graph.node)
    inp = published.get_inputs()[0]
    shape = [4 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).uniform(0, 255 if name == "sface" else 1, shape).astype(np.float32)
    a = published.run(None, {inp.name: x})[0]
    b = rewritten.run(None, {inp.name: x})[0]
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))


@pytest.fixture
def profile_reset():
    yield
    set_profile(None)


@pytest.mark.parametrize(("profile", "recognizer"), [("default", "arcface-mbf"), ("clean", "sface")])
def test_int8_embeddings_match_fp32_and_keep_verification(data: Path, profile: str, recognizer: str,
                                                          profile_reset: None) -> None:
    set_profile(profile)
    items = folder_per_person(data / "identities")[::2]
    paths = [p for p, _ in items]
    fp32 = FaceAnalyzer(threads=2).analyze_batch(paths)
    int8_analyzer = FaceAnalyzer(threads=2, int8=True)
    assert int8_analyzer.int8_model == f"{recognizer}-int8"
    int8 = int8_analyzer.analyze_batch(paths)
    pairs, labels = [], []
    for a, b, (_, person) in zip(fp32, int8, items, strict=True):
        fa, fb = main_face(a.faces, a.width, a.height), main_face(b.faces, b.width, b.height)
        if fa is None or fb is None:
            continue
        assert fb.recognizer == recognizer  # the same embedding space: galleries and thresholds carry over
        pairs.append((fa.embedding, fb.embedding))
        labels.append(person)
    e32, e8 = (np.stack(x) for x in zip(*pairs, strict=True))
    cosine = (e32 * e8).sum(1)
    # measured on these faces: arcface-mbf mean 0.98, min 0.95; sface-int8 mean 0.99, min 0.96
    assert cosine.mean() > 0.97 and cosine.min() > 0.90
    labels_arr = np.asarray(labels)
    i, j = np.triu_indices(len(labels_arr), 1)
    same = labels_arr[i] == labels_arr[j]
    from facelens.models.registry import threshold_for

    threshold = threshold_for(recognizer, 1e-3)
    for emb in (e32, e8):
        scores = (emb[i] * emb[j]).sum(1)
        # the fp32 threshold applies to INT8 embeddings: every pair of the fixtures decided as fp32 decides it
        accuracy = ((scores >= threshold) == same).mean()
        assert accuracy > 0.995


def test_int8_refuses_a_recognizer_without_an_int8_build() -> None:
    with pytest.raises(ConfigError, match="int8 is available for arcface-mbf, sface, not dlib-resnet"):
        _ = FaceAnalyzer(recognizer="dlib-resnet", int8=True).recognizer_model
    with pytest.raises(ConfigError, match="int8 must be True or False"):
        _ = FaceAnalyzer(int8="yes").recognizer_model  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def collection(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few portraits, a group photo, a non-face photo and a corrupt file."""
    root = tmp_path_factory.mktemp("collection")
    for path in sorted((data / "identities").rglob("*.jpg"))[:6]:
        shutil.copy(path, root / f"{path.parent.name}__{path.name}")
    shutil.copy(sorted((data / "groups").glob("*.jpg"))[0], root / "group.jpg")
    shutil.copy(sorted((data / "nonface").glob("*.jpg"))[0], root / "nonface.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _rows(out: Path) -> list[dict]:
    return sorted(read_index(out).to_pylist(), key=lambda r: (r["sha256"], r["face"]))


def test_index_local_rows_resume_and_broken_files(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    summary = index_local(expand_paths([collection]), out, IndexOptions(), threads=2)
    assert summary.images == 9 and summary.done == 9 and summary.skipped == 0
    assert len(summary.errors) == 1 and "broken.jpg" in summary.errors[0]
    rows = _rows(out)
    by_path = {}
    for r in rows:
        by_path.setdefault(Path(r["path"]).name, []).append(r)
    assert by_path["nonface.jpg"][0]["face"] == -1 and by_path["nonface.jpg"][0]["error"] is None
    assert len(by_path["group.jpg"]) > 2
    # the rows are the single-image path's own faces
    faces = FaceAnalyzer(threads=1).analyze(collection / "group.jpg")
    got = np.stack([r["embedding"] for r in sorted(by_path["group.jpg"], key=lambda r: r["face"])])
    assert got.shape == (len(faces), 512)
    assert np.allclose(got, np.stack([f.embedding for f in faces]), atol=1e-5)
    assert summary.faces == sum(r["face"] >= 0 for r in rows)
    # a second run skips everything by content hash, even under another name
    shutil.copy(collection / "group.jpg", tmp_path / "renamed.jpg")
    again = index_local([*expand_paths([collection]), tmp_path / "renamed.jpg"], out, IndexOptions(), threads=2)
    assert again.done == 0 and again.skipped == 10
    assert len(_rows(out)) == len(rows)
    # a Parquet file cut short (a killed writer) is set aside and its images are done again
    part = sorted(out.glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    redo = index_local(expand_paths([collection]), out, IndexOptions(), threads=2)
    assert redo.done == 9 and list(out.glob("*.parquet.broken"))
    assert [r["sha256"] for r in _rows(out)] == [r["sha256"] for r in rows]


def test_index_cli_json_and_bad_input(collection: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "facelens", "index", str(collection), "--out", str(tmp_path / "ix"), "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2  # the broken file is reported (exit 2, as every batch command), the rest indexed
    summary = json.loads(run.stdout)
    assert summary["done"] == 9 and summary["errors"] == 1 and summary["faces"] > 6
    assert run.stderr.count("broken.jpg") == 1 and "Traceback" not in run.stderr
    bad = subprocess.run([sys.executable, "-m", "facelens", "index", str(tmp_path / "missing"), "--out",
                          str(tmp_path / "ix2")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "missing" in bad.stderr
    (tmp_path / "afile").write_text("x")
    bad = subprocess.run([sys.executable, "-m", "facelens", "index", str(collection), "--out",
                          str(tmp_path / "afile")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not a folder" in bad.stderr and "Traceback" not in bad.stderr


def test_index_on_ray_gives_the_single_machine_rows(collection: Path, tmp_path: Path) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    index_local(expand_paths([collection]), local, IndexOptions(), threads=2)
    db = tmp_path / "ray.db"
    summary = index_ray([str(collection)], on_ray, IndexOptions(), address="local", workers=2,
                        milvus=f"milvus://{db}")
    assert summary.images == 9 and summary.done == 9 and len(summary.errors) == 1
    # the driver upserted every face the workers wrote
    assert summary.milvus_upserted == summary.faces == len(_milvus_faces(db, "facelens_index"))
    a, b = _rows(local), _rows(on_ray)
    assert [(r["sha256"], r["face"], Path(r["path"]).name) for r in a] == \
        [(r["sha256"], r["face"], Path(r["path"]).name) for r in b]
    for x, y in zip(a, b, strict=True):
        if x["embedding"] is not None:
            assert np.allclose(x["embedding"], y["embedding"], atol=1e-5)
    # resumable on Ray too, with the sources given as a URI (read through pyarrow's filesystems, as s3:// or
    # gs:// would be): nothing left to do
    again = index_ray([collection.as_uri()], on_ray, IndexOptions(), address="local", workers=2)
    assert again.images == 9 and again.done == 0 and again.skipped == 9


def test_index_duplicates_other_recognizers_and_foreign_files(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    portrait = sorted(collection.glob("*__*.jpg"))[0]
    shutil.copy(portrait, tmp_path / "copy.jpg")
    # the same file twice and the same content under another name: embedded once, the rest counted as skipped
    summary = index_local([portrait, portrait, tmp_path / "copy.jpg"], out, IndexOptions(), threads=2)
    assert summary.images == 2 and summary.done == 1 and summary.skipped == 1
    assert len({r["sha256"] for r in _rows(out)}) == 1 and all(r["recognizer"] == "arcface-mbf" for r in _rows(out))
    # one folder, one embedding space: another recognizer (or the INT8 build) is refused, not mixed in
    with pytest.raises(ConfigError, match="holds embeddings of arcface-mbf"):
        index_local([portrait], out, IndexOptions(int8=True), threads=1)
    # a Parquet file that is not an index is refused and left as it is
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), other / "mine.parquet")
    with pytest.raises(ConfigError, match="not a facelens index file"):
        index_local([portrait], other, IndexOptions(), threads=1)
    assert (other / "mine.parquet").is_file()
    with pytest.raises(ConfigError, match="URIs"):
        index_local([portrait], "s3://bucket/x", IndexOptions(), threads=1)


def _milvus_faces(db: Path, collection: str) -> dict[str, dict]:
    from pymilvus import MilvusClient

    client = MilvusClient(str(db))
    try:
        rows = client.query(collection, filter="face >= 0", output_fields=["*"], limit=16384)
        count = client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
    finally:
        client.close()
    assert count == len(rows) == len({r["pk"] for r in rows})  # no entity twice
    return {r["pk"]: r for r in rows}


def test_index_into_milvus_mirrors_the_parquet_faces_and_resumes(collection: Path, tmp_path: Path) -> None:
    out, db = tmp_path / "ix", tmp_path / "milvus" / "index.db"
    target = f"milvus://{db}/portraits"
    summary = index_local(expand_paths([collection]), out, IndexOptions(), threads=2, milvus=target)
    parquet_faces = {f"{r['sha256']}:{r['face']}": r for r in _rows(out) if r["face"] >= 0}
    assert summary.milvus == target and summary.milvus_upserted == summary.faces == len(parquet_faces) > 6
    stored = _milvus_faces(db, "portraits")
    assert set(stored) == set(parquet_faces)
    for pk, row in parquet_faces.items():
        assert np.allclose(stored[pk]["embedding"], row["embedding"], atol=1e-6)
        assert stored[pk]["path"] == row["path"] and np.allclose(stored[pk]["bbox"], row["bbox"], atol=1e-4)
    # searchable: a portrait's own embedding finds its own image first
    from pymilvus import MilvusClient

    probe = next(r for r in parquet_faces.values() if "__" in r["path"])
    client = MilvusClient(str(db))
    hits = client.search("portraits", [probe["embedding"]], limit=1, output_fields=["sha256"])[0]
    client.close()
    assert hits[0]["entity"]["sha256"] == probe["sha256"] and hits[0]["distance"] > 0.99
    # a second run: nothing to embed, nothing to upsert
    again = index_local(expand_paths([collection]), out, IndexOptions(), threads=2, milvus=target)
    assert again.done == 0 and again.milvus_upserted == 0
    # a run killed between the Parquet write and the upsert (the part not noted as synced) is mended by the
    # next run, and upserting a part again (primary key sha256:face) adds no duplicate
    state_file = out / "milvus-synced.json"
    state = json.loads(state_file.read_text())
    (entry,) = state.values()
    dropped = sorted(entry["parts"])[-1]
    del entry["parts"][dropped]
    state_file.write_text(json.dumps(state))
    import pyarrow.parquet as pq

    hashes = set(pq.read_table(out / dropped, columns=["sha256"]).column("sha256").to_pylist())
    in_dropped = sum(r["face"] >= 0 for r in _rows(out) if r["sha256"] in hashes)
    mended = index_local(expand_paths([collection]), out, IndexOptions(), threads=2, milvus=target)
    assert mended.milvus_upserted == in_dropped > 0 and set(_milvus_faces(db, "portraits")) == set(stored)
    # a collection lost since (dropped, or a server without its volume) is filled again, not trusted to the notes
    from pymilvus import MilvusClient

    client = MilvusClient(str(db))
    client.drop_collection("portraits")
    client.close()
    refilled = index_local(expand_paths([collection]), out, IndexOptions(), threads=2, milvus=target)
    assert refilled.milvus_upserted == len(parquet_faces) and set(_milvus_faces(db, "portraits")) == set(stored)
    # ... and so is one that lost its entities (milvus-lite gives no collection id: the count tells)
    client = MilvusClient(str(db))
    client.delete("portraits", filter="face >= 0")
    client.close()
    emptied = index_local(expand_paths([collection]), out, IndexOptions(), threads=2, milvus=target)
    assert emptied.milvus_upserted == len(parquet_faces) and set(_milvus_faces(db, "portraits")) == set(stored)
    # one collection, one embedding space: the INT8 build's rows are refused before anything is embedded
    with pytest.raises(ConfigError, match="holds embeddings of arcface-mbf"):
        index_local(expand_paths([collection]), tmp_path / "ix8", IndexOptions(int8=True), threads=1, milvus=target)
    assert not list((tmp_path / "ix8").glob("*.parquet"))


def test_index_milvus_targets_are_checked(collection: Path, tmp_path: Path) -> None:
    from facelens.index import parse_milvus

    assert parse_milvus("milvus://db.example:19531/faces") == ("http://db.example:19531", "faces")
    assert parse_milvus("milvus://db.example") == ("http://db.example:19530", "facelens_index")
    assert parse_milvus("milvus:///data/x.db") == ("/data/x.db", "facelens_index")
    assert parse_milvus("MILVUS://[::1]:19531/faces/") == ("http://[::1]:19531", "faces")
    assert parse_milvus("milvus:///srv/v1.db.bak/x.db/faces") == ("/srv/v1.db.bak/x.db", "faces")
    assert parse_milvus("milvus:///srv/app.db/faces.db") == ("/srv/app.db/faces.db", "facelens_index")
    for bad in ("milvus://", "milvus://host:port/x", "milvus:///data/x", "milvus:///data/x.db/a/b",
                "milvus://h/bad-name", "milvus://faces.db", "milvus://h:0", "milvus://h:99999"):
        with pytest.raises(ConfigError):
            parse_milvus(bad)
    base = [sys.executable, "-m", "facelens", "index", str(collection)]
    for outs, message in (([f"milvus://{tmp_path}/m.db"], "needs an output folder as well"),
                          ([str(tmp_path / "a"), str(tmp_path / "b")], "one output folder"),
                          ([str(tmp_path / "a"), "milvus://bad host"], "a Milvus server is")):
        proc = subprocess.run([*base, *(x for o in outs for x in ("--out", o))], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "a").exists()
    portrait = sorted(collection.glob("*__*.jpg"))[:1]
    # the record and the database apart: deleting one to rebuild it must not delete the other
    with pytest.raises(ConfigError, match="apart"):
        index_local(portrait, tmp_path / "same.db", IndexOptions(), milvus=f"milvus://{tmp_path}/same.db")
    # a database another process holds: one line, not milvus-lite's logged traceback
    from pymilvus import MilvusClient

    held = MilvusClient(str(tmp_path / "held.db"))
    try:
        proc = subprocess.run([*base, "--out", str(tmp_path / "h"), "--out", f"milvus://{tmp_path}/held.db"],
                              capture_output=True, text=True, timeout=120)
    finally:
        held.close()
    assert proc.returncode == 2 and "in use by another process" in proc.stderr and "Traceback" not in proc.stderr
    # one run at a time per output folder: a second is refused while the first holds the folder
    import fcntl

    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".facelens-index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another facelens index run"):
            index_local(portrait, busy, IndexOptions(), threads=1)
    assert index_local(portrait, busy, IndexOptions(), threads=1).done == 1  # released: it runs
