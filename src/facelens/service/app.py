"""The REST API and the web page: one FastAPI app over the same Python API the CLI uses.

Models load once per process (at start-up, so /readyz means "ready to answer"). Requests that run a
model or touch the gallery are handed to a pool of `workers` threads (onnxruntime releases the GIL,
so two threads use both cores) while the event loop stays free for health checks and uploads.
Gallery writes go through one lock: the gallery's search index is rewritten by forget and must not
see an enrollment half-way. Errors are JSON bodies `{"error": {"code": ..., "message": ...}}` with a
stable `code`; a client's mistake is always a 4xx.
"""

import asyncio
import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facelens.analysis import ATTRIBUTES, resolve
from facelens.errors import (
    ConfigError,
    FacelensError,
    ImageError,
    ModelNotFoundError,
    NoFaceError,
    NotFoundError,
    QualityError,
)
from facelens.io import decode_image
from facelens.service.jobs import JobRunner
from facelens.service.keys import SCOPES, ApiKey, KeyStore
from facelens.service.metrics import Metrics

T = TypeVar("T")
MB = 1024 * 1024
# ids are SQLite integers: a larger number is a client's mistake (422), not an overflow inside
MAX_ID = 2**63 - 1
BodyId = Annotated[int, Field(ge=0, le=MAX_ID)]
PersonId = Annotated[int, PathParam(ge=0, le=MAX_ID)]
FaceId = Annotated[int, PathParam(ge=0, le=MAX_ID)]


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
    extra: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# a FacelensError subclass -> (status, stable code); the first match in order wins
_ERROR_MAP: list[tuple[type[Exception], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (ImageError, 400, "bad_image"),
    (NoFaceError, 422, "no_face"),
    (QualityError, 422, "quality_too_low"),
    (ConfigError, 400, "invalid_parameter"),
    (ModelNotFoundError, 503, "model_missing"),
]


def _status_of(exc: FacelensError) -> tuple[int, str]:
    for cls, status, code in _ERROR_MAP:
        if isinstance(exc, cls):
            return status, code
    return 409, "conflict"  # gallery/cluster refusals: duplicate name, wrong recognizer, busy store, ...


# -- request bodies -------------------------------------------------------------------------------
class PersonCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class PersonUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None


class ClusterJob(BaseModel):
    root: str = Field(min_length=1, description="folder under the server's photos root")
    far: float = Field(default=1e-4, description="1e-2, 1e-3 or 1e-4")


class MergeBody(BaseModel):
    a: BodyId
    b: BodyId


class SplitBody(BaseModel):
    face_id: BodyId


class NotBody(BaseModel):
    face_id: BodyId
    cluster: BodyId


class NameBody(BaseModel):
    cluster: BodyId
    name: str = Field(min_length=1, max_length=200)
    enroll: bool = False


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

        self.config = config
        self.keys = KeyStore(config.keys)
        self.analyzer = FaceAnalyzer(threads=1, flip=config.flip)
        self.pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="facelens-worker")
        self.write_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self.metrics = Metrics()
        self.jobs = JobRunner(self)
        self._gallery: Any = None
        self._collection: Any = None
        self._attribute_analyzers: dict[tuple[str, ...], Any] = {}
        self.ready = False

    # -- resources ------------------------------------------------------------------------------
    @property
    def gallery(self) -> Any:
        with self._open_lock:  # two first requests at once must not open two galleries
            if self._gallery is None:
                from facelens.gallery import Gallery

                self._gallery = Gallery(self.config.gallery, self.analyzer)
            return self._gallery

    @property
    def collection(self) -> Any:
        with self._open_lock:
            if self._collection is None:
                from facelens.cluster import Collection

                self._collection = Collection(self.config.collection, self.analyzer)
            return self._collection

    def attribute_analyzer(self, names: tuple[str, ...]) -> Any:
        from facelens.pipeline import FaceAnalyzer

        with self._open_lock:
            if names not in self._attribute_analyzers:
                fa = FaceAnalyzer(threads=1, attributes=names)
                fa.check_models(embed=False)
                self._attribute_analyzers[names] = fa
            return self._attribute_analyzers[names]

    def warm_up(self) -> None:
        """Load every default model now, so the first request is not the slow one."""
        self.analyzer.check_models()
        self.analyzer.analyze(np.full((64, 64, 3), 127, np.uint8))
        _ = self.gallery.store
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


def create_app(config: ServiceConfig, warm: bool = True) -> FastAPI:
    """The FastAPI application (`facelens serve` runs it with uvicorn; tests use it in-process)."""
    service = Service(config)
    limit = int(config.max_upload_mb * MB)

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
    app.state.service = service

    # -- errors -----------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

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
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        service.metrics.count("facelens_internal_errors_total")
        return JSONResponse(error_body("internal", f"internal error ({type(exc).__name__})"), status_code=500)

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Any]) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit * 4 // 3 + 4096:
            return JSONResponse(error_body("payload_too_large", f"request body over {limit // MB} MB"),
                                status_code=413)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        service.metrics.observe(request.method, path, response.status_code, time.perf_counter() - started)
        return response

    # -- auth ------------------------------------------------------------------------------------
    def require(scope: str) -> Callable[..., ApiKey]:
        def check(request: Request) -> ApiKey:
            token = request.headers.get("x-api-key") or ""
            auth = request.headers.get("authorization", "")
            if not token and auth.lower().startswith("bearer "):
                token = auth[7:].strip()
            if not token:
                raise ApiError(401, "unauthorized", "an API key is required (X-API-Key header)")
            key = service.keys.check(token)
            if key is None:
                raise ApiError(401, "unauthorized", "unknown or revoked API key")
            if not key.allows(scope):
                raise ApiError(403, "forbidden", f"this key's scope is {key.scope!r}; {scope!r} is needed")
            return key

        return check

    Read = Annotated[ApiKey, Depends(require("read"))]
    Enroll = Annotated[ApiKey, Depends(require("enroll"))]
    Admin = Annotated[ApiKey, Depends(require("admin"))]
    Far = Annotated[float, Query(description="false-match rate of the threshold: 1e-2, 1e-3 or 1e-4",
                                 gt=0, lt=1)]

    # -- health ----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse(error_body("not_ready", "models are loading or the service is stopping"),
                            status_code=503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(_: Read) -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    # -- faces -----------------------------------------------------------------------------------
    @app.post("/v1/detect", tags=["faces"], openapi_extra=image_body("image"))
    async def detect(request: Request, _: Read) -> dict[str, Any]:
        """Every face: box, five landmarks, detection score."""
        data = (await read_images(request, ("image",), limit))["image"]
        result = await service.run(service.analyzer._analyze_one, data, False)
        if result.error:
            raise ImageError(result.error)
        return {**result.to_dict(embedding=False), "source": "upload"}

    @app.post("/v1/analyze", tags=["faces"], openapi_extra=image_body("image"))
    async def analyze(request: Request, _: Read, attributes: Annotated[str, Query(
            description=f"comma-separated: {', '.join(ATTRIBUTES)}")] = "landmarks,pose,quality,expression,age-gender"
    ) -> dict[str, Any]:
        """Landmarks, head pose, quality, expression, age and gender of every face."""
        names = tuple(resolve([n.strip() for n in attributes.split(",") if n.strip()]))
        data = (await read_images(request, ("image",), limit))["image"]
        fa = await service.run(service.attribute_analyzer, names)
        result = await service.run(fa._analyze_one, data, False)
        if result.error:
            raise ImageError(result.error)
        return {**result.to_dict(embedding=False), "source": "upload"}

    @app.post("/v1/verify", tags=["faces"], openapi_extra=image_body("image_a", "image_b"))
    async def verify(request: Request, _: Read, far: Far = 1e-3) -> dict[str, Any]:
        """Are the largest faces of two images the same person, at false-match rate `far`?"""
        from facelens.verify import verify as verify_images

        images = await read_images(request, ("image_a", "image_b"), limit)
        result = await service.run(lambda: verify_images(images["image_a"], images["image_b"], far=far,
                                                         analyzer=service.analyzer))
        return result.to_dict()

    @app.post("/v1/identify", tags=["gallery"], openapi_extra=image_body("image"))
    async def identify(request: Request, _: Read, far: Far = 1e-3,
                       top_k: Annotated[int, Query(ge=1, le=100)] = 5) -> dict[str, Any]:
        """Every face of the image against the gallery: best matches, a name or "unknown"."""
        data = (await read_images(request, ("image",), limit))["image"]

        def work() -> dict[str, Any]:
            pixels = decode_image(data).pixels
            found = service.gallery.identify(pixels, top_k, far)
            service.metrics.count("facelens_identified_faces_total", len(found))
            return {"faces": [f.to_dict() for f in found], "width": int(pixels.shape[1]),
                    "height": int(pixels.shape[0])}

        return await service.run(work)

    # -- gallery ---------------------------------------------------------------------------------
    def person_out(p: Any) -> dict[str, Any]:
        d = p.to_dict()
        faces = service.gallery.store.connect().execute(
            "SELECT id FROM faces WHERE person_id=? ORDER BY id", (p.id,)).fetchall()
        d["face_ids"] = [r[0] for r in faces]
        return d

    @app.get("/v1/gallery/people", tags=["gallery"])
    async def list_people(_: Read) -> dict[str, Any]:
        people = await service.run(service.gallery.people)
        return {"people": await service.run(lambda: [person_out(p) for p in people])}

    @app.post("/v1/gallery/people", tags=["gallery"], status_code=201)
    async def create_person(body: PersonCreate, _: Enroll) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            with service.write_lock:
                return person_out(service.gallery.create_person(body.name, body.metadata))

        return await service.run(work)

    @app.get("/v1/gallery/people/{person_id}", tags=["gallery"])
    async def get_person(person_id: PersonId, _: Read) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            name = service.person_name(person_id)
            return {**person_out(service.gallery.person(name)), "faces": service.gallery.faces(name)}

        return await service.run(work)

    @app.patch("/v1/gallery/people/{person_id}", tags=["gallery"])
    async def update_person(person_id: PersonId, body: PersonUpdate, _: Enroll) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            with service.write_lock:
                name = service.person_name(person_id)
                if body.name is not None and body.name.strip() != name:
                    service.gallery.rename(name, body.name)
                    name = body.name.strip()
                if body.metadata is not None:
                    service.gallery.set_metadata(name, body.metadata)
                return person_out(service.gallery.person(name))

        return await service.run(work)

    def forget_work(person_id: int) -> dict[str, Any]:
        with service.write_lock:
            receipt = service.gallery.forget(service.person_name(person_id))
        service.metrics.count("facelens_forgotten_people_total")
        return receipt

    @app.delete("/v1/gallery/people/{person_id}", tags=["gallery"])
    async def delete_person(person_id: PersonId, _: Admin) -> dict[str, Any]:
        """Delete a person: the same complete erasure as /forget (rows, index entries, thumbnails)."""
        return await service.run(forget_work, person_id)

    @app.post("/v1/gallery/people/{person_id}/forget", tags=["gallery"])
    async def forget_person(person_id: PersonId, _: Admin) -> dict[str, Any]:
        """Erase a person completely and return the receipt (counts and time; no biometrics)."""
        return await service.run(forget_work, person_id)

    @app.get("/v1/gallery/people/{person_id}/faces", tags=["gallery"])
    async def list_faces(person_id: PersonId, _: Read) -> dict[str, Any]:
        return {"faces": await service.run(lambda: service.gallery.faces(service.person_name(person_id)))}

    @app.post("/v1/gallery/people/{person_id}/faces", tags=["gallery"], status_code=201,
              openapi_extra=image_body("image"))
    async def add_face(request: Request, person_id: PersonId, _: Enroll,
                       largest: Annotated[bool, Query(description="take the largest of several faces")] = False,
                       ) -> dict[str, Any]:
        """Enroll the face of an image for this person (refused: no face, several faces, too poor)."""
        data = (await read_images(request, ("image",), limit))["image"]

        def work() -> dict[str, Any]:
            pixels = decode_image(data).pixels
            name = service.person_name(person_id)
            with service.write_lock:
                ids = service.gallery.enroll(name, [pixels], largest=largest)
            service.metrics.count("facelens_enrolled_faces_total", len(ids))
            return {"person_id": person_id, "face_ids": ids}

        return await service.run(work)

    @app.delete("/v1/gallery/people/{person_id}/faces/{face_id}", tags=["gallery"])
    async def remove_face(person_id: PersonId, face_id: FaceId, _: Admin) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            with service.write_lock:
                owners = service.gallery.store.face_owners([face_id])
                if owners.get(face_id, (None,))[0] != person_id:
                    raise ApiError(404, "not_found", f"person {person_id} has no face {face_id}")
                service.gallery.remove_face(face_id)
            return {"removed": face_id}

        return await service.run(work)

    @app.get("/v1/gallery/faces/{face_id}/thumbnail", tags=["gallery"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def gallery_thumbnail(face_id: FaceId, _: Read) -> Response:
        return Response(await service.run(service.gallery.thumbnail, face_id), media_type="image/jpeg")

    # -- clustering ------------------------------------------------------------------------------
    @app.post("/v1/cluster", tags=["clusters"], status_code=202)
    async def start_cluster(body: ClusterJob, _: Admin) -> dict[str, Any]:
        """Cluster a server-side photo folder (under the configured photos root) as a background job."""
        root = service.config.photos_root
        if root is None:
            raise ApiError(403, "forbidden", "this server was started without --photos-root")
        target = (root / body.root).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_dir():
            raise ApiError(404, "not_found", f"{body.root!r} is not a folder under the photos root")
        if body.far not in (1e-2, 1e-3, 1e-4):
            raise ApiError(400, "invalid_parameter", "far must be 1e-2, 1e-3 or 1e-4")
        return service.jobs.start_cluster(target, body.far).to_dict()

    @app.get("/v1/cluster/jobs/{job_id}", tags=["clusters"])
    async def cluster_job(job_id: str, _: Read) -> dict[str, Any]:
        return service.jobs.get(job_id).to_dict()

    @app.get("/v1/clusters", tags=["clusters"])
    async def list_clusters(_: Read) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            if not (service.config.collection / "collection.sqlite").exists():
                return {"clusters": [], "summary": None}
            c = service.collection
            return {"clusters": [x.to_dict() for x in c.clusters()], "summary": c.summary()}

        return await service.run(work)

    @app.get("/v1/clusters/faces/{face_id}/thumbnail", tags=["clusters"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    async def cluster_thumbnail(face_id: FaceId, _: Read) -> Response:
        def work() -> bytes:
            if not (service.config.collection / "collection.sqlite").exists():
                raise ApiError(404, "not_found", "no clustered collection yet")
            return service.collection.thumbnail(face_id)

        return Response(await service.run(work), media_type="image/jpeg")

    def edit(fn: Callable[[Any], Any]) -> Callable[[], dict[str, Any]]:
        def work() -> dict[str, Any]:
            if not (service.config.collection / "collection.sqlite").exists():
                raise ApiError(404, "not_found", "no clustered collection yet")
            with service.jobs.collection_lock:
                fn(service.collection)
                service.collection.write_outputs()
                return {"clusters": [x.to_dict() for x in service.collection.clusters()]}

        return work

    @app.post("/v1/clusters/merge", tags=["clusters"])
    async def merge_clusters(body: MergeBody, _: Enroll) -> dict[str, Any]:
        return await service.run(edit(lambda c: c.merge(body.a, body.b)))

    @app.post("/v1/clusters/split", tags=["clusters"])
    async def split_face(body: SplitBody, _: Enroll) -> dict[str, Any]:
        return await service.run(edit(lambda c: c.split(body.face_id)))

    @app.post("/v1/clusters/not", tags=["clusters"])
    async def not_person(body: NotBody, _: Enroll) -> dict[str, Any]:
        return await service.run(edit(lambda c: c.not_person(body.face_id, body.cluster)))

    @app.post("/v1/clusters/name", tags=["clusters"])
    async def name_cluster(body: NameBody, _: Enroll) -> dict[str, Any]:
        def name_and_enroll(c: Any) -> None:
            c.name(body.cluster, body.name)
            if body.enroll:
                with service.write_lock:
                    c.enroll(next(x.id for x in c.clusters() if x.name == body.name.strip()), service.gallery)

        return await service.run(edit(name_and_enroll))

    # -- the page --------------------------------------------------------------------------------
    static = resources.files("facelens.service").joinpath("static")

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(static.joinpath("index.html").read_text())

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        suffix = Path(name).suffix
        item = static.joinpath(name)
        if "/" in name or suffix not in types or not item.is_file():
            raise ApiError(404, "not_found", f"no static file {name!r}")
        return Response(item.read_bytes(), media_type=types[suffix])

    app.state.scopes = SCOPES
    return app


def _version() -> str:
    from facelens import __version__

    return __version__
