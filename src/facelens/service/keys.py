"""API keys for the service: scoped, stored hashed, revocable.

A key reads `fl_<id>_<secret>`; only sha256(secret) is stored, so a leaked database gives no usable
key. The id part lets a key be found and revoked without its secret. Scopes nest: `admin` can do what
`enroll` can, `enroll` what `faces` can (see thumbnails and photo paths), `faces` what `read` can.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from facelens.errors import FacelensError
from facelens.sqlite import SQLiteDatabase

# Scopes nest in this order. `faces` sits between `read` and `enroll` because enrolled face thumbnails and
# server-side photo paths are biometric/personal data that an identify-only client (read) never needs.
SCOPES = ("read", "faces", "enroll", "admin")
LAST_USED_EVERY = 60.0  # seconds: how stale a key's last-used time may get
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, scope TEXT NOT NULL, secret_sha256 TEXT NOT NULL,
    created REAL NOT NULL, revoked REAL, last_used REAL
);
"""


class ApiKeyError(FacelensError):
    """A key-management request that cannot be done (unknown key, bad scope)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created: float
    revoked: float | None
    last_used: float | None

    def allows(self, needed: str) -> bool:
        return self.revoked is None and SCOPES.index(self.scope) >= SCOPES.index(needed)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scope": self.scope, "created": self.created,
                "revoked": self.revoked, "last_used": self.last_used}


class KeyStore(SQLiteDatabase):
    kind = "API key"
    error = ApiKeyError
    schema = _SCHEMA

    def create(self, name: str, scope: str) -> tuple[ApiKey, str]:
        """A new key; the full token is returned once and never stored."""
        if scope not in SCOPES:
            raise ApiKeyError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")
        if not name.strip():
            raise ApiKeyError("a key needs a name (who or what uses it)")
        key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(24)
        now = time.time()
        with self.transaction() as conn:
            conn.execute("INSERT INTO keys (id, name, scope, secret_sha256, created) VALUES (?, ?, ?, ?, ?)",
                         (key_id, name.strip(), scope, _digest(secret), now))
        return ApiKey(key_id, name.strip(), scope, now, None, None), f"fl_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        rows = self.connect().execute(
            "SELECT id, name, scope, created, revoked, last_used FROM keys ORDER BY created").fetchall()
        return [ApiKey(*r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        with self.transaction() as conn:
            if conn.execute("UPDATE keys SET revoked=? WHERE id=? AND revoked IS NULL",
                            (time.time(), key_id)).rowcount == 0:
                known = conn.execute("SELECT 1 FROM keys WHERE id=?", (key_id,)).fetchone()
                raise ApiKeyError(f"key {key_id!r} is already revoked" if known else f"no key with id {key_id!r}")
        return next(k for k in self.list() if k.id == key_id)

    def check(self, token: str) -> ApiKey | None:
        """The key a token belongs to if it is valid and not revoked, else None (constant-time compare)."""
        parts = token.split("_", 2) if token else []
        if len(parts) != 3 or parts[0] != "fl":
            return None
        row = self.connect().execute(
            "SELECT id, name, scope, created, revoked, last_used, secret_sha256 FROM keys WHERE id=?",
            (parts[1],)).fetchone()
        if row is None or not hmac.compare_digest(row[6], _digest(parts[2])) or row[4] is not None:
            return None
        now = time.time()
        if row[5] is None or now - row[5] > LAST_USED_EVERY:  # a write per request would be the service's cost
            try:
                with self.transaction() as conn:
                    conn.execute("UPDATE keys SET last_used=? WHERE id=?", (now, row[0]))
            except ApiKeyError:  # busy: the timestamp can wait for the next request
                pass
        return ApiKey(*row[:6])


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
