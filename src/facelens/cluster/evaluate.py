"""`facelens evaluate cluster`: cluster a folder-per-person set and score it against the folders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facelens.cluster.graph import cluster_labels
from facelens.evaluate.metrics import clustering_scores
from facelens.evaluate.protocols import Embedder, folder_per_person
from facelens.models.registry import threshold_for


def evaluate_clustering(root: Path, embedder: Embedder, far: float = 1e-4, k: int = 16,
                        on_done: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Largest face of each image (the one its folder names), clustered at the threshold for `far`:
    pairwise and BCubed precision/recall/F, NMI, clusters found vs people, faces left unassigned."""
    items = folder_per_person(Path(root))
    embedded = embedder.embed([p for p, _ in items], on_done=on_done)
    kept = [(p, person) for p, person in items if p in embedded.vectors]
    if not kept:
        raise ValueError(f"{root}: no image could be embedded")
    vectors = np.stack([embedded.vectors[p] for p, _ in kept]).astype(np.float32)
    truth = np.array([person for _, person in kept])
    analyzer = embedder.analyzer
    threshold = threshold_for(analyzer.recognizer, far, analyzer.flip)
    started = time.perf_counter()
    labels = cluster_labels(vectors, threshold, k=k, min_size=2)
    seconds = time.perf_counter() - started
    scores = clustering_scores(truth, labels)
    return {"root": str(root), "recognizer": analyzer.recognizer, "far": far, "threshold": threshold, "k": k,
            "images": len(items), "faces": len(kept), "errors": dict((str(p), e) for p, e in embedded.errors.items()),
            "people": len(set(truth.tolist())), "clusters_found": int(labels.max() + 1) if len(labels) else 0,
            "unassigned": int((labels < 0).sum()), "cluster_seconds": seconds, **scores}
