"""Evaluation protocols as papers run them: LFW-style pairs (10-fold), identification (CMC, DIR@FPIR),
low-resolution probes, and per-group error rates.

Every image is reduced to one embedding: its subject (by default the main subject, size weighed by
closeness to the centre, see `facelens.pipeline.main_face`; or the largest face), or — when no face is found, as
papers do for LFW — a fallback: the ArcFace template's landmarks laid on a centred square of
`FALLBACK_SIDE` x the shorter image side (on a 250x250 LFW photo, the central 112 px, about where
LFW's face is). How many images needed it is reported.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.align import ARCFACE_SIZE, ARCFACE_TEMPLATE
from facelens.detect.crop import face_of_crop
from facelens.errors import ConfigError, FacelensError
from facelens.evaluate import metrics
from facelens.evaluate.cache import EmbeddingCache
from facelens.io import IMAGE_SUFFIXES, decode_image, sha256_file
from facelens.pipeline import FaceAnalyzer, check_subject_rule, main_face
from facelens.types import Face

FALLBACK_SIDE = 0.45
DEFAULT_FARS = (1e-4, 1e-3, 1e-2)
N_FOLDS = 10
FOLD_SEED = 0


# -- pairs files -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int
    # where the fold came from: "file" (the pairs file says) or "stratified" (see `stratified_folds`)
    fold_source: str = "file"


def stratified_folds(labels: list[bool], k: int = N_FOLDS, seed: int = FOLD_SEED) -> list[int]:
    """A fold for each pair: every class shuffled (seeded, so a rerun gives the same folds) and dealt
    round-robin into `k` folds, so each fold holds genuine and impostor pairs in the file's proportion,
    whatever the file's order (cutting a label-sorted file into blocks gives folds of one class)."""
    rng = np.random.default_rng(seed)
    folds = [0] * len(labels)
    for label in (True, False):
        members = [i for i, value in enumerate(labels) if bool(value) is label]
        for rank, i in enumerate(rng.permutation(len(members))):
            folds[members[i]] = rank % k
    return folds


def folds_description(pairs: list[Pair]) -> str:
    """How the pairs were split into folds, for the report."""
    dealt = sum(p.fold_source == "stratified" for p in pairs)
    if not dealt:
        return "as given in the pairs file"
    how = (f"stratified: {N_FOLDS} folds, each holding genuine and impostor pairs in proportion "
           f"(seeded shuffle, seed {FOLD_SEED})")
    return how + ("; the pairs file gave no folds" if dealt == len(pairs) else
                  f", for the {dealt} pair(s) without a fold in the pairs file; the others as given")


def read_lfw_pairs(pairs_file: Path, root: Path) -> list[Pair]:
    """The official LFW `pairs.txt`: a header "FOLDS N" (or just "N" for one set), then per fold N
    same-person lines `name i j` and N different-person lines `name1 i name2 j`; images at
    ROOT/name/name_%04d.jpg. Errors name the file and line."""
    pairs_file, root = Path(pairs_file), Path(root)
    if not pairs_file.is_file():
        raise ConfigError(f"{pairs_file}: no such pairs file")
    lines = pairs_file.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or not lines[0].split():
        raise ConfigError(f"{pairs_file}:1: empty file; expected a header like '10 300'")
    header = lines[0].split()
    try:
        n_folds, per_class = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    except ValueError:
        raise ConfigError(f"{pairs_file}:1: header must be 'FOLDS PAIRS' or 'PAIRS', got {lines[0]!r}") from None
    if n_folds < 1 or per_class < 1 or len(header) > 2:
        raise ConfigError(f"{pairs_file}:1: bad header {lines[0]!r}")

    def image(name: str, index: str, number: int) -> Path:
        try:
            path = root / name / f"{name}_{int(index):04d}.jpg"
        except ValueError:
            raise ConfigError(f"{pairs_file}:{number}: image number {index!r} is not an integer") from None
        if not path.is_file():
            raise ConfigError(f"{pairs_file}:{number}: image {path} not found")
        return path

    pairs: list[Pair] = []
    body = [(n, line.split()) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    expected = n_folds * 2 * per_class
    if len(body) != expected:
        raise ConfigError(f"{pairs_file}: header promises {expected} pairs, the file has {len(body)}")
    for index, (number, tokens) in enumerate(body):
        fold, within = divmod(index, 2 * per_class)
        same = within < per_class
        if same and len(tokens) == 3:
            pairs.append(Pair(image(tokens[0], tokens[1], number), image(tokens[0], tokens[2], number), True, fold))
        elif not same and len(tokens) == 4:
            pairs.append(Pair(image(tokens[0], tokens[1], number), image(tokens[2], tokens[3], number), False, fold))
        else:
            kind = "'name i j'" if same else "'name1 i name2 j'"
            raise ConfigError(f"{pairs_file}:{number}: expected a {kind} line here, got {' '.join(tokens)!r}")
    if n_folds == 1:
        folds = stratified_folds([p.same for p in pairs])
        pairs = [Pair(p.a, p.b, p.same, f, "stratified") for p, f in zip(pairs, folds, strict=True)]
    return pairs


_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def read_pairs_csv(path: Path, check_files: bool = False) -> list[Pair]:
    """Pairs from a CSV of `path1,path2,same[,fold]` (a header line is optional; relative paths are taken
    from the CSV's folder; `same` is 1/0, true/false or yes/no). Pairs without a fold are dealt into
    ten stratified folds (`stratified_folds`: both classes in every fold, a seeded shuffle). Errors name
    the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such pairs file")
    rows: list[tuple[Path, Path, bool, int | None]] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) not in (3, 4):
                raise ConfigError(f"{path}:{number}: expected 3 fields (path1,path2,same[,fold]), got {len(row)}")
            a, b, label = (field.strip() for field in row[:3])
            if label.lower() not in _TRUE | _FALSE:
                if number == 1:
                    continue  # a header
                raise ConfigError(f"{path}:{number}: 'same' must be 1/0, true/false or yes/no; got {label!r}")
            fold = None
            if len(row) == 4:
                try:
                    fold = int(row[3])
                except ValueError:
                    raise ConfigError(f"{path}:{number}: fold must be an integer, got {row[3]!r}") from None
            first, second = path.parent / a, path.parent / b
            for image in (first, second) if check_files else ():
                if not image.is_file():
                    raise ConfigError(f"{path}:{number}: image {image} not found")
            rows.append((first, second, label.lower() in _TRUE, fold))
    if not rows:
        raise ConfigError(f"{path}: no pairs in the file")
    # pairs with a fold keep it; the others are dealt into stratified folds among themselves
    missing = [i for i, row in enumerate(rows) if row[3] is None]
    dealt = dict(zip(missing, stratified_folds([rows[i][2] for i in missing]), strict=True))
    return [Pair(a, b, same, fold) if fold is not None else Pair(a, b, same, dealt[i], "stratified")
            for i, (a, b, same, fold) in enumerate(rows)]


def read_pairs(pairs_file: Path, root: Path | None = None) -> list[Pair]:
    """A `.csv` pairs list, or the LFW `pairs.txt` format (which needs ROOT)."""
    if Path(pairs_file).suffix.lower() == ".csv":
        return read_pairs_csv(pairs_file, check_files=True)
    if root is None:
        raise ConfigError("an LFW pairs.txt needs --root, the folder holding name/name_0001.jpg")
    return read_lfw_pairs(pairs_file, root)


def folder_per_person(root: Path) -> list[tuple[Path, str]]:
    """(image path, person) for every image in ROOT/<person>/, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (expected one sub-folder of images per person)")
    items = [
        (path, person_dir.name)
        for person_dir in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(person_dir.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise ConfigError(f"{root}: no images found in per-person sub-folders")
    return items


# -- embedding with fallback, degradation and cache ----------------------------------------------
def fallback_face(height: int, width: int) -> Face:
    """The template's five points on a centred square: the face papers assume when none is detected."""
    side = FALLBACK_SIDE * min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    landmarks = ARCFACE_TEMPLATE / ARCFACE_SIZE * side + [x0, y0]
    return Face(bbox=[x0, y0, x0 + side, y0 + side], det_score=0.0, landmarks=landmarks,
                attributes={"fallback": True})


def degrade(image: np.ndarray, face: Face, size: int) -> np.ndarray:
    """The image down-sampled so the face box is `size` px wide, then up-sampled back (bicubic):
    a low-resolution probe with the geometry unchanged, so landmarks still apply."""
    factor = size / max(face.width, 1.0)
    if factor >= 1.0:
        return image
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass
class Embeddings:
    vectors: dict[Path, np.ndarray] = field(default_factory=dict)
    fallback: set[Path] = field(default_factory=set)
    errors: dict[Path, str] = field(default_factory=dict)
    cached: int = 0


class Embedder:
    """Embeds images one face each (the subject by the `subject` rule, or the fallback), through the cache."""

    def __init__(self, analyzer: FaceAnalyzer, cache: EmbeddingCache | None = None, subject: str = "main") -> None:
        self.analyzer = analyzer
        self.cache = cache
        self.subject = check_subject_rule(subject)

    def model_key(self, probe_size: int | None) -> str:
        a = self.analyzer
        # "largest" keeps the key of the embeddings cached before the subject rule existed
        rule = "" if self.subject == "largest" else f"|subject={self.subject}"
        crops = "|crops=1" if a.crops else ""
        return (f"{a.detector}|{a.recognizer}|flip={int(a.flip)}|det={a.det_size}|thr={a.det_threshold}"
                f"|decode={a.decode_size}|fallback={FALLBACK_SIDE}|low={probe_size or 0}{rule}{crops}")

    def _embed_one(self, path: Path, probe_size: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        decoded = decode_image(path, max_side=self.analyzer.decode_size)
        pixels = decoded.pixels
        if self.analyzer.crops:  # the image is the face; the template only where no points are found
            face = face_of_crop(pixels, self.analyzer.detector_model)
            info: dict[str, Any] = {"fallback": face.attributes["crop"]["landmarks"] == "template"}
        else:
            face = main_face(self.analyzer.detector_model.detect(pixels), pixels.shape[1], pixels.shape[0],
                             self.subject)
            info = {"fallback": face is None}
            if face is None:
                face = fallback_face(*pixels.shape[:2])
        if probe_size:
            pixels = degrade(pixels, face, probe_size)
        vector = self.analyzer.recognizer_model.embed_faces(pixels, [face])[0]
        return vector, info

    def embed(
        self, paths: list[Path], probe_size: int | None = None, on_done: Callable[[Path], None] | None = None
    ) -> Embeddings:
        self.analyzer.check_models()
        out = Embeddings()
        key = self.model_key(probe_size)

        def work(path: Path) -> None:
            try:
                digest = sha256_file(path)
                hit = self.cache.get(digest, key) if self.cache else None
                if hit is not None:
                    vector, info = hit
                    out.cached += 1
                else:
                    vector, info = self._embed_one(path, probe_size)
                    if self.cache:
                        self.cache.put(digest, key, vector, info)
                out.vectors[path] = vector
                if info.get("fallback"):
                    out.fallback.add(path)
            except FacelensError as exc:
                out.errors[path] = str(exc)
            except OSError as exc:
                out.errors[path] = f"{path}: cannot be read ({exc.strerror or exc})"
            if on_done:
                on_done(path)

        unique = list(dict.fromkeys(paths))
        with ThreadPoolExecutor(max_workers=self.analyzer.n_threads) as pool:
            list(pool.map(work, unique))
        return out


# -- protocols ---------------------------------------------------------------------------------
@dataclass
class PairsResult:
    """Scores and every figure of one recognizer on one pairs list."""

    summary: dict[str, Any]
    genuine: np.ndarray
    impostor: np.ndarray


def _verification_figures(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    genuine, impostor = scores[same], scores[~same]
    kfold = metrics.kfold_accuracy(scores, same, folds)
    eer, eer_threshold = metrics.eer(genuine, impostor)
    best_t, best_acc = metrics.best_threshold(scores, same)
    tar = {}
    for far in DEFAULT_FARS:
        value, threshold = metrics.tar_at_far(genuine, impostor, far)
        tar[f"{far:g}"] = {"tar": value, "threshold": threshold, "impostor_pairs_above": int(far * len(impostor))}
    return {
        "accuracy_mean": kfold["mean"],
        "accuracy_std": kfold["std"],
        "fold_accuracies": kfold["accuracies"],
        "fold_thresholds": kfold["thresholds"],
        "auc": metrics.roc_auc(genuine, impostor),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "tar_at_far": tar,
        "best_threshold": {"threshold": best_t, "accuracy": best_acc},
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
    }


def evaluate_pairs(
    pairs: list[Pair],
    embedder: Embedder,
    probe_sizes: tuple[int, ...] = (),
    groups: dict[str, str] | None = None,
    far: float = 1e-3,
    on_done: Callable[[Path], None] | None = None,
) -> PairsResult:
    """The LFW protocol: 10-fold accuracy (threshold chosen on nine folds, applied to the tenth), and
    over all pairs ROC AUC, EER, TAR at FAR 1e-4/1e-3/1e-2 and the best single threshold."""
    if not pairs:
        raise ConfigError("no pairs to evaluate")
    images = [p for pair in pairs for p in (pair.a, pair.b)]
    emb = embedder.embed(images, on_done=on_done)
    usable = [p for p in pairs if p.a in emb.vectors and p.b in emb.vectors]
    if not usable or all(p.same for p in usable) or not any(p.same for p in usable):
        raise ConfigError("need readable genuine and impostor pairs to evaluate")
    scores = np.array([float(emb.vectors[p.a] @ emb.vectors[p.b]) for p in usable])
    same = np.array([p.same for p in usable])
    folds = np.array([p.fold for p in usable])
    summary: dict[str, Any] = {
        "recognizer": embedder.analyzer.recognizer,
        "detector": embedder.analyzer.detector,
        "flip": embedder.analyzer.flip,
        "pairs": len(pairs),
        "pairs_skipped": len(pairs) - len(usable),
        "folds": folds_description(pairs),
        "subject": embedder.subject,
        "images": len(set(images)),
        "fallback_images": len(emb.fallback),
        "unreadable_images": {str(k): v for k, v in emb.errors.items()},
        "cached_images": emb.cached,
        **_verification_figures(scores, same, folds),
    }
    if probe_sizes:
        low: dict[str, Any] = {}
        probes = [p.b for p in usable]
        for size in probe_sizes:
            degraded = embedder.embed(probes, probe_size=size)
            kept = [p for p in usable if p.b in degraded.vectors]
            s = np.array([float(emb.vectors[p.a] @ degraded.vectors[p.b]) for p in kept])
            figures = _verification_figures(s, np.array([p.same for p in kept]), np.array([p.fold for p in kept]))
            low[str(size)] = {k: figures[k] for k in ("accuracy_mean", "accuracy_std", "auc", "eer", "tar_at_far")}
        summary["low_resolution"] = low
    if groups is not None:
        summary["bias"] = group_error_rates(usable, scores, groups, far)
    return PairsResult(summary, scores[same], scores[~same])


def identity_of(path: Path) -> str:
    """The person an image belongs to in a folder-per-person layout: its folder's name."""
    return Path(path).parent.name


def read_groups(path: Path) -> dict[str, str]:
    """CSV `identity,group` (or `image path,group`); a header line is allowed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such groups file")
    groups: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise ConfigError(f"{path}:{number}: expected 'identity,group', got {len(row)} fields")
            key, group = row[0].strip(), row[1].strip()
            if number == 1 and key.lower() in {"identity", "image", "path", "person"}:
                continue
            groups[key] = group
    if not groups:
        raise ConfigError(f"{path}: no groups in the file")
    return groups


def _group_of(path: Path, groups: dict[str, str]) -> str | None:
    return groups.get(str(path)) or groups.get(path.name) or groups.get(identity_of(path))


def group_error_rates(pairs: list[Pair], scores: np.ndarray, groups: dict[str, str], far: float) -> dict[str, Any]:
    """False-match and false-non-match rates per group at ONE global threshold (the one giving `far`
    over all impostor pairs), counting pairs whose two images are in the same group, as demographic
    studies (NIST FRVT part 8) do; and the worst/best ratio of each rate."""
    same = np.array([p.same for p in pairs])
    threshold = metrics.tar_at_far(scores[same], scores[~same], far)[1]
    per_group: dict[str, dict[str, Any]] = {}
    labels = [(_group_of(p.a, groups), _group_of(p.b, groups)) for p in pairs]
    for group in sorted({g for pair in labels for g in pair if g is not None}):
        mask = np.array([ga == group and gb == group for ga, gb in labels])
        gen, imp = scores[mask & same], scores[mask & ~same]
        per_group[group] = {
            "genuine_pairs": len(gen),
            "impostor_pairs": len(imp),
            "fnmr": float((gen < threshold).mean()) if len(gen) else None,
            "fmr": float((imp >= threshold).mean()) if len(imp) else None,
        }

    def ratio(key: str) -> float | None:
        values = [v[key] for v in per_group.values() if v[key] is not None]
        if len(values) < 2:
            return None
        lo, hi = min(values), max(values)
        return float("inf") if lo == 0 and hi > 0 else (hi / lo if lo > 0 else 1.0)

    return {"threshold": threshold, "far": far, "groups": per_group,
            "fmr_worst_best_ratio": ratio("fmr"), "fnmr_worst_best_ratio": ratio("fnmr")}


GALLERY_SEED = 0


def embed_by_person(items: list[tuple[Path, str]], embedder: Embedder) -> dict[str, list[np.ndarray]]:
    """The embedding of each labelled image's face, grouped by person (images where no face was found,
    and which would fall back to the centre crop, are left out)."""
    out = embedder.embed([path for path, _ in items])
    people: dict[str, list[np.ndarray]] = {}
    for path, person in items:
        if path in out.vectors and path not in out.fallback:
            people.setdefault(person, []).append(out.vectors[path])
    return people


def open_set_rates(people: dict[str, list[np.ndarray]], enrolled: list[str], strangers: list[str],
                   faces_each: int, threshold: float) -> tuple[float, float, int]:
    """(share of the strangers' images given a name, share of the enrolled people's other images named
    correctly, gallery faces) when each enrolled person's first `faces_each` images form the gallery and
    a name is given at `threshold` (best face per person)."""
    gallery, owners, probes = [], [], []
    for i, person in enumerate(enrolled):
        mine = people[person][:faces_each]
        gallery += mine
        owners += [i] * len(mine)
        probes += [(i, v) for v in people[person][faces_each:]]
    g = np.stack(gallery)
    owner = np.array(owners)
    strangers_best = (np.stack([v for p in strangers for v in people[p]]) @ g.T).max(axis=1)
    named = float((strangers_best >= threshold).mean())
    sims = np.stack([v for _, v in probes]) @ g.T
    correct = (owner[sims.argmax(axis=1)] == np.array([i for i, _ in probes])) & (sims.max(axis=1) >= threshold)
    return named, float(correct.mean()), len(g)


def gallery_sizes(total: int) -> list[int]:
    """10, 100, 1,000, ... below `total`, then `total` itself: the gallery sizes of a distractor sweep."""
    sizes, n = [], 10
    while n < total:
        sizes.append(n)
        n *= 10
    return [*sizes, total] if total > 0 else []


def _split_people(by_person: dict[str, list[Path]], enroll: int, holdout: float) -> tuple[list[str], list[str]]:
    """(enrolled, unknown) people: those with no more than `enroll` images are unknown, and so is a seeded
    `holdout` share of the others (never enrolled: all their images are unknown probes)."""
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"--holdout must be a share in [0, 1), got {holdout!r}")
    eligible = [who for who, paths in by_person.items() if len(paths) > enroll]
    held = set()
    if holdout and eligible:
        order = np.random.default_rng(GALLERY_SEED).permutation(len(eligible))
        held = {eligible[i] for i in order[: round(holdout * len(eligible))]}
    enrolled = [who for who in eligible if who not in held]
    unknown = [who for who in by_person if who not in enrolled]
    return enrolled, unknown


def distractor_sweep(
    probe_vec: np.ndarray, probe_lab: np.ndarray, mated: np.ndarray,
    gallery_vec: np.ndarray, gallery_lab: np.ndarray, recognizer: str, fpir: float, flip: bool = False,
) -> dict[str, Any]:
    """FPIR and DIR at the default decision threshold as the gallery grows.

    The gallery's rows are in growth order (enrolled people first, then distractors), so a gallery of
    n people is its first rows up to the n-th person's last face. At each size the threshold is the
    one `identify` uses: `fpir_threshold(recognizer, fpir, faces, people)`. FPIR: share of unknown
    probes whose best match clears it; DIR: share of mated probes (of people in this gallery) whose best
    match is their own person and clears it. Per person: share of unknown people with at least one
    probe named, and the mean share of each unknown person's probes named (people weigh equally).
    Similarities are computed once; each size takes a running maximum over the new columns.
    """
    from facelens.gallery.openset import fpir_threshold

    people_order = list(dict.fromkeys(gallery_lab.tolist()))
    rank = {who: i for i, who in enumerate(people_order)}
    person_index = np.array([rank[w] for w in gallery_lab.tolist()])
    # columns up to (and including) the n-th person's faces: gallery rows are grouped by person
    ends = np.searchsorted(person_index, np.arange(len(people_order)), side="right")
    probe_rank = np.array([rank.get(w, -1) for w in probe_lab.tolist()])
    unknown = ~mated
    u_people, u_index = np.unique(probe_lab[unknown].astype(str), return_inverse=True)
    sim = probe_vec @ gallery_vec.T
    best = np.full(len(probe_vec), -np.inf)
    best_person = np.full(len(probe_vec), -1)
    done = 0
    rows = []
    for n in gallery_sizes(len(people_order)):
        cols = int(ends[n - 1])
        if cols > done:
            block = sim[:, done:cols]
            arg = block.argmax(axis=1)
            top = block[np.arange(len(block)), arg]
            better = top > best
            best = np.where(better, top, best)
            best_person = np.where(better, person_index[done + arg], best_person)
            done = cols
        decision = fpir_threshold(recognizer, fpir, cols, n, flip)
        named = best >= decision.threshold
        in_gallery = mated & (probe_rank >= 0) & (probe_rank < n)
        row: dict[str, Any] = {
            "gallery_people": n, "gallery_faces": cols, "threshold": decision.threshold,
            "fmr": decision.fmr, "method": decision.method,
            "mated_probes": int(in_gallery.sum()), "unknown_probes": int(unknown.sum()),
            "dir": float((named & in_gallery & (best_person == probe_rank)).sum() / in_gallery.sum())
            if in_gallery.any() else None,
            "fpir": float(named[unknown].mean()) if unknown.any() else None,
            "unknown_named": int(named[unknown].sum()),
        }
        if unknown.any():
            hits = np.bincount(u_index, weights=named[unknown], minlength=len(u_people))
            counts = np.bincount(u_index, minlength=len(u_people))
            row["unknown_people"] = len(u_people)
            row["unknown_people_named"] = float((hits > 0).mean())
            row["fpir_per_person_mean"] = float((hits / counts).mean())
        rows.append(row)
    return {"fpir_target": fpir, "seed": GALLERY_SEED, "sizes": rows}


def evaluate_identification(
    root: Path,
    embedder: Embedder,
    enroll: int = 1,
    probe_sizes: tuple[int, ...] = (),
    on_done: Callable[[Path], None] | None = None,
    distractors: Path | None = None,
    fpir: float | None = None,
    holdout: float = 0.0,
) -> dict[str, Any]:
    """Folder-per-person identification: each person's first `enroll` images form the gallery, the rest
    are mated probes; people with no more than `enroll` images are unknown (non-mated) probes, and so
    are a seeded `holdout` share of the others (all their images). Closed-set CMC (rank-1, rank-5) over
    mated probes; open-set DIR at FPIR 1e-2 and 1e-1 (thresholds set on the probes themselves).

    With `distractors` (a folder per person of people never used as probes; their first `enroll` images
    are enrolled) the gallery grows — enrolled people first, then distractors, each in a seeded order —
    and FPIR and DIR are measured at the decision threshold `identify` uses for that gallery size
    (`fpir`, default `DEFAULT_FPIR`) at 10, 100, 1,000, ... people and at all of them
    (`distractor_sweep`, under "distractors")."""
    from facelens.gallery.openset import DEFAULT_FPIR, check_fpir

    if enroll < 1:
        raise ConfigError("--enroll must be at least 1")
    target = check_fpir(DEFAULT_FPIR if fpir is None else fpir)
    items = folder_per_person(root)
    extra = folder_per_person(distractors) if distractors is not None else []
    by_person: dict[str, list[Path]] = {}
    for path, person in items:
        by_person.setdefault(person, []).append(path)
    enrolled, unknown_people = _split_people(by_person, enroll, holdout)
    gallery = [(p, who) for who in enrolled for p in by_person[who][:enroll]]
    mated = [(p, who) for who in enrolled for p in by_person[who][enroll:]]
    unknown = [(p, who) for who in unknown_people for p in by_person[who]]
    if not gallery or not mated:
        raise ConfigError(f"{root}: no person has more than {enroll} image(s); nothing to identify")
    by_distractor: dict[str, list[Path]] = {}
    for path, person in extra:
        by_distractor.setdefault(person, []).append(path)
    both = sorted(set(by_person) & set(by_distractor))
    if both:
        raise ConfigError(f"{distractors}: {len(both)} person folder(s) also in {root} "
                          f"({', '.join(both[:3])}{', ...' if len(both) > 3 else ''}); distractors must be "
                          "other people")
    emb = embedder.embed([p for p, _ in items] + [p for p, _ in extra], on_done=on_done)

    def stack(entries: list[tuple[Path, str]], vectors: dict[Path, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        kept = [(p, who) for p, who in entries if p in vectors]
        if not kept:
            return np.zeros((0, 1), np.float32), np.array([], dtype=object)
        return np.stack([vectors[p] for p, _ in kept]), np.array([who for _, who in kept], dtype=object)

    g_vec, g_lab = stack(gallery, emb.vectors)

    def figures(vectors: dict[Path, np.ndarray]) -> dict[str, Any]:
        m_vec, m_lab = stack(mated, vectors)
        u_vec, u_lab = stack(unknown, vectors)
        probes = np.concatenate([m_vec, u_vec]) if len(u_vec) else m_vec
        labels = np.concatenate([m_lab, u_lab]) if len(u_lab) else m_lab
        sim = probes @ g_vec.T
        curve = metrics.cmc(sim, labels, g_lab, max_rank=min(20, len(set(g_lab))))
        out: dict[str, Any] = {"rank1": float(curve[0]), "rank5": float(curve[min(4, len(curve) - 1)]),
                               "cmc": [float(v) for v in curve]}
        for rate in (1e-2, 1e-1):
            if len(u_vec):
                dir_value, threshold = metrics.dir_at_fpir(sim, labels, g_lab, rate)
                out[f"dir_at_fpir_{rate:g}"] = {"dir": dir_value, "threshold": threshold,
                                                "unknown_probes_above": int(rate * len(u_vec))}
        return out

    result: dict[str, Any] = {
        "recognizer": embedder.analyzer.recognizer,
        "detector": embedder.analyzer.detector,
        "people": len(by_person),
        "subject": embedder.subject,
        "gallery_people": len(set(g_lab)),
        "gallery_images": len(g_lab),
        "mated_probes": len(mated),
        "unknown_probes": len(unknown),
        "held_out_people": len([w for w in unknown_people if len(by_person[w]) > enroll]),
        "fallback_images": len(emb.fallback),
        "unreadable_images": {str(k): v for k, v in emb.errors.items()},
        "cached_images": emb.cached,
        **figures(emb.vectors),
    }
    if distractors is not None:
        rng = np.random.default_rng(GALLERY_SEED)
        grown = [enrolled[i] for i in rng.permutation(len(enrolled))]
        others = sorted(by_distractor)
        grown += [others[i] for i in rng.permutation(len(others))]
        lists = {**by_person, **by_distractor}
        d_vec, d_lab = stack([(p, who) for who in grown for p in lists[who][:enroll]], emb.vectors)
        m_vec, m_lab = stack(mated, emb.vectors)
        u_vec, u_lab = stack(unknown, emb.vectors)
        probe_vec = np.concatenate([m_vec, u_vec]) if len(u_vec) else m_vec
        sweep = distractor_sweep(probe_vec, np.concatenate([m_lab, u_lab]),
                                 np.r_[np.ones(len(m_lab), bool), np.zeros(len(u_lab), bool)],
                                 d_vec, d_lab, embedder.analyzer.recognizer, target, embedder.analyzer.flip)
        result["distractors"] = {"folder": str(distractors), "people": len(by_distractor),
                                 "images": len(extra), "enroll": enroll, **sweep}
    if probe_sizes:
        low = {}
        probe_paths = [p for p, _ in mated + unknown]
        for size in probe_sizes:
            degraded = embedder.embed(probe_paths, probe_size=size)
            f = figures({**emb.vectors, **degraded.vectors})
            low[str(size)] = {k: v for k, v in f.items() if k != "cmc"}
        result["low_resolution"] = low
    return result
