"""Evaluation as papers measure it: `evaluate_pairs` (LFW 10-fold, ROC, EER, TAR@FAR),
`evaluate_identification` (CMC, DIR@FPIR), low-resolution probes and per-group error rates."""

from facelens.evaluate.cache import EmbeddingCache
from facelens.evaluate.protocols import (
    Embedder,
    Pair,
    evaluate_identification,
    evaluate_pairs,
    read_groups,
    read_lfw_pairs,
    read_pairs,
    read_pairs_csv,
)

__all__ = [
    "Embedder",
    "EmbeddingCache",
    "Pair",
    "evaluate_identification",
    "evaluate_pairs",
    "read_groups",
    "read_lfw_pairs",
    "read_pairs",
    "read_pairs_csv",
]
