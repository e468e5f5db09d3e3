"""The service under the resource attacks of issue 12, measured on a real `facelens serve`, side by side
with an older facelens checkout if one is given (`--baseline SRC_DIR`, e.g. a `git worktree` of the
commit before the fixes).

1. 40 different `attributes` lists on /v1/analyze: server memory after each (an analyzer per list used to
   be built and kept).
2. A 300 MB chunked JSON body (no Content-Length), a 1 GB chunked multipart upload and 200 MB of person
   metadata: how many bytes the server took before answering, its answer, and its memory.

Run: .venv/bin/python benchmarks/bench_service_attacks.py [--baseline /tmp/facelens-old/src]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, write_section

NAMES = ["landmarks", "landmarks68", "pose", "quality", "expression", "expression-human", "age-gender"]
PHOTO = Path(__file__).resolve().parents[1].parent / "shared/faces/identities/facerecognition-obama/03.jpg"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, root: Path, src: Path | None) -> None:
        env = {**os.environ}
        if src is not None:
            env["PYTHONPATH"] = str(src)
        code = ("import sys; from facelens.service.keys import KeyStore; k = KeyStore(sys.argv[1]); "
                "print(k.create('bench', 'admin')[1])")
        self.token = subprocess.run([sys.executable, "-c", code, str(root / "keys.sqlite")], env=env,
                                    capture_output=True, text=True, check=True).stdout.strip()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facelens", "serve", "--port", str(self.port), "--gallery", str(root / "g"),
             "--keys", str(root / "keys.sqlite"), "--collection", str(root / "c")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def chunked_upload(server: Server, path: str, content_type: str, total: int, first: bytes = b"") -> tuple[str, int]:
    """Send `total` bytes chunked; return the status line and how many bytes went out before the answer."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {server.token}\r\nContent-Type: {content_type}"
                  "\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    piece = b" " * (1 << 20)
    sent = 0
    stop = threading.Event()

    def pump() -> None:
        nonlocal sent
        try:
            if first:
                sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
                sent += len(first)
            while sent < total and not stop.is_set():
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    writer = threading.Thread(target=pump)
    writer.start()
    reply = b""
    try:
        while b"\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    except OSError:
        pass
    stop.set()
    writer.join(timeout=120)
    sock.close()
    return reply.split(b"\r\n", 1)[0].decode(errors="replace") or "(connection closed)", sent


def measure(src: Path | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), src)
        try:
            pid = server.proc.pid
            out: dict[str, object] = {"start_mb": rss_mb(pid)}
            # every one of the 127 sets of the seven attributes, each in a shuffled order, then all again in
            # other orders: a server that keeps an analyzer per list grows with each; ours must level off
            rng = random.Random(0)
            subsets = [list(c) for n in range(1, len(NAMES) + 1) for c in itertools.combinations(NAMES, n)]
            rng.shuffle(subsets)
            with httpx.Client(base_url=server.url, headers={"X-API-Key": server.token}, timeout=300) as c:
                c.post(f"/v1/analyze?attributes={','.join(NAMES)}", files={"image": PHOTO.read_bytes()})
                out["after_first_mb"] = rss_mb(pid)  # every model loaded once
                for i, attrs in enumerate(subsets + subsets, 1):
                    rng.shuffle(attrs)
                    c.post(f"/v1/analyze?attributes={','.join(attrs)}", files={"image": PHOTO.read_bytes()})
                    if i == 40:
                        out["after_40_lists_mb"] = rss_mb(pid)
                out["after_254_lists_mb"] = rss_mb(pid)
            before = rss_mb(pid)
            out["json_300mb"] = chunked_upload(server, "/v1/detect", "application/json", 300 << 20)
            boundary = "b0undary"
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
                    "Content-Type: image/jpeg\r\n\r\n").encode()
            out["multipart_1gb"] = chunked_upload(server, "/v1/detect", f"multipart/form-data; boundary={boundary}",
                                                  1 << 30, head)
            out["metadata_200mb"] = chunked_upload(server, "/v1/gallery/people", "application/json", 200 << 20,
                                                   b'{"name": "m", "metadata": {"x": "')
            out["uploads_rss_growth_mb"] = rss_mb(pid) - before
            return out
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="src/ of an older facelens to measure beside this one")
    args = parser.parse_args()
    runs = {"facelens (this checkout)": measure(None)}
    if args.baseline:
        runs[f"baseline ({args.baseline})"] = measure(args.baseline)
    lines = ["## Service under resource attacks (issue 12)", "", machine(), "",
             "| server | RSS start | after 1 analyze (all 7 attributes) | after 40 attribute lists | after 254 | "
             "300 MB chunked JSON: answer, bytes taken | 1 GB chunked multipart | 200 MB metadata | "
             "RSS growth over the uploads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        def up(key: str, r: dict = r) -> str:
            status, sent = r[key]  # type: ignore[misc]
            return f"{status.replace('HTTP/1.1 ', '')}, {sent / 2**20:.0f} MB"

        lines.append(f"| {name} | {r['start_mb']:.0f} MB | {r['after_first_mb']:.0f} MB | "
                     f"{r['after_40_lists_mb']:.0f} MB | {r['after_254_lists_mb']:.0f} MB | "
                     f"{up('json_300mb')} | {up('multipart_1gb')} | "
                     f"{up('metadata_200mb')} | {r['uploads_rss_growth_mb']:+.0f} MB |")
    lines += ["", "Bytes taken = what the client had sent when the answer came (socket buffers included); "
              "the limit is 20 MB per image (x 4/3 for base64 bodies)."]
    text = "\n".join(lines)
    print(text)
    write_section("service-attacks", text)


if __name__ == "__main__":
    main()
