"""`facelens index`: embed every face of folders, file lists or object storage into Parquet (resumable), on this
machine or on a Ray cluster."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    DetectorOpt,
    DetSizeOpt,
    Int8Opt,
    JsonOpt,
    RecognizerOpt,
    ThreadsOpt,
    err,
    escape,
    fail,
    out,
    print_json,
    progress_bar,
)
from facelens.errors import FacelensError
from facelens.io import expand_paths


def index(
    sources: Annotated[list[str], typer.Argument(help="image files or folders; with --ray also URIs such as "
                                                      "s3://bucket/photos")],
    outputs: Annotated[list[str], typer.Option(
        "--out", help="output folder of Parquet files (created; a second run over it skips images already there, "
                      "by content hash); give --out twice to also upsert every face into Milvus: "
                      "milvus://HOST:PORT/COLLECTION or milvus:///ABSOLUTE/PATH.db/COLLECTION (milvus-lite; "
                      "the collection may be left out: facelens_index)")],
    ray_address: Annotated[str | None, typer.Option(
        "--ray", help="run on Ray: 'local' (a Ray instance on this machine), 'auto' (inside a cluster) or "
                      "ray://HEAD:10001; without it, this machine's threads")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Ray workers (0: every CPU of the cluster)")] = 0,
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    recognizer: RecognizerOpt = None,
    int8: Int8Opt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Index every face of a photo collection: box, five points, score and embedding per face, one Parquet row
    each, keyed by the image's sha256 (resumable)."""
    from facelens.index import IndexOptions, index_local, index_ray, is_milvus, parse_milvus

    if workers < 0:
        raise fail(f"--workers must be >= 0, got {workers}")
    if workers and ray_address is None:
        raise fail("--workers is for --ray; on this machine --threads sets how many images run at once")
    folders = [o for o in outputs if not is_milvus(o)]
    milvus = [o for o in outputs if is_milvus(o)]
    if len(folders) != 1 or len(milvus) > 1:
        raise fail("give one output folder (--out DIR), and at most one Milvus target (--out milvus://…) beside it"
                   if folders or len(milvus) > 1 else
                   f"--out {escape(milvus[0])}: a Milvus output needs an output folder as well (--out DIR): the "
                   "Parquet files are the index's record, Milvus its searchable copy")
    output = folders[0]
    options = IndexOptions(detector=detector, recognizer=recognizer, int8=int8, det_size=det_size)
    try:
        if milvus:
            parse_milvus(milvus[0])  # a malformed address is one error before anything starts
        if ray_address is None:
            paths = expand_paths(sources)
            with progress_bar(len(paths), "indexing") as advance:
                summary = index_local(paths, output, options, threads=threads, on_image=lambda: advance(None),
                                      milvus=milvus[0] if milvus else None)
        else:
            local = [s for s in sources if "://" not in s]
            remote = [s for s in sources if "://" in s]
            # local folders are expanded here, so a typo is one error before the cluster starts
            files = [str(p.resolve()) for p in expand_paths(local)] + remote
            missing = [f for f in files if "://" not in f and not os.path.exists(f)]
            if missing:
                raise fail(f"{escape(missing[0])}: no such file")
            summary = index_ray(files, output, options, address=ray_address, workers=workers,
                                milvus=milvus[0] if milvus else None)
    except FacelensError as exc:
        raise fail(escape(str(exc))) from None
    for path in summary.set_aside:
        err.print(f"[yellow]warning[/yellow] {escape(path)} could not be read (a run killed while writing it?): "
                  "renamed *.broken, its images done again")
    for message in summary.errors:
        err.print(f"[red]error[/red] {escape(message)}")
    if json_out:
        print_json(summary.as_dict())
    else:
        rate = f", {summary.done / summary.seconds:.1f} images/s" if summary.seconds and summary.done else ""
        out.print(f"{summary.done} images processed ({summary.faces} faces, {len(summary.errors)} unreadable), "
                  f"{summary.skipped} already in {escape(summary.out)}; {summary.seconds:.1f} s{rate}")
        if summary.milvus:
            out.print(f"{summary.milvus_upserted} faces upserted into {escape(summary.milvus)}")
    if summary.milvus_error:
        err.print(f"[red]error[/red] {escape(summary.milvus_error)}")
    raise typer.Exit(EXIT_ERROR if summary.errors or summary.milvus_error else EXIT_OK)
