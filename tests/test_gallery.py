"""The gallery with the real models and a real SQLite gallery on disk."""

import json
from pathlib import Path

import pytest

from facelens import FaceAnalyzer
from facelens.errors import FacelensError, NoFaceError
from facelens.gallery import Gallery, GalleryError

from .conftest import read_csv
from .test_cli import run


@pytest.fixture(scope="module")
def people(data):
    by_person: dict[str, list] = {}
    for row in read_csv("identities.csv"):
        by_person.setdefault(row["identity"], []).append(data / row["path"])
    return by_person


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, people, analyzer):
    """First photo of every person with 2+ photos, except three held out as never enrolled."""
    gallery = Gallery(tmp_path_factory.mktemp("gallery") / "g", analyzer)
    multi = sorted(p for p, paths in people.items() if len(paths) > 1)
    held_out = set(multi[::10])  # 3 of 29, spread over the sources
    for person in multi:
        if person not in held_out:
            gallery.enroll(person, [people[person][0]])
    return gallery, held_out


def test_identify_rank1_and_unknown_rejection(enrolled, people):
    gallery, held_out = enrolled
    hits = probes = rejected = unknown = 0
    for person, paths in people.items():
        enrolled_person = len(paths) > 1 and person not in held_out
        for path in paths[1:] if enrolled_person else paths:
            result = max(gallery.identify(path), key=lambda r: r.face.area)
            if enrolled_person:
                probes += 1
                hits += result.matches[0].person == person
            else:
                unknown += 1
                rejected += result.identity is None
    print(f"\nrank-1 {hits}/{probes}, unknown rejected {rejected}/{unknown}")
    # measured: rank-1 116/116, unknown rejected 19/19 at the default FPIR 0.01
    assert hits / probes >= 0.97
    assert rejected / unknown >= 0.9


def test_forget_removes_every_trace(tmp_path, people, analyzer):
    gallery = Gallery(tmp_path / "g", analyzer)
    obama, biden = people["facerecognition-obama"], people["facerecognition-biden"]
    gallery.enroll("obama", obama[:3])
    gallery.enroll("biden", biden[2:4])  # biden's 01 and 02 are one file: the same image is enrolled once
    _, person_ids, matrix = gallery.store.embeddings()
    obama_id = gallery.person("obama").id
    secrets = [row.tobytes() for row, pid in zip(matrix, person_ids, strict=True) if pid == obama_id]
    thumbs = [r[0] for r in gallery.store.connect().execute(
        "SELECT thumbnail FROM faces WHERE person_id=?", (obama_id,)).fetchall()]
    assert len(secrets) == 3 and all(thumbs)
    receipt = gallery.forget("obama")
    assert receipt["faces_removed"] == 3
    assert all(r.identity != "obama" and all(m.person != "obama" for m in r.matches)
               for path in obama for r in gallery.identify(path))
    blob = b"".join(p.read_bytes() for p in (tmp_path / "g").rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in blob and secret[:64] not in blob
    for thumb in thumbs:  # JPEG headers are shared by every thumbnail: look for the image data
        assert thumb not in blob and thumb[-256:] not in blob
    text = json.loads(Path(receipt["receipt"]).read_text())
    assert text["faces_removed"] == 3 and "embedding" not in json.dumps(text)
    assert [p.name for p in gallery.people()] == ["biden"]


def test_enroll_is_all_or_nothing(tmp_path, data, people, analyzer):
    gallery = Gallery(tmp_path / "g", analyzer)
    with pytest.raises(NoFaceError):
        gallery.enroll("x", [people["facerecognition-biden"][0], data / "nonface/skimage__brick.png"])
    with pytest.raises(GalleryError, match="faces found"):
        gallery.enroll("x", [data / "groups/CompreFace__010_2.jpg"])
    with pytest.raises(FacelensError, match=r"corrupt|not an image"):
        gallery.enroll("x", [data / "corrupt/truncated.jpg"])
    with pytest.raises(GalleryError, match="no gallery at"):  # refused enrollments did not even create it
        gallery.people()
    assert gallery.enroll("x", [data / "groups/CompreFace__010_2.jpg"], largest=True)


def test_management_and_bad_inputs(tmp_path, people, analyzer):
    gallery = Gallery(tmp_path / "g", analyzer)
    gallery.enroll("a", people["openface-john_lennon"][:1])
    gallery.enroll("b", people["openface-john_lennon"][1:2])
    assert gallery.merge("b", "a") == 1 and gallery.person("a").faces == 2
    gallery.rename("a", "lennon")
    with pytest.raises(GalleryError, match="no person"):
        gallery.forget("a")
    face_id = gallery.store.embeddings()[0][0]
    gallery.remove_face(int(face_id))
    assert gallery.person("lennon").faces == 1
    with pytest.raises(GalleryError, match="no face with id"):
        gallery.remove_face(999)
    # a gallery bound to ArcFace refuses dlib embeddings
    other = Gallery(tmp_path / "g", FaceAnalyzer(recognizer="dlib-resnet", threads=1))
    with pytest.raises(GalleryError, match="cannot"):
        other.enroll("c", people["openface-john_lennon"][2:3])


def test_corrupt_database_and_bad_path(tmp_path, people, analyzer):
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "gallery.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(GalleryError, match="not a usable gallery"):
        Gallery(folder, analyzer).people()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(GalleryError, match="not a directory"):
        Gallery(a_file, analyzer).enroll("x", people["openface-john_lennon"][:1])


def test_gallery_cli(tmp_path, people, data):
    env = {"FACELENS_GALLERY": str(tmp_path / "g")}
    assert run("gallery", "enroll", "biden", *people["facerecognition-biden"][2:4], env=env).returncode == 0
    assert run("gallery", "enroll", "obama", people["facerecognition-obama"][0], env=env).returncode == 0
    listed = json.loads(run("gallery", "list", "--json", env=env).stdout)
    assert {p["name"]: p["faces"] for p in listed} == {"biden": 2, "obama": 1}
    proc = run("identify", data / "groups/face_recognition__obama_and_biden.jpg", "--json", env=env)
    names = sorted(f["identity"] for f in json.loads(proc.stdout)["faces"])
    assert proc.returncode == 0 and names[:2] == ["biden", "obama"]
    bad = run("gallery", "enroll", "x", data / "groups/insightface__t1.jpg", env=env)
    assert bad.returncode == 2 and "6 faces found" in bad.stderr
    forgot = run("gallery", "forget", "obama", "--yes", "--json", env=env)
    assert forgot.returncode == 0 and json.loads(forgot.stdout)["faces_removed"] == 1
    missing = run("gallery", "forget", "obama", env=env)
    assert missing.returncode == 2 and "no person 'obama'" in missing.stderr


def _wait_for_faces(db, minimum, proc, timeout=120):
    import sqlite3
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            # read-only URI: a plain connect would create an empty file before the importer does, and an
            # empty gallery file is (rightly) refused as damaged
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                if conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] >= minimum:
                    return
        except sqlite3.OperationalError:
            pass  # not created yet, or the schema is not there yet
        time.sleep(0.05)
    raise AssertionError("import did not progress")


def test_kill_9_mid_import_leaves_a_consistent_gallery(tmp_path, data, people, analyzer):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    folder = tmp_path / "g"
    env = {**os.environ, "FACELENS_GALLERY": str(folder)}
    proc = subprocess.Popen([sys.executable, "-m", "facelens", "gallery", "import", str(data / "identities")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_faces(folder / "gallery.sqlite", 20, proc)
        # concurrent reader while the writer works: results must be correct
        reader = Gallery(folder, analyzer)
        first = next(p for p in reader.people() if p.faces)
        probe = people[first.name][-1]
        assert max(reader.identify(probe), key=lambda r: r.face.area).matches[0].person == first.name
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(folder / "gallery.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans = conn.execute("SELECT COUNT(*) FROM faces WHERE person_id NOT IN (SELECT id FROM people)")
        assert orphans.fetchone()[0] == 0
        empty = conn.execute("SELECT COUNT(*) FROM people WHERE id NOT IN (SELECT person_id FROM faces)")
        assert empty.fetchone()[0] == 0
        partial = conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
    assert 20 <= partial < 152
    # a rerun resumes and ends where an uninterrupted import ends
    resumed = run("gallery", "import", data / "identities", "--json", env={"FACELENS_GALLERY": str(folder)})
    assert resumed.returncode == 0, resumed.stderr
    statuses = [r["status"] for r in json.loads(resumed.stdout)]
    assert statuses.count("already enrolled") >= partial
    with sqlite3.connect(folder / "gallery.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 152  # 161 photos, 9 duplicate files


def test_export_import_round_trip(tmp_path, people, analyzer):
    source = Gallery(tmp_path / "a", analyzer)
    source.enroll("lennon", people["openface-john_lennon"][:2])
    source.enroll("clapton", people["openface-eric_clapton"][:1])
    assert source.export(tmp_path / "g.jsonl") == 3
    target = Gallery(tmp_path / "b", analyzer)
    assert target.import_export(tmp_path / "g.jsonl") == 3
    assert {p.name: p.faces for p in target.people()} == {"clapton": 1, "lennon": 2}
    probe = people["openface-john_lennon"][2]
    assert target.identify(probe)[0].identity == source.identify(probe)[0].identity == "lennon"
    assert [f["image_sha256"] for f in target.faces("lennon")] == [f["image_sha256"] for f in source.faces("lennon")]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(GalleryError, match="not a facelens gallery export"):
        target.import_export(tmp_path / "bad.jsonl")
    assert target.person("lennon").faces == 2  # nothing half-imported


def test_concurrent_writers_and_readers_across_processes(tmp_path, data, people, analyzer):
    """An import, a second writer (CLI enroll) and a reader identifying over and over, all at once."""
    import os
    import sqlite3
    import subprocess
    import sys

    folder = tmp_path / "g"
    env = {**os.environ, "FACELENS_GALLERY": str(folder)}
    importer = subprocess.Popen([sys.executable, "-m", "facelens", "gallery", "import", str(data / "identities")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_faces(folder / "gallery.sqlite", 10, importer)
        extra = subprocess.Popen([sys.executable, "-m", "facelens", "gallery", "enroll", "second-writer",
                                  str(data / "groups/CompreFace__010_2.jpg"), "--largest"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reader = Gallery(folder, analyzer)
        checked = 0
        while importer.poll() is None or checked < 3:
            enrolled = [p for p in reader.people() if p.faces and p.name in people and len(people[p.name]) > 1]
            person = enrolled[checked % len(enrolled)]
            result = max(reader.identify(people[person.name][-1]), key=lambda r: r.face.area)
            assert result.matches[0].person == person.name, (person.name, result.to_dict())
            checked += 1
        assert extra.wait(timeout=120) == 0, extra.stderr.read()
    finally:
        importer.wait(timeout=300)
    assert importer.returncode == 0, importer.stderr.read()
    with sqlite3.connect(folder / "gallery.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 152 + 1  # nothing lost
    assert reader.person("second-writer").faces == 1
    assert checked >= 3


def _synthetic_gallery(folder, n, dim=512, seed=0):
    """A gallery of `n` random unit vectors (one person each) written straight through the store."""
    import numpy as np

    from facelens.gallery.store import SQLiteStore

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = SQLiteStore(folder / "gallery.sqlite")
    with store.transaction() as conn:
        store.bind_recognizer(conn, "arcface-mbf", dim)
        for i, v in enumerate(vectors):
            store.add_face(conn, store.ensure_person(conn, f"p{i}"), v, "arcface-mbf", None, None, None, None, None)
    store.close()
    return vectors


def test_index_is_rebuilt_when_missing_stale_or_corrupt(tmp_path, analyzer):
    import numpy as np

    folder = tmp_path / "g"
    vectors = _synthetic_gallery(folder, 2000)
    rng = np.random.default_rng(1)
    probes = vectors[:20] + 0.02 * rng.standard_normal((20, 512)).astype(np.float32)

    def top1(gallery):
        return [gallery.search(p, 1)[0].person for p in probes]

    expected = [f"p{i}" for i in range(20)]
    first = Gallery(folder, analyzer)
    assert top1(first) == expected and first.index.rebuilds == 1  # no index yet: built from SQLite
    first.close()
    assert (folder / "index" / "state.json").exists()
    loaded = Gallery(folder, analyzer)
    assert top1(loaded) == expected and loaded.index.rebuilds == 0  # loaded, not rebuilt
    # stale: another writer adds a person; the loaded index catches up without a rebuild
    other = Gallery(folder, analyzer)
    with other.store.transaction() as conn:
        pid = other.store.ensure_person(conn, "newcomer")
        other.store.add_face(conn, pid, probes[0] * -1 / np.linalg.norm(probes[0]), "arcface-mbf",
                             None, None, None, None, None)
    assert loaded.search(-probes[0], 1)[0].person == "newcomer" and loaded.index.rebuilds == 0
    other.remove_face(loaded.search(-probes[0], 1)[0].face_id)  # and deletions are masked
    assert loaded.search(-probes[0], 1)[0].person != "newcomer"
    # corrupt: flip bytes in the vectors file; the checksum catches it and the index is rebuilt
    raw = bytearray((folder / "index" / "vectors.npy").read_bytes())
    raw[-4096:] = bytes(4096)
    (folder / "index" / "vectors.npy").write_bytes(bytes(raw))
    fresh = Gallery(folder, analyzer)
    assert top1(fresh) == expected and fresh.index.rebuilds == 1
    fresh.close()
    (folder / "index" / "state.json").write_text("{not json")
    again = Gallery(folder, analyzer)
    assert top1(again) == expected and again.index.rebuilds == 1


def test_quantised_index_matches_exact_search(tmp_path, analyzer):
    """Above PQ_MIN_FACES the index scans PQ codes and re-ranks exactly: top-1 must equal exact search."""
    import numpy as np

    from facelens.gallery.index import PQ_MIN_FACES, LocalIndex
    from facelens.gallery.store import SQLiteStore

    folder = tmp_path / "g"
    vectors = _synthetic_gallery(folder, PQ_MIN_FACES + 500)
    store = SQLiteStore(folder / "gallery.sqlite")
    index = LocalIndex(folder)
    index.sync(store)
    assert index._pq is not None
    rng = np.random.default_rng(2)
    probes = vectors[rng.choice(len(vectors), 200, replace=False)]
    probes = probes + 0.03 * rng.standard_normal(probes.shape).astype(np.float32)
    exact = np.argsort(-(probes @ vectors.T), axis=1)[:, :10] + 1  # face ids are 1-based rows
    results = [index.search(p, 10) for p in probes]
    found = np.stack([ids for _, ids in results])
    assert (found[:, 0] == exact[:, 0]).mean() == 1.0
    # scores are exact (re-ranked with the stored vectors), best first; ranks 2-10 of random vectors are
    # near-ties of unrelated faces that PQ cannot order (measured and reported in RESULTS.md, not asserted)
    for p, (sims, ids) in zip(probes, results, strict=True):
        assert np.allclose(sims, vectors[ids - 1] @ p, atol=1e-5) and np.all(np.diff(sims) <= 0)
    index.save(store)
    reloaded = LocalIndex(folder)
    reloaded.sync(store)
    assert reloaded.rebuilds == 0 and reloaded._pq is not None
    assert all(reloaded.search(p, 1)[1][0] == e for p, e in zip(probes[:20], exact[:20, 0], strict=True))


def test_milvus_backend(tmp_path, people, analyzer):
    """The same Gallery interface over embedded Milvus (milvus-lite): enroll, identify, forget."""
    folder = tmp_path / "g"
    gallery = Gallery(folder, analyzer)
    gallery.enroll("obama", people["facerecognition-obama"][:2])
    gallery.use_milvus("milvus.db")  # existing faces are copied over
    gallery.enroll("biden", people["facerecognition-biden"][2:4])
    gallery.enroll("lennon", people["openface-john_lennon"][:1])
    from facelens.gallery.milvus import MilvusIndex

    assert isinstance(gallery.index, MilvusIndex)
    for name, probe in (("obama", people["facerecognition-obama"][3]), ("biden", people["facerecognition-biden"][3])):
        assert max(gallery.identify(probe), key=lambda r: r.face.area).identity == name
    assert gallery.index.size == 5
    gallery.close()
    reopened = Gallery(folder, analyzer)  # the binding is stored in the gallery
    assert isinstance(reopened.index, MilvusIndex)
    _, person_ids, matrix = reopened.store.embeddings()
    secrets = [row.tobytes() for row, pid in zip(matrix, person_ids, strict=True)
               if pid == reopened.person("biden").id]
    reopened.forget("biden")
    probe = people["facerecognition-biden"][3]
    assert all(m.person != "biden" for r in reopened.identify(probe) for m in r.matches)
    assert reopened.index.size == 3
    blob = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret[:64] not in blob
    reopened.close()


def _make_read_only(folder):
    """chmod for ordinary users; root ignores modes, so there the directory is made immutable."""
    import os
    import subprocess

    if os.geteuid() != 0:
        for path in [folder, *folder.iterdir()]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return lambda: [p.chmod(0o755 if p.is_dir() else 0o644) for p in [folder, *folder.iterdir()]]
    files = [folder, *folder.iterdir()]
    if subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a directory read-only here (root without chattr)")
    return lambda: subprocess.run(["chattr", "-i", *map(str, files)], check=True)


def test_empty_image_and_read_only_gallery_lose_nothing(tmp_path, people, analyzer):
    folder = tmp_path / "g"
    gallery = Gallery(folder, analyzer)
    gallery.enroll("lennon", people["openface-john_lennon"][:1])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(FacelensError, match="empty"):
        gallery.enroll("lennon", [empty])
    gallery.close()
    restore = _make_read_only(folder)
    try:
        blocked = Gallery(folder, analyzer)
        with pytest.raises(FacelensError, match=r"read-only|cannot open|not a usable|readonly"):
            blocked.enroll("clapton", people["openface-eric_clapton"][:1])
        blocked.close()
        proc = run("gallery", "enroll", "clapton", people["openface-eric_clapton"][0], "--gallery", folder)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    finally:
        restore()
    reopened = Gallery(folder, analyzer)
    assert [(p.name, p.faces) for p in reopened.people()] == [("lennon", 1)]
    assert reopened.identify(people["openface-john_lennon"][1])[0].identity == "lennon"


def test_gallery_index_and_milvus_cli(tmp_path, people):
    env = {"FACELENS_GALLERY": str(tmp_path / "g")}
    assert run("gallery", "enroll", "lennon", *people["openface-john_lennon"][:2], env=env).returncode == 0
    info = json.loads(run("gallery", "index", "--json", env=env).stdout)
    assert info["kind"] == "exact" and info["faces"] == 2 and info["on_disk_bytes"] > 2 * 512 * 4
    rebuilt = json.loads(run("gallery", "index", "--rebuild", "--json", env=env).stdout)
    assert rebuilt["faces"] == 2
    moved = run("gallery", "use-milvus", "milvus.db", env=env)
    assert moved.returncode == 0 and "2 face(s)" in moved.stdout
    info = json.loads(run("gallery", "index", "--json", env=env).stdout)
    assert info["kind"] == "milvus" and info["faces"] == 2
    proc = run("identify", people["openface-john_lennon"][2], "--json", env=env)
    assert json.loads(proc.stdout)["faces"][0]["identity"] == "lennon"
