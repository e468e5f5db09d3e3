"""A video as a set of face tracks: detect on sampled frames, track, embed the best frames, identify.

Cost model (why this is faster than a per-frame loop): the decoder must touch every frame, but the
detector runs only on frames sampled at `fps` (10 a second by default), the tracker carries faces between
them, and the recognizer runs only on faces that can still improve their track's best frames (an upper
bound of their quality, from size and pose, beats the worst frame kept). Memory holds one frame, the
tracks' small states, and (only when writing an annotated video) the frames since the last sample.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facelens.analysis.pose import HeadPose
from facelens.analysis.quality import FaceQuality, pose_angle, pose_score, size_score
from facelens.errors import ConfigError
from facelens.io import same_file
from facelens.pipeline import FaceAnalyzer
from facelens.types import Face
from facelens.video.decode import Frame, VideoError, VideoInfo, VideoReader
from facelens.video.track import BEST_FRAMES, FaceTracker, SceneCutDetector, TrackState

DEFAULT_FPS = 10.0
MIN_FACE_PX = 20.0  # smaller faces are tracked by nobody: too small to recognise or to box reliably
EMBED_INTERVAL_S = 0.5  # a track with its best frames filled is re-embedded at most this often
IDENTIFY_GAIN = 0.05  # re-identify a track when its best quality rises by this much


@dataclass
class VideoResult:
    """The timeline of one video: its tracks, scene cuts, and how the processing went."""

    source: str
    info: VideoInfo | None
    tracks: list[TrackState] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)
    frames_decoded: int = 0
    frames_analyzed: int = 0
    faces_embedded: int = 0
    seconds: float = 0.0  # of video covered
    wall_s: float = 0.0
    error: str | None = None  # set when the video broke part way (the tracks up to the break are kept)
    interrupted: bool = False  # stopped by Ctrl-C: the tracks so far are kept, the rest never seen
    gallery: dict[str, Any] | None = None  # the gallery and decision rule used, if any

    @property
    def complete(self) -> bool:
        return self.error is None

    @property
    def people(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for t in self.tracks:
            if t.person:
                out.setdefault(t.person, []).append(t.track_id)
        return out

    def to_dict(self, embeddings: bool = False) -> dict[str, Any]:
        return {
            "source": self.source, "video": None if self.info is None else self.info.to_dict(),
            "complete": self.complete, "error": self.error, "interrupted": self.interrupted,
            "processed": {"frames_decoded": self.frames_decoded, "frames_analyzed": self.frames_analyzed,
                          "faces_embedded": self.faces_embedded, "seconds": round(self.seconds, 3),
                          "wall_s": round(self.wall_s, 3),
                          "realtime_factor": round(self.seconds / self.wall_s, 3) if self.wall_s else None},
            "cuts": [round(c, 3) for c in self.cuts], "gallery": self.gallery,
            "people": self.people, "tracks": [t.to_dict(embeddings) for t in self.tracks],
        }


class VideoAnalyzer:
    """Tracks, best frames, embeddings and (with a gallery) identities of the faces in a video.

    >>> va = VideoAnalyzer(fps=10)
    >>> result = va.process("interview.mp4", gallery=Gallery("~/g"))   # VideoResult
    >>> result.to_dict()["tracks"][0]["person"]

    Parameters: `fps` (frames analysed per second of video; 0: every frame), `det_size` (detector input
    side, 640 by default: a frame is one pass), `detector`/`recognizer` (registry names), `min_face` (px),
    `tracker` ("bytetrack" or "sort"), `lost_seconds` (how long a track survives unseen), `cut_threshold`
    (scene-cut sensitivity; 0 turns cut detection off), `fpir` (identification's open-set rule),
    `min_track_frames` (shorter tracks are dropped from the timeline: one or two sightings are usually
    false detections), `threads` (ONNX Runtime threads).
    """

    def __init__(self, fps: float = DEFAULT_FPS, det_size: int | str = 640, detector: str | None = None,
                 recognizer: str | None = None, min_face: float = MIN_FACE_PX, tracker: str = "bytetrack",
                 lost_seconds: float = 1.0, cut_threshold: float = 35.0, fpir: float = 0.01,
                 min_track_frames: int = 3, threads: int | None = None, analyzer: FaceAnalyzer | None = None) -> None:
        self.fps = fps
        self.det_size = det_size
        self.detector = detector
        self.recognizer = recognizer
        self.min_face = min_face
        self.tracker = tracker
        self.lost_seconds = lost_seconds
        self.cut_threshold = cut_threshold
        self.fpir = fpir
        self.min_track_frames = min_track_frames
        self.threads = threads
        self.analyzer = analyzer

    def _check(self) -> None:
        if not isinstance(self.fps, int | float) or not math.isfinite(self.fps) or self.fps < 0:
            raise ConfigError(f"fps must be a number >= 0 (0: every frame), got {self.fps!r}")
        if self.tracker not in ("bytetrack", "sort"):
            raise ConfigError(f"tracker must be bytetrack or sort, got {self.tracker!r}")
        for name in ("lost_seconds", "cut_threshold", "min_face"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.min_track_frames, int) or self.min_track_frames < 1:
            raise ConfigError(f"min_track_frames must be a whole number >= 1, got {self.min_track_frames!r}")

    def check(self, gallery: Any = None) -> FaceAnalyzer:
        """Raise now for a bad option, a missing model or gallery; returns the image analyzer to use."""
        self._check()
        analyzer = self.face_analyzer(gallery)
        analyzer.check_models(embed=True)
        if gallery is not None:
            gallery.threshold_for_search(analyzer.recognizer, self.fpir)
        return analyzer

    def face_analyzer(self, gallery: Any = None) -> FaceAnalyzer:
        """The image analyzer; with a gallery and no recognizer named, the gallery's recognizer."""
        if self.analyzer is None:
            recognizer = self.recognizer or (getattr(gallery, "recognizer", None) if gallery is not None else None)
            self.analyzer = FaceAnalyzer(detector=self.detector, recognizer=recognizer, det_size=self.det_size,
                                         min_face=self.min_face, threads=self.threads or 1)
        return self.analyzer

    def process(self, source: str | int | os.PathLike[str], gallery: Any = None,
                output: str | os.PathLike[str] | None = None, max_seconds: float | None = None,
                on_progress: Callable[[float], None] | None = None,
                on_track: Callable[[TrackState], None] | None = None,
                on_frame: Callable[[Frame, list[tuple[int | None, Face]]], None] | None = None) -> VideoResult:
        """Run the whole video (or `max_seconds` of a live source). `gallery`: identify each track against it.
        `output`: also write an annotated video there. `on_progress(seconds)` after each analysed frame;
        `on_track(track)` when a track gets or changes its identity (a live source's events); `on_frame(frame,
        [(track id, face)...])` after each analysed frame, for every face found (a face on no track yet: None)."""
        analyzer = self.check(gallery)
        decision = None
        started = time.perf_counter()
        interrupted = None
        reader = VideoReader(source, fps=self.fps or None, max_seconds=max_seconds)
        info = reader.open()
        result = VideoResult(str(source), info)
        if gallery is not None:
            decision = gallery.threshold_for_search(analyzer.recognizer, self.fpir)
            result.gallery = {"path": str(getattr(gallery, "path", "")), **decision.to_dict()}
        writer = None
        if output is not None:
            from facelens.video.render import AnnotatedVideoWriter

            if not info.live and same_file(output, source):  # type: ignore[arg-type]
                reader.close()
                raise ConfigError(f"{output}: the annotated video would overwrite the video being read")

            writer = AnnotatedVideoWriter(output, info)
        # the rate the tracker sees: analysed frames a second
        rate = self.fps if self.fps else (info.fps or 25.0)
        tracker = FaceTracker(rate, self.lost_seconds, self.tracker)
        cuts = SceneCutDetector(self.cut_threshold) if self.cut_threshold else None
        tracks: dict[int, TrackState] = {}
        finished: list[TrackState] = []
        shot = 0
        quality = FaceQuality(analyzer.recognizer)

        def close_all() -> None:
            finished.extend(tracks.values())
            tracks.clear()

        try:
            for frame in reader.frames(keep_all=writer is not None):
                if not frame.sampled:
                    writer.add(frame)  # type: ignore[union-attr]
                    continue
                result.frames_analyzed += 1
                if cuts is not None and cuts.is_cut(frame.pixels) and result.frames_analyzed > 1:
                    result.cuts.append(frame.time)
                    shot += 1
                    tracker.reset()
                    close_all()
                faces = analyzer.detector_model.detect(frame.pixels)
                faces = [f for f in faces if min(f.width, f.height) >= self.min_face]
                seen = tracker.update(faces, frame.time)
                self._update_tracks(frame, seen, tracks, shot, analyzer, quality, result, tracker)
                if decision is not None:
                    for tid, _ in seen:
                        track = tracks[tid]
                        gain = track.best_quality - track.identified_quality
                        if track.embedding is not None and gain > IDENTIFY_GAIN:
                            changed = self._identify(track, gallery, decision.threshold)
                            if changed and on_track is not None and track.frames >= self.min_track_frames:
                                on_track(track)
                # tracks the tracker has let go of are finished
                for tid in [t for t, s in tracks.items() if frame.time - s.end > self.lost_seconds + 1e-6]:
                    finished.append(tracks.pop(tid))
                if writer is not None:
                    writer.add(frame, {tid: (tracks[tid], face) for tid, face in seen})
                if on_frame is not None:
                    ids = {id(face): tid for tid, face in seen}
                    on_frame(frame, [(ids.get(id(face)), face) for face in faces])
                result.seconds = frame.time
                if on_progress is not None:
                    on_progress(frame.time)
        except KeyboardInterrupt:  # Ctrl-C: the timeline so far is the answer (callers decide whether to go on)
            interrupted = f"{result.source}: stopped by the user at {result.seconds:.2f} s"
            result.interrupted = True
        finally:
            reader.close()
            if writer is not None:
                writer.close()
        close_all()
        result.frames_decoded = reader.frames_decoded
        result.seconds = max(result.seconds, reader.last_time)
        if max_seconds is not None:
            result.seconds = min(result.seconds, max_seconds)
        result.error = reader.error or interrupted
        if decision is not None:
            for track in finished:  # the final embedding may be better than when it was last identified
                if track.embedding is not None and track.best_quality > track.identified_quality:
                    self._identify(track, gallery, decision.threshold)
        result.tracks = sorted((t for t in finished if t.frames >= self.min_track_frames and t.embedding is not None),
                               key=lambda t: (t.start, t.track_id))
        result.wall_s = time.perf_counter() - started
        if result.frames_decoded == 0 and result.error:
            raise VideoError(result.error)
        return result

    def _update_tracks(self, frame: Frame, seen: list[tuple[int, Face]], tracks: dict[int, TrackState], shot: int,
                       analyzer: FaceAnalyzer, quality: FaceQuality, result: VideoResult,
                       tracker: FaceTracker) -> None:
        HeadPose().annotate(frame.pixels, [face for _, face in seen])  # from the five points: cheap
        to_embed: list[tuple[TrackState, Face]] = []
        for tid, face in seen:
            track = tracks.get(tid)
            if track is None:
                first = tracker.first_sightings.pop(tid, None)
                track = tracks[tid] = TrackState(tid, shot, frame.time if first is None else first[0], frame.time)
                if first is not None:
                    track.frames += 1
            pose = face.attributes["pose"]
            track.observe(frame.time, face)
            # the quality a face could reach: recognizability is at most 1, size and pose are known now
            angle = pose_angle(pose["yaw"], pose["pitch"]) if "yaw" in pose else 0.0
            bound = size_score(face.landmarks) * pose_score(angle) if face.landmarks is not None else 0.0
            due = len(track.best) < BEST_FRAMES or frame.time - track.last_embed >= EMBED_INTERVAL_S
            if face.landmarks is not None and bound > 0 and due and track.wants_embedding(bound):
                to_embed.append((track, face))
        if not to_embed:
            return
        faces = [f for _, f in to_embed]
        analyzer.embed(frame.pixels, faces)
        quality.annotate(frame.pixels, faces)
        result.faces_embedded += len(faces)
        for track, face in to_embed:
            track.last_embed = frame.time
            score = face.attributes.get("quality", {}).get("score")
            if score is not None:
                track.offer(frame.time, face, float(score), frame.pixels)

    @staticmethod
    def _identify(track: TrackState, gallery: Any, threshold: float) -> bool:
        """Search the gallery with the track's embedding; True when the named person changed."""
        matches = gallery.search(track.embedding, top_k=1)
        before = track.person
        track.identified_quality = track.best_quality
        track.threshold = threshold
        if matches and matches[0].similarity >= threshold:
            track.person, track.person_id, track.similarity = matches[0].person, matches[0].person_id, \
                matches[0].similarity
        else:
            track.person, track.person_id = None, None
            track.similarity = matches[0].similarity if matches else None
        return track.person != before or before is None


def process_video(source: str | int | os.PathLike[str], gallery: Any = None,
                  output: str | os.PathLike[str] | None = None, max_seconds: float | None = None,
                  **options: Any) -> VideoResult:
    """`VideoAnalyzer(**options).process(source, gallery, output, max_seconds)`: the one-call form."""
    return VideoAnalyzer(**options).process(source, gallery=gallery, output=output, max_seconds=max_seconds)
