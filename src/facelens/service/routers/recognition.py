"""Detect, analyze and verify uploaded images; identify their faces against the gallery."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from facelens.analysis import ATTRIBUTES, resolve
from facelens.errors import ImageError
from facelens.io import decode_image
from facelens.service.deps import Far, Read, ServiceDep, image_body, read_images

router = APIRouter()


@router.post("/v1/detect", tags=["faces"], openapi_extra=image_body("image"))
async def detect(request: Request, _: Read, service: ServiceDep) -> dict[str, Any]:
    """Every face: box, five landmarks, detection score."""
    data = (await read_images(request, ("image",), service.upload_limit))["image"]
    result = await service.run(service.analyzer._analyze_one, data, False)
    if result.error:
        raise ImageError(result.error)
    return {**result.to_dict(embedding=False), "source": "upload"}


@router.post("/v1/analyze", tags=["faces"], openapi_extra=image_body("image"))
async def analyze(request: Request, _: Read, service: ServiceDep, attributes: Annotated[str, Query(
        description=f"comma-separated: {', '.join(ATTRIBUTES)}")] = "landmarks,pose,quality,expression,age-gender",
        crops: Annotated[bool, Query(description="the image is one face crop (dataset style): the whole image is "
                                                 "the face, never 'no face'")] = False,
) -> dict[str, Any]:
    """Landmarks, head pose, quality, expression, age and gender of every face."""
    names = tuple(resolve([n.strip() for n in attributes.split(",") if n.strip()]))
    data = (await read_images(request, ("image",), service.upload_limit))["image"]
    fa = await service.run(service.attribute_analyzer, names, crops)
    result = await service.run(fa._analyze_one, data, False)
    if result.error:
        raise ImageError(result.error)
    return {**result.to_dict(embedding=False), "source": "upload"}


@router.post("/v1/verify", tags=["faces"], openapi_extra=image_body("image_a", "image_b"))
async def verify(request: Request, _: Read, service: ServiceDep, far: Far = 1e-3) -> dict[str, Any]:
    """Are the largest faces of two images the same person, at false-match rate `far`?"""
    from facelens.verify import verify as verify_images

    images = await read_images(request, ("image_a", "image_b"), service.upload_limit)
    result = await service.run(lambda: verify_images(images["image_a"], images["image_b"], far=far,
                                                     analyzer=service.analyzer, labels=("image_a", "image_b")))
    return result.to_dict()


@router.post("/v1/identify", tags=["gallery"], openapi_extra=image_body("image"))
async def identify(request: Request, _: Read, service: ServiceDep,
                   fpir: Annotated[float, Query(gt=0, lt=1, description=(
                       "false-positive identification rate: the share of strangers that may be given a name; "
                       "the threshold follows from it and the gallery's size"))] = 0.01,
                   top_k: Annotated[int, Query(ge=1, le=100)] = 5) -> dict[str, Any]:
    """Every face of the image against the gallery: best matches, a name or "unknown" (each face says the
    FPIR, gallery size and threshold of its decision)."""
    data = (await read_images(request, ("image",), service.upload_limit))["image"]

    def work() -> dict[str, Any]:
        pixels = decode_image(data).pixels
        found = service.gallery.identify(pixels, top_k, fpir)
        service.metrics.count("facelens_identified_faces_total", len(found))
        return {"faces": [f.to_dict() for f in found], "width": int(pixels.shape[1]),
                "height": int(pixels.shape[0])}

    return await service.run(work)
