"""Evaluation plots written straight to PNG.

Figures are built with matplotlib's object API (`Figure` + the Agg canvas), never through
pyplot: nothing is registered in pyplot's global figure list and the process-wide backend is
left alone, so these work headless and inside notebooks or GUIs alike. Each function writes one
PNG, drops its figure and returns the path. Several recognizers go on one plot via the dict.
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
ROC_FAR_MARKS = (1e-4, 1e-3, 1e-2)
ROC_FAR_RANGE = (1e-5, 1.0)
DET_RANGE = (1e-5, 0.5)
DET_TICKS = (1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4)
# Curves longer than this are thinned before drawing (millions of pairs give millions of points).
MAX_CURVE_POINTS = 20_000


def _figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, Axes]:
    """A figure on its own Agg canvas, outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the PNG and release the figure's artists."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=DPI)
    fig.clear()
    return out


def _finish(fig: Figure, ax: Axes, path: str | Path, title: str, legend_loc: str | None) -> Path:
    """Title, light grid, legend (when there are curves) and the PNG: how every curve plot ends."""
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend_loc:
        ax.legend(loc=legend_loc, fontsize="small")
    return _save(fig, path)


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subset of a curve whose x and y are both non-decreasing, dense where log or probit axes look.

    Keeps the points (and the one before each, so step corners survive) nearest a grid that is
    log-spaced near 0 and near 1 and linear in between, on both coordinates; ends always kept.
    """
    if x.size <= MAX_CURVE_POINTS or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
        return x, y
    tail = np.logspace(-9, 0, 1000)
    grid = np.unique(np.r_[tail, np.linspace(0.0, 1.0, 1000), 1.0 - tail])
    hits = np.r_[np.searchsorted(x, grid), np.searchsorted(y, grid)]
    keep = np.unique(np.clip(np.r_[0, x.size - 1, hits, hits - 1], 0, x.size - 1))
    return x[keep], y[keep]


def _tar_at(far: np.ndarray, tar: np.ndarray, target: float) -> float | None:
    """Highest TAR among points with FAR <= target (an achievable operating point), or None."""
    ok = far <= target
    return float(tar[ok].max()) if ok.any() else None


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC") -> Path:
    """ROC curves (TAR against FAR) with a log FAR axis from 1e-5 to 1.

    Drawn as a staircase (steps-post): between two measured points only the lower TAR is
    achievable, and FAR = 0 points are placed at the left edge so low-FAR performance stays
    visible. Markers show each curve's TAR at FAR = 1e-4, 1e-3 and 1e-2; the legend lists them.
    """
    fig, ax = _figure()
    lo, hi = ROC_FAR_RANGE
    for name, (far, tar) in curves.items():
        far = np.asarray(far, dtype=np.float64)
        tar = np.asarray(tar, dtype=np.float64)
        x, y = _thin(far, tar)
        (line,) = ax.plot(np.clip(x, lo, hi), y, drawstyle="steps-post", linewidth=1.5)
        marks = [(m, _tar_at(far, tar, m)) for m in ROC_FAR_MARKS]
        shown = [(m, t) for m, t in marks if t is not None]
        if shown:
            ax.plot([m for m, _ in shown], [t for _, t in shown], "o", color=line.get_color(), markersize=5)
        summary = ", ".join(f"{t:.3f}@{m:.0e}" for m, t in shown)
        line.set_label(f"{name} ({summary})" if summary else name)
    for m in ROC_FAR_MARKS:
        ax.axvline(m, color="0.8", linewidth=0.8, linestyle="--", zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    return _finish(fig, ax, path, title, "lower right" if curves else None)


def _probit(p: np.ndarray) -> np.ndarray:
    """Normal deviate of a rate, clipped away from 0 and 1 so every point stays finite."""
    inv = NormalDist().inv_cdf
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.array([inv(v) for v in clipped.ravel()]).reshape(clipped.shape)


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "DET",
             xlabel: str = "False accept rate (FAR)", ylabel: str = "False non-match rate (FNMR)") -> Path:
    """DET curves (FNMR against FAR) on normal-deviate (probit) axes, as in Martin et al. 1997.

    On probit axes two normal score distributions give a straight line, which makes recognizers
    easy to compare over several decades. Both axes span 1e-5 to 0.5 with rate tick labels;
    rates of exactly 0 or 1 are clipped to just inside (0, 1) so they stay drawable.
    """
    fig, ax = _figure()
    for name, (far, fnmr) in curves.items():
        x, tar = _thin(np.asarray(far, dtype=np.float64), 1.0 - np.asarray(fnmr, dtype=np.float64))
        ax.plot(_probit(x), _probit(1.0 - tar), linewidth=1.5, label=name)
    ticks = _probit(np.array(DET_TICKS))
    labels = [f"{t:g}" for t in DET_TICKS]
    lo, hi = _probit(np.array(DET_RANGE))
    for setter_lim, setter_ticks, setter_labels in (
        (ax.set_xlim, ax.set_xticks, ax.set_xticklabels),
        (ax.set_ylim, ax.set_yticks, ax.set_yticklabels),
    ):
        setter_lim(lo, hi)
        setter_ticks(ticks)
        setter_labels(labels)
    ax.set_xlabel(f"{xlabel}, normal-deviate scale")
    ax.set_ylabel(f"{ylabel}, normal-deviate scale")
    return _finish(fig, ax, path, title, "upper right" if curves else None)


def plot_score_histograms(
    genuine: np.ndarray,
    impostor: np.ndarray,
    path: str | Path,
    threshold: float | None = None,
    title: str = "Score distributions",
) -> Path:
    """Genuine and impostor score densities on shared bins, with the decision threshold if given.

    Densities rather than counts, since impostor pairs usually outnumber genuine ones by orders
    of magnitude and would flatten the genuine histogram.
    """
    gen = np.asarray(genuine, dtype=np.float64).ravel()
    imp = np.asarray(impostor, dtype=np.float64).ravel()
    both = np.concatenate([gen, imp])
    fig, ax = _figure()
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 61)
        if imp.size:
            ax.hist(imp, bins=bins, density=True, alpha=0.55, color="tab:red", label=f"impostor (n={imp.size})")
        if gen.size:
            ax.hist(gen, bins=bins, density=True, alpha=0.55, color="tab:green", label=f"genuine (n={gen.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold = {threshold:.4f}")
    ax.set_xlabel("Similarity score")
    ax.set_ylabel("Density")
    ax.set_title(title)
    if both.size or threshold is not None:
        ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_cmc(curves: dict[str, np.ndarray], path: str | Path, title: str = "CMC") -> Path:
    """Cumulative match characteristic: identification rate against rank (1-based)."""
    fig, ax = _figure()
    max_rank = 1
    for name, rates in curves.items():
        rates = np.asarray(rates, dtype=np.float64).ravel()
        ranks = np.arange(1, rates.size + 1)
        max_rank = max(max_rank, rates.size)
        label = f"{name} (rank-1 {rates[0]:.3f})" if rates.size else name
        ax.plot(ranks, rates, marker="o", markersize=3, linewidth=1.5, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate")
    return _finish(fig, ax, path, title, "lower right" if curves else None)


def plot_edc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
             title: str = "Error versus discard") -> Path:
    """Error-versus-discard curves: FNMR at a fixed threshold against the fraction of lowest-quality
    comparisons discarded (ISO/IEC 29794-1). A better quality measure falls faster."""
    fig, ax = _figure()
    for name, (fractions, fnmr) in curves.items():
        ax.plot(fractions, fnmr, linewidth=1.5, label=name)
    ax.set_xlabel("Fraction of comparisons discarded (lowest quality first)")
    ax.set_ylabel("FNMR at the fixed threshold")
    ax.set_xlim(0.0, max((float(f[-1]) for f, _ in curves.values()), default=1.0))
    ax.set_ylim(bottom=0.0)
    return _finish(fig, ax, path, title, "upper right" if curves else None)


def plot_gallery_growth(curves: dict[str, list[dict]], path: str | Path, fpir: float,
                        title: str = "FPIR and DIR against gallery size") -> Path:
    """FPIR (share of unknown probes named) and DIR (share of mated probes named correctly) at the
    decision threshold for each gallery size, on a log gallery-size axis; the target FPIR dashed.
    `curves` maps a recognizer to its rows ({"gallery_people", "fpir", "dir"}, see `distractor_sweep`)."""
    fig, ax_fpir = _figure(6.4, 6.4)
    fig.delaxes(ax_fpir)
    ax_fpir, ax_dir = fig.subplots(2, 1, sharex=True)
    top = 2.0 * fpir
    for name, rows in curves.items():
        sizes = np.array([r["gallery_people"] for r in rows], dtype=np.float64)
        fpirs = np.array([np.nan if r["fpir"] is None else r["fpir"] for r in rows], dtype=np.float64)
        dirs = np.array([np.nan if r["dir"] is None else r["dir"] for r in rows], dtype=np.float64)
        top = max(top, 1.15 * float(np.nanmax(fpirs, initial=0.0)))
        ax_fpir.plot(sizes, fpirs, marker="o", markersize=4, linewidth=1.5, label=name)
        ax_dir.plot(sizes, dirs, marker="o", markersize=4, linewidth=1.5, label=name)
    ax_fpir.axhline(fpir, color="black", linestyle="--", linewidth=1.0, label=f"target FPIR {fpir:g}")
    ax_fpir.set_xscale("log")
    ax_fpir.set_ylim(0.0, min(1.01, top))
    ax_fpir.set_ylabel("FPIR (unknown probes named)")
    ax_fpir.set_title(title)
    ax_fpir.grid(True, alpha=0.3)
    ax_fpir.legend(loc="upper left", fontsize="small")
    ax_dir.set_ylim(0.0, 1.01)
    ax_dir.set_xlabel("Gallery size (people)")
    ax_dir.set_ylabel("DIR (mated probes named correctly)")
    ax_dir.grid(True, alpha=0.3)
    if curves:
        ax_dir.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_confusion(counts: np.ndarray, rows: list[str], columns: list[str], path: str | Path,
                   title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix (each true class sums to 1), counts written in the cells."""
    counts = np.asarray(counts, dtype=np.float64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = _figure(1.0 + 0.75 * len(columns), 1.0 + 0.7 * len(rows))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, f"{int(counts[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title)
    return _save(fig, path)


def plot_age_bands(by_group_band: dict[str, dict[str, dict]], path: str | Path,
                   title: str = "Age error by band") -> Path:
    """Age MAE (bars) per age band, one bar per group."""
    fig, ax = _figure(8.0, 4.8)
    groups = list(by_group_band)
    bands = list(next(iter(by_group_band.values()))) if groups else []
    width = 0.8 / max(len(groups), 1)
    for k, group in enumerate(groups):
        values = [by_group_band[group][b]["age_mae"] if by_group_band[group][b]["age_n"] else np.nan for b in bands]
        ax.bar(np.arange(len(bands)) + k * width - 0.4 + width / 2, values, width, label=group)
    ax.set_xticks(range(len(bands)), bands)
    ax.set_xlabel("true age band")
    ax.set_ylabel("age MAE (years)")
    return _finish(fig, ax, path, title, "upper left" if len(groups) > 1 else None)
