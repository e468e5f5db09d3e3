"""Commands on images: detect, analyze, embed, verify, find, identify, calibrate.

They hang on the root app; `facelens.cli` registers them there (in `--help` order).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from facelens.analysis import DEFAULT_ATTRIBUTES
from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_UNDECIDED,
    CropsOpt,
    DetectorOpt,
    DetSizeOpt,
    FarOpt,
    FlipOpt,
    GalleryOpt,
    Int8Opt,
    JsonOpt,
    MinQualityOpt,
    RecognizerOpt,
    ThreadsOpt,
    err,
    escape,
    fail,
    open_gallery,
    out,
    print_json,
    progress_bar,
    report_errors,
    run_batch,
)
from facelens.cli.gallery import SubjectOpt
from facelens.errors import FacelensError, QualityError
from facelens.io import expand_paths
from facelens.pipeline import FaceAnalyzer, main_face
from facelens.types import ImageResult


def _draw_target(draw: Path, source: str, many: bool) -> Path:
    if not many and draw.suffix:
        return draw
    if draw.exists() and not draw.is_dir():
        raise fail(f"--draw {draw} exists and is not a folder: give a folder, or for one image a new file "
                   "name ending in .jpg or .png")
    return draw / (Path(source).stem + ".jpg")


def _write_drawings(draw: Path, results: list[ImageResult], json_out: bool,
                    render: Callable[[np.ndarray, ImageResult], np.ndarray]) -> None:
    """`--draw`: one annotated copy per readable image (a file for one image, a folder for several)."""
    from facelens.draw import save_image
    from facelens.io import load_image

    many = len(results) > 1
    for r in results:
        if r.ok:
            target = _draw_target(draw, r.source, many)
            save_image(target, render(load_image(r.source), r))
            if not json_out:
                out.print(f"wrote {escape(str(target))}")



def detect(
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    json_out: JsonOpt = False,
    draw: Annotated[Path | None, typer.Option("--draw", help="annotated image (a folder for several)")] = None,
    detector: DetectorOpt = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.01, max=0.99, help="default: the detector's own (scrfd-500m 0.5, yunet 0.6)")] = None,
    min_face: Annotated[float, typer.Option("--min-face", min=0, help="smallest face side, px")] = 0,
    det_size: DetSizeOpt = "auto",
    threads: ThreadsOpt = 0,
) -> None:
    """Find every face: box, five landmarks, score."""
    from facelens.draw import draw_faces

    analyzer = FaceAnalyzer(detector=detector, threads=threads, det_threshold=threshold, min_face=min_face,
                            det_size=det_size)
    results = run_batch(analyzer, images, embed=False, label="detecting")
    if json_out:
        for r in results:
            print_json(r.to_dict(embedding=False))
    else:
        table = Table("image", "faces", "size", "boxes (x1,y1,x2,y2 score)")
        for r in results:
            if r.ok:
                boxes = "; ".join(f"{b[0]:.0f},{b[1]:.0f},{b[2]:.0f},{b[3]:.0f} {f.det_score:.2f}"
                                  for f in r.faces for b in [f.bbox])
                table.add_row(escape(r.source), str(len(r.faces)), f"{r.width}x{r.height}", boxes)
        out.print(table)
    if draw is not None:
        _write_drawings(draw, results, json_out, lambda pixels, r: draw_faces(pixels, r.faces))
    raise typer.Exit(EXIT_ERROR if report_errors(results) else EXIT_OK)


def _analysis_label(face: Any) -> str:
    """Short text for a face: expression, age, gender, quality (what is known of them)."""
    from facelens.analysis import is_known

    a = face.attributes
    parts = []
    if is_known(a.get("expression")):
        parts.append(a["expression"]["label"])
    if is_known(a.get("age_gender")):
        parts.append(f"{a['age_gender']['age']:.0f} {a['age_gender']['gender'][0]}")
    if is_known(a.get("quality")):
        parts.append(f"q{a['quality']['score']:.2f}")
    return " ".join(parts)


def _cell(value: Any, fmt: Callable[[Any], str]) -> str:
    from facelens.analysis import is_known

    if value is None:
        return ""
    return fmt(value) if is_known(value) else "unknown"



def analyze(
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    json_out: JsonOpt = False,
    draw: Annotated[Path | None, typer.Option("--draw", help="annotated image (a folder for several)")] = None,
    attributes: Annotated[str, typer.Option(
        "--attributes", help="comma-separated: landmarks, landmarks68, pose, quality, expression (the default "
        "model), expression-fer, expression-human, age-gender")] = ",".join(DEFAULT_ATTRIBUTES),
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
) -> None:
    """Everything about every face: landmarks, head pose, quality, expression, age and gender."""
    from facelens.analysis import resolve
    from facelens.draw import draw_analysis

    names = resolve([n.strip() for n in attributes.split(",") if n.strip()])
    analyzer = FaceAnalyzer(detector=detector, threads=threads, attributes=names, det_size=det_size, crops=crops)
    results = run_batch(analyzer, images, embed=False, label="analysing")
    if json_out:
        for r in results:
            print_json(r.to_dict(embedding=False))
    else:
        table = Table("image", "face", "box", "yaw/pitch/roll", "quality", "expression", "age", "gender")
        for r in results:
            for i, f in enumerate(r.faces if r.ok else []):
                a = f.attributes
                table.add_row(
                    escape(r.source), str(i), ",".join(f"{v:.0f}" for v in f.bbox),
                    _cell(a.get("pose"), lambda p: f"{p['yaw']:+.0f}/{p['pitch']:+.0f}/{p['roll']:+.0f}"),
                    _cell(a.get("quality"), lambda q: f"{q['score']:.2f}"),
                    _cell(a.get("expression"), lambda e: f"{e['label']} {e['score']:.2f}"),
                    _cell(a.get("age_gender"), lambda g: f"{g['age']:.0f}"),
                    _cell(a.get("age_gender"), lambda g: f"{g['gender']} {g['gender_score']:.2f}"),
                )
        out.print(table)
    if draw is not None:
        _write_drawings(draw, results, json_out,
                        lambda pixels, r: draw_analysis(pixels, r.faces, [_analysis_label(f) for f in r.faces]))
    raise typer.Exit(EXIT_ERROR if report_errors(results) else EXIT_OK)



def embed(
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    output: Annotated[Path, typer.Option("--out", help="F.npy (array + F.faces.jsonl index) or F.jsonl")],
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    recognizer: RecognizerOpt = None,
    flip: FlipOpt = False,
    int8: Int8Opt = False,
    largest: Annotated[bool, typer.Option("--largest", help="only one face per image: its subject")] = False,
    subject: SubjectOpt = "main",
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Embed every face (or each image's subject, --largest) into L2-normalised vectors."""
    suffix = output.suffix.lower()
    if output.is_dir():
        raise fail(f"--out {output} is a folder; give a file name ending in .npy or .jsonl")
    if suffix not in {".npy", ".jsonl"}:
        raise fail(f"--out must end in .npy or .jsonl, got {output.name!r}")
    if output.parent.exists() and not output.parent.is_dir():
        raise fail(f"--out {output}: {output.parent} is not a folder")
    analyzer = FaceAnalyzer(detector=detector, recognizer=recognizer, threads=threads, flip=flip, det_size=det_size,
                            crops=crops, int8=int8)
    results = run_batch(analyzer, images, embed=True, label="embedding")
    rows = []
    for r in results:
        one = main_face(r.faces, r.width or 0, r.height or 0, subject) if largest else None
        faces = ([one] if one is not None else []) if largest else r.faces
        rows.extend((r.source, i, f) for i, f in enumerate(faces))
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        # no face at all still writes the recognizer's width, so the file stacks with others
        dim = rows[0][2].embedding.size if rows else analyzer.recognizer_model.dim
        matrix = np.stack([f.embedding for _, _, f in rows]) if rows else np.zeros((0, dim), np.float32)
        np.save(output, matrix.astype(np.float32))
        index = output.with_suffix(".faces.jsonl")
        with open(index, "w") as fh:
            for row, (src, i, f) in enumerate(rows):
                fh.write(json.dumps({"row": row, "source": src, "face": i, **f.to_dict(embedding=False)}) + "\n")
        written = f"{output} ({len(rows)}x{dim}) and {index}"
    else:
        with open(output, "w") as fh:
            for src, i, f in rows:
                fh.write(json.dumps({"source": src, "face": i, **f.to_dict()}) + "\n")
        written = f"{output} ({len(rows)} faces)"
    n_failed = report_errors(results)
    if json_out:
        print_json({"out": str(output), "faces": len(rows), "images": len(results), "failed": n_failed})
    else:
        out.print(f"{len(rows)} faces from {len(results) - n_failed} images; wrote {escape(written)}")
    raise typer.Exit(EXIT_ERROR if n_failed else EXIT_OK)



def verify(
    image_a: Annotated[str, typer.Argument(help="first image (its subject, see --subject)")],
    image_b: Annotated[str, typer.Argument(help="second image (its subject)")],
    far: FarOpt = 1e-3,
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    recognizer: RecognizerOpt = None,
    flip: FlipOpt = False,
    int8: Int8Opt = False,
    min_quality: MinQualityOpt = None,
    subject: SubjectOpt = "main",
    json_out: JsonOpt = False,
) -> None:
    """Same person? Exit 0 if so, 1 if not, 2 on error, 3 if a face is too poor to decide."""
    from facelens.verify import verify as verify_pair

    analyzer = FaceAnalyzer(detector, recognizer, threads=1, flip=flip, det_size=det_size, int8=int8)
    try:
        result = verify_pair(image_a, image_b, far=far, analyzer=analyzer, min_quality=min_quality, subject=subject)
    except QualityError as exc:
        # not "different people": a face too poor to compare gets its own answer and exit code
        if json_out:
            print_json({"a": image_a, "b": image_b, "same": None, "decided": False, "reason": str(exc)})
        else:
            out.print(f"[yellow]cannot decide[/yellow]: {escape(str(exc).removeprefix('cannot decide: '))}",
                      markup=True)
        raise typer.Exit(EXIT_UNDECIDED) from None
    if json_out:
        print_json({"a": image_a, "b": image_b, **result.to_dict()})
    else:
        verdict = "[green]same person[/green]" if result.same else "[yellow]different people[/yellow]"
        out.print(f"{verdict}: similarity {result.similarity:.3f}, threshold {result.threshold:.3f} "
                  f"(FAR {far:g}, {escape(analyzer.int8_model or analyzer.recognizer)})", markup=True)
    raise typer.Exit(EXIT_OK if result.same else EXIT_NEGATIVE)



def find(
    query: Annotated[str, typer.Argument(help="image of the person to look for (its largest face)")],
    images: Annotated[list[str], typer.Argument(help="images or folders to search")],
    far: FarOpt = 1e-3,
    draw: Annotated[Path | None, typer.Option("--draw", help="annotated image (a folder for several)")] = None,
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    recognizer: RecognizerOpt = None,
    flip: FlipOpt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Find the person of QUERY among every face of IMAGES. Exit 0 if found, 1 if not."""
    from facelens.draw import draw_faces, save_image
    from facelens.io import load_image
    from facelens.verify import find as find_person

    analyzer = FaceAnalyzer(detector, recognizer, threads=threads, flip=flip, det_size=det_size)
    paths = [str(p) for p in expand_paths(images)]
    found = find_person(query, paths, far=far, analyzer=analyzer)
    results = [r for r, _ in found]
    matches = 0
    table = Table("image", "face", "box", "similarity", "match")
    records = []
    for result, checks in found:
        for i, (face, check) in enumerate(zip(result.faces, checks, strict=True)):
            matches += check.same
            box = ",".join(f"{v:.0f}" for v in face.bbox)
            table.add_row(escape(result.source), str(i), box, f"{check.similarity:.3f}",
                          "[green]yes[/green]" if check.same else "")
            records.append({"source": result.source, "face": i, "bbox": face.to_dict()["bbox"],
                            **check.to_dict()})
    if json_out:
        print_json({"query": query, "matches": matches, "faces": records})
    else:
        out.print(table)
        threshold = found[0][1][0].threshold if found and found[0][1] else None
        note = f" (threshold {threshold:.3f} at FAR {far:g})" if threshold is not None else ""
        out.print(f"{matches} matching face(s) among {len(records)}{note}")
    if draw is not None:
        for result, checks in found:
            if result.ok:
                labels = [f"{c.similarity:.2f}" + (" MATCH" if c.same else "") for c in checks]
                colours = [(0, 200, 0) if c.same else (0, 0, 220) for c in checks]
                target = _draw_target(draw, result.source, len(found) > 1)
                save_image(target, draw_faces(load_image(result.source), result.faces, labels, colours))
                if not json_out:
                    out.print(f"wrote {escape(str(target))}")
    if report_errors(results):
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_OK if matches else EXIT_NEGATIVE)



def calibrate(
    root: Annotated[Path | None, typer.Option("--root", help="folder with one sub-folder of images per person")] = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="CSV of path1,path2,same")] = None,
    impostors: Annotated[Path | None, typer.Option(
        "--impostors", help="with --root: a further folder per person, used only for impostor pairs (more "
        "impostor pairs measure lower false-match rates)")] = None,
    detector: DetectorOpt = None,
    det_size: DetSizeOpt = "auto",
    recognizer: RecognizerOpt = None,
    flip: FlipOpt = False,
    save: Annotated[bool, typer.Option("--save", help="store as this user's thresholds")] = False,
    output: Annotated[Path | None, typer.Option("--out", help="write/merge into this thresholds file")] = None,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Measure verification thresholds from labelled data (--root or --pairs): FAR 1e-2 to 1e-4, and down
    to 1e-7 (measured where enough impostor pairs reach it, else from a fitted tail) on larger sets."""
    from facelens.calibrate import calibrate as calibrate_folder
    from facelens.calibrate import calibrate_pairs, save_record
    from facelens.evaluate.protocols import folder_per_person, read_pairs_csv
    from facelens.models.registry import user_thresholds_path

    if (root is None) == (pairs is None):
        raise fail("give exactly one of --root DIR (folder per person) or --pairs FILE.csv")
    if impostors is not None and root is None:
        raise fail("--impostors goes with --root (a folder per person), not --pairs")
    analyzer = FaceAnalyzer(detector, recognizer, threads=threads, flip=flip, det_size=det_size)
    if root is not None:
        total = len(folder_per_person(root)) + (len(folder_per_person(impostors)) if impostors else 0)
        with progress_bar(total, "calibrating") as advance:
            record = calibrate_folder(root, analyzer, on_result=advance, impostors=impostors)
    else:
        total = len({p for pair in read_pairs_csv(pairs) for p in (pair.a, pair.b)})
        with progress_bar(total, "calibrating") as advance:
            record = calibrate_pairs(pairs, analyzer, on_result=advance)
    targets = ([output] if output else []) + ([user_thresholds_path()] if save else [])
    for target in targets:
        save_record(record, target)
    if json_out:
        print_json(record)
        return
    data = record["data"]
    people = f"{data['people']} people, " if "people" in data else ""
    out.print(f"{recognizer}: {people}{data['images']} images ({data['skipped']} skipped), "
              f"{record['pairs']['genuine']} genuine / {record['pairs']['impostor']} impostor pairs")
    table = Table("FAR", "threshold", "method", "measured FAR", "FNMR", "accuracy")
    for far, t in record["thresholds"].items():
        table.add_row(far, f"{t['threshold']:.4f}", t["method"], f"{t['measured_far']:.2e}",
                      f"{t['fnmr']:.4f}", f"{t['accuracy']:.4f}")
    out.print(table)
    for target in targets:
        out.print(f"saved to {escape(str(target))}")



def identify(
    images: Annotated[list[str], typer.Argument(help="images or folders")],
    gallery: GalleryOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100)] = 3,
    fpir: Annotated[float, typer.Option(
        "--fpir", help="false-positive identification rate: the share of strangers (never enrolled) that may "
        "be given a name; the threshold follows from it and the gallery's size")] = 0.01,
    det_size: DetSizeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Who is in these photos? Every face against the gallery: a name, or unknown."""
    from facelens.gallery.openset import check_fpir

    check_fpir(fpir)
    store = open_gallery(gallery, det_size=det_size)
    store.people(limit=1)  # no gallery (or a damaged one) is one error before any image is read
    decision = store.decision_threshold(fpir)
    if not json_out:
        err.print(f"threshold {decision.threshold:.3f}: FPIR {fpir:g} over {decision.gallery_faces} enrolled "
                  f"face(s) of {decision.gallery_people} people (per comparison {decision.fmr:.2g}, "
                  f"{decision.method})")
    failed = 0
    table = Table("image", "face", "box", "identity", "similarity", "next best")
    for path in expand_paths(images):
        try:
            found = store.identify(str(path), top_k=top_k, fpir=fpir)
        except FacelensError as exc:
            failed += 1
            err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
            continue
        if json_out:
            print_json({"source": str(path), "faces": [f.to_dict() for f in found]})
        for i, f in enumerate(found):
            best = f.matches[0] if f.matches else None
            runner = f.matches[1] if len(f.matches) > 1 else None
            table.add_row(escape(str(path)), str(i), ",".join(f"{v:.0f}" for v in f.face.bbox),
                          escape(f.identity or "unknown"), f"{best.similarity:.3f}" if best else "—",
                          f"{escape(runner.person)} {runner.similarity:.3f}" if runner else "—")
    if not json_out and table.row_count:
        out.print(table)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)
