"""Measure how FER-2013 frames a face: where the detector's five points fall inside its 48x48 crops.

FER-2013's crops are a face detector's box, not a five-point alignment, so a model trained on them expects
that framing. This script finds the five points (SCRFD, on each Training crop scaled x4 inside a grey border,
since SCRFD misses many 48 px faces) and prints their median position in the 48x48 frame: the template
`facelens.analysis.expression.FER_TEMPLATE` that photos are warped onto. Training split only (PublicTest is for
validation). Usage: .venv/bin/python scripts/measure_fer_framing.py [--per-class 400]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACELENS_SHARED") or REPO.parent / "shared")


def main() -> None:
    import cv2

    from facelens import FaceAnalyzer
    from facelens.io import load_image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=400)
    args = ap.parse_args()
    analyzer = FaceAnalyzer(det_size=320, threads=1)
    scale, border = 4, 48  # 48 px crop -> 192 px face inside a 384 px canvas
    points, missed, total = [], 0, 0
    rng = np.random.default_rng(0)
    for folder in sorted((SHARED / "fer2013" / "Training").iterdir()):
        files = sorted(folder.iterdir())
        for path in rng.permutation(files)[: args.per_class]:
            total += 1
            crop = load_image(path)
            big = np.full((48 * scale + 2 * border * scale // 2,) * 2 + (3,), 128, np.uint8)
            off = border * scale // 2
            big[off : off + 48 * scale, off : off + 48 * scale] = cv2.resize(crop, (48 * scale, 48 * scale),
                                                                             interpolation=cv2.INTER_CUBIC)
            faces = analyzer.detect(big)
            centre = off + 24 * scale
            faces = [f for f in faces if abs((f.bbox[0] + f.bbox[2]) / 2 - centre) < 12 * scale
                     and abs((f.bbox[1] + f.bbox[3]) / 2 - centre) < 12 * scale]
            if not faces:
                missed += 1
                continue
            best = max(faces, key=lambda f: f.det_score)
            points.append((best.landmarks - off) / scale)
    pts = np.stack(points)
    median = np.median(pts, axis=0)
    spread = np.percentile(pts, [10, 90], axis=0)
    print(f"{len(pts)} of {total} crops with five points ({missed} missed)")
    print("median five points in the 48x48 frame (x, y):")
    print(np.round(median, 2).tolist())
    print("10th / 90th percentiles:", np.round(spread, 1).tolist())
    iod = np.linalg.norm(pts[:, 1] - pts[:, 0], axis=1)
    print(f"inter-ocular distance: median {np.median(iod):.1f} px of 48 (10-90 %: {np.percentile(iod, 10):.1f}-"
          f"{np.percentile(iod, 90):.1f})")


if __name__ == "__main__":
    main()
