"""The REST API with the real models and a real gallery on disk (FastAPI's TestClient, in-process),
plus a real uvicorn server for concurrency and graceful shutdown."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from facelens.service.app import ServiceConfig, create_app
from facelens.service.keys import KeyStore

from .test_cli import run


def jpeg(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "image/jpeg")


@pytest.fixture(scope="module")
def env(tmp_path_factory, data):
    """A service over a fresh gallery, with one key per scope and a revoked one."""
    root = tmp_path_factory.mktemp("service")
    photos = root / "photos"
    for person in ("facerecognition-obama", "facerecognition-biden"):
        (photos / "set" / person).mkdir(parents=True)
        for src in sorted((data / "identities" / person).glob("*.jpg"))[:3]:
            (photos / "set" / person / src.name).write_bytes(src.read_bytes())
    keys = KeyStore(root / "keys.sqlite")
    tokens = {scope: keys.create(f"test-{scope}", scope)[1] for scope in ("read", "enroll", "admin")}
    revoked, tokens["revoked"] = keys.create("old", "admin")
    keys.revoke(revoked.id)
    keys.close()
    config = ServiceConfig(gallery=root / "gallery", keys=root / "keys.sqlite", collection=root / "collection",
                           photos_root=photos, max_upload_mb=2.0)
    with TestClient(create_app(config)) as client:
        yield client, {k: {"X-API-Key": v} for k, v in tokens.items()}, root


def test_health_needs_no_key_and_everything_else_does(env):
    client, keys, _ = env
    assert client.get("/healthz").json() == {"status": "ok", "profile": "default"}
    assert client.get("/readyz").status_code == 200
    for path in ("/v1/gallery/people", "/metrics", "/v1/clusters"):
        r = client.get(path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/gallery/people", headers=keys["revoked"]).status_code == 401
    assert client.get("/v1/gallery/people", headers={"X-API-Key": "fl_nope_nope"}).status_code == 401
    bearer = {"Authorization": "Bearer " + keys["read"]["X-API-Key"]}
    assert client.get("/v1/gallery/people", headers=bearer).status_code == 200
    r = client.post("/v1/gallery/people", headers=keys["read"], json={"name": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_detect_multipart_and_base64_and_bad_input(env, data):
    client, keys, _ = env
    photo = data / "groups/insightface__t1.jpg"
    a = client.post("/v1/detect", headers=keys["read"], files={"image": jpeg(photo)}).json()
    b = client.post("/v1/detect", headers=keys["read"],
                    json={"image": base64.b64encode(photo.read_bytes()).decode()}).json()
    assert len(a["faces"]) == 6 and a == b
    cases = [
        ({"files": {"image": ("x.jpg", b"not an image", "image/jpeg")}}, 400, "bad_image"),
        ({"files": {"image": ("x.jpg", b"", "image/jpeg")}}, 400, "bad_image"),
        ({"files": {"other": jpeg(photo)}}, 422, "invalid_request"),
        ({"json": {"image": "%%%"}}, 422, "invalid_request"),
        ({"json": ["image"]}, 422, "invalid_request"),
        ({"content": b"{broken", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"raw", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"files": {"image": ("big.jpg", b"\xff" * (3 * 1024 * 1024), "image/jpeg")}}, 413, "payload_too_large"),
    ]
    for kwargs, status, code in cases:
        headers = {**keys["read"], **kwargs.pop("headers", {})}
        r = client.post("/v1/detect", headers=headers, **kwargs)
        assert r.status_code == status and r.json()["error"]["code"] == code, (kwargs.keys(), r.text)
    corrupt = next((data / "corrupt").iterdir())
    r = client.post("/v1/detect", headers=keys["read"], files={"image": jpeg(corrupt)})
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = client.post("/v1/identify?top_k=0", headers=keys["read"], files={"image": jpeg(photo)})
    assert r.status_code == 422 and "top_k" in r.json()["error"]["message"]


def test_gallery_crud_identify_and_forget(env, data):
    client, keys, _ = env
    enroll, admin, read = keys["enroll"], keys["admin"], keys["read"]
    ids = {}
    for name in ("obama", "biden"):
        r = client.post("/v1/gallery/people", headers=enroll, json={"name": name, "metadata": {"team": "a"}})
        assert r.status_code == 201
        ids[name] = r.json()["id"]
        photo = sorted((data / "identities" / f"facerecognition-{name}").glob("*.jpg"))[0]
        r = client.post(f"/v1/gallery/people/{ids[name]}/faces", headers=enroll, files={"image": jpeg(photo)})
        assert r.status_code == 201 and len(r.json()["face_ids"]) == 1
    assert client.post("/v1/gallery/people", headers=enroll, json={"name": "obama"}).status_code == 409
    nonface = next((data / "nonface").iterdir())
    r = client.post(f"/v1/gallery/people/{ids['obama']}/faces", headers=enroll, files={"image": jpeg(nonface)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
    group = data / "groups/CompreFace__010_2.jpg"
    r = client.post(f"/v1/gallery/people/{ids['obama']}/faces", headers=enroll, files={"image": jpeg(group)})
    assert r.status_code == 409 and "faces found" in r.json()["error"]["message"]

    r = client.patch(f"/v1/gallery/people/{ids['biden']}", headers=enroll,
                     json={"name": "joe biden", "metadata": {"role": "vp"}})
    assert r.status_code == 200 and r.json()["name"] == "joe biden" and r.json()["metadata"] == {"role": "vp"}
    person = client.get(f"/v1/gallery/people/{ids['obama']}", headers=read).json()
    assert person["faces"][0]["face_id"] == person["face_ids"][0]
    # a read key (identify clients) sees names and ids but no face: no thumbnail URL, and the thumbnail
    # route refuses it; a key with the faces scope gets URLs whose token cannot be guessed from the id
    assert "thumbnails" not in person and "thumbnail" not in person["faces"][0]
    face_id = person["face_ids"][0]
    assert client.get(f"/v1/gallery/faces/{face_id}/thumbnail", headers=read).status_code == 403
    shown = client.get(f"/v1/gallery/people/{ids['obama']}", headers=enroll).json()
    url = shown["thumbnails"][0]
    assert url == shown["faces"][0]["thumbnail"] and url.startswith(f"/v1/gallery/faces/{face_id}/thumbnail?token=")
    thumb = client.get(url, headers=enroll)
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert client.get(f"/v1/gallery/faces/{face_id}/thumbnail", headers=enroll).status_code == 404
    assert client.get(url.replace(f"/faces/{face_id}/", f"/faces/{face_id + 1}/"), headers=enroll).status_code == 404

    probe = sorted((data / "identities/facerecognition-obama").glob("*.jpg"))[1]
    faces = client.post("/v1/identify", headers=read, files={"image": jpeg(probe)}).json()["faces"]
    assert [f["identity"] for f in faces] == ["obama"]

    # forget: gone from identification, from the listing, and its bytes gone from the gallery's files
    embedding_probe = client.get(f"/v1/gallery/people/{ids['obama']}/faces", headers=read).json()["faces"]
    assert len(embedding_probe) == 1
    assert client.post(f"/v1/gallery/people/{ids['obama']}/forget", headers=enroll).status_code == 403
    receipt = client.post(f"/v1/gallery/people/{ids['obama']}/forget", headers=admin).json()
    assert receipt["faces_removed"] == 1
    faces = client.post("/v1/identify", headers=read, files={"image": jpeg(probe)}).json()["faces"]
    assert [f["identity"] for f in faces] == ["unknown"]
    names = [p["name"] for p in client.get("/v1/gallery/people", headers=read).json()["people"]]
    assert names == ["joe biden"]
    assert client.get(f"/v1/gallery/people/{ids['obama']}", headers=read).status_code == 404
    assert client.delete(f"/v1/gallery/people/{ids['obama']}", headers=admin).status_code == 404

    # a face removed by id; someone else's face id is a 404, not a deletion
    biden_face = client.get(f"/v1/gallery/people/{ids['biden']}", headers=read).json()["face_ids"][0]
    assert client.delete(f"/v1/gallery/people/{ids['biden']}/faces/{biden_face + 1000}",
                         headers=admin).status_code == 404
    assert client.delete(f"/v1/gallery/people/{ids['biden']}/faces/{biden_face}", headers=admin).status_code == 200
    assert client.get(f"/v1/gallery/people/{ids['biden']}", headers=read).json()["face_ids"] == []


def test_verify_and_analyze(env, data):
    client, keys, _ = env
    a, b = sorted((data / "identities/facerecognition-obama").glob("*.jpg"))[:2]
    other = sorted((data / "identities/facerecognition-biden").glob("*.jpg"))[0]
    same = client.post("/v1/verify", headers=keys["read"], files={"image_a": jpeg(a), "image_b": jpeg(b)}).json()
    diff = client.post("/v1/verify?far=0.0001", headers=keys["read"],
                       files={"image_a": jpeg(a), "image_b": jpeg(other)}).json()
    assert same["same"] is True and diff["same"] is False and diff["far"] == 0.0001
    # every rate in (0, 1) has a threshold now (measured, or from the fitted tail); outside it is refused
    assert client.post("/v1/verify?far=0.5", headers=keys["read"],
                       files={"image_a": jpeg(a), "image_b": jpeg(b)}).status_code == 200
    assert client.post("/v1/verify?far=1.5", headers=keys["read"],
                       files={"image_a": jpeg(a), "image_b": jpeg(b)}).status_code == 422
    r = client.post("/v1/analyze", headers=keys["read"], files={"image": jpeg(data / "expressions/happy_happy.jpg")})
    attrs = r.json()["faces"][0]["attributes"]
    assert attrs["expression"]["label"] == "happy" and {"pose", "quality", "age_gender"} <= set(attrs)
    r = client.post("/v1/analyze?attributes=aura", headers=keys["read"], files={"image": jpeg(a)})
    assert r.status_code == 400 and "aura" in r.json()["error"]["message"]
    # a dataset-style face crop: with crops=true the whole image is the one face, never "no face"
    crop = sorted((data.parent / "fer2013/PublicTest/happy").iterdir())[0]
    r = client.post("/v1/analyze?attributes=expression&crops=true", headers=keys["read"], files={"image": jpeg(crop)})
    faces = r.json()["faces"]
    assert r.status_code == 200 and len(faces) == 1 and faces[0]["bbox"] == [0, 0, 48, 48]
    assert faces[0]["attributes"]["expression"]["label"] in {"happy", "angry", "disgust", "fear", "sad", "surprise",
                                                             "neutral"}


def test_cluster_job_and_corrections(env):
    client, keys, _ = env
    assert client.post("/v1/cluster", headers=keys["enroll"], json={"root": "set"}).status_code == 403
    assert client.post("/v1/cluster", headers=keys["admin"], json={"root": "../.."}).status_code == 404
    job = client.post("/v1/cluster", headers=keys["admin"], json={"root": "set"})
    assert job.status_code == 202
    for _ in range(300):
        state = client.get(f"/v1/cluster/jobs/{job.json()['id']}", headers=keys["read"]).json()
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert state["status"] == "done" and state["progress"]["done"] == 6, state
    clusters = client.get("/v1/clusters", headers=keys["read"]).json()["clusters"]
    assert all("images" not in c and "thumbnails" not in c for c in clusters)  # server paths, faces: not for read
    clusters = client.get("/v1/clusters", headers=keys["enroll"]).json()["clusters"]
    total = sum(c["faces"] for c in clusters)
    assert len(clusters) == 2 and total >= 5 and all(c["faces"] >= 2 for c in clusters)  # two people
    face = clusters[0]["face_ids"][0]
    assert client.get(f"/v1/clusters/faces/{face}/thumbnail", headers=keys["read"]).status_code == 403
    thumb = client.get(clusters[0]["thumbnails"][0], headers=keys["enroll"])
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    pair = {"a": clusters[0]["id"], "b": clusters[1]["id"]}
    merged = client.post("/v1/clusters/merge", headers=keys["enroll"], json=pair).json()["clusters"]
    assert [c["faces"] for c in merged] == [total]
    split = client.post("/v1/clusters/split", headers=keys["enroll"], json={"face_id": face}).json()["clusters"]
    assert face not in [f for c in split for f in c["face_ids"]], split
    named = client.post("/v1/clusters/name", headers=keys["enroll"], json={"cluster": 0, "name": "pair"})
    assert [c["name"] for c in named.json()["clusters"]] == ["pair"]
    assert client.post("/v1/clusters/merge", headers=keys["enroll"], json={"a": 0, "b": 99}).status_code == 404
    assert client.get("/v1/cluster/jobs/nope", headers=keys["read"]).status_code == 404


def test_metrics_and_page(env):
    client, keys, root = env
    used = {k.name: k.last_used for k in KeyStore(root / "keys.sqlite").list()}
    assert used["test-read"] is not None and used["old"] is None  # a revoked key never counts as used
    text = client.get("/metrics", headers=keys["read"]).text
    assert 'facelens_http_requests_total{method="POST",path="/v1/detect",status="200"}' in text
    assert "facelens_http_request_seconds_bucket" in text and "facelens_enrolled_faces_total" in text
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/nothing.js").status_code == 404
    spec = client.get("/openapi.json").json()
    assert "/v1/identify" in spec["paths"] and "/v1/gallery/people/{person_id}/forget" in spec["paths"]


def test_keys_cli(tmp_path):
    keys = tmp_path / "keys.sqlite"
    made = json.loads(run("keys", "create", "ci", "--scope", "enroll", "--keys", keys, "--json").stdout)
    assert made["token"].startswith("fl_") and made["scope"] == "enroll"
    listed = json.loads(run("keys", "list", "--keys", keys, "--json").stdout)
    assert [k["id"] for k in listed] == [made["id"]] and "token" not in listed[0]
    assert made["token"].split("_", 2)[2] not in keys.read_bytes().decode("latin-1")  # stored hashed only
    assert run("keys", "revoke", made["id"], "--keys", keys).returncode == 0
    again = run("keys", "revoke", made["id"], "--keys", keys)
    assert again.returncode == 2 and "already revoked" in again.stderr
    bad = run("keys", "create", "x", "--scope", "root", "--keys", keys)
    assert bad.returncode == 2 and "unknown scope" in bad.stderr


# -- a real server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`facelens serve` in a subprocess on a free port, with an admin key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        keys = KeyStore(root / "keys.sqlite")
        self.token = keys.create("admin", "admin")[1]
        keys.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facelens", "serve", "--port", str(self.port), "--gallery", str(root / "gallery"),
             "--keys", str(root / "keys.sqlite"), "--collection", str(root / "collection")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            time.sleep(0.3)
        raise RuntimeError("server did not become ready")

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.token}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()


def test_concurrent_enrolls_and_identifies_lose_nothing(server, data):
    photos = sorted((data / "identities").glob("*/*.jpg"))[:24]
    probe = (data / "groups/insightface__t1.jpg").read_bytes()
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client:
        person = client.post("/v1/gallery/people", json={"name": "many"}).json()["id"]
    enrolled, errors = [], []

    def enroll_worker(chunk: list[Path]) -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client:
            for p in chunk:
                r = client.post(f"/v1/gallery/people/{person}/faces?largest=true", files={"image": jpeg(p)})
                (enrolled if r.status_code == 201 else errors).append((p.name, r.status_code, r.text))

    def identify_worker() -> None:
        with httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client:
            for _ in range(8):
                r = client.post("/v1/identify", files={"image": ("t1.jpg", probe, "image/jpeg")})
                if r.status_code != 200 or len(r.json()["faces"]) != 6:
                    errors.append(("identify", r.status_code, r.text))

    threads = [threading.Thread(target=enroll_worker, args=(photos[i::2],)) for i in range(2)]
    threads += [threading.Thread(target=identify_worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    quality_refusals = [e for e in errors if e[1] == 422]
    assert not [e for e in errors if e[1] != 422], errors
    with httpx.Client(base_url=server.url, headers=server.headers) as client:
        stored = client.get(f"/v1/gallery/people/{person}").json()["face_ids"]
    assert len(stored) == len(enrolled) == len(photos) - len(quality_refusals)


def test_graceful_shutdown_finishes_inflight_enrollments(server, data):
    # distinct photos: the fixtures hold byte-identical copies, which enrollment now refuses as duplicates
    by_content = {p.read_bytes(): p for p in sorted((data / "identities/facerecognition-obama").glob("*.jpg"))}
    photos = sorted(by_content.values())[:8]
    assert len(photos) == 8
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
        person = client.post("/v1/gallery/people", json={"name": "obama"}).json()["id"]
    # clients and payloads made up front, so the requests leave together when the barrier opens
    clients = [httpx.Client(base_url=server.url, headers=server.headers, timeout=60) for _ in photos]
    payloads = [jpeg(p) for p in photos]
    barrier = threading.Barrier(len(photos) + 1)
    done: list[tuple[float, object, list[int]]] = []

    def enroll(client: httpx.Client, payload: tuple) -> None:
        barrier.wait()
        try:
            r = client.post(f"/v1/gallery/people/{person}/faces", files={"image": payload})
            done.append((time.time(), r.status_code, r.json().get("face_ids", [])))
        except httpx.ConnectError:  # arrived after the listening socket closed: refused, never half-done
            done.append((time.time(), "refused", []))

    threads = [threading.Thread(target=enroll, args=(c, p)) for c, p in zip(clients, payloads, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.2)  # ~8 enrollments of ~90 ms on 2 workers: some done, the rest in flight
    signalled = time.time()
    # uvicorn drains, then re-raises the SIGTERM it caught, so the exit status is "terminated"
    assert server.stop() in (0, -signal.SIGTERM)
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    print("after SIGTERM:", [(round(at - signalled, 2), status) for at, status, _ in sorted(done)])
    assert len(done) == len(photos) and all(status in (201, "refused") for _, status, _ in done), done
    assert any(at > signalled and status == 201 for at, status, _ in done), done  # drained, not dropped
    from facelens.gallery import Gallery

    gallery = Gallery(server.root / "gallery")
    stored = sorted(f["face_id"] for f in gallery.faces("obama"))
    assert stored == sorted(i for _, _, ids in done for i in ids)  # every 201 is on disk, nothing else
    gallery.close()


def test_liveness_sessions_single_use_expiry_and_signed_verdicts(env, data):
    """A session's challenge is drawn by the server; its clip is checked once; the verdict's token verifies
    and any edit of it does not; an expired session is refused."""
    client, keys, _ = env
    read = keys["read"]
    videos = data.parent / "liveness" / "videos"
    opened = client.post("/v1/liveness/sessions", headers=read)
    assert opened.status_code == 201
    session = opened.json()
    assert 2 <= len(session["actions"]) <= 4 and session["expires_at"] > time.time()
    # the live clip only blinks: set this session's challenge to what it shows (the draw is tested elsewhere)
    client.app.state.service.liveness_sessions._open[session["session_id"]]["actions"] = ["blink", "blink"]
    clip = next(videos.glob("live_*.mp4")).read_bytes()
    url = f"/v1/liveness/sessions/{session['session_id']}/video"
    r = client.post(url, headers=read, files={"video": ("clip.mp4", clip, "video/mp4")})
    assert r.status_code == 200, r.text
    verdict = r.json()
    assert verdict["passed"] is True and verdict["actions"] == ["blink", "blink"]
    again = client.post(url, headers=read, files={"video": ("clip.mp4", clip, "video/mp4")})
    assert again.status_code == 404  # a nonce is good once
    checked = client.post("/v1/liveness/verify", headers=read, json={"token": verdict["token"]}).json()
    assert checked["valid"] and checked["verdict"]["passed"] is True
    payload, signature = verdict["token"].split(".")
    import base64 as b64

    claims = json.loads(b64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["session_id"] = "0" * 32
    edited = b64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + signature
    r = client.post("/v1/liveness/verify", headers=read, json={"token": edited})
    assert r.status_code == 400 and r.json()["error"]["code"] == "forged_verdict"
    # the replayed clip fails whatever it is asked
    replay = client.post("/v1/liveness/sessions", headers=read).json()
    r = client.post(f"/v1/liveness/sessions/{replay['session_id']}/video", headers=read,
                    files={"video": ("clip.mp4", next(videos.glob("replay_*.mp4")).read_bytes(), "video/mp4")})
    assert r.status_code == 200 and r.json()["passed"] is False
    late = client.post("/v1/liveness/sessions", headers=read).json()
    client.app.state.service.liveness_sessions._open[late["session_id"]]["expires_at"] = time.time() - 1
    r = client.post(f"/v1/liveness/sessions/{late['session_id']}/video", headers=read,
                    files={"video": ("clip.mp4", clip, "video/mp4")})
    assert r.status_code == 410
    broken = client.post("/v1/liveness/sessions", headers=read).json()
    r = client.post(f"/v1/liveness/sessions/{broken['session_id']}/video", headers=read,
                    files={"video": ("clip.mp4", b"not a video", "video/mp4")})
    assert r.status_code == 400 and "video" in r.json()["error"]["message"]
    assert client.post("/v1/liveness/sessions").status_code == 401
