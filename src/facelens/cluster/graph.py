"""Clustering embeddings into people: a k-nearest-neighbour graph, then Chinese whispers.

Why: the graph has O(n·k) edges (never O(n²) memory); keeping only edges whose cosine clears the
recognizer's threshold for a chosen false-match rate gives one knob with a meaning ("how sure must two
faces be to count as the same person"); Chinese whispers (Biemann 2006, dlib's face clustering) needs
no number of clusters and leaves faces with no confident neighbour alone, where they are reported as
unassigned rather than forced into someone's cluster.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import sparse

EXACT_KNN_MAX = 20_000  # above: IVF-PQ fast-scan candidates, re-ranked exactly
_CANDIDATES = 64
_NPROBE = 32


def _topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return top, np.take_along_axis(sims, top, axis=1)


def _ivf_pq_index(x: np.ndarray):
    """IVF + 4-bit PQ fast-scan over `x`: each query scans `_NPROBE` of ~2·sqrt(n) cells, so building
    the graph costs O(n^1.5) instead of the O(n²) of a flat scan (1M faces: minutes, not an hour)."""
    import faiss

    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    n, dim = x.shape
    nlist = int(2 ** np.clip(np.round(np.log2(2 * np.sqrt(n))), 8, 16))
    index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, dim // 16, 4, faiss.METRIC_INNER_PRODUCT)
    # 40 points a cell is what k-means needs (faiss warns below 39); more only costs training time
    sample = np.random.default_rng(0).choice(n, min(n, max(40 * nlist, 100_000)), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    index.nprobe = min(nlist, _NPROBE)
    return index


def knn_graph(vectors: np.ndarray, k: int = 16, threshold: float = -1.0,
              block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, similarities) of each vector's `k` nearest others with similarity >= `threshold`.

    Exact (blocked matrix products) up to `EXACT_KNN_MAX` vectors; above, an IVF + 4-bit PQ fast-scan
    index proposes `_CANDIDATES` neighbours per vector and they are re-scored exactly, so kept
    similarities are exact (what an approximate search can cost is a missed neighbour, never a wrong score).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows, cols, sims = [], [], []
    if n <= EXACT_KNN_MAX or x.shape[1] % 32:
        for start in range(0, n, block):
            s = x[start : start + block] @ x.T
            s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf  # no self-loops
            top, top_s = _topk_rows(s, k)
            rows.append(np.repeat(np.arange(start, start + len(s)), k))
            cols.append(top.ravel())
            sims.append(top_s.ravel())
    else:
        index = _ivf_pq_index(x)
        c = min(n, max(_CANDIDATES, 2 * k + 1))
        block = min(block, 1024)
        # one reused buffer for the gathered candidates: a fresh 100+ MB array per block costs more in
        # page faults than the arithmetic
        gathered = np.empty((block * c, x.shape[1]), np.float32)
        for start in range(0, n, block):
            q = x[start : start + block]
            _, cand = index.search(q, c)
            cand = np.where(cand < 0, 0, cand)
            rows_ = gathered[: cand.size]
            np.take(x, cand.ravel(), axis=0, out=rows_)
            s = np.einsum("qd,qcd->qc", q, rows_.reshape(len(q), c, -1))
            s[cand == np.arange(start, start + len(q))[:, None]] = -np.inf
            top, top_s = _topk_rows(s, k)
            rows.append(np.repeat(np.arange(start, start + len(q)), k))
            cols.append(np.take_along_axis(cand, top, axis=1).ravel())
            sims.append(top_s.ravel())
    r, c_, s_ = np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)
    keep = s_ >= threshold
    return r[keep].astype(np.int64), c_[keep].astype(np.int64), s_[keep].astype(np.float32)


def chinese_whispers(n: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, iterations: int = 20,
                     seed: int = 0, labels: np.ndarray | None = None, frozen: np.ndarray | None = None,
                     batches: int = 32) -> np.ndarray:
    """Label propagation on a weighted undirected graph; every node takes the label with the largest
    summed edge weight among its neighbours. Nodes are updated in random mini-batches (a vectorised
    form of the sequential algorithm). `labels` seeds the start; `frozen` nodes keep theirs (incremental
    clustering: existing people stay put, new faces join them or form new clusters)."""
    w = sparse.coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    w = w.maximum(w.T).tocsr()  # undirected: an edge found from either end counts
    lab = np.arange(n, dtype=np.int64) if labels is None else labels.astype(np.int64).copy()
    movable = np.arange(n) if frozen is None else np.flatnonzero(~frozen)
    movable = movable[np.diff(w.indptr)[movable] > 0]  # isolated nodes keep their own label
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for batch in np.array_split(rng.permutation(movable), max(1, min(batches, len(movable)))):
            sub = w[batch].tocoo()
            if sub.nnz == 0:
                continue
            key_lab = lab[sub.col]
            order = np.lexsort((key_lab, sub.row))
            r, lb, wt = sub.row[order], key_lab[order], sub.data[order]
            start = np.flatnonzero(np.r_[True, (r[1:] != r[:-1]) | (lb[1:] != lb[:-1])])
            score = np.add.reduceat(wt, start)
            r_s, l_s = r[start], lb[start]
            # best label per row: sort by (row, -score, label) and take the first of each row
            best = np.lexsort((l_s, -score, r_s))
            first = best[np.r_[True, r_s[best][1:] != r_s[best][:-1]]]
            new = l_s[first]
            nodes = batch[r_s[first]]
            changed += int((lab[nodes] != new).sum())
            lab[nodes] = new
        if changed == 0:
            break
    return lab


def cluster_labels(vectors: np.ndarray, threshold: float, k: int = 16, min_size: int = 2, seed: int = 0,
                   labels: np.ndarray | None = None, frozen: np.ndarray | None = None) -> np.ndarray:
    """Cluster ids 0..C-1 by decreasing size, or -1 for faces left unassigned (a cluster under `min_size`)."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, np.int64)
    rows, cols, sims = knn_graph(vectors, k=k, threshold=threshold)
    raw = chinese_whispers(n, rows, cols, sims, seed=seed, labels=labels, frozen=frozen)
    return relabel(raw, min_size)


def relabel(raw: np.ndarray, min_size: int = 2) -> np.ndarray:
    """Map arbitrary labels to 0..C-1 by decreasing cluster size (ties: first member), -1 below `min_size`."""
    uniq, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
    first = np.full(len(uniq), len(raw))
    np.minimum.at(first, inverse, np.arange(len(raw)))
    order = np.lexsort((first, -counts))
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    out = rank[inverse]
    small = counts[inverse] < min_size
    out[small] = -1
    # close the gaps left by dropped clusters
    kept = np.unique(out[out >= 0])
    remap = np.full(len(uniq) + 1, -1)
    remap[kept] = np.arange(len(kept))
    return np.where(out >= 0, remap[np.maximum(out, 0)], -1)
