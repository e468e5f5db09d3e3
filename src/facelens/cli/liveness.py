"""`facelens liveness`: is each face a live person or a presentation attack (photo, screen, replay)?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_UNDECIDED,
    CropsOpt,
    DetectorOpt,
    DetSizeOpt,
    JsonOpt,
    ThreadsOpt,
    escape,
    fail,
    out,
    print_json,
    report_errors,
    run_batch,
)
from facelens.pipeline import FaceAnalyzer


def liveness(
    images: Annotated[list[str] | None, typer.Argument(help="image files or folders")] = None,
    video: Annotated[Path | None, typer.Option("--video", help="a clip of the person doing --challenge")] = None,
    challenge: Annotated[str | None, typer.Option(
        "--challenge", help="with --video: the actions asked, in order, e.g. blink,left (blink, left, right, "
                            "mouth, smile; left/right are the person's own, camera not mirrored)")] = None,
    step_timeout: Annotated[float, typer.Option("--step-timeout", min=0.5, max=60,
                                                help="seconds allowed for each action")] = 6.0,
    bpcer: Annotated[float, typer.Option(
        "--bpcer", help="bona fide rejection rate of the threshold: one of the recorded rates (0.01, 0.05, 0.1)")]
    = 0.01,
    no_dtn: Annotated[bool, typer.Option("--no-dtn", help="MiniFASNet alone (8 ms a face instead of ~110)")] = False,
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Passive liveness of every face in IMAGES (exit 0 when every face is live, 1 when any is an attack,
    3 when some could not be decided and none is an attack, 2 on errors); or, with --video and
    --challenge, whether the clip shows a live person doing the actions asked (exit 0 passed, 1 failed)."""
    if not 0 < bpcer < 1:
        raise fail(f"--bpcer must be a rate between 0 and 1, got {bpcer:g}")
    options = {"liveness": {"bpcer": bpcer, "use_dtn": False if no_dtn else None}}
    if video is not None or challenge is not None:
        if images:
            raise fail("give images, or --video with --challenge, not both")
        if video is None or challenge is None:
            raise fail("--video and --challenge go together")
        _challenge(video, challenge, step_timeout, options, detector, json_out)
    if not images:
        raise fail("give images to check, or --video FILE --challenge ACTIONS")
    analyzer = FaceAnalyzer(detector=detector, threads=threads, det_size=det_size, crops=crops,
                            attributes=["liveness"], attribute_options=options)
    results = run_batch(analyzer, images, embed=False, label="checking liveness")
    decisions = [f.attributes.get("liveness", {}).get("decision") for r in results if r.ok for f in r.faces]
    if json_out:
        for r in results:
            print_json(r.to_dict(embedding=False))
    else:
        table = Table("image", "face", "box", "decision", "score", "threshold", "MiniFASNet", "DTN", "context")
        for r in results:
            for i, f in enumerate(r.faces if r.ok else []):
                v = f.attributes.get("liveness", {})
                if "unknown" in v:
                    table.add_row(escape(r.source), str(i), ",".join(f"{b:.0f}" for b in f.bbox), "unknown",
                                  escape(v["unknown"]), "", "", "", "")
                    continue
                colour = {"live": "green", "attack": "red"}.get(v["decision"], "yellow")
                table.add_row(escape(r.source), str(i), ",".join(f"{b:.0f}" for b in f.bbox),
                              f"[{colour}]{v['decision']}[/{colour}]", f"{v['score']:.3f}", f"{v['threshold']:.3f}",
                              f"{v['minifas']['p_attack']:.3f}", f"{v['dtn']['score']:.3f}" if "dtn" in v else "—",
                              f"{v['minifas']['context']:.2f}x")
            if r.ok and not r.faces:
                table.add_row(escape(r.source), "—", "", "no face", "", "", "", "", "")
        out.print(table)
    if report_errors(results):
        raise typer.Exit(EXIT_ERROR)
    if "attack" in decisions:
        raise typer.Exit(EXIT_NEGATIVE)
    if any(d != "live" for d in decisions) or not decisions:
        raise typer.Exit(EXIT_UNDECIDED)
    raise typer.Exit(EXIT_OK)


def _challenge(video: Path, challenge: str, step_timeout: float, options: dict, detector: str | None,
               json_out: bool) -> None:
    from facelens.challenge import check_challenge, parse_actions, video_signals
    from facelens.cli._common import progress_bar
    from facelens.models.store import usable

    actions = parse_actions(challenge)
    attributes = ["landmarks", "pose", "expression"]
    if usable("liveness-minifas"):
        attributes.append("liveness")
    analyzer = FaceAnalyzer(detector=detector, threads=1, attributes=attributes, attribute_options=options)
    analyzer.check_models(embed=False)
    import cv2

    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
    capture.release()
    with progress_bar(total, "reading the video") as advance:
        frames = video_signals(video, analyzer, on_frame=lambda _i: advance(None))  # type: ignore[arg-type]
    result = check_challenge(frames, actions, step_timeout)
    if json_out:
        print_json({"video": str(video), **result.to_dict()})
    else:
        steps = ", ".join(f"{c['action']} at {c['t']:.2f} s" for c in result.completed) or "none"
        verdict = "[green]passed[/green]" if result.passed else f"[red]failed[/red]: {escape(result.reason)}"
        out.print(f"{escape(str(video))}: challenge {', '.join(actions)} {verdict}; seen: {steps}; face in "
                  f"{result.face_frames}/{result.frames} frames"
                  + (f"; passive liveness live on {result.passive['live_share']:.0%} of "
                     f"{result.passive['frames']} frames checked" if result.passive else ""))
    raise typer.Exit(EXIT_OK if result.passed else EXIT_NEGATIVE)
