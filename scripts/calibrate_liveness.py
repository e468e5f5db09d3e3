"""Record the passive-liveness thresholds (src/facelens/models/liveness_thresholds.json).

A threshold is taken at a stated bona fide presentation classification error rate (BPCER, ISO/IEC 30107-3):
the score that at most that share of live captures reaches. Live captures only: every frame of the live
video in ../shared/liveness/videos (one subject, a phone camera; the replay video of it is kept for testing)
and the live photos of ../shared/faces/presentation_attacks. That is one or two people: the record says so,
and users should measure their own (`facelens evaluate liveness`). Attack scores are printed for
information only; they choose nothing. Usage: .venv/bin/python scripts/calibrate_liveness.py
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from pathlib import Path

import cv2
import numpy as np

from facelens import FaceAnalyzer
from facelens.analysis.liveness import DTN_WEIGHT, MIN_CONTEXT, Liveness
from facelens.io import load_image
from facelens.pipeline import main_face

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACELENS_SHARED") or REPO.parent / "shared")
OUT = REPO / "src" / "facelens" / "models" / "liveness_thresholds.json"
RATES = (0.01, 0.05, 0.1)


def video_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def scores(images: list[tuple[str, np.ndarray]], analyzer: FaceAnalyzer, part: Liveness) -> list[dict]:
    rows = []
    for name, image in images:
        faces = analyzer.detect(image)
        face = main_face(faces, image.shape[1], image.shape[0])
        if face is None:
            continue
        (p_fas, reached), = part.minifas_scores(image, [face])
        (p_dtn,) = part.dtn_scores(image, [face])
        rows.append({"name": name, "minifas": p_fas, "dtn": p_dtn, "context": reached,
                     "fused": DTN_WEIGHT * p_dtn + (1 - DTN_WEIGHT) * p_fas})
    return rows


def threshold_at(live: np.ndarray, bpcer: float) -> float:
    """The smallest threshold t (attack iff score >= t) with share(live >= t) <= bpcer: just above the
    live score at that quantile."""
    ordered = np.sort(live)[::-1]
    k = int(np.floor(bpcer * len(ordered)))  # live scores allowed at or above t
    return float(np.nextafter(ordered[k], 1.0))


def main() -> None:
    analyzer = FaceAnalyzer(threads=1)
    part = Liveness(use_dtn=True)
    live_video = next((SHARED / "liveness" / "videos").glob("live_*.mp4"))
    replay_video = next((SHARED / "liveness" / "videos").glob("replay_*.mp4"))
    with open(SHARED / "faces" / "presentation_attacks.csv", newline="") as fh:
        pa = list(csv.DictReader(fh))
    live_images = [(f"{live_video.name}#{i}", f) for i, f in enumerate(video_frames(live_video))]
    live_images += [(r["path"], load_image(SHARED / "faces" / r["path"])) for r in pa if r["label"] == "live"]
    attack_images = [(f"{replay_video.name}#{i}", f) for i, f in enumerate(video_frames(replay_video))]
    attack_images += [(r["path"], load_image(SHARED / "faces" / r["path"])) for r in pa if r["label"] != "live"]
    live_all = scores(live_images, analyzer, part)
    attacks_all = scores(attack_images, analyzer, part)
    live = [r for r in live_all if r["context"] >= MIN_CONTEXT]
    attacks = [r for r in attacks_all if r["context"] >= MIN_CONTEXT]
    record = {}
    for method, key in (("minifas", "minifas"), ("minifas+dtn", "fused"), ("dtn", "dtn")):
        # the DTN needs no context: it is recorded on every live face (it decides where MiniFASNet cannot)
        live_s = np.array([r[key] for r in (live_all if key == "dtn" else live)])
        attack_s = np.array([r[key] for r in (attacks_all if key == "dtn" else attacks)])
        record[method] = {
            "data": {"live": f"every frame of {live_video.name} (one subject, phone camera) + the live photos of "
                             "faces/presentation_attacks; faces with at least "
                             f"{MIN_CONTEXT}x context (any context for the DTN)", "live_samples": len(live_s),
                     "note": "one or two people: a starting point, not a population estimate"},
            "method": "threshold at the stated BPCER over the live scores (attack iff score >= threshold)",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
            "thresholds": {f"{b:g}": {"threshold": round(threshold_at(live_s, b), 6),
                                      "apcer_replay_and_photos": float((attack_s < threshold_at(live_s, b)).mean())}
                           for b in RATES},
            "live_scores": {"max": float(live_s.max()), "p95": float(np.percentile(live_s, 95)),
                            "median": float(np.median(live_s))},
            "attack_scores": {"min": float(attack_s.min()), "median": float(np.median(attack_s)),
                              "samples": len(attack_s)},
        }
        print(method, json.dumps(record[method]["thresholds"]), record[method]["live_scores"],
              record[method]["attack_scores"])
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
