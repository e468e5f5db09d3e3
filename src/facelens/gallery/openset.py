"""Open-set decisions: the similarity a best match must reach to be given a name, from a target
false-positive identification rate (FPIR) and the gallery's size.

A stranger's probe is compared with every enrolled face, and is named if any comparison clears the
threshold. With a per-comparison false-match rate `fmr` and N enrolled faces, the chance that none of
the N impostor comparisons clears it is (1 - fmr)^N, so

    FPIR = 1 - (1 - fmr)^N   ->   fmr = 1 - (1 - FPIR)^(1/N)  (about FPIR / N).

A fixed per-comparison FAR therefore names more strangers as the gallery grows (at FAR 1e-3 and 1,680
people, most of them). Faces of one person are not independent draws, so the true FPIR lies between the
values for N = people and N = faces; using N = faces errs on the side of naming fewer strangers.
The threshold at that per-comparison rate comes from the recognizer's impostor-score record: measured
where enough impostor pairs lie above it, extrapolated from a fitted tail below (see
`facelens.models.registry.threshold_at_fmr`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

DEFAULT_FPIR = 0.01  # one stranger in a hundred given a name


def check_fpir(fpir: Any) -> float:
    """A false-positive identification rate as a float in (0, 1); ConfigError otherwise."""
    from facelens.models.registry import check_rate

    return check_rate(fpir, "fpir", "0.01")


def per_comparison_fmr(fpir: float, comparisons: int) -> float:
    """The false-match rate per comparison that gives `fpir` over `comparisons` independent ones."""
    n = max(1, int(comparisons))
    return -math.expm1(math.log1p(-fpir) / n)


@dataclass(frozen=True)
class OpenSetThreshold:
    """Where an identification threshold came from: every answer carries it."""

    threshold: float
    fpir: float
    fmr: float  # per comparison
    gallery_faces: int
    gallery_people: int
    method: str  # "empirical" or a tail fit, from the recognizer's record
    interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": round(self.threshold, 5), "fpir": self.fpir,
                               "fmr": float(f"{self.fmr:.4g}"), "gallery_faces": self.gallery_faces,
                               "gallery_people": self.gallery_people, "method": self.method}
        if self.interval is not None:
            out["interval"] = [round(v, 5) for v in self.interval]
        return out


@functools.lru_cache(maxsize=1024)  # the record lookup costs milliseconds; a search must not pay it each time
def fpir_threshold(recognizer: str, fpir: float, gallery_faces: int, gallery_people: int,
                   flip: bool = False) -> OpenSetThreshold:
    """The threshold that names at most about `fpir` of strangers in a gallery of this size."""
    from facelens.models.registry import threshold_at_fmr

    fpir = check_fpir(fpir)
    fmr = per_comparison_fmr(fpir, gallery_faces)
    found = threshold_at_fmr(recognizer, fmr, flip)
    interval = found.get("interval")
    return OpenSetThreshold(threshold=float(found["threshold"]), fpir=fpir, fmr=fmr, gallery_faces=int(gallery_faces),
                            gallery_people=int(gallery_people), method=str(found.get("method", "")),
                            interval=(float(interval[0]), float(interval[1])) if interval else None)
