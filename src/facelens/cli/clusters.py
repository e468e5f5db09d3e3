"""`facelens cluster` (a root command, registered by `facelens.cli`) and the `facelens clusters` group
that looks at and corrects what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    DetSizeOpt,
    GalleryOpt,
    JsonOpt,
    MinQualityOpt,
    err,
    escape,
    fail,
    open_gallery,
    out,
    print_json,
    progress_bar,
)

clusters_app = typer.Typer(no_args_is_help=True, help="Look at and correct a clustered collection.")
CollectionOpt = Annotated[Path, typer.Option("--out", help="the collection folder `facelens cluster` wrote")]


def _collection(out_dir: Path, far: float = 1e-4, must_exist: bool = True) -> Any:
    from facelens.cluster import Collection

    if must_exist and not (out_dir / "collection.sqlite").exists():
        raise fail(f"{out_dir}: no clustered collection here (run `facelens cluster DIR --out {out_dir}`)")
    return Collection(out_dir, far=far)


def cluster(
    root: Annotated[Path, typer.Argument(help="folder of photos and videos (searched recursively)")],
    out_dir: Annotated[Path, typer.Option("--out", help="collection folder (database, JSON, contact sheet)")] = Path(
        "facelens-clusters"),
    far: Annotated[float, typer.Option("--far", help="sensitivity: false-match rate 1e-2, 1e-3 or 1e-4 "
                                       "(smaller = stricter, fewer wrong merges)")] = 1e-4,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="cluster everything again from scratch")] = False,
    min_quality: MinQualityOpt = None,
    det_size: DetSizeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Group the faces of a folder of photos and videos into people (a video gives one face per track);
    reruns add new files and keep corrections."""
    from facelens.io import expand_paths as _expand

    collection = _collection(out_dir, far, must_exist=False)
    if det_size != "auto":
        from facelens.pipeline import FaceAnalyzer

        bound = collection.db.meta("recognizer") if (out_dir / "collection.sqlite").exists() else None
        collection.analyzer = FaceAnalyzer(recognizer=bound, det_size=det_size)
    if min_quality is not None:
        collection.min_quality = min_quality
    if not root.is_dir():
        raise fail(f"{root}: not a folder")
    total = len(_expand([str(root)], videos=True))
    with progress_bar(total, "scanning") as advance:
        report = collection.scan(root, on_result=lambda entry: advance(None))  # type: ignore[arg-type]
    errors = [r for r in report if r["status"] == "error"]
    for r in errors:
        err.print(f"[red]error:[/red] {escape(r['error'])}", markup=True, highlight=False)
    for r in report:
        if r.get("warning"):  # a video that broke part way: its tracks before the break were added
            err.print(f"[yellow]warning:[/yellow] {escape(r['warning'])}", markup=True, highlight=False)
    result = collection.cluster(incremental=not rebuild)
    json_path, html_path = collection.write_outputs()
    summary = {**collection.summary(), "run": result, "errors": len(errors), "clusters_json": str(json_path),
               "contact_sheet": str(html_path)}
    if json_out:
        print_json(summary)
    else:
        out.print(f"{summary['images']} photo(s), {summary['faces']} face(s): {summary['clusters']} people, "
                  f"{summary['unassigned']} unassigned, {summary['set_aside']} set aside, {len(errors)} error(s) "
                  f"[{result['mode']}, threshold {result.get('threshold', 0):.3f} at FAR {far:g}]")
        out.print(f"contact sheet: {escape(str(html_path))}")
    if total == 0:
        raise fail(f"{root}: no images or videos found")
    raise typer.Exit(EXIT_ERROR if errors else EXIT_OK)


@clusters_app.command("show")
def clusters_show(out_dir: CollectionOpt, json_out: JsonOpt = False) -> None:
    """The people found, their face ids and source photos."""
    collection = _collection(out_dir)
    found = collection.clusters()
    if json_out:
        print_json({"summary": collection.summary(), "clusters": [c.to_dict() for c in found]})
        return
    table = Table("cluster", "name", "faces", "face ids", "photos")
    for c in found:
        table.add_row(str(c.id), escape(c.name or "—"), str(len(c.face_ids)),
                      ",".join(map(str, c.face_ids[:8])) + (" …" if len(c.face_ids) > 8 else ""), str(len(c.images)))
    out.print(table)


def _after_edit(collection: Any, message: str) -> None:
    collection.write_outputs()
    out.print(message)


@clusters_app.command("merge")
def clusters_merge(a: int, b: int, out_dir: CollectionOpt) -> None:
    """Clusters A and B are the same person (kept on every later run)."""
    collection = _collection(out_dir)
    collection.merge(a, b)
    _after_edit(collection, f"merged clusters {a} and {b}")


@clusters_app.command("split")
def clusters_split(face_id: int, out_dir: CollectionOpt) -> None:
    """Take one face out of its cluster (it becomes a person of its own)."""
    collection = _collection(out_dir)
    collection.split(face_id)
    _after_edit(collection, f"face {face_id} split out")


@clusters_app.command("not")
def clusters_not(face_id: int, cluster_id: int, out_dir: CollectionOpt) -> None:
    """Face FACE_ID is not the person of cluster CLUSTER_ID."""
    collection = _collection(out_dir)
    collection.not_person(face_id, cluster_id)
    _after_edit(collection, f"face {face_id} is not cluster {cluster_id}")


@clusters_app.command("name")
def clusters_name(
    cluster_id: int, name: str, out_dir: CollectionOpt,
    enroll: Annotated[bool, typer.Option("--enroll", help="also enroll the cluster's faces into the gallery")] = False,
    gallery: GalleryOpt = None,
) -> None:
    """Name a cluster (clusters given the same name are one person); --enroll adds it to the gallery."""
    collection = _collection(out_dir)
    faces = {c.id: set(c.face_ids) for c in collection.clusters()}.get(cluster_id, set())
    collection.name(cluster_id, name)  # re-clusters: ids may change, the faces do not
    message = f"cluster {cluster_id} is {name}"
    if enroll:
        target = next((c for c in collection.clusters() if faces & set(c.face_ids)), None)
        if target is None:
            raise fail(f"cluster {cluster_id} not found after naming")
        ids = collection.enroll(target.id, open_gallery(gallery))
        message += f"; enrolled {len(ids)} face(s) into the gallery"
    _after_edit(collection, message)
