"""Throughput on one machine (issue 19): 250x250 portraits end to end, stage by stage, fp32 and INT8.

    .venv/bin/python benchmarks/bench_throughput.py           # ~10 min on 2 cores; writes RESULTS.md
    .venv/bin/python benchmarks/bench_throughput.py --quick   # 400 portraits, writes nothing

Workload: LFW-style 250x250 portraits cut from the 2,912 people_celeba photos (a square 2.4x the face box
width around the main face facelens finds, resized to 250 px, JPEG q95; made once into .cache/), so the same
run measures speed and verification accuracy.

Stages, one thread, on 300 portraits, best of 3: decode (Pillow as facelens does, simplejpeg, OpenCV), detect
(SCRFD-500M at its 256x256 input), align, embed (the published fp32 graph; the graph facelens runs, with the
PRelu rewrite; the INT8 build) at batch 1, 8 and 32. % of peak = the network's multiply-adds x 2 per second over
the core's peak: fp32 83 GFLOP/s (2.6 GHz x 2 FMA pipes x 8 lanes x 2), INT8 4x that (VNNI: 4 int8
multiply-adds per fp32 lane); both theoretical.

End to end: `FaceAnalyzer(threads=2).analyze_batch(paths)` (decode, detect, align, embed), fp32 and int8, and
one worker with two intra-op threads per model instead of two workers with one. Accuracy: LFW's 10-fold
protocol on every genuine pair and as many impostor pairs (seeded), TAR at FAR 1e-3, and "mixed" (INT8 probes
against fp32 embeddings, as when a gallery enrolled in fp32 is searched in INT8).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _peers import DET_GMAC_640, REC_GMAC  # noqa: E402
from _results import machine, write_section  # noqa: E402
from bench_pipeline import CROP_FACTOR, CROP_SIZE, crop_square  # noqa: E402
from bench_profile import lfw_style_accuracy, scores_of  # noqa: E402
from facelens import FaceAnalyzer  # noqa: E402
from facelens.detect.scrfd import SCRFD  # noqa: E402
from facelens.embed.arcface import ArcFace, crops_to_blob  # noqa: E402
from facelens.evaluate.metrics import tar_at_far  # noqa: E402
from facelens.io import decode_image  # noqa: E402
from facelens.models.store import model_path  # noqa: E402
from facelens.pipeline import main_face  # noqa: E402

SHARED = Path(os.environ.get("FACELENS_SHARED") or REPO.parent / "shared")
CROPS = REPO / ".cache" / "bench-throughput" / "crops250"
FP32_PEAK = 2.6e9 * 2 * 8 * 2  # FLOP/s per core (AVX2/AVX-512 on this EPYC: two 256-bit FMA pipes)
INT8_PEAK = 4 * FP32_PEAK
DET_GMAC = DET_GMAC_640 * 256 * 256 / (640 * 640)
STAGE_IMAGES = 300


def make_crops() -> list[tuple[str, str]]:
    """(path, person) of the 250x250 portraits, made once."""
    with open(SHARED / "people_celeba.csv", newline="") as fh:
        rows = sorted((SHARED / r["path"], r["identity"]) for r in csv.DictReader(fh))
    CROPS.mkdir(parents=True, exist_ok=True)
    index = CROPS / "index.csv"
    if index.is_file():
        with open(index, newline="") as fh:
            return [(str(CROPS / r["file"]), r["person"]) for r in csv.DictReader(fh)]
    analyzer = FaceAnalyzer(threads=2)
    results = analyzer.analyze_batch([p for p, _ in rows], embed=False)
    made = []
    for (path, person), res in zip(rows, results, strict=True):
        face = main_face(res.faces, res.width, res.height) if res.ok else None
        if face is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in face.bbox)
        crop = crop_square(decode_image(path).pixels, (x1 + x2) / 2, (y1 + y2) / 2, CROP_FACTOR * (x2 - x1),
                           CROP_SIZE)
        name = f"{person}__{path.stem}.jpg"
        cv2.imwrite(str(CROPS / name), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        made.append((name, person))
    with open(index, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "person"])
        writer.writerows(made)
    return [(str(CROPS / n), p) for n, p in made]


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stages(paths: list[str]) -> list[dict]:
    """ms per image (or per face) of each stage on one thread."""
    import onnxruntime as ort

    rows: list[dict] = []
    data = [Path(p).read_bytes() for p in paths]
    n = len(paths)
    rows.append({"stage": "decode", "variant": "Pillow (facelens.io, EXIF-aware)",
                 "ms": 1000 * best_of(lambda: [decode_image(d) for d in data]) / n})
    try:
        import simplejpeg

        rows.append({"stage": "decode", "variant": "simplejpeg (libjpeg-turbo)",
                     "ms": 1000 * best_of(lambda: [simplejpeg.decode_jpeg(d, colorspace="BGR") for d in data]) / n})
    except ImportError:
        pass
    rows.append({"stage": "decode", "variant": "OpenCV imdecode",
                 "ms": 1000 * best_of(lambda: [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR)
                                               for d in data]) / n})
    images = [decode_image(d).pixels for d in data]
    detector = SCRFD()
    faces = [detector.detect(im) for im in images]
    ms = 1000 * best_of(lambda: [detector.detect(im) for im in images]) / n
    rows.append({"stage": "detect", "variant": "SCRFD-500M fp32, 256x256 input", "ms": ms,
                 "peak": 2 * DET_GMAC * 1e9 / (ms / 1000) / FP32_PEAK})
    pairs = [(im, f[:1]) for im, f in zip(images, faces, strict=True) if f]
    recognizer = ArcFace()
    ms = 1000 * best_of(lambda: [recognizer.align(im, f) for im, f in pairs]) / len(pairs)
    rows.append({"stage": "align", "variant": "5-point similarity warp to 112x112", "ms": ms})
    crops = np.concatenate([recognizer.align(im, f) for im, f in pairs])
    blob = crops_to_blob(crops, ArcFace.mean, ArcFace.scale)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    published = ort.InferenceSession(str(model_path("arcface-mbf")), opts, providers=["CPUExecutionProvider"])
    from facelens.models.runtime import onnx_session

    sessions = [("fp32, the published graph", published, FP32_PEAK),
                ("fp32, PRelu rewritten (what facelens runs)", onnx_session("arcface-mbf"), FP32_PEAK),
                ("INT8 static QDQ (arcface-mbf-int8)", onnx_session("arcface-mbf-int8"), INT8_PEAK)]
    name = published.get_inputs()[0].name
    for label, session, peak in sessions:
        for batch in (1, 8, 32):
            def run(session=session, batch=batch) -> None:
                for i in range(0, len(blob), batch):
                    session.run(None, {name: blob[i:i + batch]})
            run()
            ms = 1000 * best_of(run) / len(blob)
            rows.append({"stage": "embed", "variant": f"{label}, batch {batch}", "ms": ms,
                         "peak": 2 * REC_GMAC * 1e9 / (ms / 1000) / peak})
    return rows


def end_to_end(items: list[tuple[str, str]]) -> list[dict]:
    paths = [p for p, _ in items]
    labels = np.asarray([who for _, who in items])
    runs = []
    embeddings: dict[str, np.ndarray] = {}
    configs = [("fp32, 2 workers x 1 thread", False, 2, 1), ("INT8, 2 workers x 1 thread", True, 2, 1),
               ("INT8, 1 worker x 2 threads", True, 1, 2)]
    for label, int8, workers, intra in configs:
        analyzer = FaceAnalyzer(threads=workers, int8=int8)
        if intra > 1:  # one image at a time, each model on two intra-op threads
            analyzer._detector = SCRFD(threads=intra)
            analyzer._recognizer = ArcFace(threads=intra, model="arcface-mbf-int8" if int8 else None)
        analyzer.analyze_batch(paths[:20])  # load and warm up
        start = time.perf_counter()
        results = analyzer.analyze_batch(paths)
        seconds = time.perf_counter() - start
        emb = np.zeros((len(paths), 512), np.float32)
        found = np.zeros(len(paths), bool)
        for i, r in enumerate(results):
            face = main_face(r.faces, r.width, r.height) if r.ok else None
            if face is not None and face.embedding is not None:
                emb[i], found[i] = face.embedding, True
        row = {"config": label, "images": len(paths), "seconds": seconds, "rate": len(paths) / seconds,
               "faces": int(found.sum())}
        if label.endswith("1 thread"):
            embeddings[label.split(",")[0]] = (emb, found)
        runs.append(row)
    (e32, f32), (e8, f8) = embeddings["fp32"], embeddings["INT8"]
    both = f32 & f8
    for row, (emb, _) in zip(runs[:2], (embeddings["fp32"], embeddings["INT8"]), strict=True):
        scores, same = scores_of(emb[both], labels[both])
        row["accuracy"], row["accuracy_std"], row["pairs"] = lfw_style_accuracy(scores, same)
        row["tar_1e3"] = tar_at_far(scores[same], scores[~same], 1e-3)[0]
    i, j = np.triu_indices(int(both.sum()), 1)
    mixed = (e8[both] @ e32[both].T)[i, j]
    same = labels[both][i] == labels[both][j]
    runs[1]["mixed_accuracy"] = lfw_style_accuracy(mixed, same)[0]
    runs[1]["cosine"] = float((e8[both] * e32[both]).sum(1).mean())
    return runs


def report(stage_rows: list[dict], runs: list[dict], seconds: float, n_stage: int) -> str:
    lines = [f"Generated by `benchmarks/bench_throughput.py` in {seconds:.0f} s on {machine()}. "
             f"Workload: {runs[0]['images']:,} LFW-style 250x250 portraits cut from people_celeba (2.4x the face "
             "box, JPEG q95). Peaks, per core, theoretical: fp32 83 GFLOP/s, INT8 333 GOP/s (VNNI).", "",
             f"### Stages, one thread ({n_stage} portraits, best of 3)", "",
             "| stage | variant | ms per image (embed: per face) | % of the stage's peak |", "|---|---|---|---|"]
    for r in stage_rows:
        peak = f"{100 * r['peak']:.0f} %" if "peak" in r else "—"
        lines.append(f"| {r['stage']} | {r['variant']} | {r['ms']:.2f} | {peak} |")
    lines += ["", "### End to end (decode, detect, align, embed), both cores", "",
              "| configuration | images/s | faces | verification accuracy (10-fold) | TAR @ FAR 1e-3 |",
              "|---|---|---|---|---|"]
    for r in runs:
        acc = f"{100 * r['accuracy']:.2f} % ± {100 * r['accuracy_std']:.2f}" if "accuracy" in r else "—"
        tar = f"{r['tar_1e3']:.4f}" if "tar_1e3" in r else "—"
        lines.append(f"| {r['config']} | {r['rate']:.1f} | {r['faces']:,} | {acc} | {tar} |")
    d, q = runs[0], runs[1]
    lines += ["", f"INT8 vs fp32: {q['rate'] / d['rate']:.2f}x the images/s; accuracy "
              f"{100 * (q['accuracy'] - d['accuracy']):+.2f} points ({d['pairs']:,} pairs), INT8 probes against fp32 "
              f"embeddings {100 * q['mixed_accuracy']:.2f} %; mean cosine INT8 vs fp32 {q['cosine']:.4f}. Target: "
              f"≥ 100 images/s with accuracy within 0.1 point of fp32."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="400 portraits; writes nothing")
    args = ap.parse_args()
    start = time.perf_counter()
    items = make_crops()
    if args.quick:
        items = items[::7]
    rng = np.random.default_rng(0)
    stage_paths = [items[i][0] for i in sorted(rng.choice(len(items), min(STAGE_IMAGES, len(items)), False))]
    stage_rows = stages(stage_paths)
    runs = end_to_end(items)
    text = report(stage_rows, runs, time.perf_counter() - start, len(stage_paths))
    print(text)
    if not args.quick:
        write_section("Throughput on one machine (issue 19)", text)


if __name__ == "__main__":
    main()
