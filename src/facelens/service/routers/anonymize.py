"""Anonymize an uploaded photo: every face covered (or, with keep/only, the chosen enrolled people's), the
result without metadata, optionally with the recognizer's check of what is left."""

import base64
import threading
from typing import Annotated, Any

import cv2
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from facelens.service.deps import ApiError, Read, ServiceDep, image_body, read_images

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
        return Response(done["bytes"], media_type=f"image/{format}",
                        headers={"X-Faces-Covered": str(len(result.covered)),
                                 "X-Faces-Spared": str(len(result.spared))})
    body = {**result.to_dict(), "source": "upload", "setting": {"method": method, "level": level, "region": region,
                                                               "margin": margin},
            "image": "data:image/jpeg;base64," + base64.b64encode(done["bytes"]).decode()}
    if not key.allows("faces"):
        body["spared"] = [{k: v for k, v in s.items() if k != "name"} for s in body["spared"]]
    if "verification" in done:
        body["verification"] = done["verification"]
    return body
