"""What a person looks at: the annotated video (boxes, names, track ids) and a contact sheet of the people."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.errors import ConfigError
from facelens.video.decode import Frame, VideoError, VideoInfo, video_dependency
from facelens.video.track import THUMBNAIL_SIDE, TrackState

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
MAX_HELD_FRAMES = 64  # frames waiting for the next analysed one (interpolation); bounds memory at low --fps
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (120, 120, 255)]  # BGR, colour-blind safe (Okabe-Ito) plus one


def track_colour(track_id: int) -> tuple[int, int, int]:
    return PALETTE[track_id % len(PALETTE)]


def track_label(track: TrackState) -> str:
    name = track.person or "unknown"
    # OpenCV's Hershey fonts draw ASCII only: other characters would come out as '?'
    name = name.encode("ascii", "replace").decode() if not name.isascii() else name
    return f"{name} #{track.track_id}"


def draw_tracks(pixels: np.ndarray, boxes: dict[int, tuple[TrackState, np.ndarray]]) -> np.ndarray:
    thickness = max(1, round(max(pixels.shape[:2]) / 500))
    scale = 0.4 * thickness + 0.1
    for tid, (track, box) in boxes.items():
        colour = track_colour(tid)
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(pixels, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = track_label(track)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y1 - th - base - 2)
        left = max(0, min(x1, pixels.shape[1] - tw - 3))
        cv2.rectangle(pixels, (left, top), (left + tw + 2, top + th + base + 2), colour, -1)
        cv2.putText(pixels, text, (left + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    return pixels


class VideoEncoder:
    """H.264 in MP4/MOV/MKV through PyAV; the frame size comes from the first frame (a phone video is known
    upright only then) and later frames of another size are fitted to it (streams can change resolution)."""

    def __init__(self, path: str | os.PathLike[str], fps: float, crf: int = 23) -> None:
        av = video_dependency()
        self.path = Path(path)
        fmt = CONTAINERS.get(self.path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{self.path}: the video written must be .mp4, .mov or .mkv")
        if self.path.exists() and self.path.is_dir():
            raise ConfigError(f"{self.path}: is a folder")
        rate = Fraction(fps).limit_denominator(1001) if fps and 0 < fps < 240 else Fraction(25)
        try:
            # faststart: the index goes first, so the file plays while it downloads (and the web page can show it)
            options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
            self.container = av.open(str(self.path), "w", format=fmt, options=options)
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(f"{self.path}: cannot write ({exc})") from None
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.width = self.height = 0
        self.frames = 0

    def fit(self, pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The pixels at the output's size, and the x and y scale applied (for boxes drawn after)."""
        if not self.width:
            height, width = pixels.shape[:2]
            self.width, self.height = width - width % 2, height - height % 2  # yuv420p: even sides
            self.stream.width, self.stream.height = self.width, self.height
        if pixels.shape[:2] == (self.height, self.width):
            return pixels, 1.0, 1.0
        if abs(pixels.shape[0] - self.height) <= 1 and abs(pixels.shape[1] - self.width) <= 1:
            return pixels[: self.height, : self.width], 1.0, 1.0  # the odd row or column yuv420p cannot hold
        scaled = cv2.resize(pixels, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return scaled, self.width / pixels.shape[1], self.height / pixels.shape[0]

    def write(self, pixels: np.ndarray) -> None:
        av = video_dependency()
        pixels, _, _ = self.fit(pixels)
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="bgr24")
        out.pts = self.frames
        out.time_base = self.stream.codec_context.time_base or Fraction(1) / self.stream.average_rate
        self.frames += 1
        for packet in self.stream.encode(out):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is None:
            return
        try:
            if self.frames:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


class AnnotatedVideoWriter:
    """Encodes every decoded frame with the tracks drawn on it.

    Boxes exist on analysed frames only; the frames between two of them are held back (at most
    source fps / analysis fps of them) and drawn with boxes interpolated between the two, so boxes
    move smoothly and never lag the face."""

    def __init__(self, path: str | os.PathLike[str], info: VideoInfo, crf: int = 23) -> None:
        self.encoder = VideoEncoder(path, info.fps, crf)
        self._pending: list[Frame] = []
        self._last: tuple[float, dict[int, tuple[TrackState, np.ndarray]]] | None = None

    def add(self, frame: Frame, seen: dict[int, tuple[TrackState, Any]] | None = None) -> None:
        if not frame.sampled:
            self._pending.append(frame)
            if len(self._pending) > MAX_HELD_FRAMES:  # a very low --fps: hold no more, draw the last boxes
                held = self._pending.pop(0)
                last = self._last[1] if self._last is not None and held.time - self._last[0] < 1.0 else {}
                self._encode(held, last)
            return
        now = {tid: (track, np.asarray(face.bbox, np.float32)) for tid, (track, face) in (seen or {}).items()}
        for held in self._pending:
            self._encode(held, self._interpolated(held.time, frame.time, now))
        self._pending.clear()
        self._encode(frame, now)
        self._last = (frame.time, now)

    def _interpolated(self, t: float, t_next: float, nxt: dict[int, tuple[TrackState, np.ndarray]]
                      ) -> dict[int, tuple[TrackState, np.ndarray]]:
        if self._last is None:
            return {}
        t_prev, prev = self._last
        out = {}
        for tid, (track, box) in prev.items():
            if tid in nxt and t_next > t_prev:
                a = (t - t_prev) / (t_next - t_prev)
                box = (1 - a) * box + a * nxt[tid][1]
            out[tid] = (track, box)
        return out

    def _encode(self, frame: Frame, boxes: dict[int, tuple[TrackState, np.ndarray]]) -> None:
        pixels, sx, sy = self.encoder.fit(frame.pixels)
        if boxes:
            scale = np.array([sx, sy, sx, sy], np.float32)
            pixels = draw_tracks(pixels.copy(), {t: (track, box * scale) for t, (track, box) in boxes.items()})
        self.encoder.write(pixels)

    def close(self) -> None:
        try:
            if self._pending and self._last is not None:
                last_time, last = self._last
                for held in self._pending:
                    self._encode(held, last if held.time - last_time < 1.0 else {})
            else:
                for held in self._pending:
                    self._encode(held, {})
            self._pending.clear()
        finally:
            self.encoder.close()


def contact_sheet(tracks: list[TrackState], path: str | os.PathLike[str], columns: int = 6) -> Path:
    """One cell per person (their best track's face, the time they are on screen) and one per unknown
    track, written as a PNG."""
    cells: list[tuple[bytes, str, str]] = []
    by_person: dict[str, list[TrackState]] = {}
    for t in tracks:
        by_person.setdefault(t.person or f"\0{t.track_id}", []).append(t)
    for key, group in sorted(by_person.items(), key=lambda kv: min(t.start for t in kv[1])):
        best = max(group, key=lambda t: t.best_quality)
        seconds = sum(t.end - t.start for t in group)
        name = track_label(best).rsplit(" #", 1)[0] if not key.startswith("\0") else f"unknown #{best.track_id}"
        cells.append((best.thumbnail, name, f"{len(group)} track{'s' * (len(group) != 1)}, {seconds:.1f} s"))
    side, caption = THUMBNAIL_SIDE, 34
    columns = max(1, min(columns, len(cells) or 1))
    rows = max(1, -(-len(cells) // columns))
    sheet = np.full((rows * (side + caption), columns * side, 3), 255, np.uint8)
    for i, (jpeg, name, detail) in enumerate(cells):
        r, c = divmod(i, columns)
        top, left = r * (side + caption), c * side
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
        if image is not None:
            sheet[top : top + side, left : left + side] = cv2.resize(image, (side, side))
        for j, text in enumerate((name[:18], detail)):
            cv2.putText(sheet, text, (left + 3, top + side + 13 + 15 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                        (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    if not cv2.imwrite(str(path), sheet):
        raise VideoError(f"{path}: cannot write the contact sheet (a .png or .jpg path is needed)")
    return path
