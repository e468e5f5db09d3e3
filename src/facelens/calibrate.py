"""Measuring verification thresholds from labelled data, so no threshold is a magic number.

A labelled set is a folder per person (`ROOT/<person>/<image>`, every pair of images is used) or a
CSV of pairs (`path1,path2,same`); extra folder-per-person sets may serve for impostor pairs only.
One face per image stands for it (by default the photo's main subject, as verify and enrollment
choose it; `rule` switches the choice — the shipped record was made with the largest box, which
differs on 79 of its 3,069 photos); each
pair gives a genuine or impostor score; the threshold for each target false-match rate is read off
the impostor scores where enough of them reach it, and from a fitted tail below (`facelens.tail`),
with a bootstrap interval either way. The record says which data produced it, so a user can judge
whether it fits theirs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import ConfigError
from facelens.evaluate.metrics import all_pair_scores, rates_at, threshold_at_far
from facelens.evaluate.protocols import folder_per_person, read_pairs_csv
from facelens.models.registry import calibration_key
from facelens.pipeline import FaceAnalyzer, main_face, subject_score
from facelens.tail import MIN_EMPIRICAL, build_tail_model, identity_bootstrap, pair_bootstrap
from facelens.types import Face, ImageResult

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
# with a tail model (enough impostor pairs for a GPD fit) the record also lists the lower rates
LOW_FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
BOOTSTRAP_REPLICATES = 200
METHOD = (
    "threshold at FMR f: the empirical impostor-score quantile while at least "
    f"{MIN_EMPIRICAL} impostor pairs reach it; below that a generalised Pareto tail fitted by maximum "
    "likelihood to the top ceil(sqrt(N)) impostor scores (facelens.tail). Interval: 2.5-97.5 percentiles "
    "over bootstrap resamples (of identities for folder sets, of pairs for a pairs CSV)."
)


@dataclass
class LabelledEmbeddings:
    """Embeddings of the largest face of each usable image, with its person label."""

    embeddings: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: dict[str, str]  # path -> reason (unreadable, no face)


def embed_subjects(
    images: list[Path],
    analyzer: FaceAnalyzer,
    on_result: Callable[[ImageResult], None] | None = None,
) -> tuple[dict[Path, np.ndarray], dict[str, str]]:
    """The embedding of each image's main subject, and why the others have none (unreadable, no face)."""
    embeddings: dict[Path, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for path, result in zip(images, analyzer.analyze_batch(images, on_result=on_result), strict=True):
        face = main_face(result.faces, result.width, result.height) if result.ok else None
        if face is None or face.embedding is None:
            skipped[str(path)] = result.error or "no face found"
        else:
            embeddings[path] = face.embedding
    return embeddings, skipped


def embed_labelled(
    items: list[tuple[Path, str]],
    analyzer: FaceAnalyzer,
    on_result: Callable[[ImageResult], None] | None = None,
) -> LabelledEmbeddings:
    found, skipped = embed_subjects([p for p, _ in items], analyzer, on_result)
    kept = [(path, person) for path, person in items if path in found]
    embeddings = [found[path] for path, _ in kept]
    labels = [person for _, person in kept]
    paths = [str(path) for path, _ in kept]
    if not embeddings:
        raise ConfigError("no usable face in the labelled set")
    return LabelledEmbeddings(np.stack(embeddings), np.asarray(labels), paths, skipped)


@dataclass
class FaceTable:
    """Every detected face of every image (boxes, detector scores, embeddings), so the face that
    stands for a photo can be chosen afterwards by any rule without embedding again."""

    paths: list[str]
    labels: np.ndarray
    image_index: np.ndarray  # (n_faces,) which image each face is in
    boxes: np.ndarray  # (n_faces, 4) x1, y1, x2, y2
    det_scores: np.ndarray  # (n_faces,)
    embeddings: np.ndarray  # (n_faces, d) L2-normalised
    sizes: np.ndarray  # (n_images, 2) height, width (0, 0 when unreadable)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, paths=np.asarray(self.paths), labels=self.labels, image_index=self.image_index,
                 boxes=self.boxes, det_scores=self.det_scores, embeddings=self.embeddings, sizes=self.sizes)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FaceTable:
        with np.load(path) as z:
            return cls([str(p) for p in z["paths"]], z["labels"], z["image_index"], z["boxes"],
                       z["det_scores"], z["embeddings"], z["sizes"])


def largest_box(boxes: np.ndarray, det_scores: np.ndarray, size: np.ndarray) -> int:
    """The default choice of the face a photo is about: the largest box (index into `boxes`)."""
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return int(np.argmax(areas))


def main_subject(boxes: np.ndarray, det_scores: np.ndarray, size: np.ndarray) -> int:
    """The photo's main subject by the pipeline's rule (size and closeness to the centre; see
    `facelens.pipeline.subject_score`): the choice verify, enrollment and evaluation make."""
    height, width = float(size[0]), float(size[1])
    faces = [Face(bbox=np.asarray(b, np.float32), det_score=float(s)) for b, s in zip(boxes, det_scores, strict=True)]
    return max(range(len(faces)), key=lambda i: subject_score(faces[i], width, height))


# (boxes, det_scores, (height, width)) of one photo's faces -> index of the face that stands for it
FaceRule = Callable[[np.ndarray, np.ndarray, np.ndarray], int]


def face_table(
    items: list[tuple[Path, str]],
    analyzer: FaceAnalyzer,
    cache: Path | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
) -> FaceTable:
    """Every face of every labelled image, read from `cache` (an .npz) when it holds these images for
    this analyzer, else embedded and written there."""
    paths = [str(p) for p, _ in items]
    if cache is not None and Path(cache).is_file():
        table = FaceTable.load(Path(cache))
        if table.paths == paths:
            return table
    index, boxes, scores, embs, sizes = [], [], [], [], []
    for i, result in enumerate(analyzer.analyze_batch([p for p, _ in items], on_result=on_result)):
        sizes.append((result.height, result.width) if result.ok else (0, 0))
        for face in result.faces if result.ok else []:
            if face.embedding is not None:
                index.append(i)
                boxes.append(face.bbox)
                scores.append(face.det_score)
                embs.append(face.embedding)
    dim = embs[0].shape[0] if embs else 0
    table = FaceTable(paths, np.asarray([person for _, person in items]), np.asarray(index, dtype=np.int64),
                      np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores, dtype=np.float32),
                      np.asarray(embs, dtype=np.float32).reshape(-1, dim), np.asarray(sizes, dtype=np.int64))
    if cache is not None:
        table.save(Path(cache))
    return table


def select_faces(table: FaceTable, rule: FaceRule = main_subject) -> LabelledEmbeddings:
    """One embedding per image, the face `rule` picks; images without a face are listed as skipped."""
    chosen: list[int] = []
    kept: list[int] = []
    skipped: dict[str, str] = {}
    starts = np.searchsorted(table.image_index, np.arange(len(table.paths) + 1))
    for i, path in enumerate(table.paths):
        lo, hi = starts[i], starts[i + 1]
        if hi == lo:
            skipped[path] = "no face found"
            continue
        chosen.append(lo + rule(table.boxes[lo:hi], table.det_scores[lo:hi], table.sizes[i]))
        kept.append(i)
    if not chosen:
        raise ConfigError("no usable face in the labelled set")
    return LabelledEmbeddings(table.embeddings[chosen], table.labels[kept], [table.paths[i] for i in kept], skipped)


def dataset_fingerprint(paths: list[str]) -> str:
    """A short hash of the file names and sizes, so a record can be matched to its data."""
    digest = hashlib.sha256()
    for p in sorted(paths):
        digest.update(Path(p).name.encode())
        digest.update(str(Path(p).stat().st_size).encode())
    return digest.hexdigest()[:16]


def _record(
    genuine: np.ndarray,
    impostor: np.ndarray,
    analyzer: FaceAnalyzer,
    data: dict[str, Any],
    fars: tuple[float, ...] | None = None,
    replicates: Iterable[np.ndarray] | None = None,
    resampling: str = "pairs",
) -> dict[str, Any]:
    """The record: per target rate a threshold with its method and bootstrap interval, and the tail
    model (`facelens.tail`) that answers any other rate. `replicates` are impostor scores of
    bootstrap resamples (default: resampled pairs, BOOTSTRAP_REPLICATES of them)."""
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    if len(genuine) == 0 or len(impostor) < 2:
        raise ConfigError("need at least one genuine pair and two impostor pairs to calibrate")
    if replicates is None:
        replicates = pair_bootstrap(impostor, BOOTSTRAP_REPLICATES)
    model = build_tail_model(impostor, replicates, resampling=resampling)
    if fars is None:
        fars = LOW_FARS if model.tail is not None else DEFAULT_FARS
    thresholds = {}
    for far in fars:
        try:
            answer = model.threshold_at(far)
        except ValueError:  # too few impostor pairs for a tail fit: the older normal-fit rule
            answer = None
        if answer is None:
            entry: dict[str, Any] = threshold_at_far(genuine, impostor, far).to_dict()
            threshold = entry["threshold"]
        else:
            threshold = answer["threshold"]
            rates = rates_at(genuine, impostor, threshold)
            entry = {"threshold": threshold, "method": answer["method"], "interval": answer["interval"],
                     "measured_far": rates["fmr"], "fnmr": round(rates["fnmr"], 6)}
            fitted = model.fitted_threshold(far)
            if fitted is not None:
                entry["tail_fit_threshold"] = round(min(fitted, 1.0), 6)
        entry["impostors_above"] = int((impostor >= threshold).sum())
        entry["accuracy"] = round(rates_at(genuine, impostor, threshold)["accuracy"], 6)
        thresholds[f"{far:g}"] = entry
    return {
        "recognizer": analyzer.recognizer,
        "detector": analyzer.detector,
        "flip": analyzer.flip,
        "data": data,
        "pairs": {"genuine": len(genuine), "impostor": len(impostor)},
        "scores": {
            "genuine_mean": round(float(genuine.mean()), 5),
            "impostor_mean": round(float(impostor.mean()), 5),
            "impostor_std": round(float(impostor.std(ddof=1)), 5),
            "impostor_max": round(float(impostor.max()), 5),
        },
        "thresholds": thresholds,
        "method": METHOD,
        "tail": model.to_dict(),
        "date": _dt.date.today().isoformat(),
    }


@dataclass
class LabelledSet:
    """A folder-per-person set as (image, person) items. `genuine=False`: its images take part in
    impostor pairs only (an extra set of other people to measure low false-match rates)."""

    name: str
    items: list[tuple[Path, str]]
    genuine: bool = True
    cache: Path | None = None  # .npz of every face of every image (see face_table)


def calibrate_sets(
    sets: list[LabelledSet],
    analyzer: FaceAnalyzer,
    fars: tuple[float, ...] | None = None,
    rule: FaceRule = main_subject,
    replicates: int = 0,
    seed: int = 0,
    on_result: Callable[[ImageResult], None] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A calibration record from several labelled sets: genuine pairs within the sets marked genuine,
    impostor pairs between any two images of different people (a person's name is the same person
    in every set). `rule` picks the face that stands for a photo; intervals from `replicates`
    identity-bootstrap resamples (default BOOTSTRAP_REPLICATES); images in `exclude` (paths as
    given in the items, e.g. one photo filed under two people) are left out after embedding."""
    chosen = [select_faces(face_table(s.items, analyzer, s.cache, on_result), rule) for s in sets]
    if exclude:
        chosen = [_without(c, exclude) for c in chosen]
    embeddings = np.concatenate([c.embeddings for c in chosen])
    labels = np.concatenate([c.labels for c in chosen]).astype(str)
    for_genuine = np.concatenate([np.full(len(c.paths), s.genuine) for s, c in zip(sets, chosen, strict=True)])
    if not for_genuine.any():
        raise ConfigError("no set gives genuine pairs")
    genuine, _ = all_pair_scores(embeddings[for_genuine], labels[for_genuine])
    _, impostor = all_pair_scores(embeddings, labels)
    boot = identity_bootstrap(embeddings, labels, replicates or BOOTSTRAP_REPLICATES, seed)
    info: dict[str, Any] = {
        "root": "+".join(s.name for s in sets),
        "people": len(set(labels.tolist())),
        "images": len(labels),
        "skipped": sum(len(c.skipped) for c in chosen),
        "fingerprint": dataset_fingerprint([p for c in chosen for p in c.paths]),
        "face_rule": getattr(rule, "__name__", str(rule)),
        "sets": [{"name": s.name, "use": "genuine+impostor" if s.genuine else "impostor",
                  "people": len(set(c.labels.tolist())), "images": len(c.paths), "skipped": len(c.skipped),
                  "fingerprint": dataset_fingerprint(c.paths)} for s, c in zip(sets, chosen, strict=True)],
    }
    return _record(genuine, impostor, analyzer, info, fars, boot, resampling="identities")


def _without(data: LabelledEmbeddings, exclude: frozenset[str]) -> LabelledEmbeddings:
    keep = [i for i, p in enumerate(data.paths) if p not in exclude]
    skipped = dict(data.skipped) | {p: "excluded" for p in data.paths if p in exclude}
    return LabelledEmbeddings(data.embeddings[keep], data.labels[keep], [data.paths[i] for i in keep], skipped)


def calibrate(
    root: Path,
    analyzer: FaceAnalyzer,
    fars: tuple[float, ...] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
    impostors: Path | None = None,
    rule: FaceRule = main_subject,
) -> dict[str, Any]:
    """A calibration record for the analyzer's recognizer, from a folder-per-person set (every pair),
    plus optionally a second folder-per-person set used only for impostor pairs."""
    sets = [LabelledSet(Path(root).name, folder_per_person(root))]
    if impostors is not None:
        sets.append(LabelledSet(Path(impostors).name, folder_per_person(impostors), genuine=False))
    return calibrate_sets(sets, analyzer, fars, rule, on_result=on_result)


def calibrate_pairs(
    pairs_file: Path,
    analyzer: FaceAnalyzer,
    fars: tuple[float, ...] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
) -> dict[str, Any]:
    """A calibration record from a list of labelled pairs; pairs with an unusable image are skipped."""
    pairs = read_pairs_csv(pairs_file)
    images = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    embedding, _ = embed_subjects(images, analyzer, on_result)
    genuine, impostor = [], []
    for pair in pairs:
        if pair.a in embedding and pair.b in embedding:
            (genuine if pair.same else impostor).append(float(embedding[pair.a] @ embedding[pair.b]))
    info = {
        "pairs_file": Path(pairs_file).name,
        "images": len(embedding),
        "skipped": len(images) - len(embedding),
        "skipped_pairs": len(pairs) - len(genuine) - len(impostor),
        "fingerprint": dataset_fingerprint([str(p) for p in embedding]),
    }
    return _record(np.asarray(genuine), np.asarray(impostor), analyzer, info, fars)


def save_record(record: dict[str, Any], path: Path) -> None:
    """Merge the record into a thresholds file (one entry per recognizer), written atomically."""
    path = Path(path)
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ConfigError(f"{path}: existing thresholds file is not valid JSON; move it away first") from None
    existing[calibration_key(record["recognizer"], record["flip"])] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
