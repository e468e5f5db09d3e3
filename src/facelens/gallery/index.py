"""Nearest-neighbour search over a gallery's faces, derived from SQLite and persisted beside it.

Why this design (measured in benchmarks/bench_ann_choice.py and bench_gallery.py, RESULTS.md): graph
indexes (HNSW in usearch, hnswlib, FAISS) could not reach recall@1 0.99 at p99 <= 5 ms on
identity-clustered 512-d data at 200k vectors (needed ef grew with N), whereas a flat scan of
4-bit product-quantised codes (FAISS `IndexPQFastScan`, 16 bytes a face) followed by an exact
float re-rank of the best candidates keeps recall@1 at 1.000 with p99 ~3 ms at 2M vectors on one
core, supports deletion trivially and has no search knob that degrades with N.

Small galleries (< `PQ_MIN_FACES`) are searched exactly. The SQLite database stays the source of
truth: the index records the database generation it reflects, catches up with rows added since
(searched exactly until the next save), masks deleted rows, and is rebuilt when its files are
missing, stale beyond repair or corrupt (checksums).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from facelens.gallery.store import SQLiteStore

INDEX_DIR = "index"
INDEX_FORMAT = 1
PQ_MIN_FACES = 20_000  # below this an exact scan is < 3 ms: no approximation needed
PQ_SUBQUANTIZERS = 32  # 512-d / 32 = 16-d sub-vectors, 4 bits each: 16 bytes a face
RERANK = 128  # PQ candidates re-scored exactly; recall@1 was 0.996-1.000 already at 16 (RESULTS.md)
SEARCH_THREADS = min(2, os.cpu_count() or 1)  # the code scan is the whole cost: both cores of a small machine
_TRAIN_SAMPLE = 100_000


class IndexCorrupt(Exception):
    """The persisted index cannot be trusted; it is rebuilt from SQLite."""


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


class LocalIndex:
    """Exact search below `PQ_MIN_FACES`, PQ fast-scan + exact re-rank above; persisted in `<gallery>/index/`."""

    def __init__(self, gallery_dir: Path, pq_min_faces: int = PQ_MIN_FACES) -> None:
        self.dir = Path(gallery_dir) / INDEX_DIR
        self.pq_min_faces = pq_min_faces
        self.generation: int | None = None
        self.database_id = ""  # of the database file the vectors came from (see SQLiteStore.database_id)
        self.rebuilds = 0  # how many times the index was rebuilt from SQLite in this process (tests read it)
        self._reset(0)

    def _reset(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((0, dim), np.float32)
        self._n = 0  # rows used in _vectors (capacity may be larger)
        self._ids = np.zeros(0, np.int64)
        self._alive = np.zeros(0, bool)
        self._live = 0  # == self._alive[:self._n].sum(), kept up to date (summing 2M flags costs ~1 ms)
        self._pq: Any = None
        self._pq_rows = 0  # rows [0, _pq_rows) are in the PQ index; later rows are scanned exactly
        self.max_id = 0
        self.dirty = False
        self._saved_rows = 0  # rows [0, _saved_rows) are exactly what the files on disk hold

    # -- state -----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Live faces in the index."""
        return self._live

    def _append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        need = self._n + len(ids)
        if need > len(self._vectors) or not self._vectors.flags.writeable:
            grown = np.empty((max(need, int(self._n * 1.25) + 1024), self.dim), np.float32)
            grown[: self._n] = self._vectors[: self._n]
            self._vectors = grown
        self._vectors[self._n : need] = vectors
        self._ids = np.concatenate([self._ids[: self._n], ids.astype(np.int64)])
        self._alive = np.concatenate([self._alive[: self._n], np.ones(len(ids), bool)])
        self._live += len(ids)
        self._n = need
        self.max_id = max(self.max_id, int(ids.max()))
        self.dirty = True

    def _build_pq(self) -> None:
        """(Re)train and fill the PQ index over every row when the gallery is big enough."""
        self._pq, self._pq_rows = None, 0
        n = self._n
        if n < self.pq_min_faces or self.dim % PQ_SUBQUANTIZERS:
            return
        import faiss

        faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
        pq = faiss.IndexPQFastScan(self.dim, PQ_SUBQUANTIZERS, 4, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = self._vectors[np.sort(rng.choice(n, min(n, _TRAIN_SAMPLE), replace=False))]
        pq.train(np.ascontiguousarray(sample))
        pq.add(np.ascontiguousarray(self._vectors[:n]))
        self._pq, self._pq_rows = pq, n

    def _extend_pq(self) -> None:
        """Encode rows added since the PQ was built (cheap: no retraining) once they are many."""
        if self._pq is None:
            if self._n >= self.pq_min_faces:
                self._build_pq()
            return
        if self._n - self._pq_rows >= 4096:
            self._pq.add(np.ascontiguousarray(self._vectors[self._pq_rows : self._n]))
            self._pq_rows = self._n

    # -- keeping up with SQLite ------------------------------------------------------------------
    def sync(self, store: SQLiteStore) -> None:
        """Bring the index up to the database's current generation (load, catch up or rebuild)."""
        generation = store.generation()
        if self.generation is not None and self.database_id != store.database_id():
            self._rebuild(store)  # the database file was replaced under a running process
            return
        if self.generation == generation:
            return
        if self.generation is None:
            try:
                self._load(store)
            except IndexCorrupt:
                self._rebuild(store)
                return
            if self.generation == generation:
                return
        self._catch_up(store)
        self.generation = generation

    def _rebuild(self, store: SQLiteStore) -> None:
        self.rebuilds += 1
        generation = store.generation()
        self.database_id = store.database_id()
        self._reset(int(store.meta("dim") or 0))
        for ids, vectors in store.iter_embeddings():
            self._append(ids, vectors)
        self._build_pq()
        self.generation = generation
        self.dirty = True

    def _catch_up(self, store: SQLiteStore) -> None:
        dim = int(store.meta("dim") or 0)
        if self.dim != dim:
            self._rebuild(store)
            return
        added = 0
        for ids, vectors in store.iter_embeddings(after_id=self.max_id):
            self._append(ids, vectors)
            added += len(ids)
        if store.face_count() != self.size:  # something was deleted: mask it
            live = store.face_ids()
            self._alive[: self._n] &= np.isin(self._ids[: self._n], live, assume_unique=True)
            self._live = int(self._alive[: self._n].sum())
            self.dirty = True
        if self._n > 2 * max(self.size, 1) and self._n > 1024:  # mostly dead rows: start afresh
            self._rebuild(store)
            return
        self._extend_pq()

    # -- search ----------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, face ids) of the `k` most similar live faces, best first (exact scores)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        n = self._n
        if n == 0 or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self._pq is not None:
            import faiss

            faiss.omp_set_num_threads(SEARCH_THREADS)
            _, cand = self._pq.search(q[None, :], min(self._pq_rows, RERANK + k))
            cand = cand[0][cand[0] >= 0]
            cand = np.concatenate([cand, np.arange(self._pq_rows, n)])  # not yet encoded: exact
            cand = cand[self._alive[cand]]
            if len(cand) < min(k, self._live):
                cand = np.flatnonzero(self._alive[:n])
        else:
            cand = np.flatnonzero(self._alive[:n]) if self._live < n else None
        if cand is None:
            sims = self._vectors[:n] @ q
            rows = np.arange(n)
        else:
            sims = self._vectors[cand] @ q
            rows = cand
        k = min(k, len(rows))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.lexsort((rows[top], -sims[top]))]
        return sims[top], self._ids[rows[top]]

    # -- persistence -----------------------------------------------------------------------------
    def _load(self, store: SQLiteStore, verify: bool = True) -> None:
        state_path = self.dir / "state.json"
        if not state_path.exists():
            raise IndexCorrupt("missing")
        try:
            state = json.loads(state_path.read_text())
            if state.get("format") != INDEX_FORMAT or state.get("recognizer") != store.meta("recognizer"):
                raise IndexCorrupt("other format or recognizer")
            if state.get("database_id", "") != store.database_id():
                raise IndexCorrupt("built from another database file")
            for name, crc in state["checksums"].items() if verify else ():
                if _crc(self.dir / name) != crc:
                    raise IndexCorrupt(f"{name}: checksum mismatch")
            vectors = np.load(self.dir / "vectors.npy", mmap_mode="r")
            ids = np.load(self.dir / "ids.npy")
            if vectors.shape != (len(ids), state["dim"]) or len(ids) != state["count"]:
                raise IndexCorrupt("shape mismatch")
            pq = None
            if (self.dir / "pq.faiss").exists():
                import faiss

                pq = faiss.read_index(str(self.dir / "pq.faiss"))
                if pq.ntotal != len(ids):
                    raise IndexCorrupt("PQ size mismatch")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise IndexCorrupt(str(exc)) from None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            # re-ranking reads a few scattered rows: no read-ahead (keeps cold queries fast, RSS honest)
            vectors._mmap.madvise(mmap.MADV_RANDOM)
        self._reset(int(state["dim"]))
        self._vectors, self._n = vectors, len(ids)
        self._ids, self._alive = ids, np.ones(len(ids), bool)
        self._live = len(ids)
        self.max_id = int(state["max_id"])
        self._pq, self._pq_rows = pq, (len(ids) if pq is not None else 0)
        self.generation = int(state["generation"])
        self.database_id = str(state.get("database_id", ""))
        self._saved_rows = len(ids)

    def save(self, store: SQLiteStore, force: bool = False) -> None:
        """Write the live rows atomically (new directory, then rename); dead rows' bytes leave the disk.

        Unless `force`, a save that would only append under 10% new rows to the files is skipped: the
        next process reads those rows from SQLite (an id range scan) instead of rewriting gigabytes."""
        if self.generation is None:
            return
        appended = self._n - self._saved_rows
        if not force and self._saved_rows and self._live == self._n and appended < 0.1 * self._saved_rows:
            self.dirty = False
            return
        if self._live < self._n:
            self._rebuild(store)
        lock_path = self.dir.parent / "index.lock"
        with os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if store.generation() != self.generation:  # someone wrote meanwhile: theirs or the next save wins
                self._catch_up(store)
                self.generation = store.generation()
                if self._live < self._n:
                    self._rebuild(store)
            staging = self.dir.with_name(INDEX_DIR + ".new")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)  # the vectors are biometric data: private whatever the umask
            os.chmod(staging, 0o700)
            np.save(staging / "vectors.npy", np.ascontiguousarray(self._vectors[: self._n]))
            np.save(staging / "ids.npy", self._ids[: self._n])
            if self._pq is not None:
                if self._pq_rows < self._n:
                    self._pq.add(np.ascontiguousarray(self._vectors[self._pq_rows : self._n]))
                    self._pq_rows = self._n
                import faiss

                faiss.write_index(self._pq, str(staging / "pq.faiss"))
            files = [p.name for p in staging.iterdir()]
            state = {"format": INDEX_FORMAT, "recognizer": store.meta("recognizer"), "dim": self.dim,
                     "count": self._n, "max_id": self.max_id, "generation": self.generation,
                     "database_id": self.database_id,
                     "kind": "pq-fastscan+rerank" if self._pq is not None else "exact",
                     "checksums": {name: _crc(staging / name) for name in files}}
            (staging / "state.json").write_text(json.dumps(state, indent=1))
            for path in staging.iterdir():
                os.chmod(path, 0o600)
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            old = self.dir.with_name(INDEX_DIR + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if self.dir.exists():
                self.dir.rename(old)
            staging.rename(self.dir)
            shutil.rmtree(old, ignore_errors=True)
        self.dirty = False
        # Reading the saved copy back keeps memory to one (memory-mapped) copy of the vectors; the
        # checksums were computed from these very files a moment ago, so they are not read a second time.
        with contextlib.suppress(IndexCorrupt):
            self._load(store, verify=False)

    def drop(self) -> None:
        """Delete the persisted files (they are rebuilt on the next search)."""
        for suffix in ("", ".new", ".old"):
            shutil.rmtree(self.dir.with_name(INDEX_DIR + suffix), ignore_errors=True)
        self.generation = None
        self._reset(self.dim)

    def erase(self, store: SQLiteStore) -> None:
        """After deletions: rewrite the persisted index without the deleted rows."""
        self.save(store, force=True)
