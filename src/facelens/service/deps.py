"""What the routers share: the `Service` engine (models, gallery, worker pool, write lock), API-key
checks as FastAPI dependencies, the JSON error type, image-upload parsing and id/parameter types.

Kept apart from `app.py` so routers can import it without importing the app that includes them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facelens.service.jobs import JobRunner
from facelens.service.keys import ApiKey, KeyStore
from facelens.service.metrics import Metrics

if TYPE_CHECKING:  # app.py imports this module: a runtime import back would be circular
    from facelens.service.app import ServiceConfig

T = TypeVar("T")
MB = 1024 * 1024
MAX_ANALYZERS = 8  # attribute sets kept ready at once (there are 31 possible sets of the five attributes)
# ids are SQLite integers: a larger number is a client's mistake (422), not an overflow inside
MAX_ID = 2**63 - 1
BodyId = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]  # strict: `true` or "3" is not an id
PersonId = Annotated[int, PathParam(ge=0, le=MAX_ID)]
FaceId = Annotated[int, PathParam(ge=0, le=MAX_ID)]
Far = Annotated[float, Query(description="false-match rate of the threshold: 1e-2, 1e-3 or 1e-4", gt=0, lt=1)]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def image_body(*names: str) -> dict[str, Any]:
    """OpenAPI for an endpoint taking images as multipart files or as base64 strings in JSON."""
    required = list(names)
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": required, "properties": {
            n: {"type": "string", "format": "binary"} for n in names}}},
        "application/json": {"schema": {"type": "object", "required": required, "properties": {
            n: {"type": "string", "description": "base64 of the image file"} for n in names}}},
    }}}


class Service:
    """The engine behind the routes: configured once, models loaded once."""

    def __init__(self, config: ServiceConfig) -> None:
        from facelens.pipeline import FaceAnalyzer

        if config.profile is not None:
            from facelens.profile import set_profile

            set_profile(config.profile)  # before any model is chosen: every default follows it
        self.config = config
        self.upload_limit = int(config.max_upload_mb * MB)  # bytes, per image and (x4/3) per body
        self.keys = KeyStore(config.keys)
        self.analyzer = FaceAnalyzer(threads=1, flip=config.flip, det_size=config.det_size)
        self.pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="facelens-worker")
        self.write_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self.metrics = Metrics()
        self.jobs = JobRunner(self)
        self._gallery: Any = None
        self._collection: Any = None
        self._attribute_analyzers: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._attribute_parts: dict[str, Any] = {}
        self._thumbnail_secret = secrets.token_bytes(32)
        self.ready = False

    # -- resources ------------------------------------------------------------------------------
    @property
    def gallery(self) -> Any:
        with self._open_lock:  # two first requests at once must not open two galleries
            if self._gallery is None:
                from facelens.gallery import Gallery

                gallery = Gallery(self.config.gallery, self.analyzer)
                bound = gallery.recognizer
                if bound and bound != self.analyzer.recognizer:  # a gallery made in the other profile
                    from facelens.pipeline import FaceAnalyzer

                    gallery.analyzer = FaceAnalyzer(recognizer=bound, threads=1, det_size=self.config.det_size,
                                                    flip=self.config.flip and bound in ("arcface-mbf", "sface"))
                self._gallery = gallery
            return self._gallery

    @property
    def collection(self) -> Any:
        with self._open_lock:
            if self._collection is None:
                from facelens.cluster import Collection

                self._collection = Collection(self.config.collection, self.analyzer)
            return self._collection

    def attribute_analyzer(self, names: tuple[str, ...] | list[str], crops: bool = False) -> Any:
        """An analyzer for one set of attributes. The set is normalised (order and repeats do not make a
        new one), the attribute models are shared between analyzers (one expression model, one age model,
        ... per process, whatever the sets asked for) and at most MAX_ANALYZERS sets are kept (least
        recently used dropped): a client cycling through attribute lists cannot grow the server."""
        from facelens.analysis import create_attribute, resolve
        from facelens.pipeline import FaceAnalyzer

        names = tuple(resolve(list(names)))
        key = (*names, "+crops") if crops else names
        with self._open_lock:
            fa = self._attribute_analyzers.pop(key, None)
            if fa is None:
                fa = FaceAnalyzer(threads=1, attributes=names, crops=bool(crops))
                fa._detector = self.analyzer.detector_model  # one detector for every analyzer
                for name in names:
                    if name not in self._attribute_parts:
                        self._attribute_parts[name] = create_attribute(name)
                fa._parts = [self._attribute_parts[name] for name in names]
                fa.check_models(embed=False)
            self._attribute_analyzers[key] = fa  # most recently used last
            while len(self._attribute_analyzers) > MAX_ANALYZERS:
                self._attribute_analyzers.pop(next(iter(self._attribute_analyzers)))
            return fa

    def thumbnail_token(self, kind: str, face_id: int) -> str:
        """The unguessable part of a thumbnail URL: an HMAC of the face id under a per-process secret, so
        a key cannot walk thumbnails by sequential id; it must have been shown the face in a listing."""
        return hmac.new(self._thumbnail_secret, f"{kind}:{int(face_id)}".encode(), hashlib.sha256).hexdigest()[:32]

    def thumbnail_url(self, kind: str, face_id: int) -> str:
        base = "/v1/gallery/faces" if kind == "gallery" else "/v1/clusters/faces"
        return f"{base}/{int(face_id)}/thumbnail?token={self.thumbnail_token(kind, face_id)}"

    def check_thumbnail_token(self, kind: str, face_id: int, token: str | None) -> None:
        # bytes: compare_digest refuses str with non-ASCII characters, and any token must get a plain 404
        expected = self.thumbnail_token(kind, face_id).encode()
        if not token or not hmac.compare_digest(token.encode("utf-8", "replace"), expected):
            # 404, not 403: a wrong token says nothing about whether the face exists
            raise ApiError(404, "not_found", f"no thumbnail for face {face_id} with that token")

    def warm_up(self) -> None:
        """Load every default model now, so the first request is not the slow one."""
        self.analyzer.check_models()
        self.analyzer.analyze(np.full((64, 64, 3), 127, np.uint8))
        self.gallery.init()  # an empty gallery lists as empty; reads on a missing one would be 404s
        self.ready = True

    def close(self) -> None:
        """Finish in-flight work (writes included), then save the index and close the stores."""
        self.ready = False
        self.jobs.shutdown()
        self.pool.shutdown(wait=True)
        with self.write_lock:
            if self._gallery is not None:
                self._gallery.close()
            if self._collection is not None:
                self._collection.close()
            self.keys.close()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def person_name(self, person_id: int) -> str:
        return str(self.gallery.store.person(int(person_id)).name)


# -- dependencies -----------------------------------------------------------------------------------
async def get_service(request: Request) -> Service:
    # async: a plain attribute read, not worth a hop to FastAPI's thread pool
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def require(scope: str) -> Callable[..., ApiKey]:
    """A dependency that admits a request whose API key (X-API-Key or Bearer) allows `scope`."""

    def check(request: Request) -> ApiKey:
        token = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not token:
            raise ApiError(401, "unauthorized", "an API key is required (X-API-Key header)")
        service: Service = request.app.state.service
        key = service.keys.check(token)
        if key is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key")
        if not key.allows(scope):
            raise ApiError(403, "forbidden", f"this key's scope is {key.scope!r}; {scope!r} is needed")
        return key

    return check


Read = Annotated[ApiKey, Depends(require("read"))]
Faces = Annotated[ApiKey, Depends(require("faces"))]  # face thumbnails, server-side photo paths
Enroll = Annotated[ApiKey, Depends(require("enroll"))]
Admin = Annotated[ApiKey, Depends(require("admin"))]


def under_photos_root(service: Service, relative: Any, kind: str) -> Any:
    """The real path of `relative` under the server's photos root, a "folder" or a "file": 403 when the server
    has no root, 422 for a path that is not a string of 1-4096 characters, 404 when it leads outside the root
    (links followed) or is not that kind of thing."""
    from pathlib import Path

    root = service.config.photos_root
    if root is None:
        raise ApiError(403, "forbidden", "this server was started without --photos-root")
    if not isinstance(relative, str) or not relative:
        raise ApiError(422, "invalid_request", "path must be a non-empty string")
    if len(relative) > 4096:
        raise ApiError(422, "invalid_request", "path is longer than 4096 characters")
    try:
        target = (root / relative).resolve()
        inside = target.is_relative_to(Path(root).resolve()) and (target.is_dir() if kind == "folder"
                                                                   else target.is_file())
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system, a link loop
        inside = False
    if not inside:
        raise ApiError(404, "not_found", f"{relative[:200]!r} is not a {kind} under the photos root")
    return target


MAX_PENDING_VIDEO_JOBS = 4  # each waiting upload holds a temporary file: a queue must not fill the disk


def check_video_queue(service: Service) -> None:
    """429 when the video jobs (analysis and anonymization share the one job worker) are at their bound."""
    if service.jobs.pending("video") + service.jobs.pending("anonymize-video") >= MAX_PENDING_VIDEO_JOBS:
        raise ApiError(429, "too_many_jobs", f"{MAX_PENDING_VIDEO_JOBS} video jobs are already waiting or running; "
                                             "try again when one has finished")


def save_upload(data: bytes) -> Any:
    """An uploaded video in a private temporary file (the job that reads it deletes it)."""
    import os
    import tempfile
    from pathlib import Path

    handle, name = tempfile.mkstemp(prefix="facelens-video-", suffix=".video")
    with os.fdopen(handle, "wb") as fh:
        fh.write(data)
    return Path(name)


async def read_images(request: Request, names: tuple[str, ...], limit: int) -> dict[str, bytes]:
    """The named images from a multipart form or a JSON body of base64 strings."""
    content_type = request.headers.get("content-type", "")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, "payload_too_large", f"request body over {limit // MB} MB")
    out: dict[str, bytes] = {}
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=len(names) + 2, max_fields=16)
        except StarletteHTTPException:
            raise  # the body limit, hit while the parser was reading: 413, not "malformed"
        except Exception as exc:  # malformed multipart: the parser's own errors vary
            raise ApiError(400, "invalid_request", f"unreadable multipart body ({exc})") from None
        for name in names:
            item = form.get(name)
            if item is None or isinstance(item, str):
                raise ApiError(422, "invalid_request", f"multipart field {name!r} must be an image file")
            data = await item.read(limit + 1)
            if len(data) > limit:
                raise ApiError(413, "payload_too_large", f"{name} is over {limit // MB} MB")
            out[name] = data
    elif content_type.startswith("application/json"):
        body = await request.body()
        if len(body) > limit * 4 // 3 + 1024:
            raise ApiError(413, "payload_too_large", f"request body over {limit // MB} MB")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"body is not valid JSON ({exc})") from None
        except RecursionError:
            raise ApiError(400, "invalid_json", "body is JSON nested too deeply") from None
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid_request", "JSON body must be an object")
        for name in names:
            value = payload.get(name)
            if not isinstance(value, str):
                raise ApiError(422, "invalid_request", f"JSON field {name!r} must be a base64 string")
            try:
                out[name] = base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value,
                                             validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(422, "invalid_request", f"JSON field {name!r} is not valid base64") from None
            if len(out[name]) > limit:
                raise ApiError(413, "payload_too_large", f"{name} is over {limit // MB} MB")
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send the image as multipart/form-data or as base64 in application/json")
    for name, data in out.items():
        if not data:
            raise ApiError(400, "bad_image", f"{name} is empty")
    return out
