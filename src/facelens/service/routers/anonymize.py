"""Anonymize an uploaded photo: every face covered (or, with keep/only, the chosen enrolled people's), the
result without metadata, optionally with the recognizer's check of what is left."""

import base64
import threading
from typing import Annotated, Any

import cv2
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from facelens.service.deps import ApiError, Read, ServiceDep, check_video_queue, image_body, read_images, save_upload

router = APIRouter()
_LOCK = threading.Lock()


def _analyzer(service: Any) -> Any:
    """One detector at anonymization's threshold for the whole server (models load once)."""
    with _LOCK:
        existing = getattr(service, "anonymize_analyzer", None)
        if existing is None:
            from facelens.anonymize import DETECT_THRESHOLD
            from facelens.pipeline import FaceAnalyzer

            existing = service.anonymize_analyzer = FaceAnalyzer(
                det_threshold=DETECT_THRESHOLD, det_size=service.config.det_size, threads=1)
        return existing


@router.post("/v1/anonymize", tags=["anonymize"], openapi_extra=image_body("image"))
async def anonymize(
    request: Request, key: Read, service: ServiceDep,
    method: Annotated[str, Query(description="blur, pixelate or fill")] = "blur",
    level: Annotated[int, Query(ge=1, le=5, description="1 weakest .. 5 strongest")] = 5,
    region: Annotated[str, Query(description="head or face")] = "head",
    margin: Annotated[float, Query(ge=0, le=2)] = 0.25,
    keep: Annotated[list[str] | None, Query(max_length=50, description="enrolled names to leave visible")] = None,
    only: Annotated[list[str] | None, Query(max_length=50, description="enrolled names to cover, nobody else")]
    = None,
    verify: Annotated[bool, Query(description="measure re-identification of the covered faces")] = False,
    format: Annotated[str, Query(description="json (image as base64 plus what was done), jpeg or png")] = "json",
) -> Any:
    """The photo with faces covered. `format=jpeg|png` answers the image itself (headers `X-Faces-Covered`,
    `X-Faces-Spared`); `json` answers it as base64 with the boxes covered and spared, and with `verify`, the
    recognizer's similarity of each covered face to its original and whether it would still be matched."""
    from facelens.anonymize import Anonymizer
    from facelens.anonymize.cover import check_cover

    if format not in ("json", "jpeg", "png"):
        raise ApiError(422, "invalid_parameter", "format must be json, jpeg or png")
    check_cover(method, level, region, margin)  # a ConfigError: 400 before the upload is read
    data = (await read_images(request, ("image",), service.upload_limit))["image"]
    gallery = service.gallery if (keep or only) else None

    def work() -> dict[str, Any]:
        anonymizer = Anonymizer(method=method, level=level, region=region, margin=margin, keep=keep or (),
                                only=only or (), gallery=gallery)
        anonymizer._analyzer = _analyzer(service)
        result = anonymizer.anonymize(data)
        out: dict[str, Any] = {"result": result}
        if verify:
            from facelens.anonymize.verify import AnonymizationVerifier

            verifier = AnonymizationVerifier(service.analyzer, thumbnails=False)
            verifier.add("upload", result.original, result.pixels, result.covered,
                         [f for f, _ in result.spared], result.mask)
            out["verification"] = {k: v for k, v in verifier.finish().to_dict().items() if k != "per_face"}
        encoded_format = ".png" if format == "png" else ".jpg"
        ok, buf = cv2.imencode(encoded_format, result.pixels, [cv2.IMWRITE_JPEG_QUALITY, 92] if format != "png"
                               else [])
        if not ok:
            raise ApiError(500, "internal", "could not encode the result")
        out["bytes"] = buf.tobytes()
        return out

    done = await service.run(work)
    result = done["result"]
    if format != "json":
        headers = {"X-Faces-Covered": str(len(result.covered)), "X-Faces-Spared": str(len(result.spared))}
        if "verification" in done:  # the check travels in headers when the body is the image itself
            check = done["verification"]
            headers.update({"X-Reidentified": str(check["reidentified"]), "X-Leaks": str(len(check["leaks"])),
                            "X-Max-Similarity": str(check["max_similarity"])})
        return Response(done["bytes"], media_type=f"image/{format}", headers=headers)
    body = {**result.to_dict(), "source": "upload", "setting": {"method": method, "level": level, "region": region,
                                                               "margin": margin},
            "image": "data:image/jpeg;base64," + base64.b64encode(done["bytes"]).decode()}
    if not key.allows("faces"):
        body["spared"] = [{k: v for k, v in s.items() if k != "name"} for s in body["spared"]]
    if "verification" in done:
        body["verification"] = done["verification"]
    return body


@router.post("/v1/anonymize/video", tags=["anonymize"], status_code=202, openapi_extra=image_body("video"))
async def anonymize_video(
    request: Request, _: Read, service: ServiceDep,
    method: Annotated[str, Query(description="blur, pixelate or fill")] = "blur",
    level: Annotated[int, Query(ge=1, le=5)] = 5,
    region: Annotated[str, Query(description="head or face")] = "head",
    margin: Annotated[float, Query(ge=0, le=2)] = 0.25,
    keep: Annotated[list[str] | None, Query(max_length=50)] = None,
    only: Annotated[list[str] | None, Query(max_length=50)] = None,
) -> dict[str, Any]:
    """Anonymize an uploaded video as a background job (every frame detected, tracks interpolated over the
    detector's misses); poll `GET /v1/anonymize/jobs/{id}`, then download `.../video` (H.264 MP4, no audio,
    no metadata)."""
    from facelens.anonymize import Anonymizer
    from facelens.anonymize.cover import check_cover

    check_cover(method, level, region, margin)
    options: dict[str, Any] = {"method": method, "level": level, "region": region, "margin": margin,
                               "keep": keep or (), "only": only or (), "threads": 1}
    if keep or only:
        options["gallery"] = service.gallery
        Anonymizer(**options).check()  # unknown names: 404 now, not a failed job later
    data = (await read_images(request, ("video",), service.upload_limit))["video"]
    check_video_queue(service)  # no await between it and the job's start
    return service.jobs.start_anonymize_video(save_upload(data), options).to_dict()


@router.get("/v1/anonymize/jobs/{job_id}", tags=["anonymize"])
async def anonymize_job(job_id: str, _: Read, service: ServiceDep) -> dict[str, Any]:
    job = service.jobs.get(job_id)
    if job.kind != "anonymize-video":
        raise ApiError(404, "not_found", f"no anonymization job {job_id!r}")
    return job.to_dict()


@router.get("/v1/anonymize/jobs/{job_id}/video", tags=["anonymize"])
async def anonymize_job_video(job_id: str, _: Read, service: ServiceDep) -> FileResponse:
    job = service.jobs.get(job_id)
    if job.kind != "anonymize-video":
        raise ApiError(404, "not_found", f"no anonymization job {job_id!r}")
    if job.status != "done":
        raise ApiError(409, "not_ready", f"the job is {job.status}")
    path = service.jobs.outputs.get(job_id)
    if path is None or not path.exists():
        raise ApiError(410, "gone", "this result was deleted to make room for newer ones; run the job again")
    return FileResponse(path, media_type="video/mp4", filename="anonymized.mp4")
