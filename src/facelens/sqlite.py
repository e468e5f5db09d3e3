"""One way to open and write the project's SQLite files (gallery, clustered collection, API keys).

WAL mode (readers never block the writer), foreign keys, `secure_delete` (deleted rows are zeroed, not
left in free pages), 16 KiB pages for new files, a schema version in a `meta` table, and writes as
`BEGIN IMMEDIATE ... COMMIT` so several processes get one writer at a time and all-or-nothing writes.
Every failure becomes one error of the subclass's kind, naming the file. Each thread gets its own
connection (a server answers requests on many threads; a shared connection would share one
transaction between them), so threads coordinate exactly as processes do: through SQLite's locks.

Files hold biometric data or secrets, so new directories are 0700 and new databases 0600 whatever
the umask (SQLite gives the -wal/-shm files the database file's mode). A new database is built
under a temporary name and linked into place complete, so an empty or half-initialised file under
the real name is never a legitimate state: it is reported as damage, never silently re-created.

Damage detection: `PRAGMA quick_check` reads every page (seconds per GB), too slow for every open
of a multi-GB gallery. On open we check what is cheap and catches the common accidents (empty file,
bad SQLite header, missing tables) and quick_check only files up to QUICK_CHECK_MAX_BYTES; damage
deeper in a big file surfaces when a read touches it. Every `sqlite3.DatabaseError` on any read or
write is translated into the subclass's error (corruption, disk full, read-only, busy), and the first
corruption seen marks the database damaged (a `<db>.damaged` file beside it, so every process sees
it): from then on it is refused, reads included, until it is checked or repaired.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facelens.errors import FacelensError

SQLITE_MAGIC = b"SQLite format 3\x00"
QUICK_CHECK_MAX_BYTES = 32 << 20  # quick_check of 32 MiB (~6000 faces): ~15 ms warm; bigger files: read-time detection
PAGE_SIZE = 16384
# primary result codes (sqlite3.SQLITE_* exist from Python 3.11; spelled out to not depend on it)
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


def make_private_dir(path: Path) -> None:
    """mkdir -p where every directory created is 0700 (existing ones are left as they are)."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask


def private_file(path: Path, mode: str = "w") -> Any:
    """open() for writing a new or truncated file that is 0600 before any byte lands in it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: tighten it
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, mode)


def _uri(path: Path, **params: str) -> str:
    return "file:" + urllib.parse.quote(str(path.resolve())) + "?" + urllib.parse.urlencode(params)


def _translating(name: str) -> Any:
    """A cursor method that turns sqlite3 errors into the database's own error (programming errors, which
    are our bugs, pass through unchanged)."""
    method = getattr(sqlite3.Cursor, name)

    def wrapper(self: _Cursor, *args: Any) -> Any:
        try:
            return method(self, *args)
        except sqlite3.ProgrammingError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self.connection._db._translate(exc) from None  # type: ignore[attr-defined]

    wrapper.__name__ = name
    return wrapper


class _Cursor(sqlite3.Cursor):
    """A cursor whose every step translates sqlite3 errors into the database's own error."""

    execute = _translating("execute")
    executemany = _translating("executemany")
    executescript = _translating("executescript")
    fetchone = _translating("fetchone")
    fetchmany = _translating("fetchmany")
    fetchall = _translating("fetchall")
    __next__ = _translating("__next__")


class _Connection(sqlite3.Connection):
    _db: SQLiteDatabase

    def cursor(self, factory: Any = _Cursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> Any:  # type: ignore[override]
        return self.cursor().executescript(script)


class SQLiteDatabase:
    kind = "database"  # in messages: "not a usable <kind> database"
    error: type[FacelensError] = FacelensError
    corrupt_error: type[FacelensError] | None = None  # defaults to `error`
    readonly_error: type[FacelensError] | None = None  # defaults to `error`
    missing_error: type[FacelensError] | None = None  # defaults to `error`
    repair_hint = "restore it from a backup"  # what a user can do about a damaged file
    schema = ""  # must create a `meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)` table
    schema_version = 1
    required_tables: tuple[str, ...] = ("meta",)  # an existing file without them is damaged

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.read_only = False  # set when the file or its folder cannot be written
        self._damage: str | None = None

    # -- files -----------------------------------------------------------------------------------
    @property
    def marker(self) -> Path:
        """Beside the database while it is known to be damaged (written by whoever noticed)."""
        return self.path.with_name(self.path.name + ".damaged")

    def exists(self) -> bool:
        return self.path.is_file()

    def damaged(self) -> str | None:
        """Why the database is known to be damaged, or None."""
        if self._damage:
            return self._damage
        with contextlib.suppress(OSError, ValueError):
            return str(json.loads(self.marker.read_text()).get("reason") or "damaged")
        return None

    def mark_damaged(self, reason: str) -> None:
        self._damage = reason
        if not self.marker.exists():
            with contextlib.suppress(OSError), private_file(self.marker) as fh:  # read-only folder: this process only
                fh.write(json.dumps({"reason": reason, "at": time.time()}) + "\n")

    def clear_damaged(self) -> None:
        self._damage = None
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()

    def _corrupt(self, reason: str) -> FacelensError:
        reason = " ".join(reason.replace("*** in database main ***", "").split())  # messages are one line
        self.mark_damaged(reason)
        cls = self.corrupt_error or self.error
        return cls(f"{self.path}: not a usable {self.kind} database ({reason}); {self.repair_hint}")

    def _translate(self, exc: sqlite3.DatabaseError) -> FacelensError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        error = self._translated(exc, primary)
        error.sqlite_code = primary  # type: ignore[attr-defined]
        return error

    def _translated(self, exc: sqlite3.DatabaseError, primary: int | None) -> FacelensError:
        text = str(exc)
        if primary in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
            return self._corrupt(text)
        if primary == _FULL:
            return self.error(f"{self.path}: disk full (or the {self.kind}'s size limit reached); the write was "
                              f"rolled back and nothing was changed ({text})")
        if primary == _READONLY:
            return (self.readonly_error or self.error)(
                f"{self.path}: the {self.kind} is read-only (file or folder not writable); nothing was written")
        if primary in (_BUSY, _LOCKED):
            return self.error(f"{self.path}: the {self.kind} is busy (another process is writing); try again")
        if primary == _CANTOPEN:
            return self.error(f"{self.path}: cannot open the {self.kind} ({text})")
        return self.error(f"{self.path}: {self.kind} error ({text})")

    def _check_file(self) -> None:
        """The cheap checks: a database file is never empty and always starts with SQLite's header."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(100)
        except OSError as exc:
            raise self.error(f"{self.path}: cannot open the {self.kind} ({exc.strerror or exc})") from None
        if not head:
            raise self._corrupt("empty file")
        if not head.startswith(SQLITE_MAGIC):
            raise self._corrupt("not an SQLite file: bad header")

    def _create(self) -> None:
        """Build a new, empty database beside the target and link it into place complete (0600)."""
        make_private_dir(self.path.parent)
        tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                # 16 KiB pages keep a face row (2 KiB embedding + record) on its page instead of spilling to
                # overflow pages: about half the file size and page reads of 4 KiB pages
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(self.schema)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(self.schema_version),))
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)  # never replaces: a concurrent creator's file (maybe written to) wins
            except FileExistsError:
                return
            except OSError:  # a filesystem without hard links
                if self.path.exists():
                    return
                os.rename(tmp, self.path)
            self.clear_damaged()  # a marker left from a damaged file someone deleted: this one is new
        except sqlite3.DatabaseError as exc:
            raise self.error(f"{self.path}: cannot create the {self.kind} ({exc})") from None
        except OSError as exc:
            raise self.error(f"{self.path}: cannot create the {self.kind} ({exc.strerror or exc})") from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{tmp}{suffix}")

    def _open_raw(self, read_only: bool) -> sqlite3.Connection:
        kwargs: dict[str, Any] = {"timeout": 30, "isolation_level": None, "check_same_thread": False,
                                  "factory": _Connection}
        if not read_only:
            conn = sqlite3.connect(self.path, **kwargs)
            conn._db = self  # type: ignore[attr-defined]
            return conn
        try:
            conn = sqlite3.connect(_uri(self.path, mode="ro"), uri=True, **kwargs)
            conn._db = self  # type: ignore[attr-defined]
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            pass
        except FacelensError as exc:
            if getattr(exc, "sqlite_code", None) not in (_READONLY, _CANTOPEN):
                raise
        # WAL readers need a -shm file; a read-only folder without one can only be read as immutable,
        # which ignores the -wal: safe only when there is no write-ahead log with data in it
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise (self.readonly_error or self.error)(
                f"{self.path}: the {self.kind} is read-only and has unmerged writes in its -wal file; "
                "open it once with write access to merge them")
        conn = sqlite3.connect(_uri(self.path, mode="ro", immutable="1"), uri=True, **kwargs)
        conn._db = self  # type: ignore[attr-defined]
        return conn

    def _writable(self) -> bool:
        return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK)

    def _open(self, create: bool) -> sqlite3.Connection:
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise self.error(f"{self.path.parent}: not a directory")
        if not self.path.exists():
            if not create:
                raise (self.missing_error or self.error)(f"{self.path}: no {self.kind} here")
            self._create()
        damage = self.damaged()
        if damage:
            raise (self.corrupt_error or self.error)(
                f"{self.path}: not a usable {self.kind} database (found damaged: {damage}); {self.repair_hint}")
        self._check_file()
        read_only = not self._writable()
        try:
            conn = self._open_raw(read_only)
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from None
        try:
            self._configure(conn, read_only)
        except FacelensError as exc:
            conn.close()
            if read_only or getattr(exc, "sqlite_code", None) != _READONLY:
                raise
            # writable by its modes yet refused (immutable file, read-only mount): open it for reading
            read_only = True
            conn = self._open_raw(True)
            self._configure(conn, True)
        self.read_only = read_only
        return conn

    def _configure(self, conn: sqlite3.Connection, read_only: bool) -> None:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten with zeros
        conn.execute("PRAGMA cell_size_check=ON")  # damaged pages are reported, not misread
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in self.required_tables if t not in tables]
        if missing:
            raise self._corrupt(f"missing table(s): {', '.join(missing)}")
        if not read_only:
            conn.executescript(self.schema)  # later additions (indexes, tables) reach existing files
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if version is None and not read_only:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(self.schema_version),))
        elif version is not None and int(version[0]) > self.schema_version:
            raise self.error(f"{self.path}: {self.kind} schema v{version[0]} is newer than this facelens "
                             f"(v{self.schema_version}); upgrade facelens")
        if self.path.stat().st_size <= QUICK_CHECK_MAX_BYTES:
            result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if result != "ok":
                raise self._corrupt(result)

    def connect(self, create: bool = True) -> sqlite3.Connection:
        """This thread's connection (opened, configured and checked on first use). A missing database
        is created unless `create` is False (then the subclass's missing error is raised)."""
        if self._conn is None:
            try:
                conn = self._open(create)
            except OSError as exc:
                raise self.error(f"{self.path}: cannot open the {self.kind} ({exc.strerror or exc})") from None
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return self._local.conn

    @property
    def _conn(self) -> sqlite3.Connection | None:
        return getattr(self._local, "conn", None)

    def close(self) -> None:
        """Close every thread's connection (call when no other thread is using the database)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.ProgrammingError):  # made in another thread: closed all the same
                conn.close()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time across processes; all or nothing."""
        conn = self.connect()
        damage = self.damaged()
        if damage:  # noticed since this connection was opened (maybe by another process)
            raise (self.corrupt_error or self.error)(
                f"{self.path}: not a usable {self.kind} database (found damaged: {damage}); {self.repair_hint}")
        if self.read_only:
            raise (self.readonly_error or self.error)(
                f"{self.path}: the {self.kind} is read-only (file or folder not writable); nothing was written")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            self._before_commit(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error, FacelensError):
                    conn.execute("ROLLBACK")
            raise

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        """Hook for bookkeeping that must land in the same transaction."""

    def meta(self, key: str) -> str | None:
        row = self.connect().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None
