"""Thresholds at any false-match rate: measured where the data reach, a fitted tail below that.

A threshold for false-match rate (FMR) f is the score that a fraction f of impostor pairs reach.
With N impostor pairs it is *measured* (read off the sorted scores) only while enough of them lie
above it; `MIN_EMPIRICAL` = 20 pairs (a relative error of about 1/sqrt(20) ~ 22% on the rate).
Below that rate the upper tail of the impostor scores is modelled (peaks over threshold, Pickands
-Balkema-de Haan): the scores above a high level u, minus u, follow a generalised Pareto
distribution (GPD) with shape xi and scale sigma, so

    P(score >= t) = p_u * (1 + xi (t - u) / sigma) ** (-1 / xi)        (t >= u)

and the threshold for f < p_u is t = u + sigma / xi * ((f / p_u) ** -xi - 1). Cosine scores are
bounded by 1, so xi < 0 is expected (a finite upper end u - sigma / xi).

The tail level is chosen by a fixed rule, not tuned to any data set: the k = ceil(sqrt(N))
highest scores are the exceedances (the k ~ sqrt(N) rule of the extreme-value literature, e.g.
Ferreira, de Haan & Peng 2003), with at least `MIN_EXCEEDANCES` and at most N / 10 of them; u is
the (k+1)-th highest score. The GPD is fitted by maximum likelihood, started from the
probability-weighted-moments estimate of Hosking & Wallis (1987), which is also the fall-back.

Intervals come from a bootstrap. Impostor pairs are not independent (one photo takes part in
thousands of them), so the resampling unit is the *identity*: identities are drawn with
replacement, all their images come along, and every threshold (measured or fitted, tail level
re-chosen by the same rule) is recomputed on the impostor pairs of the resample. The interval is
the 2.5-97.5 percentile range of those recomputed thresholds. When only pair scores are known
(a pairs CSV), the pairs themselves are resampled, which understates the spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_EMPIRICAL = 20  # impostor pairs at or above a threshold for it to count as measured
MIN_EXCEEDANCES = 50  # fewest scores a GPD is fitted to
LEVEL = 0.95  # bootstrap interval coverage
GRID_STEP = 0.05  # decades between stored points of the measured curve


# -- the generalised Pareto distribution --------------------------------------------------------------
def gpd_pwm(excess: np.ndarray) -> tuple[float, float]:
    """(xi, sigma) by probability-weighted moments (Hosking & Wallis 1987); excess = scores - u > 0."""
    x = np.sort(np.asarray(excess, dtype=np.float64))
    n = len(x)
    b0 = x.mean()
    b1 = float(np.sum(x * (n - 1 - np.arange(n))) / (n * (n - 1)))  # E[X (1 - F(X))], unbiased
    # Hosking & Wallis's shape k is -xi here (P(X > x) = (1 + xi x / sigma) ** (-1 / xi))
    k = b0 / (b0 - 2.0 * b1) - 2.0
    sigma = 2.0 * b0 * b1 / (b0 - 2.0 * b1)
    return float(-k), float(sigma)


def gpd_nll(xi: float, sigma: float, excess: np.ndarray) -> float:
    """Negative log-likelihood of the GPD (inf outside its support)."""
    if sigma <= 0:
        return math.inf
    z = excess / sigma
    if abs(xi) < 1e-9:
        return float(len(excess) * math.log(sigma) + z.sum())
    arg = 1.0 + xi * z
    if np.any(arg <= 0):
        return math.inf
    return float(len(excess) * math.log(sigma) + (1.0 + 1.0 / xi) * np.log(arg).sum())


def fit_gpd(excess: np.ndarray) -> tuple[float, float]:
    """(xi, sigma) by maximum likelihood from the PWM start; the PWM estimate if the optimiser fails."""
    excess = np.asarray(excess, dtype=np.float64)
    if len(excess) < 3 or not np.all(excess >= 0) or excess.max() <= 0:
        raise ValueError("need at least three non-negative excesses, not all zero")
    xi0, s0 = gpd_pwm(excess)
    if not (math.isfinite(xi0) and s0 > 0):
        xi0, s0 = 0.0, float(excess.mean())
    # keep the start inside the support (for xi < 0 every excess must be below -sigma / xi)
    if xi0 < 0 and excess.max() >= -s0 / xi0:
        s0 = -xi0 * excess.max() * 1.01
    try:
        from scipy.optimize import minimize
    except ImportError:  # pragma: no cover - scipy is a dependency of the evaluation extras
        return xi0, s0

    def objective(p: np.ndarray) -> float:
        return gpd_nll(float(p[0]), math.exp(float(p[1])), excess)

    res = minimize(objective, np.array([xi0, math.log(s0)]), method="Nelder-Mead",
                   options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 2000})
    if res.success or objective(res.x) < objective(np.array([xi0, math.log(s0)])):
        xi, sigma = float(res.x[0]), math.exp(float(res.x[1]))
        if math.isfinite(xi) and sigma > 0:
            return xi, sigma
    return xi0, s0


def gpd_threshold(u: float, p_u: float, xi: float, sigma: float, fmr: np.ndarray | float) -> np.ndarray:
    """The score reached by a fraction `fmr` (< p_u) of impostors under the fitted tail."""
    ratio = np.asarray(fmr, dtype=np.float64) / p_u
    if abs(xi) < 1e-9:
        return u + sigma * -np.log(ratio)
    return u + sigma / xi * (ratio ** (-xi) - 1.0)


def gpd_sf(u: float, p_u: float, xi: float, sigma: float, t: np.ndarray | float) -> np.ndarray:
    """P(score >= t) under the fitted tail (t >= u)."""
    z = (np.asarray(t, dtype=np.float64) - u) / sigma
    if abs(xi) < 1e-9:
        return p_u * np.exp(-z)
    return p_u * np.clip(1.0 + xi * z, 0.0, None) ** (-1.0 / xi)


def n_exceedances(n: int) -> int:
    """How many of the top scores the tail is fitted to: ceil(sqrt(n)), at least MIN_EXCEEDANCES, at most n / 10."""
    return int(min(max(math.ceil(math.sqrt(n)), MIN_EXCEEDANCES), n // 10))


def fit_tail(impostor: np.ndarray) -> tuple[float, float, float, float, int] | None:
    """(u, p_u, xi, sigma, k) for these impostor scores, or None when there are too few for a fit."""
    scores = np.asarray(impostor, dtype=np.float64).ravel()
    n = len(scores)
    k = n_exceedances(n)
    if k < MIN_EXCEEDANCES:
        return None
    top = np.partition(scores, n - k - 1)[n - k - 1:]  # the k+1 highest, the (k+1)-th first
    u = float(top.min())
    excess = np.sort(top)[1:] - u
    if excess.max() <= 0:
        return None
    xi, sigma = fit_gpd(excess)
    return u, k / n, xi, sigma, k


# -- measured curve -----------------------------------------------------------------------------------
def fmr_grid(n: int) -> np.ndarray:
    """Rates at which the measured curve is stored: every GRID_STEP decades from 0.5 down to the
    lowest measurable one (MIN_EMPIRICAL / n), descending, always including whole decades."""
    lowest = MIN_EMPIRICAL / n
    if lowest >= 0.5:
        return np.array([0.5])
    steps = np.arange(round(math.log10(0.5) / GRID_STEP), math.floor(math.log10(lowest) / GRID_STEP) - 1, -1)
    grid = 10.0 ** (steps * GRID_STEP)
    grid = grid[grid >= lowest * (1 - 1e-12)]
    return np.r_[grid, lowest] if grid[-1] > lowest * (1 + 1e-12) else grid


def empirical_thresholds(impostor: np.ndarray, fmrs: np.ndarray) -> np.ndarray:
    """For each rate f, the lowest threshold that at most floor(f N) impostor scores reach (as
    `metrics.empirical_threshold`), for many rates from one sort."""
    scores = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    allowed = np.floor(np.asarray(fmrs) * len(scores) + 1e-9).astype(np.int64)
    allowed = np.minimum(allowed, len(scores) - 1)
    return np.nextafter(scores[allowed], np.inf)


# -- the model ------------------------------------------------------------------------------------------
@dataclass
class TailModel:
    """Thresholds for any FMR in (0, 1) with a bootstrap interval, from one set of impostor scores."""

    n_impostor: int
    grid_fmr: np.ndarray  # descending
    grid_threshold: np.ndarray
    grid_low: np.ndarray
    grid_high: np.ndarray
    tail: tuple[float, float, float, float, int] | None  # u, p_u, xi, sigma, k
    boot_tails: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (B, 4): u, p_u, xi, sigma
    resampling: str = "identities"
    level: float = LEVEL

    @property
    def min_empirical_fmr(self) -> float:
        return float(self.grid_fmr[-1])

    def _measured(self, fmr: float) -> tuple[float, float, float]:
        """Point, low, high on the measured curve, linear in log10(fmr) between stored rates."""
        x = np.log10(self.grid_fmr[::-1])
        lf = math.log10(min(fmr, float(self.grid_fmr[0])))
        return tuple(float(np.interp(lf, x, v[::-1])) for v in (self.grid_threshold, self.grid_low, self.grid_high))

    def _fitted(self, fmr: float) -> tuple[float, float, float] | None:
        if self.tail is None:
            return None
        u, p_u, xi, sigma, _ = self.tail
        point = float(gpd_threshold(u, p_u, xi, sigma, fmr)) if fmr < p_u else self._measured(fmr)[0]
        if len(self.boot_tails) < 2:
            return point, point, point
        b = self.boot_tails
        reps = np.array([float(gpd_threshold(*row, fmr)) for row in b])
        reps = reps[np.isfinite(reps)]
        alpha = (1.0 - self.level) / 2.0
        return point, float(np.quantile(reps, alpha)), float(np.quantile(reps, 1.0 - alpha))

    def threshold_at(self, fmr: float) -> dict[str, Any]:
        """{"threshold", "interval": [low, high], "method": "empirical" | "tail-fit", "fmr"}.

        Empirical down to MIN_EMPIRICAL / N; below that the GPD tail, never lower than the lowest
        measured threshold (a stricter rate cannot have a lower threshold). Thresholds above 1
        (past the top of the cosine scale) are capped at 1.
        """
        if not 0.0 < fmr < 1.0:
            raise ValueError(f"fmr must be in (0, 1), got {fmr}")
        if fmr >= self.min_empirical_fmr * (1 - 1e-9) or self.tail is None:
            if fmr < self.min_empirical_fmr * (1 - 1e-9):
                raise ValueError("no tail model: thresholds are measured only down to "
                                 f"FMR {self.min_empirical_fmr:.2g}")
            point, low, high = self._measured(fmr)
            method = "empirical"
        else:
            point, low, high = self._fitted(fmr)  # type: ignore[misc]
            floor = self._measured(self.min_empirical_fmr)[0]
            point = max(point, floor)
            method = "tail-fit"
        point, low, high = (min(v, 1.0) for v in (point, low, high))
        low, high = min(low, point), max(high, point)
        return {"fmr": fmr, "threshold": round(point, 6), "interval": [round(low, 6), round(high, 6)],
                "method": method}

    def fitted_threshold(self, fmr: float) -> float | None:
        """The GPD's own threshold at any fmr below p_u (for comparing against the measured one)."""
        if self.tail is None or fmr >= self.tail[1]:
            return None
        return float(gpd_threshold(*self.tail[:4], fmr))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "impostor_pairs": self.n_impostor,
            "min_empirical_count": MIN_EMPIRICAL,
            "min_empirical_fmr": self.min_empirical_fmr,
            "level": self.level,
            "resampling": self.resampling,
            "replicates": len(self.boot_tails),
            "measured": {"fmr": [float(f"{v:.6g}") for v in self.grid_fmr],
                         "threshold": [round(float(v), 6) for v in self.grid_threshold],
                         "low": [round(float(v), 6) for v in self.grid_low],
                         "high": [round(float(v), 6) for v in self.grid_high]},
        }
        if self.tail is not None:
            u, p_u, xi, sigma, k = self.tail
            out["gpd"] = {"u": round(u, 6), "p_u": float(f"{p_u:.6g}"), "xi": round(xi, 6), "sigma": round(sigma, 6),
                          "exceedances": k, "rule": "k = ceil(sqrt(N)) top scores, at least 50, at most N/10; MLE"}
            out["gpd_bootstrap"] = [[round(float(v), 6) if j != 1 else float(f"{v:.6g}") for j, v in enumerate(row)]
                                    for row in self.boot_tails]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TailModel:
        m = d["measured"]
        gpd = d.get("gpd")
        tail = (gpd["u"], gpd["p_u"], gpd["xi"], gpd["sigma"], gpd["exceedances"]) if gpd else None
        boot = np.asarray(d.get("gpd_bootstrap") or np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4)
        return cls(int(d["impostor_pairs"]), np.asarray(m["fmr"], dtype=np.float64),
                   np.asarray(m["threshold"], dtype=np.float64), np.asarray(m["low"], dtype=np.float64),
                   np.asarray(m["high"], dtype=np.float64), tail, boot, d.get("resampling", "identities"),
                   float(d.get("level", LEVEL)))


def build_tail_model(impostor: np.ndarray, replicates: Iterable[np.ndarray] = (),
                     resampling: str = "identities", level: float = LEVEL) -> TailModel:
    """The model from impostor scores, with intervals from bootstrap replicates of them (each an
    array of impostor scores recomputed on one resample; none gives a zero-width interval)."""
    impostor = np.asarray(impostor, dtype=np.float64).ravel()
    if len(impostor) < 2:
        raise ValueError("need at least two impostor scores")
    grid = fmr_grid(len(impostor))
    point = empirical_thresholds(impostor, grid)
    tail = fit_tail(impostor)
    measured, tails = [], []
    for rep in replicates:
        rep = np.asarray(rep, dtype=np.float64).ravel()
        if len(rep) < 2:  # a resample of few identities may hold one person only
            continue
        measured.append(empirical_thresholds(rep, grid))
        if tail is not None:
            fitted = fit_tail(rep)
            if fitted is not None:
                tails.append(fitted[:4])
    alpha = (1.0 - level) / 2.0
    if measured:
        stack = np.vstack(measured)
        low, high = np.quantile(stack, alpha, axis=0), np.quantile(stack, 1 - alpha, axis=0)
        low, high = np.minimum(low, point), np.maximum(high, point)
    else:
        low, high = point.copy(), point.copy()
    return TailModel(len(impostor), grid, point, low, high, tail,
                     np.asarray(tails, dtype=np.float64).reshape(-1, 4), resampling, level)


# -- bootstrap resamples ------------------------------------------------------------------------------
def identity_bootstrap(embeddings: np.ndarray, labels: np.ndarray, replicates: int = 100,
                       seed: int = 0) -> Iterator[np.ndarray]:
    """Impostor scores of `replicates` resamples of the identities (drawn with replacement, each with
    all its images). Two copies of one identity are the same person, so their pairs are left out."""
    emb = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    ids, codes = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(codes == i) for i in range(len(ids))]
    sims = emb @ emb.T
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        draw = rng.integers(0, len(ids), len(ids))
        idx = np.concatenate([members[i] for i in draw])
        lab = codes[idx]
        sub = sims[np.ix_(idx, idx)]
        iu = np.triu_indices(len(idx), k=1)
        keep = lab[iu[0]] != lab[iu[1]]
        yield sub[iu][keep]


def pair_bootstrap(impostor: np.ndarray, replicates: int = 100, seed: int = 0) -> Iterator[np.ndarray]:
    """Resamples of the impostor pairs themselves (when nothing is known of who is in them)."""
    scores = np.asarray(impostor, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        yield scores[rng.integers(0, len(scores), len(scores))]
