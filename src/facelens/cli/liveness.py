"""`facelens liveness`: is each face a live person or a presentation attack (photo, screen, replay)?"""

from __future__ import annotations

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
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    bpcer: Annotated[float, typer.Option(
        "--bpcer", help="bona fide rejection rate of the threshold: one of the recorded rates (0.01, 0.05, 0.1)")]
    = 0.01,
    no_dtn: Annotated[bool, typer.Option("--no-dtn", help="MiniFASNet alone (8 ms a face instead of ~110)")] = False,
    detector: DetectorOpt = "scrfd-500m",
    det_size: DetSizeOpt = "auto",
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Passive liveness of every face. Exit 0 when every face is live, 1 when any is an attack, 3 when
    some could not be decided (too little image around the face) and none is an attack, 2 on errors."""
    if not 0 < bpcer < 1:
        raise fail(f"--bpcer must be a rate between 0 and 1, got {bpcer:g}")
    options = {"liveness": {"bpcer": bpcer, "use_dtn": False if no_dtn else None}}
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
