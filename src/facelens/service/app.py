"""The REST API and the web page: one FastAPI app over the same Python API the CLI uses.

Models load once per process (at start-up, so /readyz means "ready to answer"). Requests that run a
model or touch the gallery are handed to a pool of `workers` threads (onnxruntime releases the GIL,
so two threads use both cores) while the event loop stays free for health checks and uploads.
Gallery writes go through one lock: the gallery's search index is rewritten by forget and must not
see an enrollment half-way. Errors are JSON bodies `{"error": {"code": ..., "message": ...}}` with a
stable `code`; a client's mistake is always a 4xx.

This module assembles the app: configuration, error mapping and handlers, the timing middleware.
The routes live in `service.routers` (one module per area), what they share in `service.deps`.
"""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facelens.errors import (
    ConfigError,
    FacelensError,
    ImageError,
    LicenceError,
    ModelNotFoundError,
    NoFaceError,
    NotFoundError,
    NotLiveError,
    QualityError,
)
from facelens.gallery.store import DuplicateFace, GalleryCorrupt, GalleryReadOnly
from facelens.service.deps import ApiError, Service, error_body
from facelens.service.keys import SCOPES
from facelens.service.middleware import BodySizeLimit, RequestMetrics, SecurityHeaders
from facelens.service.routers import anonymize, clusters, gallery, liveness, ops, recognition, video

__all__ = ["ApiError", "Service", "ServiceConfig", "create_app", "error_body"]


@dataclass
class ServiceConfig:
    """Where the service keeps things and how much it accepts."""

    gallery: Path
    keys: Path
    collection: Path  # the clustered collection the page and /v1/clusters show
    photos_root: Path | None = None  # folders a /v1/cluster job may read (None: no server-side jobs)
    max_upload_mb: float = 20.0
    workers: int = 2
    flip: bool = False
    # one setting for the whole server, not a per-request parameter: a client choosing a huge detector
    # input could make every request cost seconds and gigabytes
    det_size: int | str = "auto"
    # a video job stops after this much video (a small file can hold hours of still frames)
    max_video_seconds: float = 900.0
    # the model profile ("default" or "clean", see facelens.profile); None: FACELENS_PROFILE or default
    profile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# a FacelensError subclass -> (status, stable code); the first match in order wins
_ERROR_MAP: list[tuple[type[Exception], int, str]] = [
    (GalleryCorrupt, 503, "gallery_damaged"),  # an operator must run `facelens gallery check` / `repair`
    (GalleryReadOnly, 503, "read_only"),
    (DuplicateFace, 409, "duplicate"),
    (NotFoundError, 404, "not_found"),
    (ImageError, 400, "bad_image"),
    (NoFaceError, 422, "no_face"),
    (QualityError, 422, "quality_too_low"),
    (NotLiveError, 422, "not_live"),
    (LicenceError, 403, "licence"),  # the server's profile refuses the model this request needs
    (ConfigError, 400, "invalid_parameter"),
    (ModelNotFoundError, 503, "model_missing"),
]


def _status_of(exc: FacelensError) -> tuple[int, str]:
    for cls, status, code in _ERROR_MAP:
        if isinstance(exc, cls):
            return status, code
    return 409, "conflict"  # gallery/cluster refusals: duplicate name, wrong recognizer, busy store, ...


def create_app(config: ServiceConfig, warm: bool = True) -> FastAPI:
    """The FastAPI application (`facelens serve` runs it with uvicorn; tests use it in-process)."""
    service = Service(config)
    limit = service.upload_limit

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if warm:
            await service.run(service.warm_up)
        else:
            service.ready = True
        yield
        await asyncio.get_running_loop().run_in_executor(None, service.close)

    app = FastAPI(title="facelens", version=_version(), lifespan=lifespan,
                  description="Face detection, verification, identification, analysis and clustering. "
                              "Send an API key in the `X-API-Key` header (or `Authorization: Bearer`).")
    app.state.service = service  # what the routers' `ServiceDep` and key checks read

    # -- errors -----------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status,
                            headers={"Connection": "close"} if exc.status == 413 else None)

    @app.exception_handler(FacelensError)
    async def _facelens_error(_: Request, exc: FacelensError) -> JSONResponse:
        status, code = _status_of(exc)
        return JSONResponse(error_body(code, str(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse(error_body("invalid_request", f"{where}: {first.get('msg', 'invalid request')}"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden",
                 413: "payload_too_large"}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 413:
            headers["Connection"] = "close"  # the rest of an oversized body is not read: end the connection
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        service.metrics.count("facelens_internal_errors_total")
        return JSONResponse(error_body("internal", f"internal error ({type(exc).__name__})"), status_code=500)

    # outermost first: every response (errors included) gets the security headers; the body limit (image
    # limit x 4/3 for base64 in JSON, plus room for the form's own fields) is counted on the stream itself
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    app.add_middleware(BodySizeLimit, max_bytes=limit * 4 // 3 + 64 * 1024)
    app.add_middleware(SecurityHeaders)

    # -- routes: this order is the OpenAPI order (and the page, outside the schema, comes last) ------
    app.include_router(ops.router)
    app.include_router(recognition.router)
    app.include_router(gallery.router)
    app.include_router(clusters.router)
    app.include_router(liveness.router)
    app.include_router(video.router)
    app.include_router(anonymize.router)
    app.include_router(ops.page)

    app.state.scopes = SCOPES
    return app


def _version() -> str:
    from facelens import __version__

    return __version__
