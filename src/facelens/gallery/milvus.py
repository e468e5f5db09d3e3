"""Milvus as the gallery's vector store, for galleries that outgrow one machine.

SQLite stays the source of truth for people and face records (names, boxes, thumbnails, and the
embeddings themselves, so the Milvus collection can always be rebuilt); Milvus holds `(face_id,
embedding)` and answers the searches. The same class talks to an embedded `milvus-lite` file
(`milvus.db` inside the gallery) and to a Milvus server or cluster (`http://host:19530`): only the
URI differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from facelens.gallery.store import GalleryError, SQLiteStore

_BATCH = 4096


def quiet_milvus_logs() -> None:
    """Silence the Milvus client libraries' own log lines: their failures reach the user as one error.

    milvus-lite's in-process gRPC server logs a traceback for calls it does not implement (timestamp
    allocation), which pymilvus then works around, and milvus-lite logs its own traceback before pymilvus
    raises "Open local milvus failed" (a database held by another process, say)."""
    import logging

    for name in ("grpc._server", "pymilvus", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class MilvusIndex:
    def __init__(self, uri: str, collection: str = "faces") -> None:
        self.uri = uri
        self.collection = collection
        self.generation: int | None = None
        self.size = 0
        self.dirty = False
        self._client: Any = None
        self._dim = 0

    # -- connection ------------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError:
                raise GalleryError("this gallery uses Milvus: pip install 'facelens[milvus]'") from None
            quiet_milvus_logs()
            try:
                self._client = MilvusClient(self.uri)
            except Exception as exc:  # pymilvus raises its own hierarchy plus gRPC errors
                raise GalleryError(f"cannot reach Milvus at {self.uri}: {exc}") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _ensure_collection(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        client = self.client()
        if client.has_collection(self.collection):
            client.load_collection(self.collection)  # a collection starts "released" in a new session
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("face_id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        params = client.prepare_index_params()
        # AUTOINDEX lets a Milvus cluster pick its own graph/quantised index; milvus-lite runs it flat.
        params.add_index("embedding", index_type="AUTOINDEX", metric_type="IP")
        client.create_collection(self.collection, schema=schema, index_params=params)

    # -- keeping up with SQLite ------------------------------------------------------------------
    def _milvus_ids(self, last_id: int) -> Iterator[int]:
        # Id ranges rather than query_iterator (which milvus-lite only half supports); face ids are
        # never reused, so every id Milvus can hold is <= the store's last allocated id.
        step = 16384
        for start in range(0, last_id + 1, step):
            rows = self.client().query(self.collection, filter=f"face_id >= {start} and face_id < {start + step}",
                                       output_fields=["face_id"], limit=step)
            yield from (int(row["face_id"]) for row in rows)

    def sync(self, store: SQLiteStore) -> None:
        """Make the collection hold exactly the database's faces (insert missing, delete extra)."""
        generation = store.generation()
        if generation == self.generation:
            return
        self._dim = int(store.meta("dim") or 0)
        if not self._dim:
            self.generation, self.size = generation, 0
            return
        try:
            self._ensure_collection(self._dim)
            have = set(self._milvus_ids(store.last_face_id()))
            want = set(store.face_ids().tolist())
            extra = sorted(have - want)
            for i in range(0, len(extra), _BATCH):
                self.client().delete(self.collection, ids=extra[i : i + _BATCH])
            missing = sorted(want - have)
            if missing:
                first = missing[0] - 1
                wanted = set(missing)
                for ids, vectors in store.iter_embeddings(after_id=first, batch=_BATCH):
                    rows = [{"face_id": int(i), "embedding": v.tolist()}
                            for i, v in zip(ids, vectors, strict=True) if int(i) in wanted]
                    if rows:
                        self.client().insert(self.collection, rows)
            if extra or missing:
                self.dirty = True
        except GalleryError:
            raise
        except Exception as exc:
            raise GalleryError(f"Milvus at {self.uri}: {exc}") from None
        self.size = len(want)
        self.generation = generation

    # -- search ----------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.size == 0 or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        try:
            hits = self.client().search(self.collection, [np.asarray(query, np.float32).tolist()],
                                        limit=min(k, 16384), search_params={"metric_type": "IP"})[0]
        except Exception as exc:
            raise GalleryError(f"Milvus search failed at {self.uri}: {exc}") from None
        return (np.array([h["distance"] for h in hits], np.float32),
                np.array([h["face_id"] for h in hits], np.int64))

    # -- persistence -----------------------------------------------------------------------------
    def save(self, store: SQLiteStore, force: bool = False) -> None:
        if self._client is not None and self.client().has_collection(self.collection):
            self.client().flush(self.collection)
        self.dirty = False

    @property
    def embedded(self) -> bool:
        """milvus-lite (a local file) rather than a server."""
        return "://" not in self.uri

    def erase(self, store: SQLiteStore) -> None:
        """Make deleted vectors leave storage, not just the results. Milvus only tombstones deletions;
        a server drops them from its segments at compaction (and from object storage at its garbage
        collection). milvus-lite keeps them in its segment files even after compaction (measured),
        so an embedded collection is dropped and rebuilt from SQLite, the source of truth."""
        client = self.client()
        if not client.has_collection(self.collection):
            return
        if self.embedded:
            client.drop_collection(self.collection)
            self.generation = None
            self.sync(store)
            client.flush(self.collection)
            self.dirty = False
            return
        client.flush(self.collection)
        job = client.compact(self.collection)
        if job:
            import time

            deadline = time.monotonic() + 300
            while client.get_compaction_state(job) not in ("Completed", "CompactionStateCompleted") \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
        self.dirty = False

    def drop(self) -> None:
        client = self.client()
        if client.has_collection(self.collection):
            client.drop_collection(self.collection)
        self.generation, self.size = None, 0
