"""The licence-clean profile against the default one (issue 18), in one run, on the same photos.

    .venv/bin/python benchmarks/bench_profile.py            # ~10 min on 2 cores; writes RESULTS.md "profile"
    .venv/bin/python benchmarks/bench_profile.py --quick    # every 4th people_celeba photo, writes nothing

Data: the fixtures' identities (161 photos, 33 people) and people_celeba (2,912 in-the-wild CelebA photos of
144 people). Each profile runs `FaceAnalyzer(threads=2)` as a user gets it (`--profile clean` or not: detector,
five points, alignment, recognizer, the profile's defaults), one embedding per photo: its main subject; then
each again with its recognizer's INT8 build (`--int8`: arcface-mbf-int8, sface-int8).
Timed end to end (decode, detect, align, embed) over every photo, after a warm-up on 5 photos.

- Verification accuracy: LFW's protocol on each set's pairs: every genuine pair and as many impostor pairs
  drawn at random (seed 0), 10 folds, the best threshold of 9 folds applied to the tenth.
- TAR at FAR 1e-3 / 1e-4: over all pairs, at the set's own impostor quantile (the ROC), so the two recognizers
  are compared at equal false-match rates whatever their score scales.
- Also at the shipped FAR 1e-3 threshold of each recognizer (`facelens calibrate`'s record, made on these same
  two sets: so this column is in-sample, reported only to show the shipped thresholds hold).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _results import machine, write_section  # noqa: E402
from facelens import FaceAnalyzer  # noqa: E402
from facelens.evaluate.metrics import kfold_accuracy, tar_at_far  # noqa: E402
from facelens.evaluate.protocols import folder_per_person  # noqa: E402
from facelens.models.registry import threshold_for  # noqa: E402
from facelens.pipeline import main_face  # noqa: E402
from facelens.profile import set_profile  # noqa: E402

SHARED = Path(os.environ.get("FACELENS_SHARED") or REPO.parent / "shared")


def datasets(quick: bool) -> dict[str, list[tuple[Path, str]]]:
    with open(SHARED / "people_celeba.csv", newline="") as fh:
        celeba = sorted((SHARED / r["path"], r["identity"]) for r in csv.DictReader(fh))
    return {"fixtures": folder_per_person(SHARED / "faces" / "identities"),
            "people_celeba": celeba[::4] if quick else celeba}


def embed_set(analyzer: FaceAnalyzer, items: list[tuple[Path, str]]) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(embeddings, labels, seconds, photos without a face) for one photo set."""
    start = time.perf_counter()
    results = analyzer.analyze_batch([p for p, _ in items])
    seconds = time.perf_counter() - start
    emb, labels, missed = [], [], 0
    for result, (_, person) in zip(results, items, strict=True):
        face = main_face(result.faces, result.width, result.height) if result.ok else None
        if face is None or face.embedding is None:
            missed += 1
            continue
        emb.append(face.embedding)
        labels.append(person)
    return np.stack(emb), np.asarray(labels), seconds, missed


def scores_of(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(labels), 1)
    return (emb[i] * emb[j]).sum(1), labels[i] == labels[j]


def lfw_style_accuracy(scores: np.ndarray, same: np.ndarray, seed: int = 0) -> tuple[float, float, int]:
    rng = np.random.default_rng(seed)
    genuine = np.nonzero(same)[0]
    impostor = rng.choice(np.nonzero(~same)[0], size=len(genuine), replace=False)
    chosen = np.r_[genuine, impostor]
    folds = rng.permutation(len(chosen)) % 10
    result = kfold_accuracy(scores[chosen], same[chosen], folds)
    return float(result["mean"]), float(result["std"]), len(chosen)


def measure(profile: str, sets: dict[str, list[tuple[Path, str]]]) -> dict[str, dict]:
    """`profile`: "default" or "clean", with " int8" for the recognizer's INT8 build (`--int8`)."""
    profile_name, _, int8 = profile.partition(" ")
    set_profile(profile_name)
    analyzer = FaceAnalyzer(threads=2, int8=bool(int8))
    analyzer.analyze_batch([p for p, _ in sets["fixtures"][:5]])  # warm-up: sessions, first allocations
    out = {}
    for name, items in sets.items():
        emb, labels, seconds, missed = embed_set(analyzer, items)
        scores, same = scores_of(emb, labels)
        acc, std, n_pairs = lfw_style_accuracy(scores, same)
        genuine, impostor = scores[same], scores[~same]
        shipped = threshold_for(analyzer.recognizer, 1e-3)
        out[name] = {
            "models": f"{analyzer.detector} + {analyzer.int8_model or analyzer.recognizer}", "photos": len(items),
            "missed": missed,
            "images_per_s": len(items) / seconds, "accuracy": acc, "accuracy_std": std, "pairs_10fold": n_pairs,
            "tar_1e3": tar_at_far(genuine, impostor, 1e-3)[0], "tar_1e4": tar_at_far(genuine, impostor, 1e-4)[0],
            "genuine": int(same.sum()), "impostor": int((~same).sum()),
            "shipped_tar": float((genuine >= shipped).mean()), "shipped_far": float((impostor >= shipped).mean()),
        }
        print(profile, name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out[name].items()},
              flush=True)
    set_profile(None)
    return out


def report(results: dict[str, dict[str, dict]], seconds: float) -> str:
    lines = ["## Licence-clean profile vs default (issue 18)", "",
             f"Machine: {machine()}. `benchmarks/bench_profile.py`, this run {seconds:.0f} s. Each profile as a "
             "user gets it (`FaceAnalyzer(threads=2)`, `--profile clean` or not), one main-subject embedding per "
             "photo, decode + detect + align + embed timed over every photo.", "",
             "| set | profile | models | verification accuracy (10-fold) | TAR @ FAR 1e-3 | TAR @ FAR 1e-4 | "
             "shipped 1e-3 threshold: TAR / FAR | no face | images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in next(iter(results.values())):
        for profile, per_set in results.items():
            r = per_set[name]
            lines.append(f"| {name} ({r['photos']} photos, {r['genuine']:,} genuine / {r['impostor']:,} impostor "
                         f"pairs) | {profile} | {r['models']} | {100 * r['accuracy']:.2f} % ± "
                         f"{100 * r['accuracy_std']:.2f} ({r['pairs_10fold']:,} pairs) | {r['tar_1e3']:.4f} | "
                         f"{r['tar_1e4']:.4f} | {r['shipped_tar']:.4f} / {r['shipped_far']:.5f} | {r['missed']} | "
                         f"{r['images_per_s']:.1f} |")
    d, c = results["default"]["people_celeba"], results["clean"]["people_celeba"]
    lines += ["", f"people_celeba: the clean profile's accuracy is {100 * (c['accuracy'] - d['accuracy']):+.2f} "
              f"points from the default's (target: within 0.5), at {c['images_per_s'] / d['images_per_s']:.2f}x "
              "its speed (target: equal or better)."]
    if "clean int8" in results:
        c8, d8 = results["clean int8"]["people_celeba"], results["default int8"]["people_celeba"]
        lines += [f"With `--int8` the clean profile runs at {c8['images_per_s'] / d['images_per_s']:.2f}x the "
                  f"default's fp32 speed ({100 * (c8['accuracy'] - c['accuracy']):+.2f} points from its own fp32, "
                  f"{100 * (c8['accuracy'] - d['accuracy']):+.2f} from the default's) and "
                  f"{c8['images_per_s'] / d8['images_per_s']:.2f}x the default's INT8 speed."]
    lines += ["", "Accuracy: every genuine pair plus as many random impostor pairs (seed 0), LFW's 10-fold "
              "protocol. TAR at FAR: all pairs, at the set's own impostor quantile. The shipped threshold was "
              "calibrated on these two sets (in-sample)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of people_celeba; writes nothing")
    args = ap.parse_args()
    start = time.perf_counter()
    sets = datasets(args.quick)
    results = {profile: measure(profile, sets) for profile in ("default", "clean", "default int8", "clean int8")}
    text = report(results, time.perf_counter() - start)
    print(text)
    if not args.quick:
        write_section("profile", text)


if __name__ == "__main__":
    main()
