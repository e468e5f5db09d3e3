"""`facelens gallery`: enroll, import, list, show, export, rename, merge, remove-face, forget, use-milvus,
index, check, repair."""

from __future__ import annotations

import sys
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
from facelens.io import expand_paths


def _subject_rule(value: str) -> str:
    from facelens.errors import ConfigError
    from facelens.pipeline import check_subject_rule

    try:
        return check_subject_rule(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


SubjectOpt = Annotated[str, typer.Option(
    "--subject", callback=_subject_rule,
    help="which face is a photo's subject: main (size weighed by closeness to the centre) or largest")]

gallery_app = typer.Typer(no_args_is_help=True, help="Enroll, list, rename, merge and forget people.")


@gallery_app.command("enroll")
def gallery_enroll(
    name: Annotated[str, typer.Argument(help="the person's name")],
    images: Annotated[list[str], typer.Argument(help="photos of this person, one face each (or folders)")],
    largest: Annotated[bool, typer.Option(
        "--largest", help="take the subject of a multi-face photo even when it is not clearly the one")] = False,
    subject: SubjectOpt = "main",
    recognizer: Annotated[str | None, typer.Option("--recognizer", help="for a new gallery")] = None,
    min_quality: MinQualityOpt = None,
    require_live: Annotated[bool, typer.Option(
        "--require-live", help="refuse a face that passive liveness does not call live (photo, screen, replay)")]
    = False,
    det_size: DetSizeOpt = "auto",
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll NAME from IMAGES (all or nothing: a photo with no face, several faces none of which is
    clearly its subject, a face below the quality floor, or with --require-live one not found live, is
    refused, with the reason)."""
    store = open_gallery(gallery, recognizer, min_quality, det_size)
    ids = store.enroll(name, [str(p) for p in expand_paths(images)], largest=largest, subject=subject,
                       require_live=require_live)
    if json_out:
        print_json({"person": name, "faces_added": ids})
    else:
        out.print(f"enrolled {len(ids)} face(s) for {escape(name)} in {escape(str(store.path))}")


@gallery_app.command("import")
def gallery_import(
    root: Annotated[Path, typer.Argument(help="folder with one sub-folder of photos per person")],
    largest: Annotated[bool, typer.Option(
        "--largest", help="take the subject of a multi-face photo even when it is not clearly the one")] = False,
    subject: SubjectOpt = "main",
    recognizer: Annotated[str | None, typer.Option("--recognizer", help="for a new gallery")] = None,
    min_quality: MinQualityOpt = None,
    det_size: DetSizeOpt = "auto",
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll a folder per person (each photo's subject when it is clearly the one; ambiguous and bad files
    reported with their reason and skipped; a rerun resumes), or load an export."""
    from facelens.evaluate.protocols import folder_per_person

    store = open_gallery(gallery, recognizer, min_quality, det_size)
    if root.is_file():
        added = store.import_export(root, recognizer=recognizer)
        out.print(f"imported {added} face(s) from {escape(str(root))}")
        return
    total = len(folder_per_person(root))
    with progress_bar(total, "importing") as advance:
        report = store.import_folder(root, largest=largest, subject=subject,
                                     on_result=lambda entry: advance(None))  # type: ignore[arg-type]
    errors = [r for r in report if r["status"] == "error"]
    for r in errors:
        err.print(f"[red]error:[/red] {escape(r['error'])}", markup=True, highlight=False)
    if json_out:
        print_json(report)
    else:
        done = sum(r["status"] == "enrolled" for r in report)
        skipped = sum(r["status"] == "already enrolled" for r in report)
        reasons: dict[str, int] = {}
        for r in errors:
            reasons[r.get("reason", "other")] = reasons.get(r.get("reason", "other"), 0) + 1
        why = " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")" if reasons else ""
        out.print(f"enrolled {done} photo(s), {skipped} already there, {len(errors)} error(s){escape(why)} "
                  f"into {escape(str(store.path))}")
    raise typer.Exit(EXIT_ERROR if errors else EXIT_OK)


@gallery_app.command("list")
def gallery_list(gallery: GalleryOpt = None, json_out: JsonOpt = False) -> None:
    """People in the gallery with their face counts."""
    people = open_gallery(gallery).people()
    if json_out:
        print_json([p.to_dict() for p in people])
        return
    table = Table("id", "name", "faces")
    for p in people:
        table.add_row(str(p.id), escape(p.name), str(p.faces))
    out.print(table)


@gallery_app.command("show")
def gallery_show(name: str, gallery: GalleryOpt = None, json_out: JsonOpt = False) -> None:
    """One person's enrolled faces."""
    store = open_gallery(gallery)
    person, faces = store.person(name), store.faces(name)
    if json_out:
        print_json({**person.to_dict(), "face_list": faces})
        return
    out.print(f"{escape(person.name)} (id {person.id}), {person.faces} face(s), recognizer {store.recognizer}")
    table = Table("face id", "box", "det score", "source image sha256")
    for f in faces:
        table.add_row(str(f["face_id"]), ",".join(f"{v:.0f}" for v in f["bbox"] or []),
                      f"{f['det_score']:.3f}" if f["det_score"] is not None else "—", (f["image_sha256"] or "—")[:16])
    out.print(table)


@gallery_app.command("export")
def gallery_export(target: Path, gallery: GalleryOpt = None) -> None:
    """Write people, faces, embeddings and thumbnails to a JSON-lines file (`gallery import` reads it)."""
    count = open_gallery(gallery).export(target)
    out.print(f"exported {count} face(s) to {escape(str(target))}")


@gallery_app.command("rename")
def gallery_rename(old: str, new: str, gallery: GalleryOpt = None) -> None:
    """Rename a person."""
    open_gallery(gallery).rename(old, new)
    out.print(f"renamed {escape(old)} to {escape(new)}")


@gallery_app.command("merge")
def gallery_merge(source: str, target: str, gallery: GalleryOpt = None) -> None:
    """Move every face of SOURCE to TARGET and remove SOURCE."""
    moved = open_gallery(gallery).merge(source, target)
    out.print(f"moved {moved} face(s) from {escape(source)} to {escape(target)}")


@gallery_app.command("remove-face")
def gallery_remove_face(face_id: int, gallery: GalleryOpt = None) -> None:
    """Remove one enrolled face by id."""
    open_gallery(gallery).remove_face(face_id)
    out.print(f"removed face {face_id}")


@gallery_app.command("forget")
def gallery_forget(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (required when not on a terminal)")] = False,
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Erase a person completely (rows, embeddings, thumbnails; storage compacted) and write a receipt."""
    store = open_gallery(gallery)
    person = store.person(name)  # an unknown name fails here, before any question
    if not yes:
        if not sys.stdin.isatty():
            raise fail(f"forgetting {escape(person.name)} cannot be undone: pass --yes to confirm from a script")
        question = f"Forget {escape(person.name)} ({person.faces} face(s)) completely? This cannot be undone"
        if not typer.confirm(question):
            err.print("nothing forgotten")
            raise typer.Exit(EXIT_ERROR)
    receipt = store.forget(person.id)
    if json_out:
        print_json(receipt)
    else:
        out.print(f"forgot {escape(person.name)}: {receipt['faces_removed']} face(s) erased; "
                  f"receipt {escape(receipt['receipt'])}")


@gallery_app.command("use-milvus")
def gallery_use_milvus(
    uri: Annotated[str, typer.Argument(help="http://host:19530 (a server) or a milvus-lite file (milvus.db)")],
    collection: Annotated[str, typer.Option("--collection", help="Milvus collection name")] = "faces",
    gallery: GalleryOpt = None,
) -> None:
    """Keep this gallery's vectors and search in Milvus from now on (existing faces are copied over)."""
    store = open_gallery(gallery)
    store.use_milvus(uri, collection)
    out.print(f"{escape(str(store.path))} now searches Milvus at {escape(uri)} (collection {escape(collection)}), "
              f"{store.index.size} face(s)")


@gallery_app.command("index")
def gallery_index(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="rebuild the search index from the database")] = False,
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """State of the search index (kind, faces, files); --rebuild recreates it from SQLite."""
    store = open_gallery(gallery)
    info = store.index_info(rebuild=rebuild)
    if json_out:
        print_json(info)
    else:
        out.print(", ".join(f"{k}: {escape(str(v))}" for k, v in info.items()))


def _show_report(report: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(report)
        return
    for key, value in report.items():
        out.print(f"{key}: {escape(str(value))}")


@gallery_app.command("check")
def gallery_check(gallery: GalleryOpt = None, json_out: JsonOpt = False) -> None:
    """Check the gallery's database and index (SQLite integrity, orphan or malformed faces, index vs
    database). Exit 0 if sound, 2 if damaged (then run `gallery repair`)."""
    report = open_gallery(gallery).check()
    _show_report(report, json_out)
    if not report.get("ok"):
        err.print("[red]the gallery is damaged[/red]: run `facelens gallery repair` to rebuild it from what can "
                  "still be read", markup=True)
        raise typer.Exit(EXIT_ERROR)


@gallery_app.command("repair")
def gallery_repair(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (required when not on a terminal)")] = False,
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rebuild a damaged gallery from every row that can still be read; the damaged file is kept beside it.
    Run it with no other process using the gallery."""
    if not yes:
        if not sys.stdin.isatty():
            raise fail("repair rewrites the gallery's database: pass --yes to confirm from a script")
        if not typer.confirm("Rebuild the gallery from what can still be read (the damaged file is kept)?"):
            raise typer.Exit(EXIT_ERROR)
    _show_report(open_gallery(gallery).repair(), json_out)
