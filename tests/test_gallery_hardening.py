"""Gallery hardening: hostile imports, id reuse, races between writers, duplicates, damaged, missing and
read-only galleries, odd names, limits and file modes. Real models, real photos, real SQLite files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelens.errors import ConfigError
from facelens.gallery import (
    DuplicateFace,
    Gallery,
    GalleryCorrupt,
    GalleryError,
    GalleryMissing,
    GalleryNotFound,
    GalleryReadOnly,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def photos(data):
    ids = data / "identities"
    return {"obama": [ids / "facerecognition-obama/01.jpg", ids / "facerecognition-obama/02.jpg"],
            "biden": [ids / "facerecognition-biden/01.jpg", ids / "facerecognition-biden/03.jpg"],
            "lennon": [ids / "openface-john_lennon/01.jpg", ids / "openface-john_lennon/03.jpg"],
            "clapton": [ids / "openface-eric_clapton/01.jpg"]}


@pytest.fixture(scope="session")
def built(tmp_path_factory, photos, analyzer):
    """obama (2 faces), biden (1), lennon (1): copied by the tests that change it."""
    folder = tmp_path_factory.mktemp("built") / "g"
    gallery = Gallery(folder, analyzer)
    gallery.enroll("obama", photos["obama"])
    gallery.enroll("biden", photos["biden"][:1])
    gallery.enroll("lennon", photos["lennon"][:1])
    gallery.close()
    return folder


@pytest.fixture
def copy(built, tmp_path):
    def make(name="g"):
        shutil.copytree(built, tmp_path / name)
        return tmp_path / name
    return make


def _summary(gallery):
    return {p.name: p.faces for p in gallery.people()}


# -- 3: import_export validates every record ----------------------------------------------------------
def photos_of_obama(built):
    from .conftest import data_root

    return data_root() / "identities/facerecognition-obama/03.jpg"


def test_import_refuses_hostile_records_with_their_line_number(built, tmp_path, analyzer):
    export = tmp_path / "g.jsonl"
    assert Gallery(built, analyzer).export(export) == 4
    lines = export.read_text().splitlines()
    target = Gallery(tmp_path / "target", analyzer)
    target.create_person("already here")

    def vector(values):
        return base64.b64encode(np.asarray(values, np.float32).tobytes()).decode()

    good = json.loads(lines[2])
    unit = np.frombuffer(base64.b64decode(good["faces"][0]["embedding"]), np.float32)

    def face_with(**changes):
        record = json.loads(lines[2])
        record["faces"][0].update(changes)
        return json.dumps(record)

    cases = {
        "scaled x1e30": (face_with(embedding=vector(unit * 1e30)), "not a unit vector"),
        "10 values": (face_with(embedding=vector(unit[:10])), "has 10 values"),
        "NaN": (face_with(embedding=vector(np.full(512, np.nan))), "NaN"),
        "all zero": (face_with(embedding=vector(np.zeros(512))), "not a unit vector"),
        "bad base64": (face_with(embedding="%%%not base64"), "not valid base64"),
        "bad thumbnail": (face_with(thumbnail="AAAA"), "not a JPEG"),
        "other recognizer": (face_with(recognizer="dlib-resnet"), "recognizer"),
        "bbox type": (face_with(bbox=["a", 1, 2, 3]), "bbox"),
        "score type": (face_with(det_score="high"), "det_score"),
        "bad hash": (face_with(image_sha256="xyz"), "image_sha256"),
        "empty name": (json.dumps({**good, "name": "  "}), "cannot be empty"),
        "control char": (json.dumps({**good, "name": "a\x1bb"}), "control character"),
        "5 MB metadata": (json.dumps({**good, "metadata": {"x": "y" * (5 << 20)}}), "line longer|metadata"),
        "not an object": ("[1, 2]", "not a JSON object"),
        "negative quality": (face_with(quality=-5), "outside"),
        "below the floor": (face_with(quality=0.01), "below the enrollment floor"),
        "deep metadata": (json.dumps({**good, "metadata": json.loads('{"a":' * 40 + "1" + "}" * 40)}), "nest"),
        "deeper than the parser": ('{"name": "x", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                   "nested too deeply"),
        "5,000 digits": (json.dumps({**good})[:-1] + ', "n": ' + "9" * 5000 + "}", "too many digits"),
        "not JSON": ("{nope", "line 3"),
    }
    for label, (bad_line, message) in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text("\n".join([lines[0], lines[1], bad_line, *lines[3:]]) + "\n")
        with pytest.raises(GalleryError, match=message) as info:
            target.import_export(path)
        assert "line 3" in str(info.value) and "nothing imported" in str(info.value), label
        assert _summary(target) == {"already here": 0}, label  # the good line 2 was not kept either
    # a clean file goes in; importing it again adds nothing (its images are already there)
    assert target.import_export(export) == 4
    assert target.import_export(export) == 0
    assert _summary(target) == {"already here": 0, "obama": 2, "biden": 1, "lennon": 1}
    assert max(target.identify(photos_of_obama(built)), key=lambda r: r.face.area).identity == "obama"
    # an unknown recognizer is refused at the header
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"facelens_gallery": 1, "recognizer": "nonsense"}) + "\n")
    with pytest.raises(GalleryError, match="not a facelens gallery export"):
        target.import_export(other)


# -- 4: ids are never reused ----------------------------------------------------------------------------
def test_person_and_face_ids_are_never_reused(copy, photos, analyzer):
    gallery = Gallery(copy(), analyzer)
    alice = gallery.create_person("Alice")
    gallery.forget("Alice")
    bob = gallery.create_person("Bob")
    assert bob.id > alice.id
    with pytest.raises(GalleryNotFound):
        gallery.forget(alice.id)  # a stale "forget <Alice's id>" cannot erase Bob
    assert gallery.person("Bob").id == bob.id
    last_face = max(f["face_id"] for f in gallery.faces("lennon"))
    gallery.remove_face(last_face)
    new_face = gallery.add_faces(bob.id, photos["clapton"])[0]
    assert new_face > last_face
    # a gallery written before the counter existed: seeded from the ids still there and the receipts
    gallery.forget("Bob")
    with gallery.store.transaction() as conn:
        conn.execute("DELETE FROM meta WHERE key='last_person_id'")
    assert gallery.create_person("Carol").id > bob.id
    gallery.close()


def test_cluster_ids_are_never_reused(tmp_path, data, analyzer):
    from facelens.cluster import ClusterNotFound, Collection

    folder = tmp_path / "photos"
    for person, files in (("obama", ["01.jpg", "02.jpg", "03.jpg"]), ("biden", ["01.jpg", "03.jpg"])):
        (folder / person).mkdir(parents=True)
        for name in files:
            shutil.copy(data / f"identities/facerecognition-{person}/{name}", folder / person / name)
    collection = Collection(tmp_path / "c", analyzer, min_quality=0)
    collection.scan(folder)
    collection.cluster()
    first = {c.id: set(c.face_ids) for c in collection.clusters()}
    assert len(first) == 2
    a, b = sorted(first)
    collection.merge(a, b)
    after = {c.id: set(c.face_ids) for c in collection.clusters()}
    assert len(after) == 1 and next(iter(after.values())) == first[a] | first[b]
    gone = ({a, b} - set(after)).pop()
    with pytest.raises(ClusterNotFound):
        collection.name(gone, "stale")  # the merged-away id now names nothing
    (folder / "lennon").mkdir()  # a new person arrives: a new id, not the freed one
    shutil.copy(data / "identities/openface-john_lennon/01.jpg", folder / "lennon" / "01.jpg")
    shutil.copy(data / "identities/openface-john_lennon/03.jpg", folder / "lennon" / "03.jpg")
    collection.scan(folder)
    collection.cluster()
    ids = {c.id for c in collection.clusters()}
    assert gone not in ids and set(after) <= ids
    with pytest.raises(ConfigError, match="control character"):  # 15: cluster names follow the gallery's rules
        collection.name(next(iter(after)), "evil\u202ename")
    collection.close()


# -- 7: two imports at once ---------------------------------------------------------------------------
_IMPORT = """
import sys
from facelens.gallery import Gallery
report = Gallery(sys.argv[1]).import_folder(sys.argv[2])
print(sum(r["status"] == "enrolled" for r in report), [r["error"] for r in report if r["status"] == "error"])
"""


def test_two_imports_at_once_leave_no_duplicates(tmp_path, data):
    folder = tmp_path / "photos"
    for person, files in (("obama", ["01.jpg", "02.jpg", "08.jpg", "03.jpg"]), ("biden", ["01.jpg", "02.jpg"]),
                          ("lennon", ["01.jpg", "03.jpg"])):
        (folder / person).mkdir(parents=True)
        source = data / "identities" / {"lennon": "openface-john_lennon"}.get(person, f"facerecognition-{person}")
        for name in files:
            shutil.copy(source / name, folder / person / name)
    target = tmp_path / "g"
    procs = [subprocess.Popen([sys.executable, "-c", _IMPORT, str(target), str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    with sqlite3.connect(target / "gallery.sqlite") as conn:
        rows = conn.execute("SELECT p.name, f.image_sha256 FROM faces f JOIN people p ON p.id=f.person_id").fetchall()
    assert len(rows) == len(set(rows)) == 6  # 8 files, 2 of them copies of another of the same person
    assert sum(int(out.split()[0]) for out, _ in outputs) == 6


# -- 8: add_faces by id, resolved inside the transaction ----------------------------------------------
def test_add_faces_resolves_the_person_inside_the_transaction(copy, photos, analyzer, monkeypatch):
    folder = copy()
    gallery = Gallery(folder, analyzer)
    biden = gallery.person("biden").id
    real_prepare = Gallery._prepare

    def then(action):
        def prepare(self, *args, **kwargs):
            prepared = real_prepare(self, *args, **kwargs)
            action()  # between the (slow) analysis and the write: another process acts
            return prepared
        return prepare

    opened = f"from facelens.gallery import Gallery; g = Gallery({str(folder)!r})"
    rename = [sys.executable, "-c", f"{opened}; g.rename('biden', 'Joe')"]
    monkeypatch.setattr(Gallery, "_prepare", then(lambda: subprocess.run(rename, check=True)))
    ids = gallery.add_faces(biden, photos["biden"][1:])
    assert gallery.person("Joe").faces == 2 and gallery.person("Joe").id == biden and len(ids) == 1
    forget = [sys.executable, "-c", f"{opened}; g.forget({biden})"]
    monkeypatch.setattr(Gallery, "_prepare", then(lambda: subprocess.run(forget, check=True)))
    with pytest.raises(GalleryNotFound):
        gallery.add_faces(biden, photos["clapton"])
    monkeypatch.undo()
    assert "Joe" not in _summary(gallery) and _summary(gallery) == {"obama": 2, "lennon": 1}  # forget wins
    with pytest.raises(GalleryNotFound):
        gallery.add_faces(2**63, photos["clapton"])
    gallery.close()


# -- 12: duplicates ------------------------------------------------------------------------------------
def test_the_same_image_is_not_enrolled_twice(copy, photos, data, analyzer):
    import cv2

    gallery = Gallery(copy(), analyzer)
    with pytest.raises(DuplicateFace, match="already enrolled for 'obama'") as same:
        gallery.enroll("obama", photos["obama"][:1])
    assert same.value.same_person
    copy_of_obama = data / "identities/facerecognition-obama/08.jpg"  # byte-identical to 01.jpg
    with pytest.raises(DuplicateFace, match=r"under another person, 'obama' \(person \d+, face \d+\)") as other:
        gallery.enroll("impostor", [copy_of_obama])
    assert not other.value.same_person and other.value.person == "obama"
    assert "impostor" not in _summary(gallery)
    assert gallery.enroll("impostor", [copy_of_obama], allow_duplicate=True)  # deliberately
    pixels = cv2.imread(str(photos["clapton"][0]))
    gallery.enroll("clapton", [pixels])
    with pytest.raises(DuplicateFace):
        gallery.add_faces(gallery.person("clapton").id, [pixels.copy()])
    report = gallery.import_folder(_folder_of(photos, gallery.path.parent))
    assert {r["status"] for r in report} == {"already enrolled"}
    gallery.close()


def _folder_of(photos, root):
    folder = root / "again"
    (folder / "obama").mkdir(parents=True, exist_ok=True)
    for path in photos["obama"]:
        shutil.copy(path, folder / "obama" / path.name)
    return folder


# -- 13: damaged databases -------------------------------------------------------------------------
def _assert_sealed(folder, photos, analyzer):
    gallery = Gallery(folder, analyzer)
    with pytest.raises(GalleryCorrupt, match=r"not a usable gallery database.*facelens gallery check"):
        gallery.people()
    for write in (lambda: gallery.enroll("new", photos["clapton"]), lambda: gallery.forget("obama"),
                  lambda: gallery.create_person("x"), lambda: gallery.export(folder.parent / "e.jsonl"),
                  lambda: gallery.identify(photos["obama"][1]), lambda: gallery.index_info()):
        with pytest.raises(GalleryCorrupt, match="gallery repair"):
            write()
    return gallery


def test_zero_byte_gallery_is_reported_not_recreated(copy, photos, analyzer):
    folder = copy()
    db = folder / "gallery.sqlite"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(b"")
    gallery = _assert_sealed(folder, photos, analyzer)
    assert db.stat().st_size == 0  # not silently re-created by a read (nor a write)
    assert gallery.check()["ok"] is False
    report = gallery.repair()
    assert report["recovered"] == {"people": 0, "faces": 0}
    assert Path(report["damaged_copy"]).exists() and Path(report["damaged_copy"]).stat().st_size == 0
    assert gallery.people() == [] and gallery.enroll("clapton", photos["clapton"])
    assert gallery.check()["ok"]


def test_garbage_pages_in_the_middle_then_check_and_repair(copy, photos, analyzer):
    folder = copy()
    gallery = Gallery(folder, analyzer)
    gallery.enroll("clapton", photos["clapton"])
    gallery.enroll("more", photos["lennon"][1:])
    before = _summary(gallery)
    gallery.close()
    db = folder / "gallery.sqlite"
    raw = bytearray(db.read_bytes())
    pages = len(raw) // 16384
    assert pages >= 6
    rng = np.random.default_rng(0)
    raw[3 * 16384: 5 * 16384] = rng.integers(0, 256, 2 * 16384, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(raw))
    gallery = _assert_sealed(folder, photos, analyzer)
    checked = gallery.check()
    assert checked["ok"] is False and checked["integrity"] != ["ok"]
    report = gallery.repair()
    recovered, lost = report["recovered"], report["lost"]
    print("\nrepair after garbage pages:", report)
    # the two garbage pages held rows: some are lost, every face is accounted for; faces whose person row
    # was lost are kept under a placeholder name (visible, renamable, erasable)
    assert lost["people"] + lost["faces"] >= 1
    assert recovered["faces"] + lost["faces"] == sum(before.values())
    assert len(gallery.people()) == recovered["people"] + report["placeholder_people"] >= 1
    assert Path(report["damaged_copy"]).read_bytes() == bytes(raw)
    assert gallery.check()["ok"]
    for name in gallery.people():  # everyone left can be erased, and the gallery takes writes again
        gallery.forget(name.id)
    assert gallery.people() == [] and gallery.enroll("clapton", photos["clapton"])


def test_overwritten_header_is_repaired_without_loss(copy, photos, analyzer):
    folder = copy()
    before = _summary(Gallery(folder, analyzer))
    db = folder / "gallery.sqlite"
    raw = bytearray(db.read_bytes())
    raw[:100] = b"\xde\xad\xbe\xef" * 25
    db.write_bytes(bytes(raw))
    gallery = _assert_sealed(folder, photos, analyzer)
    report = gallery.repair()
    assert report["lost"] == {"people": 0, "faces": 0} and _summary(gallery) == before
    assert max(gallery.identify(photos["obama"][1]), key=lambda r: r.face.area).identity == "obama"


# -- 14: reads never create a gallery ---------------------------------------------------------------
def test_reads_on_a_gallery_that_does_not_exist(tmp_path, photos, analyzer):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (tmp_path / "missing", a_file, empty):
        gallery = Gallery(path, analyzer)
        reads = [gallery.people, lambda g=gallery: g.identify(photos["obama"][0]), lambda g=gallery: g.person("x"),
                 lambda g=gallery: g.faces("x"), lambda g=gallery: g.export(tmp_path / "e.jsonl"),
                 gallery.index_info, lambda g=gallery: g.thumbnail(1), lambda g=gallery: g.search(np.ones(512), 1)]
        for read in reads:
            with pytest.raises(GalleryError, match=r"no gallery at|not a directory"):
                read()
    assert not (tmp_path / "missing").exists() and not (empty / "gallery.sqlite").exists()
    with pytest.raises(GalleryMissing, match="enroll someone first"):
        Gallery(empty, analyzer).people()
    created = Gallery(tmp_path / "missing", analyzer)
    created.create_person("x")  # writes still create it
    assert _summary(created) == {"x": 0}


# -- 15: names ---------------------------------------------------------------------------------------
def test_name_rules_everywhere_a_name_enters(copy, photos, analyzer):
    gallery = Gallery(copy(), analyzer)
    bad = ["a\x1bb", "nul\x00", "rtl\u202eevil", "lrm\u200e", "isolate\u2066x", "arabic\u061cmark", "tab\tname",
           "new\nline", "", "   ", "x" * 201]
    for name in bad:
        for attempt in (lambda n=name: gallery.create_person(n), lambda n=name: gallery.rename("obama", n),
                        lambda n=name: gallery.enroll(n, photos["clapton"])):
            with pytest.raises(ConfigError):
                attempt()
    for name in ("Zoë Ünal", "李小龙", "José-María O'Neil", "x" * 200):
        assert gallery.create_person(f"  {name}  ").name == name
    assert _summary(gallery)["obama"] == 2


# -- 16: a read-only gallery -------------------------------------------------------------------------
_READER = """
import json, sys
import numpy as np
from facelens.gallery import Gallery, GalleryError
g = Gallery(sys.argv[1])
vector = np.frombuffer(bytes.fromhex(sys.argv[2]), np.float32)
out = {"people": {p.name: p.faces for p in g.people()}, "top": g.search(vector, 1)[0].person,
       "faces": len(g.faces("obama")), "exported": g.export(sys.argv[3])}
try:
    g.create_person("intruder")
except GalleryError as exc:
    out["write"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_a_read_only_gallery_answers_reads_and_refuses_writes(copy, photos, analyzer, tmp_path):
    """As root, permissions are checked for real by running the reader as `nobody` (setpriv) on a gallery
    that nobody owns but cannot write; the identify path is checked in-process on an immutable copy."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to hand the files to another user) and setpriv")
    folder = copy()
    gallery = Gallery(folder, analyzer)
    probe = gallery.store.embeddings()[2][0]
    expected = _summary(gallery)
    gallery.close()
    share = Path(os.environ.get("TMPDIR", "/tmp")) / f"ro-gallery-{os.getpid()}"
    shutil.rmtree(share, ignore_errors=True)
    share.mkdir()
    try:
        os.chmod(share, 0o755)
        ro = share / "g"
        shutil.copytree(folder, ro)
        out = share / "out"
        out.mkdir()
        for path in [out, ro, *ro.rglob("*")]:
            os.chown(path, 65534, 65534)
        for path in [*ro.rglob("*"), ro]:
            os.chmod(path, 0o500 if path.is_dir() else 0o400)
        env = {"PATH": os.environ["PATH"], "HOME": str(out), "PYTHONPATH": str(REPO / "src"),
               "FACELENS_HOME": str(out)}
        script = out / "reader.py"
        script.write_text(_READER)
        os.chown(script, 65534, 65534)
        python = sys.executable  # the venv's: its site-packages come with it (setpriv drops every capability)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script),
                               str(ro), probe.tobytes().hex(), str(out / "export.jsonl")],
                              capture_output=True, text=True, env=env, timeout=120, cwd=out)
        if "Permission denied" in proc.stderr and "site-packages" in proc.stderr + proc.stdout:
            pytest.skip("the virtual environment is not readable by another user")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["people"] == expected and result["top"] == "obama" and result["faces"] == 2
        assert result["exported"] == 4
        assert result["write"].startswith("GalleryReadOnly") and "read-only" in result["write"]
        assert "not a usable" not in result["write"]
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(share)], check=False)
        shutil.rmtree(share, ignore_errors=True)
    # identify (models and all) on a copy root cannot write either: immutable files in an immutable folder
    frozen = copy("frozen")
    files = [frozen, *frozen.iterdir()]
    if subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True).returncode != 0:
        return  # no immutable flag on this filesystem: the setpriv run above is the check
    try:
        reader = Gallery(frozen, analyzer)
        assert max(reader.identify(photos["obama"][1]), key=lambda r: r.face.area).identity == "obama"
        assert _summary(reader) == expected
        with pytest.raises(GalleryReadOnly, match="read-only"):
            reader.enroll("clapton", photos["clapton"])
        reader.close()
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], check=True)


# -- 17, 6, 19: limits, disk full, export errors, rename ---------------------------------------------
def test_limits_disk_full_export_errors_and_renames(copy, photos, analyzer, tmp_path):
    folder = copy()
    gallery = Gallery(folder, analyzer)
    for call in (lambda: gallery.remove_face(2**63), lambda: gallery.thumbnail(2**63),
                 lambda: gallery.person(2**63), lambda: gallery.remove_face(-1)):
        with pytest.raises(GalleryNotFound):
            call()
    big = {"notes": "x" * (64 * 1024)}
    for call in (lambda: gallery.create_person("big", big), lambda: gallery.set_metadata("obama", big),
                 lambda: gallery.enroll("big", photos["clapton"], metadata=big)):
        with pytest.raises(ConfigError, match="64 KiB"):
            call()
    assert gallery.set_metadata("obama", {"notes": "x" * 60_000}).metadata["notes"] == "x" * 60_000
    # disk full: the file may not grow by a page; the write fails cleanly and nothing is lost
    before = _summary(gallery)
    conn = gallery.store.connect()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(GalleryError, match="disk full"):
        gallery.create_person("filler", {"notes": "y" * 60_000})
    assert _summary(gallery) == before and not conn.in_transaction
    conn.execute("PRAGMA max_page_count=1073741823")
    assert gallery.create_person("filler", {"notes": "y" * 60_000}).name == "filler"
    # export: to a directory, to a folder that does not exist; nothing half-written left behind
    with pytest.raises(GalleryError, match="is a directory"):
        gallery.export(tmp_path)
    with pytest.raises(GalleryError, match="cannot write the export"):
        gallery.export(tmp_path / "no" / "such" / "dir" / "e.jsonl")
    assert not list(tmp_path.glob("*.tmp"))
    # renames: to the same name is a no-op, a change of case works, a taken name is refused
    gallery.rename("obama", "obama")
    gallery.rename("obama", "Obama")
    with pytest.raises(GalleryError, match="already exists; merge instead"):
        gallery.rename("Obama", "biden")
    # pagination
    names = [p.name for p in gallery.people()]
    assert [p.name for p in gallery.people(limit=2)] + [p.name for p in gallery.people(limit=2, offset=2)] == names
    by_id = gallery.people(limit=2, after_id=0)
    rest = gallery.people(after_id=by_id[-1].id)
    assert sorted(p.name for p in by_id + rest) == sorted(names) and len(by_id) == 2
    gallery.close()


# -- 21: private files ------------------------------------------------------------------------------
def test_files_are_created_private_whatever_the_umask(tmp_path, photos, analyzer):
    from facelens.cluster import Collection
    from facelens.service.keys import KeyStore

    old = os.umask(0)
    try:
        gallery = Gallery(tmp_path / "new" / "g", analyzer)
        gallery.enroll("obama", photos["obama"][:1])
        gallery.enroll("x", photos["clapton"])
        gallery.forget("x")
        gallery.search(gallery.store.embeddings()[2][0], 1)
        gallery.close()
        gallery = Gallery(tmp_path / "new" / "g", analyzer)
        gallery.people()  # a reader leaves -wal/-shm behind until it closes: check them too
        keys = KeyStore(tmp_path / "keys" / "keys.sqlite")
        keys.create("ci", "read")
        collection = Collection(tmp_path / "collection", analyzer)
        collection.connect()
        paths = [*(tmp_path / "new" / "g").rglob("*"), tmp_path / "new" / "g", tmp_path / "new",
                 *(tmp_path / "keys").rglob("*"), tmp_path / "keys", *(tmp_path / "collection").rglob("*")]
        modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in paths}
        assert any(name.endswith("-wal") for name in modes) and any("index" in name for name in modes)
        assert any("receipts" in name for name in modes)
        assert all(mode == ("0o700" if (tmp_path / name).is_dir() else "0o600") for name, mode in modes.items()), modes
        gallery.close()
        keys.close()
        collection.close()
    finally:
        os.umask(old)
