"""Faces in video files, webcams and streams, as tracks.

    from facelens.video import VideoAnalyzer, process_video
    result = process_video("interview.mp4", gallery=Gallery())     # a VideoResult: tracks, people, cuts
    result.to_dict()                                                  # the JSON timeline

Decoding is PyAV (`decode`), association Roboflow `trackers`' ByteTrack plus facelens's per-track state
(`track`), the loop in `analyzer`, the annotated video and contact sheet in `render`.
"""

from facelens.video.analyzer import DEFAULT_FPS, VideoAnalyzer, VideoResult, process_video
from facelens.video.decode import VIDEO_EXTENSIONS, VideoError, VideoInfo, VideoReader, is_video_path
from facelens.video.track import TrackState

__all__ = ["DEFAULT_FPS", "VIDEO_EXTENSIONS", "TrackState", "VideoAnalyzer", "VideoError", "VideoInfo",
           "VideoReader", "VideoResult", "is_video_path", "process_video"]
