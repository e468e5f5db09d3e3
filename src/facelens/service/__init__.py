"""`facelens serve`: the REST API (FastAPI, OpenAPI at /docs) and the web page, over the same engine."""

from __future__ import annotations

from pathlib import Path

from facelens.models.registry import facelens_home


def default_keys_path() -> Path:
    return facelens_home() / "keys.sqlite"


def default_collection_path() -> Path:
    return facelens_home() / "collection"


def serve(host: str, port: int, gallery: Path, keys: Path, collection: Path, photos_root: Path | None,
          workers: int = 2, max_upload_mb: float = 20.0, det_size: int | str = "auto",
          max_video_seconds: float = 900.0, profile: str | None = None) -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM; in-flight requests (writes included) finish first."""
    import uvicorn

    from facelens.service.app import ServiceConfig, create_app

    app = create_app(ServiceConfig(gallery=gallery, keys=keys, collection=collection, photos_root=photos_root,
                                   workers=workers, max_upload_mb=max_upload_mb, det_size=det_size,
                                   max_video_seconds=max_video_seconds, profile=profile))
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
