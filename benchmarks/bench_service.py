"""Bounded load test of `facelens serve` on loopback: latency and throughput of /v1/identify at fixed
concurrency, then identifies and enrollments at the same time (no errors, no lost enrollment).

Setup: a fresh gallery with the 33 fixture people (first photo each) enrolled through the API; the
server runs `--workers 2` on these 2 cores, the clients (threads with keep-alive httpx clients) on
the same machine, so client work competes with the server for the cores, as it would on a small box.
Probes: the 161 identity photos (one face each, 0.05-0.5 MP JPEGs), cycled.

Run: .venv/bin/python benchmarks/bench_service.py
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from _results import machine, write_section  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str, str]:
    from facelens.service.keys import KeyStore

    keys = KeyStore(root / "keys.sqlite")
    token = keys.create("bench", "admin")[1]
    keys.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "facelens", "serve", "--port", str(port), "--workers", "2",
                             "--gallery", str(root / "gallery"), "--keys", str(root / "keys.sqlite"),
                             "--collection", str(root / "collection")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url, token
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def load(url: str, token: str, photos: list[bytes], concurrency: int, per_client: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": token}, timeout=120) as c:
            for k in range(per_client):
                data = photos[(index * per_client + k) % len(photos)]
                t0 = time.perf_counter()
                r = c.post("/v1/identify", files={"image": ("p.jpg", data, "image/jpeg")})
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput": len(latencies) / wall}


def mixed(url: str, token: str, photos: list[bytes], enroll_photos: list[bytes]) -> dict:
    """Two clients identify while two others enroll; then count what the gallery holds."""
    headers = {"X-API-Key": token}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        person = c.post("/v1/gallery/people", json={"name": "load-test"}).json()["id"]
    outcome = {"enroll_ok": 0, "enroll_refused": 0, "identify_ok": 0, "errors": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def enroller(chunk: list[bytes]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            for data in chunk:
                r = c.post(f"/v1/gallery/people/{person}/faces?largest=true",
                           files={"image": ("e.jpg", data, "image/jpeg")})
                with lock:
                    if r.status_code == 201:
                        outcome["enroll_ok"] += 1
                    elif r.status_code == 422:  # no face / below the quality floor: refused, by design
                        outcome["enroll_refused"] += 1
                    else:
                        outcome["errors"] += 1

    def identifier(index: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            k = index
            while not stop.is_set():
                r = c.post("/v1/identify", files={"image": ("p.jpg", photos[k % len(photos)], "image/jpeg")})
                k += 2
                with lock:
                    outcome["identify_ok" if r.status_code == 200 else "errors"] += 1

    enrollers = [threading.Thread(target=enroller, args=(enroll_photos[i::2],)) for i in range(2)]
    identifiers = [threading.Thread(target=identifier, args=(i,)) for i in range(2)]
    t0 = time.perf_counter()
    for t in enrollers + identifiers:
        t.start()
    for t in enrollers:
        t.join()
    stop.set()
    for t in identifiers:
        t.join()
    wall = time.perf_counter() - t0
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        stored = len(c.get(f"/v1/gallery/people/{person}").json()["face_ids"])
    return {**outcome, "stored": stored, "seconds": wall, "sent": len(enroll_photos)}


def render(rows: list[dict], mix: dict) -> str:
    lines = ["## Service: load on loopback", "",
             f"Generated by `benchmarks/bench_service.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; "
             f"{machine()}. `facelens serve --workers 2`, 33 people enrolled; clients on the same 2 cores; "
             "probes = the 161 single-face fixture photos, cycled.", "",
             "| concurrent clients | requests | errors | p50 ms | p99 ms | identify/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.0f} | "
                     f"{r['p99_ms']:.0f} | {r['throughput']:.1f} |")
    lines += ["", f"Identify and enroll at once (2 clients each, {mix['seconds']:.0f} s): {mix['sent']} enrollments "
              f"sent, {mix['enroll_ok']} accepted, {mix['enroll_refused']} refused with a 422 (no face or below "
              f"the quality floor), **{mix['stored']} stored** (lost: {mix['enroll_ok'] - mix['stored']}); "
              f"{mix['identify_ok']} identifications meanwhile; other errors: {mix['errors']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FACELENS_TEST_DATA", ROOT.parent / "shared/faces"))
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--per-client", type=int, default=40)
    args = ap.parse_args()
    with open(args.data / "identities.csv") as fh:
        rows = list(csv.DictReader(fh))
    photos = [(args.data / r["path"]).read_bytes() for r in rows]
    firsts: dict[str, bytes] = {}
    for r in rows:
        firsts.setdefault(r["identity"], (args.data / r["path"]).read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, token = start_server(Path(tmp))
        try:
            with httpx.Client(base_url=url, headers={"X-API-Key": token}, timeout=120) as c:
                for name, data in firsts.items():
                    pid = c.post("/v1/gallery/people", json={"name": name}).json()["id"]
                    c.post(f"/v1/gallery/people/{pid}/faces", files={"image": ("f.jpg", data, "image/jpeg")})
            load(url, token, photos, 2, 5)  # warm-up
            results = []
            for concurrency in (1, 2, 4, 8):
                results.append(load(url, token, photos, concurrency, args.per_client))
                print(results[-1], file=sys.stderr)
            mix = mixed(url, token, photos, photos[:80])
            print(mix, file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    text = render(results, mix)
    print(text)
    write_section("service", text)


if __name__ == "__main__":
    main()
