"""Anonymizing a video so that no frame leaks a face.

The detector runs on every frame (at anonymization's lowered threshold) and the tracker links the faces.
A frame is written only once the frames after it have been seen, up to `pad + max_gap` seconds ahead
(a bounded window), so each frame is covered with:

- every face found in it;
- for each track with a gap here (the detector missed the face for a few frames: motion blur, a hand, a
  turn) the box interpolated between its sightings on either side, up to `max_gap` seconds apart;
- for each track that starts or ends within `pad` seconds, its first or last box: a face coming into view is
  covered before the detector is sure of it, and one leaving stays covered a little after.

Frames where a face was covered only by interpolation or padding are reported (`filled`): those are the
frames a detector alone would have leaked. Identity decisions (`keep` / `only`) are per track; a track
whose identity is not settled yet is treated as the riskier case (covered).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facelens.anonymize import Anonymizer
from facelens.anonymize.cover import cover_faces
from facelens.types import Face

PAD_S = 0.3
MAX_GAP_S = 1.0
IDENTIFY_EVERY_S = 0.5  # a track's identity is checked again this often until it is settled
SETTLE_FRAMES = 3  # embedded sightings that agree before a track's identity counts as settled


@dataclass
class _TrackIdentity:
    names: list[str | None] = field(default_factory=list)
    last_check: float = -math.inf

    @property
    def settled(self) -> bool:
        return len(self.names) >= SETTLE_FRAMES and len(set(self.names[-SETTLE_FRAMES:])) == 1

    @property
    def name(self) -> str | None:
        return self.names[-1] if self.names else None


@dataclass
class VideoAnonymization:
    source: str
    output: str
    frames: int = 0
    seconds: float = 0.0
    faces_covered: int = 0  # face covers drawn over all frames
    tracks: int = 0
    spared_tracks: dict[int, str] = field(default_factory=dict)
    filled: list[dict[str, Any]] = field(default_factory=list)  # frames covered only by interpolation/padding
    error: str | None = None
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "frames": self.frames,
                "seconds": round(self.seconds, 3), "faces_covered": self.faces_covered, "tracks": self.tracks,
                "spared_tracks": {str(k): v for k, v in self.spared_tracks.items()},
                "frames_covered_only_by_tracking": len({f["frame"] for f in self.filled}),
                "filled": self.filled[:1000], "complete": self.error is None, "error": self.error,
                "interrupted": self.interrupted, "wall_s": round(self.wall_s, 3),
                "realtime_factor": round(self.seconds / self.wall_s, 3) if self.wall_s else None}


def anonymize_video(anonymizer: Anonymizer, source: str | os.PathLike[str], output: str | os.PathLike[str],
                    pad: float = PAD_S, max_gap: float = MAX_GAP_S, max_seconds: float | None = None,
                    on_progress: Callable[[float], None] | None = None,
                    on_frame: Callable[..., None] | None = None) -> VideoAnonymization:
    """Write `output`: `source` with every face covered. `on_frame(index, time, original, covered, faces,
    mask, spared)` sees each frame as written (`--verify` and the tests use it to look for uncovered faces)."""
    from facelens.io import same_file
    from facelens.video.decode import VideoError, VideoReader
    from facelens.video.render import VideoEncoder
    from facelens.video.track import FaceTracker

    anonymizer.check()
    if same_file(output, source):
        from facelens.errors import ConfigError

        raise ConfigError(f"{output}: writing it would destroy the video being read")
    started = time.perf_counter()
    reader = VideoReader(source, max_seconds=max_seconds)
    info = reader.open()
    rate = info.fps if info.fps and info.fps < 240 else 25.0
    ahead = max(1, math.ceil((pad + max_gap) * rate))  # frames held back: bounded whatever the length
    encoder = VideoEncoder(output, rate)
    tracker = FaceTracker(rate, lost_seconds=max_gap)
    result = VideoAnonymization(str(source), str(output))
    window: deque[tuple[int, float, np.ndarray, list[tuple[int | None, Face]]]] = deque()
    sightings: dict[int, list[tuple[int, float, Face]]] = {}  # track -> its detections inside the window
    identities: dict[int, _TrackIdentity] = {}

    def emit() -> None:
        index, t, pixels, found = window.popleft()
        faces: list[Face] = []
        spared: list[Face] = []
        on_track: set[int] = set()
        for tid, face in found:
            if tid is not None:
                on_track.add(tid)
            if tid is None or anonymizer.covers(identities[tid].name, identities[tid].settled):
                faces.append(face)
            else:
                spared.append(face)
        for tid, seen in sightings.items():
            if tid in on_track or any(s[0] == index for s in seen):  # seen here (its first, untracked sighting)
                continue
            before = [s for s in seen if s[0] < index]
            after = [s for s in seen if s[0] > index]
            box, how = None, None
            if before and after and after[0][1] - before[-1][1] <= max_gap:
                (_, t0, f0), (_, t1, f1) = before[-1], after[0]
                a = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
                box, how = (1 - a) * f0.bbox + a * f1.bbox, "interpolated"
                landmarks = None if f0.landmarks is None or f1.landmarks is None else \
                    (1 - a) * f0.landmarks + a * f1.landmarks
            elif before and t - before[-1][1] <= pad:
                box, how, landmarks = before[-1][2].bbox, "padded", before[-1][2].landmarks
            elif after and after[0][1] - t <= pad:
                box, how, landmarks = after[0][2].bbox, "padded", after[0][2].landmarks
            if box is None or not anonymizer.covers(identities[tid].name, identities[tid].settled):
                continue
            faces.append(Face(bbox=box, det_score=0.0, landmarks=landmarks))
            result.filled.append({"frame": index, "time": round(t, 3), "track": tid, "how": how})
        # (a face without its 106 points, e.g. an interpolated one, gets the head ellipse even in "face" mode)
        covered, mask = cover_faces(pixels, faces, anonymizer.method, anonymizer.level, anonymizer.region,
                                    anonymizer.margin)
        encoder.write(covered)
        result.faces_covered += len(faces)
        if on_frame is not None:
            on_frame(index, t, pixels, covered, faces, mask, spared)
        # sightings older than the longest look-back are no longer needed
        for tid in list(sightings):
            sightings[tid] = [s for s in sightings[tid] if t - s[1] <= max_gap + pad]
            if not sightings[tid]:
                del sightings[tid]

    try:
        try:
            for frame in reader.frames():
                faces = anonymizer.detect(frame.pixels)
                seen = tracker.update(faces, frame.time)
                ids = {id(f): tid for tid, f in seen}
                for tid, first in list(tracker.first_sightings.items()):
                    # a track's first detection came back untracked one frame earlier: it is in the window
                    sightings.setdefault(tid, []).append((frame.index - 1, first[0], first[1]))
                    del tracker.first_sightings[tid]
                for tid, face in seen:
                    sightings.setdefault(tid, []).append((frame.index, frame.time, face))
                    identity = identities.setdefault(tid, _TrackIdentity())
                    if anonymizer.selective and not identity.settled and \
                            frame.time - identity.last_check >= IDENTIFY_EVERY_S / 5 and face.landmarks is not None:
                        anonymizer.prepare(frame.pixels, [face])
                        identity.names.append(anonymizer.identity(face))
                        identity.last_check = frame.time
                if anonymizer.region == "face" and faces:
                    from facelens.analysis.landmarks import dense_landmarks

                    dense_landmarks().annotate(frame.pixels, faces)
                window.append((frame.index, frame.time, frame.pixels, [(ids.get(id(f)), f) for f in faces]))
                result.frames += 1
                result.seconds = frame.time
                while len(window) > ahead:
                    emit()
                if on_progress is not None:
                    on_progress(frame.time)
        except KeyboardInterrupt:
            result.interrupted = True
            result.error = f"{source}: stopped by the user at {result.seconds:.2f} s"
        while window:
            emit()
    finally:
        reader.close()
        encoder.close()
    result.error = result.error or reader.error
    if result.error and "still image" in result.error:  # a photo named like a video: no video is made of it
        from pathlib import Path

        Path(output).unlink(missing_ok=True)
        raise VideoError(result.error)
    result.tracks = len(identities)
    result.spared_tracks = {tid: i.name for tid, i in identities.items()
                            if i.name is not None and not anonymizer.covers(i.name, i.settled)}
    result.wall_s = time.perf_counter() - started
    if result.frames == 0:
        from pathlib import Path

        Path(output).unlink(missing_ok=True)
        raise VideoError(reader.error or f"{source}: no frame could be decoded")
    return result
