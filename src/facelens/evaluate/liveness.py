"""Evaluating presentation-attack detection as ISO/IEC 30107-3 defines it.

- APCER per attack type (PAI species): the share of that type's attack presentations accepted as bona fide;
  the system's APCER is the worst type's.
- BPCER: the share of bona fide (live) presentations rejected as attacks.
- ACER = (APCER + BPCER) / 2 (common in papers, though the 2023 edition discourages it), and APCER at the
  thresholds giving BPCER 1 % and 5 % over the decision margin (score minus the threshold of the model that
  decided, so faces decided by the fused score and by the DTN alone share one scale); none where more live
  faces than that got no decision.
A presentation where no face or no decision came out counts as a rejected live person, and as an attack
that was not accepted (listed apart as "no decision").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import ConfigError
from facelens.evaluate.attributes import labelled_images
from facelens.pipeline import FaceAnalyzer, main_face

BONA_FIDE = {"live", "bona fide", "bonafide", "bona_fide", "real", "genuine", "0"}
ATTACK = {"attack", "spoof", "fake", "1"}


@dataclass(frozen=True)
class LivenessLabel:
    line: int
    path: Path
    live: bool
    attack_type: str
    subject: str


def read_liveness_labels(path: Path) -> list[LivenessLabel]:
    """`path,label[,attack_type,subject]` with a header; label live/bona fide/real or attack/spoof, or an
    attack-type name itself (e.g. `spoof_replay`). Any bad row is one error naming its line."""
    labels = []
    for line, row, image_path in labelled_images(path, ("path", "label"),
                                                 "path and label (optionally attack_type, subject)"):
        label = (row.get("label") or "").strip().lower()
        if not label:
            raise ConfigError(f"{path}, line {line}: empty label (live or attack, or an attack type)")
        live = label in BONA_FIDE
        kind = (row.get("attack_type") or row.get("what") or "").strip() or ("" if live or label in ATTACK else label)
        labels.append(LivenessLabel(line, image_path, live, "" if live else (kind or "attack"),
                                    (row.get("subject") or "").strip() or "all"))
    if not any(lab.live for lab in labels) or all(lab.live for lab in labels):
        kinds = "live" if all(lab.live for lab in labels) else "attack"
        raise ConfigError(f"{path}: every row is {kinds}; APCER and BPCER need both live and attack rows")
    return labels


def _rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    live = [r for r in rows if r["live"]]
    attacks = [r for r in rows if not r["live"]]
    by_type: dict[str, list[dict]] = {}
    for r in attacks:
        by_type.setdefault(r["attack_type"], []).append(r)
    apcer_type = {t: float(np.mean([r["decision"] == "live" for r in rs])) for t, rs in sorted(by_type.items())}
    bpcer = float(np.mean([r["decision"] != "live" for r in live])) if live else math.nan
    apcer = max(apcer_type.values()) if apcer_type else math.nan
    return {"bona_fide": len(live), "attacks": len(attacks), "apcer_by_type": apcer_type, "apcer": apcer,
            "bpcer": bpcer, "acer": (apcer + bpcer) / 2 if live and attacks else math.nan,
            "no_decision": sum(r["decision"] not in {"live", "attack"} for r in rows)}


def apcer_at_bpcer(rows: list[dict[str, Any]], bpcer: float) -> float:
    """The worst type's APCER at the margin threshold that rejects at most `bpcer` of the live faces
    (faces without a decision count as rejected live faces and caught attacks, as above)."""
    live = np.sort([r["margin"] if r["margin"] is not None else np.inf for r in rows if r["live"]])[::-1]
    if not len(live) or np.isinf(live).mean() > bpcer:
        return math.nan  # more live faces than that went undecided: no threshold reaches this BPCER
    k = int(np.floor(bpcer * len(live)))
    threshold = np.nextafter(live[k], np.inf) if np.isfinite(live[k]) else np.inf
    worst = 0.0
    for kind in {r["attack_type"] for r in rows if not r["live"]}:
        margins = [r["margin"] for r in rows if not r["live"] and r["attack_type"] == kind]
        worst = max(worst, float(np.mean([m is not None and m < threshold for m in margins])))
    return worst


def evaluate_liveness(labels_csv: Path, analyzer: FaceAnalyzer,
                      on_done: Callable[[str], None] | None = None) -> dict[str, Any]:
    if "liveness" not in analyzer.attributes:
        raise ConfigError("the analyzer must include the liveness attribute")
    labels = read_liveness_labels(labels_csv)
    results = analyzer.analyze_batch([str(lab.path) for lab in labels], embed=False,
                                     on_result=(lambda r: on_done(r.source)) if on_done else None)
    rows, errors = [], {}
    for lab, result in zip(labels, results, strict=True):
        row: dict[str, Any] = {"line": lab.line, "path": str(lab.path), "live": lab.live,
                               "attack_type": lab.attack_type, "subject": lab.subject, "decision": "no face",
                               "margin": None}
        if not result.ok:
            errors[f"line {lab.line}"] = result.error
            row["decision"] = "error"
        face = main_face(result.faces, result.width, result.height) if result.ok else None
        value = face.attributes.get("liveness") if face is not None else None
        if value and "decision" in value:
            row.update(decision=value["decision"], score=value["score"], threshold=value["threshold"],
                       basis=value.get("basis"))
            if value["decision"] in {"live", "attack"}:
                base = value["dtn"]["score"] if value.get("basis") == "dtn" else value["score"]
                row["margin"] = float(base - value["threshold"])
        elif value:
            row["decision"] = "unknown"
        rows.append(row)
    subjects = sorted({r["subject"] for r in rows})
    out: dict[str, Any] = {"labels": str(labels_csv), "images": len(rows), "overall": _rates(rows),
                           "apcer_at_bpcer": {f"{b:g}": apcer_at_bpcer(rows, b) for b in (0.01, 0.05)},
                           "by_subject": {s: _rates([r for r in rows if r["subject"] == s]) for s in subjects}
                           if len(subjects) > 1 else {}, "errors": errors, "rows": rows}
    return out


def det_curve(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(BPCER, APCER) over every margin threshold; faces without a decision are rejected live / caught."""
    live = np.array([r["margin"] if r["margin"] is not None else np.inf for r in rows if r["live"]])
    attack = np.array([r["margin"] if r["margin"] is not None else np.inf for r in rows if not r["live"]])
    finite = np.concatenate([live, attack])
    thresholds = np.unique(np.concatenate([finite[np.isfinite(finite)], [-np.inf, np.inf]]))
    bpcer = np.array([(live >= t).mean() for t in thresholds])
    apcer = np.array([(attack < t).mean() for t in thresholds])
    return bpcer, apcer


def liveness_markdown(r: dict[str, Any]) -> str:
    def pct(v: float) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f} %"

    o = r["overall"]
    lines = [f"# Liveness: {r['labels']}", "",
             f"{o['bona_fide']} bona fide and {o['attacks']} attack presentations; no decision: {o['no_decision']}.",
             "", "| measure | value |", "|---|---|",
             f"| APCER (worst attack type) | {pct(o['apcer'])} |", f"| BPCER | {pct(o['bpcer'])} |",
             f"| ACER | {pct(o['acer'])} |"]
    lines += [f"| APCER at BPCER {k} | {pct(v)} |" for k, v in r["apcer_at_bpcer"].items()]
    lines += ["", "| attack type | APCER |", "|---|---|"] + [f"| {t} | {pct(v)} |"
                                                             for t, v in o["apcer_by_type"].items()]
    if r["by_subject"]:
        lines += ["", "| subject | bona fide | attacks | APCER | BPCER |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {v['bona_fide']} | {v['attacks']} | {pct(v['apcer'])} | {pct(v['bpcer'])} |"
                  for s, v in r["by_subject"].items()]
    return "\n".join(lines) + "\n"


def write_liveness_outputs(out_dir: Path, result: dict[str, Any], plot: bool = True) -> Path:
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    report = out_dir / "report.md"
    report.write_text(liveness_markdown(result))
    if plot:
        from facelens.evaluate.plots import plot_det

        bpcer, apcer = det_curve(result["rows"])
        plot_det({"liveness": (apcer, bpcer)}, out_dir / "det.png", title="Presentation-attack detection",
                 xlabel="APCER", ylabel="BPCER")
    return report
