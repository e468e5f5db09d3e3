"""Anonymization: what the recognizer can still do with the covered faces, method by level, on the fixtures
(one photo per person, every counted group photo, and every other identity photo), and the speed of
photos and video on these 2 cores. Writes the "anonymize" section of RESULTS.md.

    .venv/bin/python benchmarks/bench_anonymize.py          # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import machine, write_section  # noqa: E402
from facelens import FaceAnalyzer  # noqa: E402
from facelens.anonymize import Anonymizer  # noqa: E402
from facelens.anonymize.verify import sweep  # noqa: E402
from facelens.anonymize.video import anonymize_video  # noqa: E402

SHARED = Path(os.environ.get("FACELENS_SHARED") or ROOT.parent / "shared")


def fixture_images() -> list[Path]:
    faces = SHARED / "faces"
    with open(faces / "identities.csv", newline="") as fh:
        identities = [faces / row["path"] for row in csv.DictReader(fh)]
    with open(faces / "groups.csv", newline="") as fh:
        groups = [faces / row["path"] for row in csv.DictReader(fh) if row["faces"]]
    return identities + groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    images = fixture_images()
    settings = [{"method": m, "level": lv} for m in ("blur", "pixelate") for lv in range(1, 6)]
    settings += [{"method": "fill", "level": 5}, {"method": "blur", "level": 5, "region": "face"}]
    analyzer = FaceAnalyzer(threads=2)
    start = time.perf_counter()
    table = sweep(images, settings, analyzer)
    sweep_s = time.perf_counter() - start
    print(f"{'setting':32s} {'faces':>6s} {'mean sim':>9s} {'max sim':>8s} {'re-id':>6s} {'rank-1':>7s}")
    for row in table:
        label = ", ".join(f"{k} {v}" for k, v in row["setting"].items())
        print(f"{label:32s} {row['faces']:6d} {row['mean_similarity']:9.4f} {row['max_similarity']:8.4f} "
              f"{row['reidentification_rate']:6.3f} {row['rank1']:7.3f}")

    # speed: photos (detect at 0.3, cover, encode) and video (every frame detected, tracked, covered, encoded)
    anonymizer = Anonymizer(threads=2)
    anonymizer.check()
    photos = images[:60]
    out = Path("/tmp/facelens-bench-anonymize")
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    for path in photos:
        anonymizer.anonymize_file(str(path), out / f"{path.parent.name}-{path.stem}.jpg")
    photo_rate = len(photos) / (time.perf_counter() - start)
    videos = []
    for name in ("hamilton_clip.mp4", "talking_s18.mp4"):
        result = anonymize_video(anonymizer, SHARED / "videos" / name, out / f"{name}.anon.mp4")
        d = result.to_dict()
        videos.append((name, d))
        print(f"video {name}: {d['frames']} frames, {d['seconds']:.1f} s, RTF {d['realtime_factor']:.2f}, "
              f"{d['faces_covered']} covers, {d['frames_covered_only_by_tracking']} frames covered only by tracking")
    print(f"photos: {photo_rate:.1f}/s")
    if args.no_write:
        return
    n = table[0]["faces"]
    lines = [
        f"Measured {dt.date.today()} on {machine()}; `benchmarks/bench_anonymize.py`. {len(images)} fixture photos "
        f"(every identity photo and every counted group photo), {n} faces the detector finds at its own threshold "
        "(0.5; anonymization also covers detections down to 0.3). For each covered face the attacker embeds the "
        "anonymized picture at the original face's landmarks and, where the detector still finds a face, at its "
        "landmarks; the better similarity counts. Re-identified = similarity at or above arcface-mbf's FAR 1e-3 "
        f"threshold; rank-1 = the anonymized face's nearest original among all {n} is its own (chance "
        f"{1 / n:.3f}). Sweep time {sweep_s:.0f} s.",
        "",
        "| setting | mean similarity to the original | max | re-identified (FAR 1e-3) | rank-1 among originals |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        label = ", ".join(f"{k} {v}" for k, v in row["setting"].items())
        lines.append(f"| {label} | {row['mean_similarity']:.3f} | {row['max_similarity']:.3f} | "
                     f"{100 * row['reidentification_rate']:.1f} % | {100 * row['rank1']:.1f} % |")
    lines += ["", f"Speed (default blur 5, head region, 2 threads): photos {photo_rate:.1f}/s (the first 60, decode "
              "and JPEG encode included).", "",
              "| video | frames | real-time factor | face covers | frames covered only by tracking |",
              "|---|---|---|---|---|"]
    for name, d in videos:
        lines.append(f"| {name} | {d['frames']} | {d['realtime_factor']:.2f}x | {d['faces_covered']} | "
                     f"{d['frames_covered_only_by_tracking']} |")
    write_section("anonymize", "## Anonymization\n\n" + "\n".join(lines))
    print("wrote the anonymize section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
