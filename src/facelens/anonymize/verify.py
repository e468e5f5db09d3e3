"""What a recognizer can still do with anonymized faces: the proof `facelens anonymize --verify` gives.

For every covered face the attacker is given every advantage we can give it: the anonymized face is
embedded at the original face's own landmarks (an attacker who knows where the face was), and again at
the landmarks the detector finds in the anonymized image, if it still finds one there; the better of the
two similarities to the original face's embedding counts. Reported:

- similarity to the original (mean, max);
- re-identification rate: the share of faces whose similarity still clears the recognizer's threshold at
  FAR 1e-3 (the 1:1 decision `facelens verify` makes);
- rank-1: each anonymized face searched among the originals of all faces anonymized together (an attacker
  with a list of candidates); chance is 1 / number of faces;
- leaks: faces found in the output that no cover overlaps (faces the first pass missed), by SCRFD at its
  own threshold and, where dlib is installed, by dlib's HOG detector, whose failures are not SCRFD's.
  Shown with thumbnails in the HTML report.

Figures count the faces detected at the detector's own threshold (0.5); anonymization also covers the less
certain detections down to 0.3 (reported as `low_confidence_covered`), which are mostly not faces.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.gallery import face_thumbnail
from facelens.pipeline import FaceAnalyzer
from facelens.types import Face, box_iou

VERIFY_FAR = 1e-3
FACE_THRESHOLD = 0.5  # the detector's own cut: what counts as a face in the figures (covering goes lower)


@dataclass
class FaceCheck:
    source: str
    bbox: list[float]
    similarity: float  # the attacker's best similarity to the original
    reidentified: bool
    redetected: bool  # the detector still finds a face where this one was
    thumbnails: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)  # original, anonymized

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "bbox": self.bbox, "similarity": round(self.similarity, 4),
                "reidentified": self.reidentified, "redetected": self.redetected}


@dataclass
class Leak:
    source: str
    bbox: list[float]
    score: float
    thumbnail: bytes = field(default=b"", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "bbox": self.bbox, "det_score": round(self.score, 4)}


@dataclass
class VerificationReport:
    recognizer: str
    threshold: float
    faces: list[FaceCheck] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    rank1: float | None = None
    setting: dict[str, Any] = field(default_factory=dict)
    low_confidence: int = 0  # detections between anonymization's 0.3 and 0.5: covered, not counted as faces

    @property
    def reidentification_rate(self) -> float:
        return sum(f.reidentified for f in self.faces) / len(self.faces) if self.faces else 0.0

    def to_dict(self) -> dict[str, Any]:
        sims = [f.similarity for f in self.faces]
        return {
            "setting": self.setting, "recognizer": self.recognizer, "far": VERIFY_FAR,
            "threshold": round(self.threshold, 4), "faces": len(self.faces),
            "mean_similarity": round(float(np.mean(sims)), 4) if sims else None,
            "max_similarity": round(float(np.max(sims)), 4) if sims else None,
            "reidentified": sum(f.reidentified for f in self.faces),
            "reidentification_rate": round(self.reidentification_rate, 4),
            "rank1": None if self.rank1 is None else round(self.rank1, 4),
            "rank1_chance": round(1 / len(self.faces), 4) if self.faces else None,
            "redetected": sum(f.redetected for f in self.faces),
            "low_confidence_covered": self.low_confidence,
            "leaks": [leak.to_dict() for leak in self.leaks],
            "per_face": [f.to_dict() for f in self.faces],
        }


def leak_detectors(det_size: int | str = "auto") -> list[FaceAnalyzer]:
    """SCRFD, plus dlib's HOG where the dlib extra is installed: a second detector with other blind spots."""
    detectors = [FaceAnalyzer(det_threshold=FACE_THRESHOLD, det_size=det_size, threads=1)]
    from facelens.models.store import is_installed

    try:
        import dlib  # noqa: F401
    except ImportError:
        return detectors
    return [*detectors, FaceAnalyzer(detector="dlib-hog", threads=1)] if is_installed("dlib-shape5") else detectors


class AnonymizationVerifier:
    """Accumulates checks over many images (so rank-1 is searched among all of them), then reports."""

    def __init__(self, analyzer: FaceAnalyzer | None = None, thumbnails: bool = True, leaks: bool = True) -> None:
        from facelens.models.registry import threshold_for

        self.analyzer = analyzer or FaceAnalyzer(threads=1)
        self.threshold = threshold_for(self.analyzer.recognizer, VERIFY_FAR, self.analyzer.flip)
        self.thumbnails = thumbnails
        # the leak check's detectors; without it (a sweep of settings) SCRFD alone re-finds covered faces
        self.leaks = leaks
        self._detectors = leak_detectors(self.analyzer.det_size) if leaks else \
            [FaceAnalyzer(det_threshold=FACE_THRESHOLD, det_size=self.analyzer.det_size, threads=1)]
        self.report = VerificationReport(self.analyzer.recognizer, self.threshold)
        self._originals: list[np.ndarray] = []
        self._anonymized: list[np.ndarray] = []

    def _embedding(self, pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        face = Face(bbox=np.zeros(4), det_score=1.0, landmarks=landmarks)
        self.analyzer.embed(pixels, [face])
        return np.asarray(face.embedding, np.float32)

    def add(self, source: str, original: np.ndarray, anonymized: np.ndarray, covered: list[Face],
            spared: list[Face] | None = None, mask: np.ndarray | None = None) -> None:
        found = [f for d in self._detectors for f in d.detector_model.detect(anonymized)]
        for face in covered:
            if face.landmarks is None or face.det_score < FACE_THRESHOLD:
                # covered all the same, but too unsure a detection to count as a face in the figures
                self.report.low_confidence += 1
                continue
            before = self._embedding(original, face.landmarks)
            after = self._embedding(anonymized, face.landmarks)
            similarity = float(before @ after)
            again = [f for f in found if box_iou(f.bbox, face.bbox) >= 0.3 and f.landmarks is not None
                     and len(f.landmarks) == 5]
            for f in again:
                redetected = self._embedding(anonymized, f.landmarks)
                if float(before @ redetected) > similarity:
                    similarity, after = float(before @ redetected), redetected
            self._originals.append(before)
            self._anonymized.append(after)
            thumbs = (face_thumbnail(original, face), face_thumbnail(anonymized, face)) if self.thumbnails \
                else (b"", b"")
            self.report.faces.append(FaceCheck(source, [round(float(v), 1) for v in face.bbox], similarity,
                                               similarity >= self.threshold, bool(again), thumbs))
        if not self.leaks:
            return
        # a face in the output that no cover touches and nobody spared: one the anonymizing pass missed
        kept = [f.bbox for f in spared or []]
        for f in found:
            x1, y1, x2, y2 = (round(float(v)) for v in f.bbox)
            inside = mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] if mask is not None else None
            covered_share = float((inside > 0).mean()) if inside is not None and inside.size else 0.0
            if covered_share >= 0.5 or any(box_iou(f.bbox, k) >= 0.3 for k in kept):
                continue
            if not self._confirmed(original, f.bbox):
                continue
            if any(leak.source == source and box_iou(np.array(leak.bbox), f.bbox) >= 0.3 for leak in self.report.leaks):
                continue  # the same face found by both detectors
            self.report.leaks.append(Leak(source, [round(float(v), 1) for v in f.bbox], f.det_score,
                                          face_thumbnail(anonymized, f) if self.thumbnails else b""))

    def _confirmed(self, pixels: np.ndarray, bbox: np.ndarray) -> bool:
        """A second look at a candidate, in the original picture: SCRFD on the region enlarged so the face is
        ~112 px (the size it is surest at). HOG alone fires on folds of cloth, and a cover can make a detector
        see a face in a hand next to it; neither is in the original. A small face SCRFD missed in the whole
        picture is found here."""
        x1, y1, x2, y2 = (float(v) for v in bbox)
        side = max(x2 - x1, y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = int(max(0, cx - side * 1.5)), int(max(0, cy - side * 1.5))
        right, bottom = int(min(pixels.shape[1], cx + side * 1.5)), int(min(pixels.shape[0], cy + side * 1.5))
        if right - left < 8 or bottom - top < 8:
            return False
        scale = 112.0 / side
        crop = cv2.resize(pixels[top:bottom, left:right], None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        target = np.array([(x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale])
        return any(box_iou(f.bbox, target) >= 0.3 for f in self._detectors[0].detector_model.detect(crop))

    def finish(self, setting: dict[str, Any] | None = None) -> VerificationReport:
        report = self.report
        report.setting = dict(setting or {})
        if len(self._originals) >= 2:
            originals, anonymized = np.stack(self._originals), np.stack(self._anonymized)
            best = (anonymized @ originals.T).argmax(axis=1)
            report.rank1 = float((best == np.arange(len(best))).mean())
        return report


def write_report(report: VerificationReport, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """`verification.json` and `verification.html` (thumbnails inline; owner-only: it shows the original
    faces) in `folder`."""
    from facelens.sqlite import private_file

    folder = Path(folder)
    json_path, html_path = folder / "verification.json", folder / "verification.html"
    data = report.to_dict()
    with private_file(json_path) as fh:
        fh.write(json.dumps(data, indent=1))

    def img(jpeg: bytes) -> str:
        return f'<img src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}" alt="">' if jpeg else ""

    rate = data["reidentification_rate"]
    rows = []
    for face in sorted(report.faces, key=lambda f: -f.similarity)[:200]:
        flag = "re-identified" if face.reidentified else ""
        rows.append(f"<tr><td>{img(face.thumbnails[0])}</td><td>{img(face.thumbnails[1])}</td>"
                    f"<td>{html.escape(face.source)}</td><td>{face.similarity:.3f}</td><td>{flag}</td></tr>")
    leaks = "".join(f"<tr><td>{img(leak.thumbnail)}</td><td>{html.escape(leak.source)}</td>"
                    f"<td>{leak.score:.2f}</td><td>{leak.bbox}</td></tr>" for leak in report.leaks)
    page = f"""<!doctype html><meta charset="utf-8"><title>facelens anonymization check</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem}}td{{padding:.2rem .6rem}}img{{width:96px}}</style>
<h1>Anonymization check</h1>
<p>Setting: {html.escape(json.dumps(report.setting))}. Recognizer {html.escape(report.recognizer)}, threshold
{report.threshold:.4f} (FAR {VERIFY_FAR:g}).</p>
<p><b>{data['faces']}</b> faces covered; similarity to the original: mean {data['mean_similarity']}, max
{data['max_similarity']}; <b>re-identified {data['reidentified']} ({100 * rate:.1f} %)</b>; rank-1 among the
originals {data['rank1']} (chance {data['rank1_chance']}); possible leaks (faces found uncovered):
<b>{len(report.leaks)}</b>.</p>
<h2>Possible leaks</h2><table>{leaks or '<tr><td>none</td></tr>'}</table>
<h2>Covered faces, most similar to their original first</h2>
<table><tr><th>original</th><th>anonymized</th><th>file</th><th>similarity</th><th></th></tr>{''.join(rows)}</table>
"""
    with private_file(html_path) as fh:
        fh.write(page)
    return json_path, html_path


def sweep(images: list[str | os.PathLike[str]], settings: list[dict[str, Any]],
          analyzer: FaceAnalyzer | None = None, on_image: Any = None,
          errors: list[str] | None = None) -> list[dict[str, Any]]:
    """The verification of every setting (dicts of Anonymizer options: method, level, region, margin) over
    the same images and faces: what `evaluate anonymize` and the benchmark report, method by strength."""
    from facelens.anonymize import DETECT_THRESHOLD
    from facelens.anonymize.cover import cover_faces
    from facelens.io import load_image

    analyzer = analyzer or FaceAnalyzer(threads=1)
    detector = FaceAnalyzer(det_threshold=DETECT_THRESHOLD, det_size=analyzer.det_size, threads=1)
    verifiers = [AnonymizationVerifier(analyzer, thumbnails=False, leaks=False) for _ in settings]
    from facelens.errors import FacelensError

    for path in images:
        try:
            pixels = load_image(path)
        except FacelensError as exc:  # an unreadable file is left out of every setting alike
            if errors is not None:
                errors.append(str(exc))
            if on_image is not None:
                on_image(path)
            continue
        faces = detector.detector_model.detect(pixels)
        if any(s.get("region") == "face" for s in settings) and faces:
            from facelens.analysis.landmarks import dense_landmarks

            dense_landmarks().annotate(pixels, faces)
        for setting, verifier in zip(settings, verifiers, strict=True):
            out, mask = cover_faces(pixels, faces, **setting)
            verifier.add(str(path), pixels, out, faces, mask=mask)
        if on_image is not None:
            on_image(path)
    return [v.finish(s).to_dict() for s, v in zip(settings, verifiers, strict=True)]
