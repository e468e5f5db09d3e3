"""One way to open and write the project's SQLite files (gallery, clustered collection).

WAL mode (readers never block the writer), foreign keys, `secure_delete` (deleted rows are zeroed, not
left in free pages), 16 KiB pages for new files, a schema version in a `meta` table, and writes as
`BEGIN IMMEDIATE ... COMMIT` so several processes get one writer at a time and all-or-nothing writes.
Every failure becomes one error of the subclass's kind, naming the file. Each thread gets its own
connection (a server answers requests on many threads; a shared connection would share one
transaction between them), so threads coordinate exactly as processes do: through SQLite's locks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facelens.errors import FacelensError


class SQLiteDatabase:
    kind = "database"  # in messages: "not a usable <kind> database"
    error: type[FacelensError] = FacelensError
    schema = ""  # must create a `meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)` table
    schema_version = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()

    @property
    def _conn(self) -> sqlite3.Connection | None:
        return getattr(self._local, "conn", None)

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (opened, configured and schema-checked on first use)."""
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                # 16 KiB pages keep a face row (2 KiB embedding + record) on its page instead of spilling to
                # overflow pages: about half the file size and page reads of 4 KiB pages (new databases only)
                conn.execute("PRAGMA page_size=16384")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten with zeros
                conn.executescript(self.schema)
                version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if version is None:
                    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(self.schema_version),))
                elif int(version[0]) > self.schema_version:
                    raise self.error(f"{self.path}: {self.kind} schema v{version[0]} is newer than this facelens "
                                     f"(v{self.schema_version}); upgrade facelens")
            except sqlite3.DatabaseError as exc:
                raise self.error(f"{self.path}: not a usable {self.kind} database ({exc})") from None
            except OSError as exc:
                raise self.error(f"{self.path}: cannot open the {self.kind} ({exc.strerror or exc})") from None
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return self._local.conn

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
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self.error(f"{self.path}: {self.kind} is busy or read-only ({exc})") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            self._before_commit(conn)
            conn.execute("COMMIT")

    def _before_commit(self, conn: sqlite3.Connection) -> None:
        """Hook for bookkeeping that must land in the same transaction."""

    def meta(self, key: str) -> str | None:
        row = self.connect().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None
