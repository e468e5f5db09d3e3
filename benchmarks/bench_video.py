"""Video: real-time factor (seconds of video per second of processing) of `facelens video` against the
per-frame loop DeepFace's `stream()` runs (decode, detect and embed every face of every frame), in the same
run, on the shared clips at 360p-1080p; peak memory against video length; and the tracker choice (ByteTrack
or SORT from Roboflow `trackers`) measured on the clips. Each measurement runs in its own process (clean
peak RSS), one at a time. Writes the "video" section of RESULTS.md.

    .venv/bin/python benchmarks/bench_video.py            # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import machine, write_section  # noqa: E402

SHARED = Path(os.environ.get("FACELENS_SHARED") or ROOT.parent / "shared")
CLIPS = {  # label -> file
    "360p TV clip with cuts (640x360, 29.97 fps)": "hamilton_clip.mp4",
    "480p talking head (480x480, 30 fps)": "talking_d18.mp4",
    "540p crowd (826x540, 25 fps)": "crowd_mot20.mp4",
    "720p talking head (1280x720, 30 fps)": "talking_s18.mp4",
    "1080p station walkers (1920x1080, 25 fps)": "walkers_station.mp4",
}


# -- children: one measurement each ------------------------------------------------------------------------
def child_tracked(path: str, threads: int, tracker: str = "bytetrack") -> dict:
    from facelens.video import VideoAnalyzer

    analyzer = VideoAnalyzer(threads=threads, tracker=tracker)
    analyzer.check()
    result = analyzer.process(path)
    return {"seconds": result.seconds + (1 / result.info.fps if result.info.fps else 0), "wall": result.wall_s,
            "frames": result.frames_decoded, "analysed": result.frames_analyzed, "embedded": result.faces_embedded,
            "tracks": len(result.tracks), "cuts": len(result.cuts),
            "rejected": sum(t.rejected for t in result.tracks),
            "purity": min((min(float(b.embedding @ t.embedding) for b in t.best) for t in result.tracks),
                          default=1.0),
            "track_spans": [round(t.end - t.start, 2) for t in result.tracks]}


def child_every_frame(path: str, threads: int) -> dict:
    """The DeepFace-style loop: every frame detected and every face embedded, no tracking."""
    from facelens import FaceAnalyzer
    from facelens.video import VideoReader

    analyzer = FaceAnalyzer(det_size=640, threads=threads)
    analyzer.check_models()
    start = time.perf_counter()
    frames = faces = 0
    last = 0.0
    with VideoReader(path) as reader:
        for frame in reader.frames():
            found = analyzer.detector_model.detect(frame.pixels)
            analyzer.embed(frame.pixels, found)
            frames += 1
            faces += len(found)
            last = frame.time
        fps = reader.info.fps
    return {"seconds": last + (1 / fps if fps else 0), "wall": time.perf_counter() - start, "frames": frames,
            "embedded": faces}


def run_child(mode: str, path: Path, threads: int, extra: str = "") -> dict:
    args = [sys.executable, __file__, "--child", mode, str(path), "--threads", str(threads)]
    if extra:
        args += ["--tracker", extra]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def looped_copy(src: Path, times: int, dst: Path) -> Path:
    """`src` played `times` times in a row, re-encoded (a long video from a short one, for memory vs length)."""
    from fractions import Fraction

    import av

    with av.open(str(src)) as probe:
        stream = probe.streams.video[0]
        rate = Fraction(stream.average_rate or 25).limit_denominator(1001)
    with av.open(str(dst), "w", format="mp4") as out:
        enc = out.add_stream("libx264", rate=rate)
        enc.pix_fmt, enc.options = "yuv420p", {"crf": "23", "preset": "ultrafast"}
        n = 0
        for _ in range(times):
            with av.open(str(src)) as inp:
                for frame in inp.decode(video=0):
                    if n == 0:
                        enc.width, enc.height = frame.width, frame.height
                    new = av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")
                    new.pts = n
                    n += 1
                    for packet in enc.encode(new):
                        out.mux(packet)
        for packet in enc.encode():
            out.mux(packet)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tracker", default="bytetrack")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.child:
        mode, path = args.child
        out = child_tracked(path, args.threads, args.tracker) if mode == "tracked" else \
            child_every_frame(path, args.threads)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return

    videos = SHARED / "videos"
    lines = []
    print(f"{'clip':45s} {'mode':28s} {'RTF':>6s} {'frames':>7s} {'embedded':>8s} {'peak MB':>8s}")
    speed_rows = []
    for label, name in CLIPS.items():
        tracked = run_child("tracked", videos / name, args.threads)
        every = run_child("every", videos / name, args.threads)
        for mode, r in (("facelens video (tracked, 10 fps)", tracked), ("every frame (DeepFace-style)", every)):
            rtf = r["seconds"] / r["wall"]
            print(f"{label:45s} {mode:28s} {rtf:6.2f} {r['frames']:7d} {r['embedded']:8d} {r['peak_rss_mb']:8.0f}")
        speed_rows.append((label, tracked, every))

    # memory against length: the longest clip, and the same clip looped 4x (60 s)
    base = videos / "talking_d10.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        long = looped_copy(base, 4, Path(tmp) / "talking_d10_x4.mp4")
        memory = [("talking_d10 (512x512, 15 s)", run_child("tracked", base, args.threads)),
                  ("talking_d10 looped 4x (60 s)", run_child("tracked", long, args.threads))]
    for label, r in memory:
        print(f"memory: {label}: peak {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s of video, RTF "
              f"{r['seconds'] / r['wall']:.2f}")

    # tracker choice on every clip
    choice = []
    for name in ["talking_d10.mp4", "talking_d11.mp4", "talking_d18.mp4", "talking_s18.mp4", "grid_bbaf2n.mpg",
                 "grid_lbax4n.mpg", "grid_pwij3p.mpg", "hamilton_clip.mp4", "walkers_station.mp4",
                 "crowd_mot20.mp4"]:
        row = {kind: run_child("tracked", videos / name, args.threads, kind) for kind in ("bytetrack", "sort")}
        choice.append((name, row))
        print(f"tracker {name:22s} " + "  ".join(
            f"{k}: {v['tracks']} tracks, purity {v['purity']:.2f}, rejected {v['rejected']}" for k, v in row.items()))

    if args.no_write:
        return
    lines += [
        f"Measured {dt.date.today()} on {machine()}; `benchmarks/bench_video.py`, each row its own process, "
        f"{args.threads} threads. RTF = seconds of video per second of processing (>1: faster than real time); "
        "decoding (PyAV, every frame) is included in both rows.",
        "",
        "| clip | facelens video (tracked, 10 fps analysed) | every frame detected + embedded (DeepFace-style) "
        "| speed-up | faces embedded (tracked / every frame) | peak RSS (tracked / every) |",
        "|---|---|---|---|---|---|"]
    for label, tracked, every in speed_rows:
        rt, re = tracked["seconds"] / tracked["wall"], every["seconds"] / every["wall"]
        lines.append(f"| {label} | {rt:.2f}x | {re:.2f}x | {rt / re:.1f}x | {tracked['embedded']} / "
                     f"{every['embedded']} | {tracked['peak_rss_mb']:.0f} / {every['peak_rss_mb']:.0f} MB |")
    lines += ["", "Memory against length (the same talking head, once and looped four times):", "",
              "| video | seconds | peak RSS | RTF |", "|---|---|---|---|"]
    for label, r in memory:
        lines.append(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} MB | {r['seconds'] / r['wall']:.2f}x |")
    lines += ["", "Tracker choice (Roboflow `trackers` 2.6, same detections; no ground-truth boxes exist for these "
              "clips, so the criteria are what can be checked: one track per talking head, tracks per clip "
              "(fewer = less fragmentation when every face is covered), identity purity = the lowest similarity "
              "of a track's best frame to the track's own embedding (low = two people on one track), and faces "
              "the identity check refused):", "",
              "| clip | ByteTrack: tracks / purity / refused | SORT: tracks / purity / refused |", "|---|---|---|"]
    for name, row in choice:
        cells = [f"{row[k]['tracks']} / {row[k]['purity']:.2f} / {row[k]['rejected']}" for k in ("bytetrack", "sort")]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    totals = {k: sum(row[k]["tracks"] for _, row in choice) for k in ("bytetrack", "sort")}
    lines += ["", f"Tracks over all clips: ByteTrack {totals['bytetrack']}, SORT {totals['sort']}."]
    write_section("video", "## Video\n\n" + "\n".join(lines))
    print("\nwrote the video section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
