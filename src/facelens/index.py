"""`facelens index`: every face of a folder, a file list or object storage, embedded into Parquet, on one machine
or on a Ray cluster.

One row per face (box, five points, detector score, embedding) and one row for each image without a face or
that could not be read (`face` = -1, `error` set), keyed by the image's content hash: a second run over the
same sources, or one resumed after a crash, skips every image whose hash is already in the output folder.

The work per image is one function (`IndexWorker`), so the single-machine path (`FaceAnalyzer` threads) and
the Ray path (Ray Data: `read_binary_files` → `map_batches` with one `IndexWorker` per actor →
`write_parquet`) give the same rows. On a cluster only the address changes (`--ray auto` inside the cluster,
`--ray ray://head:10001` from outside); sources must then be readable from every node (object storage such as
s3://bucket/photos, or a shared filesystem), and models installed on every node (`facelens models pull`).

Writes are resumable: the local path writes each chunk to a temporary file and renames it into place, and a
Parquet file that cannot be read back (a run killed while Ray wrote it) is set aside as `*.broken` and its
images are done again.

Milvus (`--out DIR --out milvus://HOST:PORT/COLLECTION`, or `milvus:///PATH.db/COLLECTION` for an embedded
milvus-lite file): the faces are also upserted into a Milvus collection, for search at scale. As with the
gallery, the Parquet folder stays the record and Milvus its searchable copy: each Parquet part is upserted
whole (primary key `sha256:face`, so a repeat is harmless) and then noted in the folder's
`milvus-synced.json`, so a run killed between the two is mended by the next, and a collection can always be
rebuilt from the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import ConfigError, FacelensError, ImageError

LOCAL_CHUNK = 512  # images per Parquet file on the single-machine path: a crash loses at most this much work


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("sha256", pa.string()), ("path", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                      ("face", pa.int32()), ("bbox", pa.list_(pa.float32())), ("landmarks", pa.list_(pa.float32())),
                      ("det_score", pa.float32()), ("embedding", pa.list_(pa.float32())), ("recognizer", pa.string()),
                      ("error", pa.string())])


@dataclass(frozen=True)
class IndexOptions:
    detector: str | None = None
    recognizer: str | None = None
    int8: bool = False
    det_size: int | str = "auto"


class IndexWorker:
    """Embeds a batch of encoded images ({"path": [...], "bytes": [...]}) into rows; skips the hashes in `done`.
    Built once per worker (Ray actor or local process): the analyzer and its models load once."""

    def __init__(self, options: IndexOptions, done: Iterable[str] = ()) -> None:
        from facelens.pipeline import FaceAnalyzer

        self.analyzer = FaceAnalyzer(options.detector, options.recognizer, threads=1, int8=options.int8,
                                     det_size=options.det_size)
        self.done = frozenset(done)
        self.seen: set[str] = set()  # this run's hashes: the same content twice is embedded once
        self._lock = threading.Lock()

    @property
    def recognizer(self) -> str:
        """The name recorded with every row: the INT8 build's own when `int8` is set."""
        return self.analyzer.int8_model or self.analyzer.recognizer

    def share_seen(self, other: IndexWorker) -> None:
        """Use one record of this run's hashes with `other` (the local path's workers share one)."""
        self.seen, self._lock = other.seen, other._lock

    def rows_of(self, path: str, data: bytes) -> list[dict[str, Any]]:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self.done or digest in self.seen:
                return []
            self.seen.add(digest)
        empty: dict[str, Any] = {"sha256": digest, "path": path, "width": 0, "height": 0, "face": -1, "bbox": None,
                                 "landmarks": None, "det_score": None, "embedding": None,
                                 "recognizer": self.recognizer, "error": None}
        try:
            if not data:
                raise ImageError(f"{path}: empty file")
            faces, decoded = self.analyzer._faces(data, embed=True)
        except ImageError as exc:  # the image's own fault: recorded, so it is not tried again
            return [{**empty, "error": str(exc).replace("upload", path, 1)}]
        except Exception as exc:  # one odd image must not end an index of millions
            return [{**empty, "error": f"{path}: internal error ({type(exc).__name__}: {exc})"}]
        base = {**empty, "width": decoded.width, "height": decoded.height}
        if not faces:
            return [base]
        return [{**base, "face": i, "bbox": [float(v) for v in f.bbox[:4]],
                 "landmarks": [float(v) for v in np.asarray(f.landmarks).reshape(-1)] if f.landmarks is not None
                 else None, "det_score": float(f.det_score),
                 "embedding": np.asarray(f.embedding, np.float32).tolist()} for i, f in enumerate(faces)]

    def __call__(self, batch: Any) -> Any:
        """Ray Data's batch (pandas) in, a pyarrow Table of rows out."""
        import pyarrow as pa

        rows = [row for path, data in zip(batch["path"], batch["bytes"], strict=True)
                for row in self.rows_of(str(path), bytes(data))]
        return pa.Table.from_pylist(rows, schema=_schema())


def done_hashes(out: Path, recognizer: str | None = None, set_aside: list[str] | None = None) -> set[str]:
    """Content hashes already in the output folder. A Parquet file that cannot be read (a killed run's) is set
    aside as *.broken (named in `set_aside`) and its images are done again; a readable file that is not a
    facelens index, or rows of another recognizer than `recognizer`, are refused: one folder, one embedding
    space."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    if not out.is_dir():
        return done
    for path in sorted(out.glob("*.parquet")):
        try:
            names = pq.read_schema(path).names
        except Exception:  # a truncated file from a killed run: its images are done again
            path.rename(path.with_suffix(".parquet.broken"))
            if set_aside is not None:
                set_aside.append(str(path))
            continue
        if "sha256" not in names or "recognizer" not in names:
            raise ConfigError(f"{path} is not a facelens index file; give --out a folder of its own")
        table = pq.read_table(path, columns=["sha256", "recognizer"])
        found = set(table.column("recognizer").to_pylist())
        if recognizer is not None and found - {recognizer}:
            raise ConfigError(f"{out} holds embeddings of {', '.join(sorted(found - {recognizer}))}, not "
                              f"{recognizer}; give this run another --out folder")
        done.update(table.column("sha256").to_pylist())
    return done


def check_out(out: str | os.PathLike[str]) -> Path:
    if not str(out).strip():
        raise ConfigError("--out needs a folder name")
    if is_milvus(str(out)):
        raise ConfigError(f"--out {out}: a Milvus output needs an output folder as well (--out DIR --out "
                          f"{out}): the Parquet files are the index's record, Milvus its searchable copy")
    if "://" in str(out):
        raise ConfigError(f"--out {out}: give a folder (on a cluster, one on a shared filesystem) or a "
                          "milvus:// address; other URIs are not supported as index outputs")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


MILVUS_SCHEME = "milvus://"
MILVUS_DEFAULT_COLLECTION = "facelens_index"
MILVUS_STATE = "milvus-synced.json"  # in the output folder: the Parquet parts already upserted, per target
_MILVUS_BATCH = 2000


def is_milvus(out: str) -> bool:
    """Whether an --out value is a Milvus target (the scheme in any case)."""
    return str(out)[: len(MILVUS_SCHEME)].lower() == MILVUS_SCHEME


def parse_milvus(uri: str) -> tuple[str, str]:
    """(MilvusClient address, collection) of `milvus://HOST:PORT[/COLLECTION]` (a server; IPv6 hosts in
    brackets; the token, if any, in $MILVUS_TOKEN) or `milvus:///ABSOLUTE/PATH.db[/COLLECTION]` (an embedded
    milvus-lite file)."""
    import re

    rest = uri[len(MILVUS_SCHEME):] if is_milvus(uri) else ""
    if rest.startswith("/"):  # milvus-lite: a local file ending in .db, maybe followed by a collection
        parts = rest.rstrip("/").split("/")
        at = max((i for i, p in enumerate(parts) if p.lower().endswith(".db") and len(p) > 3), default=-1)
        if at < 0 or at < len(parts) - 2:
            raise ConfigError(f"--out {uri}: a milvus-lite file is milvus:///ABSOLUTE/PATH.db or "
                              "milvus:///ABSOLUTE/PATH.db/COLLECTION")
        address, collection = "/".join(parts[: at + 1]), "/".join(parts[at + 1 :])
    else:
        host, _, collection = rest.rstrip("/").partition("/")
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::(\d{1,5}))?", host)
        if host.lower().endswith(".db") or (".db" in rest.lower() and not match):
            raise ConfigError(f"--out {uri}: a milvus-lite file takes an absolute path: milvus:///ABSOLUTE/PATH.db")
        if not match or "/" in collection or not 0 < int(match.group(2) or 19530) < 65536:
            raise ConfigError(f"--out {uri}: a Milvus server is milvus://HOST:PORT or milvus://HOST:PORT/COLLECTION")
        address = f"http://{match.group(1)}:{match.group(2) or 19530}"
    collection = collection or MILVUS_DEFAULT_COLLECTION
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", collection):
        raise ConfigError(f"--out {uri}: a collection name is letters, digits and underscores, not {collection!r}")
    return address, collection


def _tail_bytes(text: str, limit: int) -> str:
    """The end of `text` within `limit` UTF-8 bytes (Milvus' VARCHAR length counts bytes)."""
    return text.encode()[-limit:].decode(errors="ignore")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class MilvusSink:
    """The faces of an index folder, kept in a Milvus collection: one entity per face (no-face and unreadable
    images stay in Parquet only), upserted a Parquet part at a time.

    The folder's `milvus-synced.json` notes, per target, the collection's id and the parts it holds, each with
    one of its faces' keys: once a run those keys are looked up, and a part whose face is gone (the collection
    dropped, emptied, or recreated, by this folder's runs or anyone's) is upserted again."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.address, self.collection = parse_milvus(uri)
        self._client: Any = None
        self.upserted = 0
        self.error: str | None = None  # the first failure of a run; later parts wait for the next run
        self._checked = False  # the notes checked against the collection (once a run)

    @property
    def is_lite(self) -> bool:
        return not self.address.startswith("http")

    def open(self, recognizer: str, dim: int, folder: Path | None = None) -> None:
        """Connect, and refuse a collection of another recognizer or size (and a milvus-lite database inside
        the index `folder`, or holding it): before anything is embedded."""
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ConfigError("a Milvus output needs pymilvus: pip install 'facelens[milvus]'") from None
        from facelens.gallery.milvus import quiet_milvus_logs

        quiet_milvus_logs()
        self.recognizer, self.dim = recognizer, dim
        if self.is_lite:
            db = Path(self.address).resolve()
            if folder is not None and (db == folder or folder in db.parents or db in folder.parents):
                raise ConfigError(f"--out {self.uri}: keep the milvus-lite database and the output folder {folder} "
                                  "apart (the folder is the record the database is rebuilt from)")
            _check_lite_path(db, self.uri)
        try:
            if self.is_lite:
                Path(self.address).parent.mkdir(parents=True, exist_ok=True)
            token = os.environ.get("MILVUS_TOKEN", "")
            self._client = MilvusClient(self.address, token=token) if token else MilvusClient(self.address)
            if self._client.has_collection(self.collection):
                info = self._client.describe_collection(self.collection)
                fields = {f["name"]: f for f in info["fields"]}
                if not {"pk", "sha256", "recognizer", "embedding"} <= set(fields):
                    raise ConfigError(f"{self.uri}: collection {self.collection} exists and is not a facelens index; "
                                      "name another (milvus://…/COLLECTION)")
                found_dim = int(fields["embedding"].get("params", {}).get("dim", dim))
                self._client.load_collection(self.collection)
                found = self._client.query(self.collection, filter="face >= 0", output_fields=["recognizer"], limit=1)
                other = found[0]["recognizer"] if found else None
                if (other and other != recognizer) or found_dim != dim:
                    raise ConfigError(f"{self.uri} holds embeddings of {other or f'{found_dim} dimensions'}, not "
                                      f"{recognizer}; name another collection")
        except ConfigError:
            self.close()
            raise
        except Exception as exc:  # pymilvus' own errors, gRPC's, a folder that cannot be made
            self.close()
            raise ConfigError(f"cannot use Milvus at {self.uri}: {_first_line(exc)}") from None

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=80)  # "sha256:face"
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("face", DataType.INT32)
        schema.add_field("path", DataType.VARCHAR, max_length=4096)
        schema.add_field("bbox", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=4)
        schema.add_field("landmarks", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=10)
        schema.add_field("det_score", DataType.FLOAT)
        schema.add_field("recognizer", DataType.VARCHAR, max_length=64)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self._client.prepare_index_params()
        params.add_index("embedding", index_type="AUTOINDEX", metric_type="IP")  # L2-normalised: IP is cosine
        self._client.create_collection(self.collection, schema=schema, index_params=params)

    def _still_held(self, parts: dict[str, str]) -> dict[str, str]:
        """The noted parts whose sample face the collection still holds (parts without faces always)."""
        samples = sorted({pk for pk in parts.values() if pk})
        held: set[str] = set()
        for start in range(0, len(samples), 500):
            chunk = samples[start:start + 500]
            rows = self._client.query(self.collection, filter=f"pk in {json.dumps(chunk)}", output_fields=["pk"],
                                      limit=len(chunk))
            held.update(row["pk"] for row in rows)
        return {name: pk for name, pk in parts.items() if not pk or pk in held}

    def _collection_id(self) -> str:
        info = self._client.describe_collection(self.collection)
        return str(info.get("collection_id") or info.get("created_timestamp") or "")

    def _entities(self, part: Path) -> Iterator[list[dict[str, Any]]]:
        """The part's faces as Milvus entities, a batch at a time (a part of crowd photos is large)."""
        import pyarrow.parquet as pq

        columns = ["sha256", "path", "face", "bbox", "landmarks", "det_score", "recognizer", "embedding"]
        for batch in pq.ParquetFile(part).iter_batches(batch_size=_MILVUS_BATCH, columns=columns):
            out = []
            for r in batch.to_pylist():
                vector = r["embedding"]
                if r["face"] < 0 or vector is None or not np.isfinite(vector).all():
                    continue  # Milvus refuses NaN vectors; such a face stays in Parquet only
                score = r["det_score"]
                out.append({"pk": f"{r['sha256']}:{r['face']}", "sha256": r["sha256"], "face": r["face"],
                            "path": _tail_bytes(r["path"], 4096), "bbox": r["bbox"] or [],
                            "landmarks": r["landmarks"] or [],
                            "det_score": float(score) if score is not None and np.isfinite(score) else 0.0,
                            "recognizer": r["recognizer"], "embedding": vector})
            yield out

    def sync(self, folder: Path) -> int:
        """Upsert every Parquet part of `folder` this collection lacks; returns the faces upserted. A failure
        is kept in `error` (the run goes on writing Parquet; the next run retries), not raised."""
        if self.error:
            return 0
        key = f"{self.address}/{self.collection}"
        state = _read_json(folder / MILVUS_STATE)
        count = 0
        try:
            exists = self._client.has_collection(self.collection)
            collection_id = self._collection_id() if exists else ""
            mine = state.get(key) if isinstance(state.get(key), dict) else {}
            parts = mine.get("parts")
            if not (exists and isinstance(parts, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                               for k, v in parts.items())
                    and mine.get("id") == collection_id):
                parts = {}
            if not self._checked:  # milvus-lite gives no collection id: look the parts' faces up
                parts = self._still_held(parts)
                self._checked = True
            synced: dict[str, str] = dict(parts)
            for part in sorted(folder.glob("*.parquet")):
                if part.name in synced:
                    continue
                sample = ""
                try:
                    for entities in self._entities(part):
                        if not entities:
                            continue
                        if not exists:
                            self._create()
                            exists, collection_id = True, self._collection_id()
                        self._client.upsert(self.collection, entities)
                        count += len(entities)
                        sample = entities[-1]["pk"]
                except OSError:
                    continue  # unreadable (a part a killed writer left): set aside by the next run, not noted
                except Exception as exc:
                    if type(exc).__module__.startswith("pyarrow"):
                        continue  # the same, as pyarrow reports it
                    raise
                synced[part.name] = sample
                state[key] = {"id": collection_id, "parts": dict(sorted(synced.items()))}
                tmp = folder / f"{MILVUS_STATE}.{uuid.uuid4().hex[:8]}.tmp"
                try:
                    tmp.write_text(json.dumps(state, indent=1))
                    os.replace(tmp, folder / MILVUS_STATE)
                finally:
                    tmp.unlink(missing_ok=True)
        except Exception as exc:
            self.error = (f"Milvus at {self.uri}: {_first_line(exc)}; the Parquet files are complete, and the "
                          "next run upserts what is missing")
        self.upserted += count
        return count

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def _check_lite_path(db: Path, uri: str) -> None:
    """One clear line for what milvus-lite would report as a logged traceback and "Open local milvus failed"."""
    import fcntl

    if db.exists() and not db.is_dir():
        raise ConfigError(f"--out {uri}: {db} exists and is not a milvus-lite database")
    parent = next((p for p in (db, *db.parents) if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {uri}: cannot write in {parent}")
    lock = db / "LOCK"
    try:  # this process' own milvus-lite server for the file (kept until exit) holds the lock: not another's
        from milvus_lite.server_manager import server_manager_instance

        served_here = os.path.abspath(db) in getattr(server_manager_instance, "_servers", {})
    except ImportError:
        served_here = False
    if lock.is_file() and not served_here:
        try:
            with open(lock, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # milvus-lite's own lock; released at once
                fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            raise ConfigError(f"--out {uri}: {db} is in use by another process (milvus-lite opens a database from "
                              "one process at a time)") from None
        except OSError:
            pass  # cannot tell: milvus-lite will say


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every part is upserted again (harmless, by primary key)


LOCK_FILE = ".facelens-index.lock"


def _open_outputs(out: str | os.PathLike[str], probe: IndexWorker,
                  milvus: str | None) -> tuple[Path, MilvusSink | None, Any]:
    """(folder, Milvus sink or None, the folder's lock): Milvus first, so a wrong address creates nothing; the
    folder is locked for the run, so two runs never embed the same images into it twice."""
    import fcntl

    sink = MilvusSink(milvus) if milvus else None
    if sink:
        sink.open(probe.recognizer, probe.analyzer.recognizer_model.dim,
                  Path(out).resolve() if str(out).strip() else None)
    try:
        folder = check_out(out)
        lock = open(folder / LOCK_FILE, "a")  # noqa: SIM115 - held for the whole run, closed by the caller
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ConfigError(f"{folder}: another facelens index run is writing to this folder; let it finish "
                              "(a second run then skips what it did)") from None
    except BaseException:
        if sink:
            sink.close()
        raise
    return folder, sink, lock


def _write(out: Path, rows: list[dict[str, Any]]) -> None:
    """One Parquet file, written to a temporary name and renamed: a crash never leaves half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return
    table = pa.Table.from_pylist(rows, schema=_schema())
    final = out / f"part-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = final.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, final)


@dataclass
class IndexSummary:
    images: int  # sources listed
    skipped: int  # already in the output (same content hash)
    done: int  # images processed in this run
    faces: int
    errors: list[str]
    seconds: float
    out: str
    set_aside: list[str] = field(default_factory=list)  # unreadable Parquet files renamed *.broken
    milvus: str | None = None  # the Milvus target, if any
    milvus_upserted: int = 0  # faces upserted into it by this run (parts of earlier runs it lacked included)
    milvus_error: str | None = None  # why some parts are not in Milvus yet (the next run retries them)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "skipped": self.skipped, "done": self.done, "faces": self.faces,
                "errors": len(self.errors), "seconds": round(self.seconds, 2),
                "images_per_s": round(self.done / self.seconds, 2) if self.seconds else None, "out": self.out,
                "set_aside": self.set_aside, "milvus": self.milvus, "milvus_upserted": self.milvus_upserted,
                "milvus_error": self.milvus_error}


def _summarise(rows: Iterable[dict[str, Any]], images: int, skipped: int, seconds: float, out: Path) -> IndexSummary:
    done: set[str] = set()
    faces, errors = 0, []
    for row in rows:
        done.add(row["sha256"])
        faces += row["face"] >= 0
        if row["error"]:
            errors.append(row["error"])
    return IndexSummary(images, skipped, len(done), faces, errors, seconds, str(out))


def index_local(paths: list[Path], out: str | os.PathLike[str], options: IndexOptions, threads: int = 0,
                on_image: Callable[[], None] | None = None, milvus: str | None = None) -> IndexSummary:
    """The single-machine path: `threads` workers (0: every CPU), each with its own analyzer; `milvus`: a
    milvus:// target that receives every face too (see the module docstring)."""
    from facelens.pipeline import default_threads

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"threads must be a whole number >= 0 (0: every CPU), got {threads!r}")
    paths = list(dict.fromkeys(Path(p).resolve() for p in paths))  # a file named twice is one image
    n_threads = threads or default_threads()
    probe = IndexWorker(options)
    probe.analyzer.check_models()  # before anything is written: a setup error is not an image's error
    folder, sink, lock = _open_outputs(out, probe, milvus)
    start = time.perf_counter()
    set_aside: list[str] = []
    try:
        done = done_hashes(folder, probe.recognizer, set_aside)
        summary = _index_chunks(paths, folder, options, n_threads, done, on_image, sink)
    finally:
        lock.close()
        if sink:
            sink.close()
    summary.seconds = time.perf_counter() - start
    summary.set_aside = set_aside
    return summary


def _index_chunks(paths: list[Path], folder: Path, options: IndexOptions, n_threads: int, done: set[str],
                  on_image: Callable[[], None] | None, sink: MilvusSink | None) -> IndexSummary:
    from concurrent.futures import ThreadPoolExecutor

    workers = [IndexWorker(options, done) for _ in range(n_threads)]  # sessions are shared: cheap to build
    for worker in workers[1:]:
        worker.share_seen(workers[0])
    totals = {"faces": 0, "done": 0, "skipped": 0}
    errors: list[str] = []

    def one(k: int, path: Path) -> list[dict[str, Any]]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return [{"sha256": "", "path": str(path), "error": f"{path}: cannot be read ({exc.strerror})"}]
        rows = workers[k % n_threads].rows_of(str(path), data)
        if on_image:
            on_image()
        return rows

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for begin in range(0, len(paths), LOCAL_CHUNK):
            chunk = paths[begin:begin + LOCAL_CHUNK]
            # each thread keeps to its own worker: an analyzer is used by one thread at a time
            futures = [pool.submit(lambda ks, c=chunk: [one(k, c[k]) for k in ks], range(t, len(chunk), n_threads))
                       for t in range(n_threads)]
            per_image: dict[int, list[dict[str, Any]]] = {}
            for t, future in enumerate(futures):
                for k, rows in zip(range(t, len(chunk), n_threads), future.result(), strict=True):
                    per_image[k] = rows
            rows = []
            for k in range(len(chunk)):
                image_rows = per_image[k]
                if not image_rows:
                    totals["skipped"] += 1
                    continue
                errors += [r["error"] for r in image_rows[:1] if r["error"]]
                if not image_rows[0]["sha256"]:
                    continue  # unreadable file: not recorded, so a later run tries it again
                totals["done"] += 1
                totals["faces"] += sum(r["face"] >= 0 for r in image_rows)
                rows += image_rows
            _write(folder, rows)  # per chunk: a crash loses at most this chunk's work
            if sink:
                sink.sync(folder)  # also the parts an earlier, killed run left behind
    if sink:
        sink.sync(folder)  # nothing new written (all skipped): still mend what an earlier run left
    return IndexSummary(len(paths), totals["skipped"], totals["done"], totals["faces"], errors, 0.0, str(folder),
                        milvus=sink.uri if sink else None, milvus_upserted=sink.upserted if sink else 0,
                        milvus_error=sink.error if sink else None)


def index_ray(sources: list[str], out: str | os.PathLike[str], options: IndexOptions, address: str = "local",
              workers: int = 0, batch_size: int = 16, milvus: str | None = None) -> IndexSummary:
    """The Ray path: `address` "local" starts a Ray instance on this machine (`workers` CPUs, 0: all); anything
    else ("auto", "ray://head:10001") connects to a running cluster. `milvus`: as for `index_local`; the
    driver upserts the Parquet parts once the workers have written them."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("the Ray path needs Ray: pip install 'facelens[cluster]'") from None
    probe = IndexWorker(options)
    probe.analyzer.check_models()  # a setup error is one error here, not a row per image
    # before the cluster starts: a wrong address is one error, nothing written
    folder, sink, lock = _open_outputs(out, probe, milvus)
    try:
        return _index_on_ray(ray, sources, folder, options, address, workers, batch_size, probe, sink)
    finally:
        lock.close()


def _index_on_ray(ray: Any, sources: list[str], folder: Path, options: IndexOptions, address: str, workers: int,
                  batch_size: int, probe: IndexWorker, sink: MilvusSink | None) -> IndexSummary:
    start = time.perf_counter()
    set_aside: list[str] = []
    try:
        done = done_hashes(folder, probe.recognizer, set_aside)
    except BaseException:
        if sink:
            sink.close()
        raise
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address == "local":
            kwargs["num_cpus"] = workers or os.cpu_count() or 1
            # Ray prestarts idle Python workers at start; on a small machine their imports took the CPUs from the
            # embedding for the first minute (29 photos: 254 s with prestarting, 70 s without, on 2 cores)
            os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
        else:
            kwargs["address"] = address
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        for attempt in range(2):
            try:
                ray.init(**kwargs)
                break
            except Exception as exc:
                # a second local start soon after a shutdown in the same process sometimes times out waiting for
                # the new head's port file (seen once in the suite on 2 busy cores): one clean retry
                with contextlib.suppress(Exception):
                    ray.shutdown()
                if attempt == 0 and address == "local":
                    time.sleep(2.0)
                    continue
                if sink:
                    sink.close()
                raise ConfigError(f"--ray {address}: cannot start or reach Ray ({_first_line(exc)})") from None
        started_here = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # reading and writing are I/O: they take no CPU of Ray's accounting, or the workers (one CPU each)
        # would hold every CPU and the reads feeding them could never be scheduled
        # few reader and writer processes: each starts a Python interpreter with Ray Data in it, which on a small
        # machine costs more than the reading (unbounded, 29 photos took 250 s on 2 cores instead of 20)
        io_tasks = max(1, n_workers // 4)
        from facelens.io import IMAGE_SUFFIXES

        try:
            dataset = ray.data.read_binary_files(sources, include_paths=True, num_cpus=0, concurrency=io_tasks,
                                                 file_extensions=sorted(x.lstrip(".") for x in IMAGE_SUFFIXES))
            n_images = len(dataset.input_files())
        except Exception as exc:
            raise FacelensError(f"cannot list the sources: {str(exc).strip().splitlines()[-1][:300]}") from None
        before = set(folder.glob("*.parquet"))
        # streamed: rows go to Parquet as workers finish batches, never all held in memory
        embedded = dataset.map_batches(IndexWorker, fn_constructor_args=(options, done), batch_size=batch_size,
                                       compute=ray.data.ActorPoolStrategy(size=n_workers), num_cpus=1,
                                       batch_format="pandas")
        try:
            embedded.write_parquet(str(folder), ray_remote_args={"num_cpus": 0}, concurrency=io_tasks)
        except Exception as exc:  # a source Ray cannot read (permissions, a vanished file, storage errors)
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise FacelensError(f"the Ray job failed: {reason[:300]} (rows already written are kept; run again "
                                "to resume)") from None
    finally:
        if started_here:
            ray.shutdown()
        if sink:
            try:
                sink.sync(folder)  # what the workers wrote, even when the job failed part-way (never raises)
            finally:
                sink.close()
    import pyarrow.parquet as pq

    all_rows = [row for path in sorted(set(folder.glob("*.parquet")) - before)
                for row in pq.read_table(path, columns=["sha256", "face", "error"]).to_pylist()]
    done_now = {r["sha256"] for r in all_rows}
    summary = _summarise(all_rows, n_images, n_images - len(done_now), time.perf_counter() - start, folder)
    summary.set_aside = set_aside
    if sink:
        summary.milvus, summary.milvus_upserted, summary.milvus_error = sink.uri, sink.upserted, sink.error
    return summary


def read_index(out: str | os.PathLike[str]) -> Any:
    """The whole index as one pyarrow Table (every Parquet file of the folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(Path(out).glob("*.parquet"))
    if not files:
        return _schema().empty_table()
    return pa.concat_tables([pq.read_table(f).cast(_schema()) for f in files])
