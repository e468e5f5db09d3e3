"""`facelens anonymize`: cover the faces of photos and videos, write copies without metadata, and (with
--verify) measure what a recognizer can still do with them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_NEGATIVE,
    EXIT_OK,
    DetSizeOpt,
    GalleryOpt,
    JsonOpt,
    err,
    escape,
    fail,
    open_gallery,
    out,
    print_json,
    progress_bar,
    unique_path,
)
from facelens.errors import FacelensError

IMAGE_KEEP = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}  # written in their own format
VIDEO_KEEP = {".mp4", ".mov", ".mkv"}
VERIFY_EVERY_S = 1.0  # a video is checked on one frame a second


def anonymize(
    inputs: Annotated[list[str], typer.Argument(help="photos, videos, or folders of them")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the anonymized copies (made if missing)")],
    method: Annotated[str, typer.Option("--method", help="blur, pixelate or fill")] = "blur",
    level: Annotated[int, typer.Option("--level", min=1, max=5, help="1 weakest .. 5 strongest (see README)")] = 5,
    region: Annotated[str, typer.Option(
        "--region", help="head (ellipse over the whole head) or face (the face's outline, from 106 points)")] = "head",
    margin: Annotated[float, typer.Option("--margin", min=0.0, max=2.0, help="grow the region by this share")] = 0.25,
    keep: Annotated[list[str] | None, typer.Option(
        "--keep", help="an enrolled person to leave visible (repeat the option for several); needs --gallery")] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="cover only this enrolled person (repeat for several); everyone else stays")] = None,
    gallery_path: GalleryOpt = None,
    fpir: Annotated[float, typer.Option("--fpir", help="identification's open-set rule for --keep/--only")] = 0.01,
    verify: Annotated[bool, typer.Option(
        "--verify", help="measure re-identification and leaks; report in OUT/verification.html (exit 1 if the "
                         "recognizer still matches a face or a face was left uncovered)")] = False,
    det_size: DetSizeOpt = "auto",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="replace files already in --out (never an input)")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Cover every face (or, with --keep/--only, the chosen people's) in photos and videos; the copies are
    written to --out without any metadata (EXIF GPS, camera serials, embedded thumbnails)."""
    from facelens.anonymize import Anonymizer
    from facelens.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, same_file

    sources: list[tuple[Path, Path]] = []  # (file, its path relative to the output folder)
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in media)
            if not found:
                raise fail(f"{raw}: folder holds no photos or videos")
            sources.extend((p, p.relative_to(path)) for p in found)
        else:
            sources.append((path, Path(path.name)))
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {out_dir}: not a folder")
    plan = []
    seen: set[Path] = set()
    for source, relative in sources:
        suffix = source.suffix.lower()
        is_video = suffix in VIDEO_SUFFIXES
        keep_suffix = suffix in (VIDEO_KEEP if is_video else IMAGE_KEEP)
        target = out_dir / (relative if keep_suffix else relative.with_suffix(".mp4" if is_video else ".png"))
        target = unique_path(target, seen, target.suffix)
        clash = next((s for s, _ in sources if same_file(target, s)), None)
        if clash is not None:
            raise fail(f"--out {out_dir}: {target} is the input {clash}; writing it would destroy the original")
        if (target.exists() or target.is_symlink()) and not overwrite:
            raise fail(f"--out {out_dir}: {target} already exists (--overwrite replaces files there)")
        plan.append((source, target, is_video))
    gallery = open_gallery(gallery_path) if (keep or only) else None
    anonymizer = Anonymizer(method=method, level=level, region=region, margin=margin, keep=keep or (),
                            only=only or (), gallery=gallery, fpir=fpir, det_size=det_size)
    anonymizer.check()  # bad options, unknown names, missing models: one error before any file
    verifier = None
    if verify:
        from facelens.anonymize.verify import AnonymizationVerifier

        verifier = AnonymizationVerifier()
    errors = 0
    records: list[dict[str, Any]] = []
    with progress_bar(len(plan), "anonymizing") as advance:
        for source, target, is_video in plan:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                record = _video(anonymizer, source, target, verifier) if is_video else \
                    _image(anonymizer, source, target, verifier)
            except (FacelensError, OSError) as exc:
                errors += 1
                message = str(exc) if isinstance(exc, FacelensError) else \
                    f"{exc.filename or source}: {exc.strerror or exc}"
                err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
                record = {"source": str(source), "error": message}
            records.append(record)
            if record.get("error") and "output" in record:
                errors += 1
                err.print(f"[red]error:[/red] {escape(record['error'])}", markup=True, highlight=False)
            if json_out:
                print_json(record)
            advance(None)  # type: ignore[arg-type]
            if record.get("interrupted"):
                err.print("stopped by the user")
                raise typer.Exit(130)
    verdict_ok = True
    if verifier is not None:
        from facelens.anonymize.verify import write_report

        out_dir.mkdir(parents=True, exist_ok=True)
        report = verifier.finish({"method": method, "level": level, "region": region, "margin": margin})
        _, html_path = write_report(report, out_dir)
        summary = report.to_dict()
        verdict_ok = summary["reidentified"] == 0 and not summary["leaks"]
        if json_out:
            print_json({k: v for k, v in summary.items() if k != "per_face"})
        else:
            out.print(f"verified {summary['faces']} face(s): similarity to the original mean "
                      f"{summary['mean_similarity']}, max {summary['max_similarity']}; re-identified at FAR 1e-3: "
                      f"{summary['reidentified']} ({100 * summary['reidentification_rate']:.1f} %); rank-1 among the "
                      f"originals {summary['rank1']} (chance {summary['rank1_chance']}); possible leaks "
                      f"{len(summary['leaks'])}; report {escape(str(html_path))}")
    if not json_out:
        covered = sum(len(r.get("covered", [])) if isinstance(r.get("covered"), list) else r.get("faces_covered", 0)
                      for r in records)
        out.print(f"{len(records) - errors} file(s) written to {escape(str(out_dir))}, {covered} face cover(s), "
                  f"{errors} error(s)")
    if errors:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_OK if verdict_ok else EXIT_NEGATIVE)


def _image(anonymizer: Any, source: Path, target: Path, verifier: Any) -> dict[str, Any]:
    from facelens.anonymize import write_image

    result = anonymizer.anonymize(str(source))
    write_image(target, result.pixels)
    if verifier is not None:
        verifier.add(str(source), result.original, result.pixels, result.covered, [f for f, _ in result.spared],
                     result.mask)
    return {**result.to_dict(), "output": str(target)}


def _video(anonymizer: Any, source: Path, target: Path, verifier: Any) -> dict[str, Any]:
    from facelens.anonymize.video import anonymize_video

    last = [-1e9]

    def check(index: int, time: float, original: Any, covered: Any, faces: list, mask: Any, spared: list) -> None:
        if time - last[0] >= VERIFY_EVERY_S:
            last[0] = time
            verifier.add(f"{source}@{time:.2f}s", original, covered, faces, spared, mask=mask)

    result = anonymize_video(anonymizer, source, target, on_frame=check if verifier is not None else None)
    return result.to_dict()
