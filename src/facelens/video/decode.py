"""Reading video with PyAV (FFmpeg): files, webcams and network streams, one frame at a time.

Frames are decoded and handed on one by one, so memory does not grow with the length of a video. The
timestamp of a frame is the container's (pts x time base, from the first frame), not index / fps, so
variable-frame-rate phone videos and streams with gaps keep true times. A file that breaks part way
(truncated, corrupt packets) ends the iteration with `VideoReader.error` set: what was decoded before
the break is kept, and the caller reports both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import FacelensError
from facelens.io import VIDEO_SUFFIXES

VIDEO_EXTENSIONS = VIDEO_SUFFIXES
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
WEBCAM = re.compile(r"^(?:webcam:|/dev/video)(\d+)$")
MAX_SIDE = 8192  # a frame larger than this is refused: 8K is the largest video anyone has
OPEN_TIMEOUT_S = 10.0
# codecs FFmpeg also reads single pictures with: one frame of these is a photo named like a video
STILL_CODECS = frozenset({"mjpeg", "png", "bmp", "webp", "tiff", "jpeg2000", "gif", "ppm", "pgm"})


class VideoError(FacelensError):
    """A video source could not be opened or read."""


def video_dependency() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - the extra is part of every install the Makefile makes
        raise VideoError("video needs PyAV: pip install 'facelens[video]'") from None
    return av


def is_video_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_live_source(source: str | int) -> bool:
    """Webcams and network streams: no end and no seeking; a file is neither."""
    text = str(source)
    return isinstance(source, int) or bool(WEBCAM.match(text)) or text.lower().startswith(STREAM_SCHEMES)


@dataclass
class VideoInfo:
    source: str
    width: int
    height: int
    fps: float  # the stream's average rate (nominal for streams)
    duration: float | None  # seconds, from the container; None for live sources
    codec: str
    live: bool

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "width": self.width, "height": self.height, "fps": round(self.fps, 3),
                "duration": None if self.duration is None else round(self.duration, 3), "codec": self.codec,
                "live": self.live}


@dataclass
class Frame:
    index: int  # the frame's number in decoding order, from 0
    time: float  # seconds from the first frame
    pixels: np.ndarray  # BGR, uint8
    sampled: bool = True  # one of the frames kept at the reader's fps (the others come only with keep_all)


class VideoReader:
    """Frames of one video source.

    `source`: a file path, `webcam:N` or `/dev/videoN` (V4L2), or an rtsp://, http(s)://, udp:// ... URL
    (HTTP MJPEG streams included). `fps`: keep about this many frames a second (the rest are decoded, as
    the codec needs, but not converted); 0 or None keeps every frame. `max_seconds`: stop after this
    much video (live sources run until closed otherwise). Use as a context manager.
    """

    def __init__(self, source: str | int | os.PathLike[str], fps: float | None = None,
                 max_seconds: float | None = None, timeout: float = OPEN_TIMEOUT_S) -> None:
        self.source = source
        self.fps = fps
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.error: str | None = None
        self.info: VideoInfo | None = None
        self.frames_decoded = 0
        self.last_time = 0.0
        self._container: Any = None

    # -- opening ---------------------------------------------------------------------------------
    def open(self) -> VideoInfo:
        av = video_dependency()
        source = self.source
        label = str(source)
        options: dict[str, str] = {}
        fmt = None
        match = WEBCAM.match(label) if not isinstance(source, int) else None
        if isinstance(source, int) or match:
            number = source if isinstance(source, int) else int(match.group(1))  # type: ignore[union-attr]
            target, fmt, live = f"/dev/video{number}", "v4l2", True
        elif label.lower().startswith(STREAM_SCHEMES):
            target, live = label, True
            if label.lower().startswith(("rtsp://", "rtsps://")):
                options["rtsp_transport"] = "tcp"  # UDP loses packets behind NAT and firewalls
        else:
            path = Path(source)
            if not path.exists():
                raise VideoError(f"{label}: no such file")
            if path.is_dir():
                raise VideoError(f"{label}: is a folder, not a video")
            if path.stat().st_size == 0:
                raise VideoError(f"{label}: empty file")
            target, live = str(path), False
        try:
            container = av.open(target, format=fmt, options=options, timeout=(self.timeout, self.timeout))
        except av.FFmpegError as exc:
            raise VideoError(f"{label}: cannot open as a video ({_reason(exc)})") from None
        except OSError as exc:
            raise VideoError(f"{label}: cannot open ({exc.strerror or exc})") from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"{label}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of the cost of a 1080p file
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            container.close()
            raise VideoError(f"{label}: video stream has no frame size (not a video, or broken)")
        if max(ctx.width, ctx.height) > MAX_SIDE:
            container.close()
            raise VideoError(f"{label}: {ctx.width}x{ctx.height} frames are larger than {MAX_SIDE} px a side")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = None
        if not live:
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
        self._container = container
        self.info = VideoInfo(label, int(ctx.width), int(ctx.height), float(rate) if rate else 0.0, duration,
                              ctx.name, live)
        return self.info

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        if self._container is None:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------
    def frames(self, keep_all: bool = False) -> Iterator[Frame]:
        """Decoded frames, sampled to `fps` (with `keep_all`, every frame, the others marked not sampled);
        stops at the end, at `max_seconds`, or at a break (then `error` says where and why)."""
        av = video_dependency()
        if self._container is None:
            self.open()
        if self.fps is not None and (not np.isfinite(self.fps) or self.fps < 0):
            raise VideoError(f"fps must be a positive number (or 0 for every frame), got {self.fps}")
        assert self.info is not None
        stream = self._container.streams.video[0]
        step = 1.0 / self.fps if self.fps else 0.0
        next_time = 0.0
        first: float | None = None
        offset = 0.0  # added after a timestamp discontinuity (concatenated streams restart their clocks)
        index = -1
        limited = False
        nominal = 1.0 / self.info.fps if self.info.fps else 1 / 25
        try:
            for frame in self._container.decode(stream):
                index += 1
                self.frames_decoded = index + 1
                if frame.time is None:  # no timestamps (raw streams): count frames at the nominal rate
                    t = index * nominal
                else:
                    if first is None:
                        first = float(frame.time)
                    t = float(frame.time) - first + offset
                    if index and t < self.last_time - 0.5:  # the clock jumped back: continue from where it was
                        offset += self.last_time + nominal - t
                        t = self.last_time + nominal
                t = max(t, self.last_time if index else 0.0)  # never backwards (B-frame reordering glitches)
                if self.max_seconds is not None and t > self.max_seconds:
                    limited = True
                    break
                self.last_time = t
                if max(frame.width, frame.height) > MAX_SIDE:
                    self.error = (f"{self.info.source}: a {frame.width}x{frame.height} frame at {t:.2f} s is larger "
                                  f"than {MAX_SIDE} px a side; stopped there")
                    return
                if index == 0 and round((getattr(frame, "rotation", 0) or 0) / 90) % 2:
                    # shown turned a quarter: the picture's sides are the coded frame's swapped
                    self.info.width, self.info.height = self.info.height, self.info.width
                if step and t + 1e-6 < next_time:
                    if keep_all:
                        yield Frame(index, t, _upright(frame), sampled=False)
                    continue
                next_time = (next_time + step) if step and t < next_time + step else t + step
                yield Frame(index, t, _upright(frame))
        except av.FFmpegError as exc:
            self.error = f"{self.info.source}: decoding stopped at {self.last_time:.2f} s ({_reason(exc)})"
        except OSError as exc:  # a stream that went away
            self.error = f"{self.info.source}: reading stopped at {self.last_time:.2f} s ({exc.strerror or exc})"
        else:
            duration = self.info.duration
            # FFmpeg ends a truncated file quietly: compare where decoding ended with the container's length
            if not limited and duration and index >= 0 and self.last_time + 1.0 < duration * 0.9:
                self.error = (f"{self.info.source}: the file ends at {self.last_time:.2f} s of its "
                              f"{duration:.2f} s (truncated?)")
            elif index < 0 and not self.info.live:
                self.error = f"{self.info.source}: no frame could be decoded"
            elif index == 0 and not self.info.live and self.info.codec in STILL_CODECS:
                self.error = f"{self.info.source}: a still image ({self.info.codec}), not a video"


def _upright(frame: Any) -> np.ndarray:
    """The frame's pixels as a player shows them: phones store portrait video as landscape frames plus a
    display rotation, and a face lying on its side is one the detector misses."""
    pixels = frame.to_ndarray(format="bgr24")
    clockwise = round(-(getattr(frame, "rotation", 0) or 0) / 90) % 4  # FFmpeg's angle is counter-clockwise
    return np.ascontiguousarray(np.rot90(pixels, k=-clockwise)) if clockwise else pixels


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"\s+", " ", str(text)).strip()[:200]
