"""The gallery: people, their enrolled faces and thumbnails, and complete erasure (forget)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facelens.io import decode_image
from facelens.service.deps import (
    Admin,
    ApiError,
    Enroll,
    FaceId,
    PersonId,
    Read,
    Service,
    ServiceDep,
    image_body,
    read_images,
)

router = APIRouter()


class PersonCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class PersonUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None


def person_out(service: Service, p: Any) -> dict[str, Any]:
    d = p.to_dict()
    faces = service.gallery.store.connect().execute(
        "SELECT id FROM faces WHERE person_id=? ORDER BY id", (p.id,)).fetchall()
    d["face_ids"] = [r[0] for r in faces]
    return d


@router.get("/v1/gallery/people", tags=["gallery"])
async def list_people(_: Read, service: ServiceDep) -> dict[str, Any]:
    people = await service.run(service.gallery.people)
    return {"people": await service.run(lambda: [person_out(service, p) for p in people])}


@router.post("/v1/gallery/people", tags=["gallery"], status_code=201)
async def create_person(body: PersonCreate, _: Enroll, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with service.write_lock:
            return person_out(service, service.gallery.create_person(body.name, body.metadata))

    return await service.run(work)


@router.get("/v1/gallery/people/{person_id}", tags=["gallery"])
async def get_person(person_id: PersonId, _: Read, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        name = service.person_name(person_id)
        return {**person_out(service, service.gallery.person(name)), "faces": service.gallery.faces(name)}

    return await service.run(work)


@router.patch("/v1/gallery/people/{person_id}", tags=["gallery"])
async def update_person(person_id: PersonId, body: PersonUpdate, _: Enroll, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with service.write_lock:
            name = service.person_name(person_id)
            if body.name is not None and body.name.strip() != name:
                service.gallery.rename(name, body.name)
                name = body.name.strip()
            if body.metadata is not None:
                service.gallery.set_metadata(name, body.metadata)
            return person_out(service, service.gallery.person(name))

    return await service.run(work)


def forget_work(service: Service, person_id: int) -> dict[str, Any]:
    with service.write_lock:
        receipt = service.gallery.forget(service.person_name(person_id))
    service.metrics.count("facelens_forgotten_people_total")
    return receipt


@router.delete("/v1/gallery/people/{person_id}", tags=["gallery"])
async def delete_person(person_id: PersonId, _: Admin, service: ServiceDep) -> dict[str, Any]:
    """Delete a person: the same complete erasure as /forget (rows, index entries, thumbnails)."""
    return await service.run(forget_work, service, person_id)


@router.post("/v1/gallery/people/{person_id}/forget", tags=["gallery"])
async def forget_person(person_id: PersonId, _: Admin, service: ServiceDep) -> dict[str, Any]:
    """Erase a person completely and return the receipt (counts and time; no biometrics)."""
    return await service.run(forget_work, service, person_id)


@router.get("/v1/gallery/people/{person_id}/faces", tags=["gallery"])
async def list_faces(person_id: PersonId, _: Read, service: ServiceDep) -> dict[str, Any]:
    return {"faces": await service.run(lambda: service.gallery.faces(service.person_name(person_id)))}


@router.post("/v1/gallery/people/{person_id}/faces", tags=["gallery"], status_code=201,
             openapi_extra=image_body("image"))
async def add_face(request: Request, person_id: PersonId, _: Enroll, service: ServiceDep,
                   largest: Annotated[bool, Query(description="take the largest of several faces")] = False,
                   ) -> dict[str, Any]:
    """Enroll the face of an image for this person (refused: no face, several faces, too poor)."""
    data = (await read_images(request, ("image",), service.upload_limit))["image"]

    def work() -> dict[str, Any]:
        pixels = decode_image(data).pixels
        name = service.person_name(person_id)
        with service.write_lock:
            ids = service.gallery.enroll(name, [pixels], largest=largest)
        service.metrics.count("facelens_enrolled_faces_total", len(ids))
        return {"person_id": person_id, "face_ids": ids}

    return await service.run(work)


@router.delete("/v1/gallery/people/{person_id}/faces/{face_id}", tags=["gallery"])
async def remove_face(person_id: PersonId, face_id: FaceId, _: Admin, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with service.write_lock:
            owners = service.gallery.store.face_owners([face_id])
            if owners.get(face_id, (None,))[0] != person_id:
                raise ApiError(404, "not_found", f"person {person_id} has no face {face_id}")
            service.gallery.remove_face(face_id)
        return {"removed": face_id}

    return await service.run(work)


@router.get("/v1/gallery/faces/{face_id}/thumbnail", tags=["gallery"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def gallery_thumbnail(face_id: FaceId, _: Read, service: ServiceDep) -> Response:
    return Response(await service.run(service.gallery.thumbnail, face_id), media_type="image/jpeg")
