"""ASGI middleware: the upload limit enforced on the stream itself, and security headers on every response.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware) so they see the raw byte stream and add no
buffering of their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from facelens.service.deps import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from inside `receive` once a request body passes the limit.

    An HTTPException on purpose: FastAPI turns any other error met while parsing a body into a 400, but
    re-raises HTTPException, so the app's own handler answers 413 with the usual JSON error body.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the server's limit ({limit / 1048576:.1f} MB including "
                              "base64 and form overhead; see --max-upload-mb)")
        self.limit = limit


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` whether or not they declare a Content-Length.

    A declared length over the limit is answered 413 before one byte is read. A chunked body (no
    Content-Length) is counted as it arrives and cut off at the limit, so neither memory nor the
    multipart parser's spill files ever hold more than `max_bytes` of it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await _json_error(send, 400, "invalid_request", "Content-Length is not a number")
                return
            if length > self.max_bytes:
                await _json_error(send, 413, "payload_too_large", BodyTooLarge(self.max_bytes).detail)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class RequestMetrics:
    """Count and time every request by method, route template and status (for /metrics)."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            # the router writes the matched route into the (shared) scope: label by its template, not the URL
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope.get("method", ""), path, status, time.perf_counter() - started)


# Pages of the service load only their own script, style and images (thumbnails arrive as blob: URLs);
# nothing may frame them. FastAPI's /docs and /redoc pull their UI from a CDN, so they keep the other
# headers but not this policy.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """nosniff, no framing, no referrer, CSP on pages, and `Cache-Control: no-store` on API answers
    (they carry names, scores and face thumbnails: no shared or browser cache should keep them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = list(_ALWAYS)
        if not path.startswith(("/docs", "/redoc")):
            extra.append((b"content-security-policy", PAGE_CSP.encode()))
        if not path.startswith("/static/") and path != "/":
            extra.append((b"cache-control", b"no-store"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in extra if k not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _json_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
