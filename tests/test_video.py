"""Video: decoding, tracking, per-track identity, outputs and entry points, on the real clips of
../shared/videos (talking heads, GRID speakers, a TV clip with cuts, a station, a crowd)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.gallery import Gallery
from facelens.types import box_iou
from facelens.video import VideoAnalyzer, VideoError, VideoReader, process_video

from .conftest import data_root
from .test_cli import run as run_cli

TALKING = ["talking_d10.mp4", "talking_d11.mp4", "talking_d18.mp4", "talking_s18.mp4"]
GRID = ["grid_bbaf2n.mpg", "grid_lbax4n.mpg", "grid_pwij3p.mpg"]


def run(args: list[str]) -> tuple[int, str, str]:
    proc = run_cli(*args)
    return proc.returncode, proc.stdout, proc.stderr


def videos_root() -> Path:
    root = data_root().parent / "videos"
    if not (root / "hamilton_clip.mp4").is_file():
        raise RuntimeError(f"test videos not found at {root}: put the shared fixtures beside the checkout")
    return root


@pytest.fixture(scope="module")
def clips() -> Path:
    return videos_root()


@pytest.fixture(scope="module")
def single_results(clips):
    """The talking heads and GRID speakers, each processed once with the defaults."""
    analyzer = VideoAnalyzer(threads=2)
    return {name: analyzer.process(clips / name) for name in TALKING + GRID}


def test_one_track_per_talking_head_with_no_identity_switch(single_results):
    for name, result in single_results.items():
        assert result.complete, (name, result.error)
        assert len(result.tracks) == 1, (name, [t.to_dict() for t in result.tracks])
        track = result.tracks[0]
        # the face is on screen the whole clip: the track covers it, from the first analysed frame
        assert track.start <= 0.15 and track.end >= result.seconds - 0.25, (name, track.start, track.end)
        assert track.rejected == 0  # no embedded frame disagreed with the track's identity
        assert track.best_quality > 0.5 and len(track.best) == 5
        assert abs(np.linalg.norm(track.embedding) - 1) < 1e-4
        # every best frame's embedding is the same person as the track's
        assert min(float(b.embedding @ track.embedding) for b in track.best) > 0.6
    # the recognizer ran on a fraction of the analysed faces, not on all of them
    for result in single_results.values():
        assert result.faces_embedded < 0.5 * result.frames_analyzed


def test_different_clips_are_different_people(single_results):
    embeddings = np.stack([r.tracks[0].embedding for r in single_results.values()])
    similarity = embeddings @ embeddings.T
    off_diagonal = similarity[~np.eye(len(embeddings), dtype=bool)]
    assert off_diagonal.max() < 0.3  # seven different people (checked by eye): all far below any threshold


def test_cuts_of_the_tv_clip_start_new_tracks(clips):
    result = VideoAnalyzer(threads=2).process(clips / "hamilton_clip.mp4")
    # cuts found by eye on the decoded frames: 0.70, 2.77, 7.07 s (1.3-2.7 s is a pan, not a cut)
    assert len(result.cuts) == 3
    for found, truth in zip(result.cuts, (0.70, 2.77, 7.07), strict=True):
        assert abs(found - truth) < 0.15
    bounds = [0.0, *result.cuts, result.seconds + 1]
    for track in result.tracks:
        shot = track.shot
        assert bounds[shot] - 1e-6 <= track.start <= track.end < bounds[shot + 1], track.to_dict()
    assert len({t.track_id for t in result.tracks}) == len(result.tracks)
    assert {t.shot for t in result.tracks} >= {0, 2, 3}  # faces in the wide shot, Lin-Manuel, the audience
    # talking-head cut (2.8-7.1 s): one track through it
    main = [t for t in result.tracks if t.shot == 2]
    assert len(main) == 1 and main[0].end - main[0].start > 4.0


def test_faces_per_sampled_frame_match_the_image_detector(clips):
    image_detector = FaceAnalyzer(det_size=640, threads=2)
    for name in ("walkers_station.mp4", "crowd_mot20.mp4", "hamilton_clip.mp4"):
        per_frame: dict[int, list[np.ndarray]] = {}
        frames: dict[int, np.ndarray] = {}

        def keep(frame, seen, per_frame=per_frame, frames=frames):
            if frame.index % 7 == 0:  # a spread of frames, enough to compare
                per_frame[frame.index] = [f.bbox for _, f in seen]
                frames[frame.index] = frame.pixels.copy()

        VideoAnalyzer(threads=2, min_face=0).process(clips / name, on_frame=keep, max_seconds=3)
        assert frames, name
        for index, pixels in frames.items():
            still = [f.bbox for f in image_detector.detect(pixels)]
            assert len(per_frame[index]) == len(still), (name, index)
            for box in per_frame[index]:
                assert max(box_iou(box, other) for other in still) > 0.99



def _frame_at(path: Path, seconds: float) -> np.ndarray:
    for frame in VideoReader(path).frames():
        if frame.time >= seconds:
            return frame.pixels
    raise AssertionError(f"{path} is shorter than {seconds} s")


def test_a_speaker_enrolled_from_one_frame_is_named_in_the_clip_and_nobody_else_is(clips, tmp_path, single_results):
    gallery = Gallery(tmp_path / "gallery")
    still = tmp_path / "grid1.png"
    cv2.imwrite(str(still), _frame_at(clips / GRID[0], 1.0))
    gallery.enroll("grid speaker 1", [str(still)])
    analyzer = VideoAnalyzer(threads=2)
    named = analyzer.process(clips / GRID[0], gallery=gallery)
    assert [t.person for t in named.tracks] == ["grid speaker 1"]
    assert named.tracks[0].similarity > named.tracks[0].threshold
    assert named.gallery["fpir"] == 0.01
    # the shared set has one clip per GRID speaker: every other clip is somebody else, and must stay unknown
    for name in [n for n in TALKING + GRID if n != GRID[0]]:
        other = analyzer.process(clips / name, gallery=gallery)
        assert [t.person for t in other.tracks] == [None], name
        assert other.to_dict()["tracks"][0]["person"] == "unknown"


def test_truncated_file_gives_a_clear_error_and_the_timeline_up_to_the_break(clips, tmp_path):
    # an MP4 with its index first (as our annotated output is written): cut short, its start still plays
    whole = tmp_path / "whole.mp4"
    process_video(clips / "talking_d11.mp4", output=whole, fps=5)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    result = process_video(cut)
    assert not result.complete and "truncated" in result.error and str(cut) in result.error
    assert len(result.tracks) == 1 and 3.0 < result.tracks[0].end < 8.5
    timeline = tmp_path / "t.json"
    code, _, err = run(["video", str(cut), "--no-identify", "--json", str(timeline)])
    assert code == 2 and "truncated" in err and "Traceback" not in err
    saved = json.loads(timeline.read_text())
    assert saved["complete"] is False and len(saved["tracks"]) == 1


def test_bad_sources_are_one_clear_error(clips, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all\n")
    (tmp_path / "head.mp4").write_bytes((clips / "talking_d18.mp4").read_bytes()[:100])
    cases = {str(tmp_path / "missing.mp4"): "no such file", str(tmp_path / "empty.mp4"): "empty file",
             str(tmp_path / "text.mp4"): "cannot open", str(tmp_path / "head.mp4"): "cannot open",
             "webcam:63": "cannot open", "http://127.0.0.1:9/none.mjpg": "cannot open"}
    for source, message in cases.items():
        with pytest.raises(VideoError, match=message):
            process_video(source)
        code, _, err = run(["video", source, "--no-identify"])
        assert code == 2 and message in err and "Traceback" not in err, (source, err)
    code, _, err = run(["video", str(clips / GRID[0]), "--fps", "-1"])
    assert code == 2 and "Traceback" not in err
    code, _, err = run(["video", str(clips / GRID[0]), "--out", str(tmp_path / "x.avi"), "--no-identify"])
    assert code == 2 and ".mp4" in err
    code, _, err = run(["video", str(tmp_path), "--no-identify"])  # a folder: each bad file reported, none hides
    assert code == 2 and err.count("error:") == 3 and "empty file" in err
    (tmp_path / "nothing").mkdir()
    code, _, err = run(["video", str(tmp_path / "nothing"), "--no-identify"])
    assert code == 2 and "no video files" in err


def test_output_never_overwrites_the_input(clips, tmp_path):
    clip = tmp_path / "clip.mpg"
    clip.write_bytes((clips / GRID[0]).read_bytes())
    before = clip.read_bytes()
    for option in ("--out", "--json"):
        code, _, err = run(["video", str(clip), "--no-identify", option, str(clip)])
        assert code == 2 and "overwrite" in err
    assert clip.read_bytes() == before


def test_phone_video_with_a_display_rotation_is_turned_upright(clips, tmp_path):
    """Phones store portrait video as landscape frames plus a rotation in the MP4 track header."""
    import struct

    import av

    frames = list(VideoReader(clips / GRID[0]).frames())[:25]
    sideways = tmp_path / "sideways.mp4"
    with av.open(str(sideways), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = frames[0].pixels.shape[1], frames[0].pixels.shape[0]
        for i, frame in enumerate(frames):  # stored turned a quarter counter-clockwise ...
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(frame.pixels, 1)), format="bgr24")
            picture.pts = i
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(sideways.read_bytes())
    box = data.find(b"tkhd") - 4  # ... and shown turned back: the 90-degree matrix of a version-0 tkhd box
    data[box + 48 : box + 84] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    phone = tmp_path / "phone.mp4"
    phone.write_bytes(bytes(data))
    reader = VideoReader(phone)
    first = next(iter(reader.frames()))
    assert first.pixels.shape[:2] == frames[0].pixels.shape[:2]  # upright: 288 high, 360 wide
    assert np.abs(first.pixels.astype(int) - frames[0].pixels.astype(int)).mean() < 8  # the same picture
    assert (reader.info.width, reader.info.height) == (360, 288)
    result = process_video(phone, output=tmp_path / "out.mp4")
    assert len(result.tracks) == 1
    written = VideoReader(tmp_path / "out.mp4")
    assert (written.open().width, written.info.height) == (360, 288)


class _MjpegHandler(BaseHTTPRequestHandler):
    frames: ClassVar[list[bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for i in range(400):
                jpeg = self.frames[i % len(self.frames)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
                time.sleep(0.04)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_live_http_mjpeg_stream_on_loopback(clips):
    _MjpegHandler.frames = [cv2.imencode(".jpg", f.pixels)[1].tobytes()
                            for f in VideoReader(clips / GRID[1]).frames()]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MjpegHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/camera.mjpg"
        events = []
        result = VideoAnalyzer(threads=2).process(url, max_seconds=2.5, on_track=events.append)
        assert result.info.live and result.info.duration is None
        assert result.complete and 2.0 < result.seconds <= 2.6
        assert len(result.tracks) == 1 and result.tracks[0].frames >= 15
    finally:
        server.shutdown()


def test_annotated_video_and_contact_sheet(clips, tmp_path):
    out = tmp_path / "annotated.mp4"
    sheet = tmp_path / "people.png"
    code, _, err = run(["video", str(clips / "hamilton_clip.mp4"), "--no-identify", "--out", str(out),
                             "--contact-sheet", str(sheet), "--json", str(tmp_path / "t.json")])
    assert code == 0, err
    source, written = VideoReader(clips / "hamilton_clip.mp4"), VideoReader(out)
    assert written.open().width == source.open().width and written.info.codec == "h264"
    n_source = sum(1 for _ in source.frames())
    annotated = list(written.frames())
    assert len(annotated) == n_source  # every frame, not only the analysed ones
    # boxes are drawn in the track colours on frames between samples too
    timeline = json.loads((tmp_path / "t.json").read_text())
    track = max(timeline["tracks"], key=lambda t: t["frames"])
    middle = (track["start"] + track["end"]) / 2
    frame = min(annotated, key=lambda f: abs(f.time - middle))
    original = min(VideoReader(clips / "hamilton_clip.mp4").frames(), key=lambda f: abs(f.time - middle))
    assert np.abs(frame.pixels.astype(int) - original.pixels.astype(int)).max() > 100
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] >= 128
    assert all(t["thumbnail"].startswith("data:image/jpeg;base64,") for t in timeline["tracks"])


def test_cluster_accepts_videos_beside_photos(clips, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    for name in GRID:
        (folder / name).write_bytes((clips / name).read_bytes())
    cv2.imwrite(str(folder / "speaker2.png"), _frame_at(clips / GRID[1], 2.0))
    code, stdout, err = run(["cluster", str(folder), "--out", str(tmp_path / "coll"), "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["images"] == 4 and summary["faces"] == 4  # three tracks and one photo face
    code, stdout, _ = run(["clusters", "show", "--out", str(tmp_path / "coll"), "--json"])
    clusters = json.loads(stdout)["clusters"]
    assert len(clusters) == 1  # the photo joined the track of its speaker; the other two are singletons
    assert sorted(Path(p).name for p in clusters[0]["images"]) == ["grid_lbax4n.mpg", "speaker2.png"]
    # a rerun keeps what it has (videos are known by content)
    code, stdout, _ = run(["cluster", str(folder), "--out", str(tmp_path / "coll"), "--json"])
    assert json.loads(stdout)["faces"] == 4


def test_video_over_the_api(clips, tmp_path):
    from fastapi.testclient import TestClient

    from facelens.service.app import ServiceConfig, create_app
    from facelens.service.keys import KeyStore

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "clip.mpg").write_bytes((clips / GRID[2]).read_bytes())
    keys = KeyStore(tmp_path / "keys.sqlite")
    token = keys.create("t", "admin")[1]
    keys.close()
    config = ServiceConfig(gallery=tmp_path / "gallery", keys=tmp_path / "keys.sqlite",
                           collection=tmp_path / "coll", photos_root=photos, max_upload_mb=5.0)
    headers = {"X-API-Key": token}

    def finish(job: dict) -> dict:
        for _ in range(600):
            job = client.get(f"/v1/video/jobs/{job['id']}", headers=headers).json()
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.1)
        raise AssertionError("video job did not finish")

    with TestClient(create_app(config)) as client:
        upload = client.post("/v1/video?fps=5", headers=headers,
                             files={"video": ("clip.mpg", (clips / GRID[0]).read_bytes(), "video/mpeg")})
        assert upload.status_code == 202, upload.text
        job = finish(upload.json())
        assert job["status"] == "done", job
        assert len(job["result"]["tracks"]) == 1 and job["result"]["source"] == "upload"
        assert job["result"]["tracks"][0]["person"] == "unknown"  # no gallery on this server yet
        by_path = client.post("/v1/video", headers=headers, json={"path": "clip.mpg"})
        assert by_path.status_code == 202
        done = finish(by_path.json())["result"]
        assert len(done["tracks"]) == 1 and done["source"] == "clip.mpg"  # as the client named it
        escape = client.post("/v1/video", headers=headers, json={"path": "../keys.sqlite"})
        assert escape.status_code == 404
        junk = client.post("/v1/video", headers=headers, files={"video": ("x.mp4", b"junk" * 100, "video/mp4")})
        failed = finish(junk.json())
        assert failed["status"] == "failed" and "cannot open" in failed["error"] and "facelens-video-" not in \
            failed["error"]
        assert client.get("/v1/video/jobs/nope", headers=headers).status_code == 404
        # a flood of uploads: at most 4 wait (each holds a temporary file), the rest are told to come back
        codes = [client.post("/v1/video", headers=headers, files={
            "video": ("c.mpg", (clips / GRID[1]).read_bytes(), "video/mpeg")}).status_code for _ in range(7)]
        assert codes.count(429) >= 2 and set(codes) == {202, 429}, codes
        assert client.post("/v1/video", json={"path": "clip.mpg"}).status_code == 401


def test_outputs_that_are_inputs_by_another_name_are_refused(clips, tmp_path):
    import os

    clip = tmp_path / "clip.mp4"
    clip.write_bytes((clips / "talking_d18.mp4").read_bytes())
    os.link(clip, tmp_path / "hard.mp4")
    (tmp_path / "shot.jpg").symlink_to(clip)
    before = clip.read_bytes()
    for args in (["--out", str(tmp_path / "hard.mp4")], ["--contact-sheet", str(tmp_path / "shot.jpg")],
                 ["--json", str(tmp_path / "hard.mp4")]):
        code, _, err = run(["video", str(clip), "--no-identify", *args])
        assert code == 2 and "destroy" in err, (args, err)
    # a folder run whose generated name is one of its own inputs
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(before)
    (folder / "a.annotated.mp4").write_bytes(before)
    code, _, err = run(["video", str(folder), "--no-identify", "--out", str(folder)])
    assert code == 2 and "destroy" in err
    assert clip.read_bytes() == before and (folder / "a.annotated.mp4").read_bytes() == before
    # outputs are checked before any work: a missing folder or a wrong suffix is one error up front
    code, _, err = run(["video", str(clip), "--no-identify", "--json", str(tmp_path / "nope" / "t.json")])
    assert code == 2 and "does not exist" in err
    code, _, err = run(["video", str(clip), "--no-identify", "--contact-sheet", str(tmp_path / "s.txt")])
    assert code == 2 and ".png" in err


def test_interrupted_video_keeps_its_timeline_so_far(clips):
    def stop(seconds: float) -> None:
        if seconds > 2.0:
            raise KeyboardInterrupt

    result = VideoAnalyzer(threads=2).process(clips / "talking_d10.mp4", on_progress=stop)
    assert result.interrupted and "stopped by the user" in result.error
    assert len(result.tracks) == 1 and result.tracks[0].end <= 2.2


def test_limits_and_clock_jumps(clips, tmp_path):
    import av

    # a time limit does not hide truncation: the cut file ends before the limit
    whole = tmp_path / "whole.mp4"
    process_video(clips / "talking_d11.mp4", output=whole, fps=5)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.5)])
    limited = process_video(cut, max_seconds=100)
    assert not limited.complete and "truncated" in limited.error
    # two MPEG-TS clips joined byte for byte: the second's clock starts again at 0; its minutes must not vanish
    parts = []
    for name in GRID[:2]:
        part = tmp_path / f"{name}.ts"
        with av.open(str(part), "w", format="mpegts") as out:
            stream = out.add_stream("mpeg2video", rate=25)
            stream.width, stream.height, stream.pix_fmt = 360, 288, "yuv420p"
            for i, frame in enumerate(VideoReader(clips / name).frames()):
                picture = av.VideoFrame.from_ndarray(frame.pixels, format="bgr24")
                picture.pts = i
                for packet in stream.encode(picture):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    result = process_video(joined)
    assert result.seconds > 5.0  # both clips, ~3 s each
    assert len(result.tracks) == 2 and len(result.cuts) == 1  # two speakers, a cut where they change
    # a photo named like a video is not a 0-second video
    still = tmp_path / "photo.mp4"
    still.write_bytes((data_root() / "groups" / "face_recognition__obama_and_biden.jpg").read_bytes())
    photo = process_video(still)
    assert not photo.complete and "still image" in photo.error
