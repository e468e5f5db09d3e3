"""Operations (health, readiness, Prometheus metrics) and the web page with its static files.

Two routers: `create_app` includes `router` first and `page` last, the order the routes always had.
"""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from facelens.service.deps import ApiError, Read, ServiceDep, error_body

router = APIRouter()
page = APIRouter()
static = resources.files("facelens.service").joinpath("static")


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    from facelens.profile import active_profile

    return {"status": "ok", "profile": active_profile().name}


@router.get("/readyz", tags=["health"])
async def readyz(service: ServiceDep) -> JSONResponse:
    if service.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse(error_body("not_ready", "models are loading or the service is stopping"),
                        status_code=503)


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(_: Read, service: ServiceDep) -> PlainTextResponse:
    return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")


@page.get("/", include_in_schema=False, response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse(static.joinpath("index.html").read_text())


@page.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    suffix = Path(name).suffix
    item = static.joinpath(name)
    if "/" in name or suffix not in types or not item.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return Response(item.read_bytes(), media_type=types[suffix])
