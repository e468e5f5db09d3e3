"""Evaluation outputs: JSON with every figure, a Markdown report, PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


def pairs_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per recognizer: the figures papers print for LFW-style verification."""
    rows = []
    for r in results:
        tar = r["tar_at_far"]
        rows.append([
            r["recognizer"] + (" +flip" if r.get("flip") else ""),
            f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}",
            _fmt(r["auc"]), f"{100 * r['eer']:.2f}",
            *(f"{100 * tar[k]['tar']:.2f}" for k in ("0.0001", "0.001", "0.01")),
            _fmt(r["best_threshold"]["threshold"]), f"{r['fallback_images']}/{r['images']}",
        ])
    return rows


PAIRS_HEADER = ["recognizer", "accuracy % (10-fold)", "AUC", "EER %", "TAR@1e-4 %", "TAR@1e-3 %", "TAR@1e-2 %",
                "best threshold", "fallback images"]
IDENTIFY_HEADER = ["recognizer", "rank-1 %", "rank-5 %", "DIR@FPIR 1e-2 %", "DIR@FPIR 1e-1 %", "gallery", "probes",
                   "fallback images"]


def identify_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        dirs = [r.get(f"dir_at_fpir_{f}") for f in ("0.01", "0.1")]
        rows.append([
            r["recognizer"], f"{100 * r['rank1']:.2f}", f"{100 * r['rank5']:.2f}",
            *(f"{100 * d['dir']:.2f}" if d else "—" for d in dirs),
            f"{r['gallery_images']} ({r['gallery_people']} people)",
            f"{r['mated_probes']} mated + {r['unknown_probes']} unknown", str(r["fallback_images"]),
        ])
    return rows


GROWTH_HEADER = ["gallery people", "gallery faces", "threshold", "FPIR %", "unknown named", "DIR %", "mated probes",
                 "unknown people named %"]


def growth_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per gallery size of a distractor sweep (`distractor_sweep`): FPIR and DIR at the
    decision threshold, and the share of unknown people with at least one probe named."""
    rows = []
    for s in result["distractors"]["sizes"]:
        rows.append([
            f"{s['gallery_people']:,}", f"{s['gallery_faces']:,}", f"{s['threshold']:.4f}",
            f"{100 * s['fpir']:.2f}" if s["fpir"] is not None else "—",
            f"{s['unknown_named']}/{s['unknown_probes']}",
            f"{100 * s['dir']:.2f}" if s["dir"] is not None else "—", str(s["mated_probes"]),
            f"{100 * s['unknown_people_named']:.1f} of {s['unknown_people']}" if "unknown_people_named" in s else "—",
        ])
    return rows


def growth_caption(result: dict[str, Any]) -> str:
    d = result["distractors"]
    return (f"{result['recognizer']}: FPIR and DIR at the decision threshold for target FPIR {d['fpir_target']:g} "
            f"as the gallery grows ({d['people']} distractor people from {d['folder']}, {d['enroll']} face(s) "
            "each; enrolled people first)")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def extra_sections(results: list[dict[str, Any]]) -> list[str]:
    """Low-resolution and per-group tables, where the run asked for them."""
    out = []
    for r in results:
        if r.get("distractors"):
            out.append(f"### Gallery growth — {growth_caption(r)}\n")
            out.append(markdown_table(GROWTH_HEADER, growth_rows(r)) + "\n")
        low = r.get("low_resolution")
        if low:
            key = "accuracy_mean" if "accuracy_mean" in next(iter(low.values())) else "rank1"
            label = "10-fold accuracy %" if key == "accuracy_mean" else "rank-1 %"
            out.append(f"### Low-resolution probes — {r['recognizer']}\n")
            out.append(markdown_table(["probe face width (px)", label],
                                      [[size, f"{100 * v[key]:.2f}"] for size, v in low.items()]) + "\n")
        bias = r.get("bias")
        if bias:
            out.append(f"### Error rates per group — {r['recognizer']} (threshold {bias['threshold']:.4f} "
                       f"= FAR {bias['far']:g} over all pairs)\n")
            rows = [[g, str(v["genuine_pairs"]), str(v["impostor_pairs"]),
                     _fmt(v["fnmr"]), _fmt(v["fmr"])] for g, v in bias["groups"].items()]
            out.append(markdown_table(["group", "genuine pairs", "impostor pairs", "FNMR", "FMR"], rows))
            out.append(f"\nworst/best ratio: FMR {_fmt(bias['fmr_worst_best_ratio'], 2)}, "
                       f"FNMR {_fmt(bias['fnmr_worst_best_ratio'], 2)}\n")
    return out


def write_report(out_dir: Path, protocol: str, results: list[dict[str, Any]], context: dict[str, Any],
                 plots: list[Path]) -> Path:
    """results.json and report.md in out_dir; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"protocol": protocol, **context, "results": results},
                                                     indent=2, default=_json_default) + "\n")
    header, rows = (PAIRS_HEADER, pairs_rows(results)) if protocol == "pairs" else (IDENTIFY_HEADER,
                                                                                     identify_rows(results))
    parts = [f"# facelens evaluation: {protocol}\n", *(f"- {k}: {v}" for k, v in context.items()), "",
             markdown_table(header, rows), "", *extra_sections(results)]
    parts += [f"![{p.stem}]({p.name})" for p in plots]
    report = out_dir / "report.md"
    report.write_text("\n".join(parts) + "\n")
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_pairs_outputs(out_dir: Path, outcomes: list[Any], context: dict[str, Any]) -> Path:
    """results.json, report.md and the ROC, DET and score-histogram plots of a pairs run."""
    from facelens.evaluate import metrics, plots

    results = [o.summary for o in outcomes]
    names = [r["recognizer"] + (" +flip" if r["flip"] else "") for r in results]
    roc = {n: metrics.roc(o.genuine, o.impostor)[:2] for n, o in zip(names, outcomes, strict=True)}
    det = {n: metrics.det_curve(o.genuine, o.impostor) for n, o in zip(names, outcomes, strict=True)}
    made = [plots.plot_roc(roc, out_dir / "roc.png"), plots.plot_det(det, out_dir / "det.png")]
    for name, o, r in zip(names, outcomes, results, strict=True):
        made.append(plots.plot_score_histograms(
            o.genuine, o.impostor, out_dir / f"scores_{name.replace(' +', '_')}.png",
            threshold=r["best_threshold"]["threshold"], title=f"{name}: genuine vs impostor"))
    return write_report(out_dir, "pairs", results, context, made)


def write_identify_outputs(out_dir: Path, results: list[dict[str, Any]], context: dict[str, Any]) -> Path:
    """results.json, report.md and the CMC plot of an identification run; with distractors also
    gallery_growth.png (FPIR and DIR against gallery size)."""
    from facelens.evaluate import plots

    made = [plots.plot_cmc({r["recognizer"]: np.array(r["cmc"]) for r in results}, out_dir / "cmc.png")]
    grown = [r for r in results if r.get("distractors")]
    if grown:
        made.append(plots.plot_gallery_growth({r["recognizer"]: r["distractors"]["sizes"] for r in grown},
                                              out_dir / "gallery_growth.png",
                                              fpir=grown[0]["distractors"]["fpir_target"]))
    return write_report(out_dir, "identify", results, context, made)
