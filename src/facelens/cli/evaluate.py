"""`facelens evaluate`: accuracy with the protocols papers use (pairs, identify, cluster, quality)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from facelens.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    CropsOpt,
    DetectorOpt,
    FlipOpt,
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
from facelens.pipeline import FaceAnalyzer

evaluate_app = typer.Typer(no_args_is_help=True, help="Measure accuracy with the protocols papers use.")


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise fail("plots need matplotlib: pip install 'facelens[eval]'") from None


def _show_evaluation(protocol: str, results: list[dict[str, Any]], header: list[str], rows: list[list[str]],
                     report: Path | None, json_out: bool) -> None:
    if json_out:
        print_json({"protocol": protocol, "results": results})
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    if report is not None:
        out.print(f"wrote {escape(str(report))} and plots in {escape(str(report.parent))}")


def _parse_list(text: str, convert: Callable[[str], Any], what: str) -> list[Any]:
    try:
        return [convert(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise fail(f"{what} must be a comma-separated list, got {text!r}") from None


def _evaluation_setup(recognizers: str | None, detector: str | None, flip: bool, threads: int, no_cache: bool,
                      probe_sizes: str, crops: bool = False) -> tuple[list[Any], tuple[int, ...]]:
    from facelens.evaluate.cache import EmbeddingCache
    from facelens.evaluate.protocols import Embedder

    sizes = tuple(_parse_list(probe_sizes, int, "--probe-size")) if probe_sizes else ()
    if any(s < 4 or s > 1024 for s in sizes):
        raise fail("--probe-size values must be face widths between 4 and 1024 px")
    cache = None if no_cache else EmbeddingCache()
    # nothing given: the profile's recognizer
    names = _parse_list(recognizers, str, "--recognizer") if recognizers and recognizers.strip() else [None]
    embedders = [Embedder(FaceAnalyzer(detector, rec, threads=threads, flip=flip, crops=crops), cache)
                 for rec in names]
    if not embedders:
        raise fail("--recognizer names at least one recognizer")
    return embedders, sizes


RecognizersOpt = Annotated[str, typer.Option(
    "--recognizer", help="one or several, comma-separated (default: the profile's)")]
ProbeSizeOpt = Annotated[str, typer.Option("--probe-size", help="e.g. 16,24,32,48,64,112: down-sampled probes")]
OutDirOpt = Annotated[Path | None, typer.Option("--out", help="folder for results.json, report.md and plots")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="do not read or write the embedding cache")]


@evaluate_app.command("pairs")
def evaluate_pairs_cmd(
    pairs: Annotated[Path, typer.Option("--pairs", help="LFW pairs.txt or CSV path1,path2,same[,fold]")],
    root: Annotated[Path | None, typer.Option("--root", help="image folder (name/name_0001.jpg) for pairs.txt")] = None,
    recognizer: RecognizersOpt = "",
    detector: DetectorOpt = None,
    flip: FlipOpt = False,
    probe_size: ProbeSizeOpt = "",
    groups: Annotated[Path | None, typer.Option("--groups", help="CSV identity,group: error rates per group")] = None,
    far: Annotated[float, typer.Option("--far", help="FAR of the global threshold for --groups")] = 1e-3,
    output: OutDirOpt = None,
    crops: CropsOpt = False,
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
    embedders, sizes = _evaluation_setup(recognizer, detector, flip, threads, no_cache, probe_size, crops)
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
        err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    for r in results:
        if r["pairs_skipped"]:
            err.print(f"{r['recognizer']}: {r['pairs_skipped']} pair(s) skipped (unreadable images)")
    raise typer.Exit(EXIT_ERROR if any(r["unreadable_images"] for r in results) else EXIT_OK)


@evaluate_app.command("cluster")
def evaluate_cluster_cmd(
    root: Annotated[Path, typer.Option("--root", help="folder with one sub-folder of images per person")],
    far: Annotated[float, typer.Option("--far", help="clustering threshold as a false-match rate")] = 1e-4,
    recognizer: RecognizerOpt = None,
    detector: DetectorOpt = None,
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Clustering quality: pairwise and BCubed precision/recall/F, NMI, clusters found vs people."""
    from facelens.cluster.evaluate import evaluate_clustering
    from facelens.evaluate.protocols import folder_per_person

    n_images = len(folder_per_person(root))
    (embedder,), _ = _evaluation_setup(recognizer, detector, False, threads, no_cache, "", crops)
    with progress_bar(n_images, "embedding") as advance:
        result = evaluate_clustering(root, embedder, far, on_done=lambda _path: advance(None))  # type: ignore
    if json_out:
        print_json(result)
        return
    table = Table("metric", "value")
    for key in ("faces", "people", "clusters_found", "unassigned", "pairwise_precision", "pairwise_recall",
                "pairwise_f", "bcubed_precision", "bcubed_recall", "bcubed_f", "nmi", "threshold"):
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)
    for error in result["errors"].values():
        err.print(f"[red]error:[/red] {escape(error)}", markup=True, highlight=False)


@evaluate_app.command("quality")
def evaluate_quality_cmd(
    root: Annotated[Path, typer.Option("--root", help="folder with one sub-folder of images per person")],
    far: Annotated[float, typer.Option("--far", help="false-match rate that fixes the comparison threshold")] = 1e-3,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write report.json and edc.png here")] = None,
    recognizer: RecognizerOpt = None,
    detector: DetectorOpt = None,
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Face quality as the field evaluates it: error-versus-discard curves against simple baselines."""
    from facelens.evaluate.protocols import folder_per_person
    from facelens.evaluate.quality import FRACTIONS, evaluate_quality

    n_images = len(folder_per_person(root))
    analyzer = FaceAnalyzer(detector=detector, recognizer=recognizer, threads=threads, attributes=["quality"],
                            crops=crops)
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
        print_json(result)
    else:
        table = Table("measure", "FNMR 0%", "5%", "10%", "20%", "30%", "mean FNMR 0-20%")
        for name, m in sorted(result["methods"].items(), key=lambda kv: kv[1]["pauc_20"]):
            table.add_row(name, *(f"{v:.4f}" for v in m["fnmr_at"].values()), f"{m['pauc_20']:.4f}")
        out.print(f"{result['faces']} faces, {result['genuine_pairs']} genuine comparisons, threshold "
                  f"{result['threshold']:.4f} (FAR {far:g})")
        out.print(table)
        if out_dir is not None:
            out.print(f"wrote {escape(str(out_dir / 'report.json'))} and edc.png")
    for error in result["errors"].values():
        err.print(f"[red]error:[/red] {escape(error)}", markup=True, highlight=False)


@evaluate_app.command("identify")
def evaluate_identify_cmd(
    root: Annotated[Path, typer.Option("--root", help="folder with one sub-folder of images per person")],
    enroll: Annotated[int, typer.Option("--enroll", min=1, help="images per person in the gallery")] = 1,
    distractors: Annotated[Path | None, typer.Option(
        "--distractors", help="folder per person of other people, never probes, added to the gallery in growing "
                              "numbers: FPIR and DIR at the decision threshold against gallery size")] = None,
    fpir: Annotated[float | None, typer.Option(
        "--fpir", help="target FPIR of the decision threshold for --distractors (default 0.01)")] = None,
    holdout: Annotated[float, typer.Option(
        "--holdout", help="share of the people with enough images kept out of the gallery as unknown probes "
                          "(seeded)")] = 0.0,
    recognizer: RecognizersOpt = "",
    detector: DetectorOpt = None,
    flip: FlipOpt = False,
    probe_size: ProbeSizeOpt = "",
    output: OutDirOpt = None,
    crops: CropsOpt = False,
    threads: ThreadsOpt = 0,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Identification: closed-set rank-1/rank-5 (CMC) and open-set DIR at FPIR 1e-2, 1e-1; with
    --distractors, FPIR and DIR at the decision threshold as the gallery grows."""
    from facelens.evaluate.protocols import evaluate_identification, folder_per_person
    from facelens.evaluate.report import (
        GROWTH_HEADER,
        IDENTIFY_HEADER,
        growth_caption,
        growth_rows,
        identify_rows,
        write_identify_outputs,
    )
    from facelens.gallery.openset import check_fpir

    if output is not None:
        _require_matplotlib()
    if fpir is not None:
        check_fpir(fpir)
    if fpir is not None and distractors is None:
        raise fail("--fpir sets the decision threshold of the --distractors sweep; give --distractors DIR")
    if distractors is not None and not distractors.is_dir():
        raise fail(f"--distractors {distractors}: no such folder (expected one sub-folder of images per person)")
    if not 0.0 <= holdout < 1.0:
        raise fail(f"--holdout must be a share in [0, 1), got {holdout:g}")
    n_images = len(folder_per_person(root)) + (len(folder_per_person(distractors)) if distractors else 0)
    embedders, sizes = _evaluation_setup(recognizer, detector, flip, threads, no_cache, probe_size, crops)
    results = []
    for embedder in embedders:
        with progress_bar(n_images, f"embedding ({embedder.analyzer.recognizer})") as advance:
            results.append(evaluate_identification(root, embedder, enroll, sizes,
                                                   on_done=lambda _path: advance(None),  # type: ignore[arg-type]
                                                   distractors=distractors, fpir=fpir, holdout=holdout))
    context: dict[str, Any] = {"root": str(root), "enroll": enroll}
    if holdout:
        context["holdout"] = holdout
    if distractors is not None:
        context["distractors"] = str(distractors)
    report = write_identify_outputs(output, results, context) if output is not None else None
    _show_evaluation("identify", results, IDENTIFY_HEADER, identify_rows(results), None if distractors else report,
                     json_out)
    if distractors is not None and not json_out:
        for r in results:
            table = Table(*GROWTH_HEADER, title=growth_caption(r))
            for row in growth_rows(r):
                table.add_row(*row)
            out.print(table)
            if r["unknown_probes"] == 0:
                err.print(f"{r['recognizer']}: no unknown probes (every person has more than {enroll} image(s)), so "
                          "FPIR cannot be measured; --holdout keeps a share of the people out of the gallery")
        if report is not None:
            out.print(f"wrote {escape(str(report))} and plots in {escape(str(report.parent))}")


def _finish_labelled(protocol: str, result: dict[str, Any], markdown: str, report: Path | None, plot: str,
                     json_out: bool) -> None:
    """How a labels-file evaluation ends: JSON (without the per-row list) or the Markdown report, the
    unreadable images by line, and exit 2 if there were any."""
    if json_out:
        print_json({"protocol": protocol, "results": [{k: v for k, v in result.items() if k != "rows"}]})
    else:
        out.print(markdown)
        if report is not None:
            out.print(f"wrote {escape(str(report))}, results.json and {plot}")
    for line, error in result["errors"].items():
        err.print(f"[red]error:[/red] {escape(line)}: {escape(error)}", markup=True, highlight=False)
    raise typer.Exit(EXIT_ERROR if result["errors"] else EXIT_OK)


InputOpt = Annotated[str, typer.Option(
    "--input", help="crops: each image is one face crop (used whole, never 'no face'); photos: detect, the main "
                    "subject; auto: detect, and take an image whole where no face is found")]


@evaluate_app.command("expression")
def evaluate_expression_cmd(
    root: Annotated[Path, typer.Option("--root", help="one sub-folder of images per expression (angry, disgust, "
                                                      "fear, happy, sad, surprise, neutral; usual synonyms too)")],
    model: Annotated[str, typer.Option("--model", help="expression, expression-fer or expression-human")]
    = "expression",
    input_mode: InputOpt = "auto",
    detector: DetectorOpt = None,
    output: OutDirOpt = None,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Expression accuracy, macro recall, per class, and the confusion matrix (PNG with --out)."""
    from facelens.evaluate.attributes import (
        check_input_mode,
        evaluate_expression,
        expression_items,
        write_expression_outputs,
    )

    if model not in {"expression", "expression-fer", "expression-human"}:
        raise fail(f"--model must be expression, expression-fer or expression-human, got {model!r}")
    check_input_mode(input_mode)
    if output is not None:
        _require_matplotlib()
    items, unknown = expression_items(root)
    analyzer = FaceAnalyzer(detector=detector, threads=threads, attributes=[model])
    with progress_bar(len(items), "reading expressions") as advance:
        evaluation = evaluate_expression(root, analyzer, input_mode, on_done=lambda _p: advance(None))  # type: ignore[arg-type]
    s = evaluation.summary
    report = write_expression_outputs(output, evaluation) if output is not None else None
    for name, count in unknown.items():
        err.print(f"folder {escape(name)!r} ({count} images) is not an expression class; not scored")
    if json_out:
        print_json({"protocol": "expression", "results": [s]})
    else:
        table = Table("class", "images", "recall", "precision", "F1",
                      title=f"{s['model']} ({s['input']}): accuracy {100 * s['accuracy']:.2f} %, macro recall "
                            f"{100 * s['macro_recall']:.2f} %, no face {s['no_face']}")
        for name, c in s["per_class"].items():
            table.add_row(name, str(c["support"]), *(f"{100 * c[k]:.1f} %" if c[k] == c[k] else "—"
                                                      for k in ("recall", "precision", "f1")))
        out.print(table)
        if report is not None:
            out.print(f"wrote {escape(str(report))}, results.json and confusion.png")
    for error in s["errors"].values():
        err.print(f"[red]error:[/red] {escape(error)}", markup=True, highlight=False)
    raise typer.Exit(EXIT_ERROR if s["errors"] else EXIT_OK)


@evaluate_app.command("age-gender")
def evaluate_age_gender_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="CSV with a header: path,age,gender[,group] (paths "
                                                          "relative to the CSV; age or gender may be empty)")],
    input_mode: InputOpt = "auto",
    detector: DetectorOpt = None,
    output: OutDirOpt = None,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Age MAE and gender accuracy, overall, by age band and by group (bias), with a report and plot."""
    from facelens.evaluate.attributes import (
        age_gender_markdown,
        check_input_mode,
        evaluate_age_gender,
        read_age_gender_labels,
        write_age_gender_outputs,
    )

    check_input_mode(input_mode)
    if output is not None:
        _require_matplotlib()
    n = len(read_age_gender_labels(labels))  # a bad labels file is one error before any work
    analyzer = FaceAnalyzer(detector=detector, threads=threads, attributes=["age-gender"])
    with progress_bar(n, "reading age and gender") as advance:
        result = evaluate_age_gender(labels, analyzer, input_mode, on_done=lambda _p: advance(None))  # type: ignore[arg-type]
    report = write_age_gender_outputs(output, result) if output is not None else None
    _finish_labelled("age-gender", result, age_gender_markdown(result), report, "age_bands.png", json_out)


@evaluate_app.command("liveness")
def evaluate_liveness_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="CSV with a header: path,label[,attack_type,subject] "
                                                          "(label live or attack, or the attack type itself)")],
    bpcer: Annotated[float, typer.Option("--bpcer", help="the recorded BPCER whose threshold decides")] = 0.01,
    no_dtn: Annotated[bool, typer.Option("--no-dtn", help="MiniFASNet alone")] = False,
    detector: DetectorOpt = None,
    crops: CropsOpt = False,
    output: OutDirOpt = None,
    threads: ThreadsOpt = 0,
    json_out: JsonOpt = False,
) -> None:
    """Presentation-attack detection, ISO/IEC 30107-3: APCER per attack type, BPCER, ACER, APCER at BPCER
    1 % and 5 %, per subject; a DET plot with --out."""
    from facelens.evaluate.liveness import (
        evaluate_liveness,
        liveness_markdown,
        read_liveness_labels,
        write_liveness_outputs,
    )

    if output is not None:
        _require_matplotlib()
    n = len(read_liveness_labels(labels))
    analyzer = FaceAnalyzer(detector=detector, threads=threads, crops=crops, attributes=["liveness"],
                            attribute_options={"liveness": {"bpcer": bpcer, "use_dtn": False if no_dtn else None}})
    with progress_bar(n, "checking liveness") as advance:
        result = evaluate_liveness(labels, analyzer, on_done=lambda _p: advance(None))  # type: ignore[arg-type]
    report = write_liveness_outputs(output, result) if output is not None else None
    _finish_labelled("liveness", result, liveness_markdown(result), report, "det.png", json_out)


@evaluate_app.command("anonymize")
def evaluate_anonymize_cmd(
    images: Annotated[list[str], typer.Argument(help="photos or folders of them (a sample of your own)")],
    methods: Annotated[str, typer.Option("--methods", help="comma-separated: blur, pixelate, fill")]
    = "blur,pixelate,fill",
    levels: Annotated[str, typer.Option("--levels", help="comma-separated levels 1-5")] = "1,2,3,4,5",
    region: Annotated[str, typer.Option("--region", help="head or face")] = "head",
    json_out: JsonOpt = False,
) -> None:
    """Every method x level on your own photos: similarity of the covered faces to their originals, the share
    the recognizer still matches at FAR 1e-3, and rank-1 among the originals; pick the weakest setting that
    still defeats it."""
    from facelens.anonymize.cover import check_cover
    from facelens.anonymize.verify import sweep
    from facelens.io import expand_paths

    chosen = _parse_list(methods, str, "--methods")
    steps = _parse_list(levels, int, "--levels")
    if not chosen or not steps:
        raise fail("--methods and --levels must name at least one each")
    settings = []
    for method in chosen:
        for level in ([5] if method == "fill" else steps):
            check_cover(method, level, region, 0.25)
            settings.append({"method": method, "level": level, "region": region})
    paths = expand_paths(images)
    errors: list[str] = []
    with progress_bar(len(paths), "anonymizing and checking") as advance:
        table = sweep(paths, settings, FaceAnalyzer(threads=2), on_image=lambda p: advance(None),  # type: ignore[arg-type]
                      errors=errors)
    for message in errors:
        err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    if json_out:
        print_json({"settings": table, "errors": errors})
        raise typer.Exit(EXIT_ERROR if errors else EXIT_OK)
    if not table or not table[0]["faces"]:
        raise fail("no face found in these photos at the detector's threshold")
    grid = Table("method", "level", "faces", "mean similarity", "max", "re-identified (FAR 1e-3)", "rank-1",
                 title=f"chance rank-1 {table[0]['rank1_chance']}")
    for row in table:
        grid.add_row(row["setting"]["method"], str(row["setting"]["level"]), str(row["faces"]),
                     f"{row['mean_similarity']:.3f}", f"{row['max_similarity']:.3f}",
                     f"{100 * row['reidentification_rate']:.1f} %", f"{100 * (row['rank1'] or 0):.1f} %")
    out.print(grid)
    raise typer.Exit(EXIT_ERROR if errors else EXIT_OK)
