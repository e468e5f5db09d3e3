"""Faces across frames: the tracker, scene cuts, and what facelens keeps of each track.

Association is Roboflow `trackers`' ByteTrack (Apache-2.0), chosen over its SORT by measurement (see
benchmarks/RESULTS.md, "Video"): boxes only, Kalman-predicted, two-stage matching that keeps a face
whose detection score dips. facelens adds what a face tool needs around it:

- a new tracker (so new tracks) at every scene cut, found from the frames themselves (`SceneCutDetector`);
- per track, the best frames by face quality, an embedding averaged over them with quality weights, the
  head-pose range and the time span (`TrackState`);
- an identity check inside a track: a face whose embedding disagrees with the track's is not averaged in
  (the tracker can swap two crossing faces; their identities must not be blended).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facelens.types import Face, box_iou

BEST_FRAMES = 5  # frames averaged into a track's embedding
SAME_TRACK_MIN_SIMILARITY = 0.2  # below this a face is someone else's (arcface-mbf impostors: ~0.0 +- 0.1)
THUMBNAIL_SIDE = 128


class SceneCutDetector:
    """A cut is a frame whose colours differ from the previous frame's more than motion can explain.

    The measure is the content distance PySceneDetect uses (mean absolute difference of H, S and V on a
    downscaled frame, 0-255), compared with `threshold` (its default is 27 for consecutive frames; ours
    sees frames up to 1/fps apart, so motion adds more and the default here is 35; see RESULTS.md).
    """

    def __init__(self, threshold: float = 35.0, side: int = 64) -> None:
        self.threshold = threshold
        self.side = side
        self._previous: np.ndarray | None = None

    def distance(self, pixels: np.ndarray) -> float:
        small = cv2.resize(pixels, (self.side, self.side), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV).astype(np.int16)
        previous, self._previous = self._previous, hsv
        if previous is None:
            return 0.0
        diff = np.abs(hsv - previous)
        diff[..., 0] = np.minimum(diff[..., 0], 180 - diff[..., 0])  # hue is an angle (0-179 in OpenCV)
        return float(diff[..., 0].mean() * 255 / 90 + diff[..., 1].mean() + diff[..., 2].mean()) / 3

    def is_cut(self, pixels: np.ndarray) -> bool:
        return self.distance(pixels) > self.threshold


@dataclass
class BestFrame:
    time: float
    quality: float
    bbox: list[float]
    embedding: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "quality": round(self.quality, 4), "bbox": self.bbox}


@dataclass
class TrackState:
    """What is known about one track; memory stays constant however long it lives."""

    track_id: int
    shot: int
    start: float
    end: float
    frames: int = 0
    best: list[BestFrame] = field(default_factory=list)
    thumbnail: bytes = b""  # JPEG of the best frame's face
    yaw: list[float] = field(default_factory=list)  # [min, max], degrees
    pitch: list[float] = field(default_factory=list)
    rejected: int = 0  # embedded faces that disagreed with the track (not averaged in)
    embedding: np.ndarray | None = field(default=None, repr=False)
    person: str | None = None
    person_id: int | None = None
    similarity: float | None = None
    threshold: float | None = None
    last_embed: float = -math.inf  # when the recognizer last ran on this track
    identified_quality: float = -1.0  # the best quality when the track was last identified
    last_box: np.ndarray | None = field(default=None, repr=False)

    @property
    def best_quality(self) -> float:
        return max((b.quality for b in self.best), default=0.0)

    def observe(self, time: float, face: Face) -> None:
        self.end = max(self.end, time)
        self.frames += 1
        self.last_box = face.bbox.copy()
        pose = face.attributes.get("pose")
        if isinstance(pose, dict) and "yaw" in pose:
            for bounds, value in ((self.yaw, pose["yaw"]), (self.pitch, pose["pitch"])):
                if bounds:
                    bounds[0], bounds[1] = min(bounds[0], value), max(bounds[1], value)
                else:
                    bounds.extend([value, value])

    def wants_embedding(self, proxy: float) -> bool:
        """Worth running the recognizer on a face of this quality proxy (0..1, from the detector alone)?"""
        return len(self.best) < BEST_FRAMES or proxy > min(b.quality for b in self.best)

    def offer(self, time: float, face: Face, quality: float, pixels: np.ndarray) -> bool:
        """Keep the embedded face if it is among the track's best; True when the track's embedding changed."""
        vector = np.asarray(face.embedding, np.float32)
        if self.embedding is not None and float(vector @ self.embedding) < SAME_TRACK_MIN_SIMILARITY:
            self.rejected += 1
            return False
        if len(self.best) >= BEST_FRAMES and quality <= min(b.quality for b in self.best):
            return False
        is_best = quality > self.best_quality or not self.best
        self.best.append(BestFrame(time, quality, [round(float(v), 1) for v in face.bbox], vector))
        self.best.sort(key=lambda b: -b.quality)
        del self.best[BEST_FRAMES:]
        weights = np.array([max(b.quality, 0.05) for b in self.best], np.float32)
        mean = (weights[:, None] * np.stack([b.embedding for b in self.best])).sum(0)
        self.embedding = mean / max(float(np.linalg.norm(mean)), 1e-12)
        if is_best:
            self.thumbnail = face_crop_jpeg(pixels, face.bbox)
        return True

    def to_dict(self, embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "track": self.track_id, "person": self.person or "unknown", "person_id": self.person_id,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "threshold": None if self.threshold is None else round(self.threshold, 4),
            "start": round(self.start, 3), "end": round(self.end, 3), "frames": self.frames, "shot": self.shot,
            "quality": round(self.best_quality, 4), "best_frames": [b.to_dict() for b in self.best],
            "pose": {"yaw": [round(v, 1) for v in self.yaw], "pitch": [round(v, 1) for v in self.pitch]},
            "rejected_faces": self.rejected,
            "thumbnail": ("data:image/jpeg;base64," + base64.b64encode(self.thumbnail).decode())
            if self.thumbnail else None,
        }
        if embedding and self.embedding is not None:
            out["embedding"] = [round(float(v), 6) for v in self.embedding]
        return out


def face_crop_jpeg(pixels: np.ndarray, bbox: np.ndarray, margin: float = 0.25) -> bytes:
    """A square JPEG around a face box, with some context (thumbnails, contact sheets)."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * (0.5 + margin)
    height, width = pixels.shape[:2]
    left, top = int(max(0, cx - half)), int(max(0, cy - half))
    right, bottom = int(min(width, cx + half)), int(min(height, cy + half))
    if right <= left or bottom <= top:
        return b""
    crop = cv2.resize(pixels[top:bottom, left:right], (THUMBNAIL_SIDE, THUMBNAIL_SIDE), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else b""


class FaceTracker:
    """ByteTrack over faces, with track ids unique across scene cuts (each cut starts a new tracker)."""

    def __init__(self, fps: float, lost_seconds: float = 1.0, kind: str = "bytetrack") -> None:
        self.fps = fps
        self.lost_seconds = lost_seconds
        self.kind = kind
        self.next_id = 1
        self.first_sightings: dict[int, tuple[float, Face]] = {}
        self.reset()

    def _new(self) -> Any:
        import trackers

        # lost_track_buffer counts 30 fps frames whatever the rate (the library's convention)
        buffer = max(1, round(self.lost_seconds * 30))
        if self.kind == "sort":
            return trackers.SORTTracker(lost_track_buffer=buffer, frame_rate=self.fps,
                                        track_activation_threshold=0.5, minimum_consecutive_frames=1)
        if self.kind != "bytetrack":
            raise ValueError(f"unknown tracker {self.kind!r} (bytetrack or sort)")
        return trackers.ByteTrackTracker(lost_track_buffer=buffer, frame_rate=self.fps,
                                         track_activation_threshold=0.6, minimum_consecutive_frames=1,
                                         high_conf_det_threshold=0.6)

    def reset(self) -> None:
        """A scene cut: every track ends; faces after it start new ones."""
        self._tracker: Any = None
        self._ids: dict[int, int] = {}
        # the library returns a new track's first detection untracked (id -1) and names the track on its
        # second: those detections are kept one update so a new track can claim its true first sighting
        self._untracked: list[tuple[float, Face]] = []

    def update(self, faces: list[Face], time: float) -> list[tuple[int, Face]]:
        """(track id, face) for each face the tracker placed on a track. Every detection starts one (the
        timeline drops tracks shorter than the analyzer's `min_track_frames`, so a start is never late)."""
        import supervision as sv

        if self._tracker is None:
            self._tracker = self._new()
        if faces:
            detections = sv.Detections(xyxy=np.stack([f.bbox for f in faces]).astype(np.float32),
                                       confidence=np.array([f.det_score for f in faces], np.float32),
                                       data={"face_index": np.arange(len(faces))})
        else:
            detections = sv.Detections.empty()
        result = self._tracker.update(detections, timestamp=time)
        out: list[tuple[int, Face]] = []
        untracked: list[tuple[float, Face]] = []
        for index, tid in zip(result.data.get("face_index", []), result.tracker_id, strict=True):
            face = faces[int(index)]
            if tid < 0:
                untracked.append((time, face))
                continue
            if tid not in self._ids:
                self._ids[int(tid)] = self.next_id
                ious = [box_iou(face.bbox, f.bbox) for _, f in self._untracked]
                if ious and max(ious) >= 0.3:
                    self.first_sightings[self.next_id] = self._untracked.pop(int(np.argmax(ious)))
                self.next_id += 1
            out.append((self._ids[int(tid)], face))
        self._untracked = untracked
        return out

