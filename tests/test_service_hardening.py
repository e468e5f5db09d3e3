"""The service under the attacks of issue 12: oversized and chunked bodies, analyzer-cache growth, scopes
for faces, stale ids, forget racing an enrollment, security headers, symlinks out of the photos root."""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from facelens.service.app import ServiceConfig, create_app
from facelens.service.deps import MAX_ANALYZERS
from facelens.service.keys import KeyStore

from .test_service import Server, jpeg

OBAMA = "identities/facerecognition-obama"


@pytest.fixture(scope="module")
def env(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("svc-hard")
    photos = root / "photos"
    (photos / "set" / "obama").mkdir(parents=True)
    for src in sorted((data / OBAMA).glob("0[3-5].jpg")):
        (photos / "set" / "obama" / src.name).write_bytes(src.read_bytes())
    outside = root / "outside"
    (outside / "biden").mkdir(parents=True)
    for src in sorted((data / "identities/facerecognition-biden").glob("*.jpg"))[:3]:
        (outside / "biden" / src.name).write_bytes(src.read_bytes())
    # a link inside the photos root that leads out of it: its photos must never be read or shown
    os.symlink(outside / "biden", photos / "set" / "escape")
    keys = KeyStore(root / "keys.sqlite")
    tokens = {scope: keys.create(f"t-{scope}", scope)[1] for scope in ("read", "faces", "enroll", "admin")}
    keys.close()
    config = ServiceConfig(gallery=root / "gallery", keys=root / "keys.sqlite", collection=root / "collection",
                           photos_root=photos, max_upload_mb=1.0)
    with TestClient(create_app(config)) as client:
        yield client, {k: {"X-API-Key": v} for k, v in tokens.items()}, root


# -- 11: security headers ------------------------------------------------------------------------------
def test_security_headers_on_pages_api_and_errors(env):
    client, keys, _ = env
    for path, headers in (("/", {}), ("/v1/gallery/people", keys["read"]), ("/v1/gallery/people", {}),
                          ("/static/app.js", {})):
        r = client.get(path, headers=headers)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/v1/gallery/people", headers=keys["read"]).headers["cache-control"] == "no-store"
    assert client.get("/v1/nope", headers=keys["read"]).headers["cache-control"] == "no-store"


# -- 6: body limits, metadata limits, pagination ----------------------------------------------------------
def test_chunked_and_oversized_bodies_are_refused(env, data):
    client, keys, _ = env

    def chunks(total: int, piece: bytes):
        sent = 0
        while sent < total:
            yield piece
            sent += len(piece)

    # no Content-Length (a generator body goes chunked): counted on the stream, 413 all the same
    r = client.post("/v1/detect", headers={**keys["read"], "Content-Type": "application/json"},
                    content=chunks(8 * 1024 * 1024, b"A" * 65536))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = client.post("/v1/gallery/people", headers={**keys["enroll"], "Content-Type": "application/json"},
                    content=chunks(8 * 1024 * 1024, b" " * 65536))
    assert r.status_code == 413
    # a chunked multipart upload: the parser is cut off at the limit too (413, not "malformed")
    head = (b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    r = client.post("/v1/detect", headers={**keys["read"], "Content-Type": "multipart/form-data; boundary=xx"},
                    content=itertools.chain([head], chunks(8 * 1024 * 1024, b"\xff" * 65536)))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    # declared too large: refused before reading
    r = client.post("/v1/detect", headers={**keys["read"], "Content-Length": str(10**9),
                                           "Content-Type": "application/json"}, content=b"{}")
    assert r.status_code == 413
    # JSON nested past any parser's patience, and metadata nested deeper than a record needs
    r = client.post("/v1/detect", headers={**keys["read"], "Content-Type": "application/json"},
                    content=b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    deep = json.loads('{"a":' * 300 + "1" + "}" * 300)
    r = client.post("/v1/gallery/people", headers=keys["enroll"], json={"name": "deep", "metadata": deep})
    assert r.status_code in (400, 422), r.text
    assert client.get("/v1/gallery/people", headers=keys["read"]).status_code == 200
    assert "deep" not in [p["name"] for p in client.get("/v1/gallery/people", headers=keys["read"]).json()["people"]]
    # a lone surrogate (valid JSON escape, invalid text) in metadata: refused, never stored
    for body in (b'{"name": "sur1", "metadata": {"a": "\\ud800"}}', b'{"name": "sur2", "metadata": {"\\udfff": 1}}'):
        r = client.post("/v1/gallery/people", headers={**keys["enroll"], "Content-Type": "application/json"},
                        content=body)
        assert r.status_code in (400, 422), r.text
    listed = client.get("/v1/gallery/people", headers=keys["read"])
    assert listed.status_code == 200 and not {"sur1", "sur2"} & {p["name"] for p in listed.json()["people"]}
    # metadata under the body limit but over the per-person limit
    r = client.post("/v1/gallery/people", headers=keys["enroll"],
                    json={"name": "big", "metadata": {"x": "y" * 100_000}})
    assert r.status_code == 400 and "metadata" in r.json()["error"]["message"]
    assert client.post("/v1/detect", headers=keys["read"], files={"image": jpeg(data / OBAMA / "03.jpg")}
                       ).status_code == 200


def test_people_are_listed_in_pages(env):
    client, keys, _ = env
    made = [client.post("/v1/gallery/people", headers=keys["enroll"], json={"name": f"page-{i}"}).json()["id"]
            for i in range(5)]
    seen, after = [], 0
    while True:
        page = client.get(f"/v1/gallery/people?limit=2&after={after}", headers=keys["read"]).json()
        assert len(page["people"]) <= 2
        seen += [p["id"] for p in page["people"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert set(made) <= set(seen) and seen == sorted(seen) and len(seen) == len(set(seen))
    assert client.get("/v1/gallery/people?limit=100000", headers=keys["read"]).status_code == 422
    for pid in made:
        client.delete(f"/v1/gallery/people/{pid}", headers=keys["admin"])


# -- 5: attribute lists cannot grow the server ----------------------------------------------------------
def test_attribute_orderings_and_subsets_share_bounded_analyzers(env, data):
    client, keys, _ = env
    service = client.app.state.service
    names = ["landmarks", "pose", "quality", "expression", "age-gender"]
    image = jpeg(data / OBAMA / "03.jpg")
    lists = [",".join(p) for p in itertools.permutations(names, 3)][:40]
    for attrs in lists:
        r = client.post(f"/v1/analyze?attributes={attrs}", headers=keys["read"], files={"image": image})
        assert r.status_code == 200, r.text
    assert len(service._attribute_analyzers) <= MAX_ANALYZERS
    assert len(service._attribute_parts) <= len(names)  # one model object per attribute, shared
    same = service.attribute_analyzer(("pose", "landmarks", "pose"))
    assert same is service.attribute_analyzer(("landmarks", "pose"))
    assert client.post("/v1/analyze?attributes=nope", headers=keys["read"], files={"image": image}).status_code == 400


# -- 10: faces need their own scope; thumbnail ids cannot be walked --------------------------------------
def test_read_keys_see_no_faces_and_thumbnails_need_the_listed_token(env, data):
    client, keys, _ = env
    pid = client.post("/v1/gallery/people", headers=keys["enroll"], json={"name": "thumbs"}).json()["id"]
    face = client.post(f"/v1/gallery/people/{pid}/faces", headers=keys["enroll"],
                       files={"image": jpeg(data / OBAMA / "04.jpg")}).json()["face_ids"][0]
    assert "thumbnails" not in client.get(f"/v1/gallery/people/{pid}", headers=keys["read"]).json()
    for walk in range(max(1, face - 3), face + 3):
        assert client.get(f"/v1/gallery/faces/{walk}/thumbnail", headers=keys["read"]).status_code == 403
        assert client.get(f"/v1/gallery/faces/{walk}/thumbnail?token={'0' * 32}",
                          headers=keys["faces"]).status_code == 404
    url = client.get(f"/v1/gallery/people/{pid}", headers=keys["faces"]).json()["thumbnails"][0]
    assert client.get(url, headers=keys["faces"]).content[:2] == b"\xff\xd8"
    assert client.post("/v1/gallery/people", headers=keys["faces"], json={"name": "no"}).status_code == 403
    client.delete(f"/v1/gallery/people/{pid}", headers=keys["admin"])


# -- 4 and 8: stale ids never reach someone else; forget wins over an enrollment ---------------------------
def test_a_stale_forget_never_erases_the_next_person(env, data):
    client, keys, _ = env
    alice = client.post("/v1/gallery/people", headers=keys["enroll"], json={"name": "alice"}).json()["id"]
    assert client.post(f"/v1/gallery/people/{alice}/forget", headers=keys["admin"]).status_code == 200
    bob = client.post("/v1/gallery/people", headers=keys["enroll"], json={"name": "bob"}).json()["id"]
    assert bob != alice
    assert client.post(f"/v1/gallery/people/{alice}/forget", headers=keys["admin"]).status_code == 404
    assert client.get(f"/v1/gallery/people/{bob}", headers=keys["read"]).json()["name"] == "bob"
    # a face sent for a forgotten person is refused; the person does not come back
    r = client.post(f"/v1/gallery/people/{alice}/faces", headers=keys["enroll"],
                    files={"image": jpeg(data / OBAMA / "05.jpg")})
    assert r.status_code == 404
    names = [p["name"] for p in client.get("/v1/gallery/people", headers=keys["read"]).json()["people"]]
    assert "alice" not in names
    client.delete(f"/v1/gallery/people/{bob}", headers=keys["admin"])


# -- 20: links out of the photos root are not followed ---------------------------------------------------
def test_cluster_job_does_not_follow_links_out_of_the_photos_root(env):
    client, keys, root = env
    job = client.post("/v1/cluster", headers=keys["admin"], json={"root": "set"}).json()
    deadline = time.time() + 120
    while time.time() < deadline:
        state = client.get(f"/v1/cluster/jobs/{job['id']}", headers=keys["read"]).json()
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert state["status"] == "done", state
    assert state["progress"]["total"] == 3  # the three obama photos; the linked biden folder is not read
    clusters = client.get("/v1/clusters", headers=keys["faces"]).json()["clusters"]
    images = [i for c in clusters for i in c["images"]]
    assert images and all("escape" not in i and "outside" not in i for i in images)
    assert client.post("/v1/cluster", headers=keys["admin"], json={"root": "set/escape"}).status_code == 404
    for root in ("set\u0000x", "a" * 4000, "a/" * 2000, "../../etc"):
        r = client.post("/v1/cluster", headers=keys["admin"], json={"root": root})
        assert r.status_code in (404, 422), (root[:20], r.status_code)
    # a cluster is enrolled once: naming it again under another name and enrolling is a duplicate (409)
    ids = [c["id"] for c in clusters]
    assert client.post("/v1/clusters/merge", headers=keys["enroll"],
                       json={"a": ids[0], "b": ids[0]}).status_code == 409  # not into itself
    first = client.post("/v1/clusters/name", headers=keys["enroll"],
                        json={"cluster": ids[0], "name": "clustered obama", "enroll": True})
    assert first.status_code == 200, first.text
    again = client.post("/v1/clusters/name", headers=keys["enroll"],
                        json={"cluster": ids[0], "name": "clustered obama", "enroll": True})
    assert again.status_code == 200  # the same person: nothing new, nothing refused
    other = client.post("/v1/clusters/name", headers=keys["enroll"],
                        json={"cluster": ids[0], "name": "someone else", "enroll": True})
    assert other.status_code == 409 and other.json()["error"]["code"] == "duplicate"
    people = client.get("/v1/gallery/people", headers=keys["read"]).json()["people"]
    enrolled = [p for p in people if p["name"] == "clustered obama"]
    assert len(enrolled) == 1 and enrolled[0]["faces"] == 3 and "someone else" not in [p["name"] for p in people]


# -- 6 on a real server: a chunked upload is cut off at the limit, memory stays flat ---------------------
def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_real_server_cuts_a_chunked_300mb_body_off_at_the_limit(tmp_path):
    server = Server(tmp_path)
    try:
        before = _rss_mb(server.proc.pid)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (f"POST /v1/gallery/people HTTP/1.1\r\nHost: x\r\nX-API-Key: {server.token}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        sock.sendall(head)
        piece = b" " * (1 << 20)
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        sent = 0
        stopped = threading.Event()

        def pump() -> None:
            nonlocal sent
            try:
                while sent < 300 * (1 << 20) and not stopped.is_set():
                    sock.sendall(chunk)
                    sent += len(piece)
            except OSError:  # the server answered and closed: exactly what should happen
                pass

        writer = threading.Thread(target=pump)
        writer.start()
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        stopped.set()
        writer.join(timeout=60)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert sent < 100 * (1 << 20), sent  # cut off near the limit, not after 300 MB
        assert _rss_mb(server.proc.pid) - before < 120
        # the server is still fine
        with httpx.Client(base_url=server.url, headers=server.headers) as c:
            assert c.get("/v1/gallery/people").status_code == 200
            r = c.post("/v1/gallery/people", content=json.dumps({"name": "ok"}),
                       headers={"Content-Type": "application/json"})
            assert r.status_code == 201
    finally:
        server.stop()


# -- 1 over REST: the crowd that crashed head pose is analysed, and enrolling its largest face answers -----
def test_the_tiny_crowd_is_analysed_and_enrolled_without_a_500(env, data):
    import cv2
    import numpy as np

    client, keys, _ = env
    crowd = np.tile(cv2.imread(str(data / "groups/CompreFace__016_8.jpg")), (4, 4, 1))
    ok, jpg = cv2.imencode(".jpg", crowd, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok and len(jpg) < 1024 * 1024
    upload = {"image": ("tiled.jpg", jpg.tobytes(), "image/jpeg")}
    r = client.post("/v1/analyze", headers=keys["read"], files=upload)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) >= 120  # the automatic second pass finds the crowd's small faces
    assert all("yaw" in f["attributes"]["pose"] or "unknown" in f["attributes"]["pose"] for f in faces)
    pid = client.post("/v1/gallery/people", headers=keys["enroll"], json={"name": "crowd"}).json()["id"]
    r = client.post(f"/v1/gallery/people/{pid}/faces?largest=true", headers=keys["enroll"], files=upload)
    assert r.status_code in (201, 422), r.text  # enrolled, or refused by the quality floor: never a 500
    client.delete(f"/v1/gallery/people/{pid}", headers=keys["admin"])
