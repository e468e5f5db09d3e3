"""`facelens video`: the faces of video files, webcams and streams as tracks: who appears, when."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    GalleryOpt,
    err,
    escape,
    fail,
    open_gallery,
    out,
    unique_path,
)
from facelens.errors import FacelensError


def video(
    sources: Annotated[list[str], typer.Argument(
        help="video files, folders of them, webcam:N (or /dev/videoN), or rtsp:// http(s):// stream URLs")],
    gallery_path: GalleryOpt = None,
    identify: Annotated[bool | None, typer.Option(
        "--identify/--no-identify", help="name each track from the gallery (default: when --gallery is given "
                                         "or the default gallery exists)")] = None,
    annotated: Annotated[Path | None, typer.Option(
        "--out", help="write an annotated copy (boxes, names, track ids): a .mp4/.mov/.mkv file, or a folder "
                      "for several inputs")] = None,
    timeline: Annotated[str | None, typer.Option(
        "--json", help="write the timeline as JSON to this file ('-': standard output)")] = None,
    sheet: Annotated[Path | None, typer.Option(
        "--contact-sheet", help="write a PNG of the people seen (a file, or a folder for several inputs)")] = None,
    fps: Annotated[float, typer.Option("--fps", min=0.0, help="frames analysed per second of video (0: all)")] = 10.0,
    max_seconds: Annotated[float | None, typer.Option(
        "--max-seconds", min=0.0, help="stop after this much video (webcams and streams run until Ctrl-C)")] = None,
    fpir: Annotated[float, typer.Option("--fpir", help="strangers named at most this often (open-set rule)")] = 0.01,
    tracker: Annotated[str, typer.Option("--tracker", help="bytetrack or sort")] = "bytetrack",
    det_size: Annotated[int, typer.Option("--det-size", min=96, max=4096,
                                          help="detector input side, px (a multiple of 32)")] = 640,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="put each track's embedding in the JSON")] = False,
) -> None:
    """Find, track and (with a gallery) identify the faces in videos: one line per track with its person
    (or unknown), time span and best frame's quality. Exit 2 if a video could not be read (a broken file
    still gives the timeline up to the break)."""
    from facelens.io import same_file
    from facelens.video import VideoAnalyzer
    from facelens.video.decode import is_live_source, is_video_path

    if det_size % 32:
        raise fail(f"--det-size must be a multiple of 32, got {det_size}")
    inputs: list[str] = []
    for source in sources:
        path = Path(source)
        if not is_live_source(source) and path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_video_path(p))
            if not found:
                raise fail(f"{source}: folder holds no video files")
            inputs.extend(found)
        else:
            inputs.append(source)
    many = len(inputs) > 1
    for option, value in (("--out", annotated), ("--contact-sheet", sheet)):
        if value is not None and many and not value.is_dir():
            raise fail(f"{option} must be an existing folder when there are several inputs")
    # every output decided and checked before any work: a typo must not cost an hour of processing, and
    # nothing written may be one of the inputs (same path, a link, a hard link)
    used: set[Path] = set()
    plan = []
    for source in inputs:
        target = unique_path(_target(annotated, source, ".annotated.mp4"), used, ".annotated.mp4") \
            if annotated else None
        sheet_path = unique_path(_target(sheet, source, ".people.png"), used, ".people.png") if sheet else None
        plan.append((source, target, sheet_path))
    outputs = [(o, "--out", ".mp4 .mov .mkv") for _, o, _ in plan if o is not None]
    outputs += [(s_, "--contact-sheet", ".png .jpg .jpeg") for _, _, s_ in plan if s_ is not None]
    if timeline not in (None, "-"):
        outputs.append((Path(timeline), "--json", ""))
    for path, option, suffixes in outputs:
        if suffixes and path.suffix.lower() not in suffixes.split():
            raise fail(f"{option} {path}: must end in {', '.join(suffixes.split())}")
        if not path.parent.is_dir():
            raise fail(f"{option} {path}: folder {path.parent} does not exist")
        if path.is_dir():
            raise fail(f"{option} {path}: is a folder")
        clash = next((i for i in inputs if not is_live_source(i) and same_file(path, i)), None)
        if clash is not None:
            raise fail(f"{option} {path}: that is the input {clash}; writing it would destroy the video")
    gallery = None
    from facelens.gallery import DB_NAME, default_gallery_path

    if identify is None:
        identify = gallery_path is not None or (default_gallery_path() / DB_NAME).exists()
    if identify:
        gallery = open_gallery(gallery_path)
    analyzer = VideoAnalyzer(fps=fps, det_size=det_size, tracker=tracker, fpir=fpir)
    analyzer.check(gallery)  # a missing model, gallery or bad option is one error, not one per video
    timelines: list[dict[str, Any]] = []
    failed = 0
    interrupted = False
    for source, target, sheet_path in plan:
        try:
            result = _run(analyzer, source, gallery, target, max_seconds, quiet=timeline == "-")
        except (FacelensError, OSError) as exc:
            failed += 1
            err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
            timelines.append({"source": source, "video": None, "complete": False, "error": str(exc),
                              "interrupted": False, "processed": None, "cuts": [], "gallery": None, "people": {},
                              "tracks": []})
            continue
        if result.error and not result.interrupted:
            failed += 1
            err.print(f"[red]error:[/red] {escape(result.error)} (timeline up to there kept)", markup=True,
                      highlight=False)
        timelines.append(result.to_dict(embeddings))
        if sheet_path is not None:
            from facelens.video.render import contact_sheet

            try:
                contact_sheet(result.tracks, sheet_path)
            except (FacelensError, OSError) as exc:
                failed += 1
                err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
        if timeline != "-":
            _print_timeline(result, target)
        if result.interrupted:  # Ctrl-C stops the batch: this video's timeline so far is kept, the rest not begun
            interrupted = True
            err.print(f"{escape(result.error or 'interrupted')}; stopping", highlight=False)
            break
    if timeline is not None:
        payload: Any = timelines if many else timelines[0]
        text = json.dumps(payload, indent=1)
        if timeline == "-":
            out.file.write(text + "\n")
        else:
            try:
                Path(timeline).write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise fail(f"--json {timeline}: {exc.strerror or exc}") from None
    if interrupted:
        raise typer.Exit(130)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)


def _target(option: Path, source: str, suffix: str) -> Path:
    if option.is_dir():
        stem = Path(source).stem if not source.startswith(("rtsp:", "http", "webcam:", "/dev/")) else "stream"
        return option / f"{stem}{suffix}"
    return option


def _run(analyzer: Any, source: str, gallery: Any, target: Path | None, max_seconds: float | None,
         quiet: bool) -> Any:
    from facelens.video.decode import VideoReader, is_live_source

    live = is_live_source(source)
    duration = None
    if not live:
        with VideoReader(source) as probe:
            duration = probe.info.duration if probe.info else None
        if max_seconds is not None and duration:
            duration = min(duration, max_seconds)

    def announce(track: Any) -> None:
        if live and not quiet:
            out.print(f"{track.end:8.2f} s  track {track.track_id}: {escape(track.person or 'unknown')}")

    columns = (TextColumn(f"{escape(Path(source).name if not live else source)}"), BarColumn(),
               TextColumn("{task.completed:.1f}/{task.total:.1f} s"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=live or not duration) as bar:
        task = bar.add_task("video", total=duration or 1.0)
        return analyzer.process(source, gallery=gallery, output=target, max_seconds=max_seconds,
                                on_progress=lambda t: bar.update(task, completed=t), on_track=announce)


def _print_timeline(result: Any, target: Path | None) -> None:
    info = result.info
    processed = result.to_dict()["processed"]
    head = f"{escape(result.source)}: {info.width}x{info.height}, {result.seconds:.1f} s"
    rtf = processed["realtime_factor"]
    out.print(f"{head}; {len(result.tracks)} tracks, {len(result.cuts)} cuts; "
              f"{rtf if rtf is not None and math.isfinite(rtf) else 0:.1f}x real time")
    table = Table("track", "person", "similarity", "start", "end", "frames", "quality", "yaw")
    for t in result.tracks:
        yaw = f"{t.yaw[0]:+.0f}..{t.yaw[1]:+.0f}" if t.yaw else ""
        table.add_row(str(t.track_id), escape(t.person or "unknown"),
                      "" if t.similarity is None else f"{t.similarity:.3f}", f"{t.start:.2f}", f"{t.end:.2f}",
                      str(t.frames), f"{t.best_quality:.2f}", yaw)
    if result.tracks:
        out.print(table)
    if target is not None:
        out.print(f"annotated video: {escape(str(target))}")
