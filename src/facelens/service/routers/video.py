"""Video over HTTP: a clip (uploaded, or a file under the server's photos root) processed as a background
job; the job's result is the timeline `facelens video --json` writes."""

import json
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from facelens.service.deps import (
    ApiError,
    Read,
    ServiceDep,
    check_video_queue,
    image_body,
    read_images,
    save_upload,
    under_photos_root,
)

router = APIRouter()
Fps = Annotated[float, Query(ge=0, le=60, description="frames analysed per second of video (0: every frame)")]


def _video_body() -> dict[str, Any]:
    body = image_body("video")
    body["requestBody"]["content"]["application/json"]["schema"] = {
        "type": "object", "properties": {
            "video": {"type": "string", "description": "base64 of the video file"},
            "path": {"type": "string", "description": "or: a video file under the server's photos root"}}}
    return body


@router.post("/v1/video", tags=["video"], status_code=202, openapi_extra=_video_body())
async def start_video(request: Request, key: Read, service: ServiceDep, fps: Fps = 10.0,
                      identify: Annotated[bool, Query(description="name tracks from the gallery")] = True,
                      ) -> dict[str, Any]:
    """Start a video job: the faces as tracks, each identified against the gallery (when there is one).
    Poll `GET /v1/video/jobs/{id}`; its `result` is the timeline."""
    from facelens.video.decode import VIDEO_EXTENSIONS

    source: FilePath | None = None
    label = None
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        try:
            payload = json.loads(body) if len(body) <= service.upload_limit * 4 // 3 + 1024 else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            payload = None  # read_images below gives the precise error
        if isinstance(payload, dict) and "path" in payload and "video" in payload:
            raise ApiError(422, "invalid_request", "give the video (base64) or a path, not both")
        if isinstance(payload, dict) and "path" in payload:
            source, label = under_photos_root(service, payload["path"], "file"), payload["path"]
            if source.suffix.lower() not in VIDEO_EXTENSIONS:
                raise ApiError(422, "invalid_request", f"{source.name!r} is not a video file (by its extension)")
    data = None if source is not None else (await read_images(request, ("video",), service.upload_limit))["video"]
    # checked with no await between it and the job's start: concurrent requests cannot all slip through
    check_video_queue(service)
    cleanup = data is not None
    if data is not None:
        source = save_upload(data)
    gallery = None
    if identify:
        from facelens.gallery import DB_NAME

        if (service.config.gallery / DB_NAME).exists():
            gallery = service.gallery
    return service.jobs.start_video(source, fps, gallery, cleanup, label=label).to_dict()


@router.get("/v1/video/jobs/{job_id}", tags=["video"])
async def video_job(job_id: str, key: Read, service: ServiceDep) -> dict[str, Any]:
    """A video job: status, progress (seconds of video done of the total) and, when done, the timeline."""
    job = service.jobs.get(job_id)
    if job.kind != "video":
        raise ApiError(404, "not_found", f"no video job {job_id!r}")
    out = job.to_dict()
    if not key.allows("faces") and out.get("result"):
        # thumbnails are faces; the source path is the server's
        result = dict(out["result"])
        result["tracks"] = [{k: v for k, v in t.items() if k != "thumbnail"} for t in result.get("tracks", [])]
        result.pop("source", None)
        out["result"] = result
    return out
