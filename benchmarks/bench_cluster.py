"""Clustering time, memory and quality: facelens (kNN graph + Chinese whispers) vs scikit-learn.

Data sets (faces per identity geometric with mean 5, as in a photo library: a few people often, most rarely):
- `matched:N`: synthetic embeddings whose impostor scores match the real ArcFace ones on the fixtures (centres
  share 16 "demographic" directions: impostor cosine sd 0.073 vs 0.069 real, 99.9th percentile 0.223 vs 0.227),
  with a wider genuine spread than the fixtures (median 0.64 vs 0.72 real, 0.7 % of genuine pairs below the
  threshold: profile/blurred faces) and 2 % of identities a look-alike relative of another (centre cosine ~0.5).
- `uniform:N`: centres uniform on the sphere, narrower noise: the easy case (every method is perfect).
- `real`: ArcFace embeddings of the largest face of each of the 161 photos of ../shared/faces/identities.
Every method uses the same cosine threshold: the recognizer's calibrated threshold at FAR 1e-4 (0.333 for
arcface-mbf); DBSCAN eps = 1 - threshold (cosine distance, min_samples 2), agglomerative = average linkage
with distance_threshold = 1 - threshold; HDBSCAN (min_cluster_size 2) chooses its own cut, which is its point.
Each (method, data set) runs in its own process: wall time and peak RSS. Embedding time is excluded.

Run: .venv/bin/python benchmarks/bench_cluster.py [--sets real,matched:10000,matched:100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from _results import proc_status_mb, write_section  # noqa: E402

DIM = 512
# beyond these sizes: O(n^2) memory, or hours
LIMITS = {"sklearn-agglomerative": 20_000, "sklearn-hdbscan": 20_000, "sklearn-dbscan": 100_000}


def identity_labels(n_faces: int, rng: np.random.Generator) -> np.ndarray:
    """Identity of each face; faces per identity geometric with mean 5."""
    counts = rng.geometric(0.2, size=n_faces)
    total = np.cumsum(counts)
    m = int(np.searchsorted(total, n_faces)) + 1
    counts = counts[:m]
    counts[-1] -= total[m - 1] - n_faces
    return np.repeat(np.arange(m), counts[:m])


def matched(n_faces: int, seed: int = 0, factors: int = 16, share: float = 0.37, noise_median: float = 0.73,
            noise_sigma: float = 0.35, lookalike: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic faces with the impostor-score tail of real ArcFace embeddings (see the module docstring).

    centre = sqrt(1-share)·(uniform direction) + sqrt(share)·(direction in a shared 16-d subspace), so
    centres correlate like real people do; face = centre + isotropic noise of log-normal norm (quality)."""
    rng = np.random.default_rng(seed)
    labels = identity_labels(n_faces, rng)
    n_id = int(labels[-1]) + 1
    basis = np.linalg.qr(rng.standard_normal((DIM, factors)))[0].astype(np.float32)
    centres = np.empty((n_id, DIM), np.float32)
    for s in range(0, n_id, 100_000):
        k = min(100_000, n_id - s)
        u = rng.standard_normal((k, DIM), dtype=np.float32)
        v = rng.standard_normal((k, factors), dtype=np.float32)
        c = np.sqrt(1 - share) * u / np.linalg.norm(u, axis=1, keepdims=True) + \
            np.sqrt(share) * (v / np.linalg.norm(v, axis=1, keepdims=True)) @ basis.T
        centres[s : s + k] = c / np.linalg.norm(c, axis=1, keepdims=True)
    relatives = np.flatnonzero(rng.random(n_id) < lookalike)
    relatives = relatives[relatives > 0]
    # a relative's centre: half its own direction, half the other person's (centre cosine ~0.5)
    c = 0.5 * centres[relatives - 1] + np.sqrt(0.75) * centres[relatives]
    centres[relatives] = c / np.linalg.norm(c, axis=1, keepdims=True)
    x = np.empty((n_faces, DIM), np.float32)
    for s in range(0, n_faces, 100_000):
        lab = labels[s : s + 100_000]
        norm = np.exp(rng.normal(np.log(noise_median), noise_sigma, (len(lab), 1))).astype(np.float32)
        f = centres[lab] + rng.standard_normal((len(lab), DIM), dtype=np.float32) * (norm / np.sqrt(DIM))
        x[s : s + len(lab)] = f / np.linalg.norm(f, axis=1, keepdims=True)
    return x, labels


def uniform(n_faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centres uniform on the sphere, noise norm 0.5-1: same-identity cosine ~0.5-0.8, impostors ~0."""
    rng = np.random.default_rng(seed)
    labels = identity_labels(n_faces, rng)
    x = np.empty((n_faces, DIM), np.float32)
    centres = rng.standard_normal((int(labels[-1]) + 1, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    lo_s, hi_s = np.sqrt(0.25 / DIM), np.sqrt(1.0 / DIM)
    for start in range(0, n_faces, 100_000):
        lab = labels[start : start + 100_000]
        block = centres[lab] + rng.uniform(lo_s, hi_s, (len(lab), 1)).astype(np.float32) * \
            rng.standard_normal((len(lab), DIM), dtype=np.float32)
        x[start : start + len(lab)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, labels


def real(data: Path) -> tuple[np.ndarray, np.ndarray]:
    import csv

    from facelens import FaceAnalyzer
    from facelens.pipeline import largest_face

    with open(data / "identities.csv") as fh:
        rows = list(csv.DictReader(fh))
    analyzer = FaceAnalyzer(threads=2)
    vectors, labels = [], []
    for row, result in zip(rows, analyzer.analyze_batch([str(data / r["path"]) for r in rows]), strict=True):
        if result.faces:
            vectors.append(largest_face(result.faces).embedding)
            labels.append(row["identity"])
    return np.array(vectors, np.float32), np.array(labels)


def run_method(method: str, x: np.ndarray, threshold: float) -> np.ndarray:
    if method == "facelens":
        from facelens.cluster.graph import cluster_labels

        return cluster_labels(x, threshold, k=16, min_size=2)
    if method == "sklearn-hdbscan":
        from sklearn.cluster import HDBSCAN

        # euclidean on unit vectors orders pairs exactly as cosine does
        return HDBSCAN(min_cluster_size=2, metric="euclidean", algorithm="brute", n_jobs=2, copy=True).fit_predict(x)
    if method == "sklearn-dbscan":
        from sklearn.cluster import DBSCAN

        return DBSCAN(eps=1 - threshold, min_samples=2, metric="cosine", n_jobs=2).fit_predict(x)
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                   distance_threshold=1 - threshold).fit_predict(x)


def load(data_set: str, data: Path) -> tuple[np.ndarray, np.ndarray]:
    if data_set == "real":
        return real(data)
    kind, n = data_set.split(":")
    return {"matched": matched, "uniform": uniform}[kind](int(n))


def worker(method: str, size: str, data: Path, threshold: float) -> dict:
    from facelens.evaluate.metrics import clustering_scores

    x, truth = load(size, data)
    base = proc_status_mb("VmHWM")[0]
    t0 = time.perf_counter()
    labels = run_method(method, x, threshold)
    seconds = time.perf_counter() - t0
    if method != "facelens":  # sklearn labels singletons -1 (DBSCAN) or as clusters of one (agglomerative)
        from facelens.cluster.graph import relabel

        labels = relabel(np.where(labels < 0, np.arange(len(labels)) + labels.max() + 1, labels), 2)
    scores = clustering_scores(truth, labels)
    return {"method": method, "size": size, "faces": len(x), "people": len(set(truth.tolist())),
            "seconds": seconds, "peak_rss_mb": proc_status_mb("VmHWM")[0], "data_rss_mb": base,
            "clusters": int(labels.max() + 1), "unassigned": int((labels < 0).sum()), **scores}


def render(results: list[dict], threshold: float) -> str:
    lines = ["## Clustering: facelens vs scikit-learn", "",
             f"Generated by `benchmarks/bench_cluster.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, 2 cores. "
             f"Same cosine threshold for all but HDBSCAN: {threshold:.4f} (arcface-mbf at FAR 1e-4). `matched:N`: "
             "synthetic faces with the real photos' impostor-score tail, a wider genuine spread and 2 % look-alike "
             "relatives; `uniform:N`: centres uniform on the sphere (easy); `real`: the largest face of each of the "
             "161 identity photos (33 people); the script's docstring has the details. Time excludes embedding; "
             "peak RSS includes the data. Unassigned faces count as singletons in the scores.", "",
             "| data | method | faces | people | clusters | unassigned | s | peak RSS MB | BCubed F | pairwise P | "
             "pairwise R | NMI |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['method']} | — | — | — | — | {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['size']} | {r['method']} | {r['faces']:,} | {r['people']:,} | {r['clusters']:,} | "
                     f"{r['unassigned']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:,.0f} | {r['bcubed_f']:.4f} | "
                     f"{r['pairwise_precision']:.4f} | {r['pairwise_recall']:.4f} | {r['nmi']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="real,matched:10000,matched:100000,matched:1000000,uniform:100000")
    ap.add_argument("--methods", default="facelens,sklearn-dbscan,sklearn-hdbscan,sklearn-agglomerative")
    default_data = Path(os.environ.get("FACELENS_TEST_DATA", ROOT.parent / "shared/faces"))
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--rerun", action="store_true", help="ignore results cached by earlier runs")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from facelens.models.registry import threshold_for

    threshold = threshold_for("arcface-mbf", 1e-4)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.data, threshold)))
        return
    # results are cached per (method, data set) so a long 1M run is not repeated to re-render the table
    cache_path = ROOT / ".cache" / "cluster-bench" / "results.json"
    cache = {} if args.rerun or not cache_path.exists() else json.loads(cache_path.read_text())
    results = []
    for data_set in args.sets.split(","):
        n = 0 if data_set == "real" else int(data_set.split(":")[1])
        for method in args.methods.split(","):
            key = f"{method} {data_set}"
            if n > LIMITS.get(method, 10**9):
                r = {"method": method, "size": data_set, "error": "skipped: O(n²) memory/time"}
            elif key in cache:
                r = cache[key]
            else:
                cmd = [sys.executable, __file__, "--worker", method, data_set, "--data", str(args.data)]
                print(f"== {key}", file=sys.stderr, flush=True)
                try:
                    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout, check=False)
                    r = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {
                        "method": method, "size": data_set, "error": f"exit {proc.returncode}"}
                except subprocess.TimeoutExpired:
                    r = {"method": method, "size": data_set, "error": f"> {args.timeout} s"}
                print(json.dumps(r), file=sys.stderr, flush=True)
                if "error" not in r:
                    cache[key] = r
                    cache_path.parent.mkdir(parents=True, exist_ok=True)
                    cache_path.write_text(json.dumps(cache, indent=1))
            results.append(r)
    text = render(results, threshold)
    print(text)
    write_section("cluster", text)


if __name__ == "__main__":
    main()
