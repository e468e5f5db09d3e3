"""Embeddings cached by image content and model, so a rerun or a second protocol never re-embeds.

One SQLite file (`$FACELENS_HOME/cache/embeddings.sqlite`): key = sha256 of the file's bytes +
the model configuration (detector, recognizer, flip, degradation), value = the float32 vector and
how it was obtained (detected face or fallback crop). SQLite gives atomic writes and safe concurrent
readers for free.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from facelens.models.registry import facelens_home


class EmbeddingCache:
    """A persistent map from (image content, model key) to an embedding and its provenance."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else facelens_home() / "cache" / "embeddings.sqlite"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (digest TEXT, model TEXT, vector BLOB, info TEXT, "
                "PRIMARY KEY (digest, model))"
            )
            conn.commit()
            self._conn = conn
        return self._conn

    def get(self, digest: str, model: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        with self._lock:
            row = self._db().execute(
                "SELECT vector, info FROM embeddings WHERE digest = ? AND model = ?", (digest, model)
            ).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[0], dtype=np.float32).copy(), json.loads(row[1])

    def put(self, digest: str, model: str, vector: np.ndarray, info: dict[str, Any]) -> None:
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        with self._lock:
            db = self._db()
            db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", (digest, model, blob, json.dumps(info)))
            db.commit()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
