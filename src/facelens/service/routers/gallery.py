"""The gallery: people, their enrolled faces and thumbnails, and complete erasure (forget)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facelens.service.deps import (
    Admin,
    ApiError,
    Enroll,
    FaceId,
    Faces,
    PersonId,
    Read,
    Service,
    ServiceDep,
    image_body,
    read_images,
)
from facelens.service.keys import ApiKey

router = APIRouter()


class PersonCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class PersonUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None


def person_out(service: Service, p: Any, key: ApiKey) -> dict[str, Any]:
    """A person as the API shows it; thumbnail URLs (with their unguessable token) only for keys that may
    see faces."""
    d = p.to_dict()
    faces = service.gallery.store.connect().execute(
        "SELECT id FROM faces WHERE person_id=? ORDER BY id", (p.id,)).fetchall()
    d["face_ids"] = [r[0] for r in faces]
    if key.allows("faces"):
        d["thumbnails"] = [service.thumbnail_url("gallery", r[0]) for r in faces]
    return d


def faces_out(service: Service, person_id: int, key: ApiKey) -> list[dict[str, Any]]:
    faces = service.gallery.faces(person_id)
    if key.allows("faces"):
        for face in faces:
            face["thumbnail"] = service.thumbnail_url("gallery", face["face_id"])
    return faces


@router.get("/v1/gallery/people", tags=["gallery"])
async def list_people(key: Read, service: ServiceDep,
                      limit: Annotated[int, Query(ge=1, le=1000, description="people per page")] = 100,
                      after: Annotated[int, Query(ge=0, le=2**63 - 1, description=(
                          "cursor: the `next` of the previous page (people in id order)"))] = 0,
                      ) -> dict[str, Any]:
    """People in id order, a page at a time: follow `next` until it is null."""
    def work() -> dict[str, Any]:
        people = service.gallery.people(limit=limit + 1, after_id=after)
        page = people[:limit]
        return {"people": [person_out(service, p, key) for p in page],
                "next": page[-1].id if len(people) > limit else None}

    return await service.run(work)


@router.post("/v1/gallery/people", tags=["gallery"], status_code=201)
async def create_person(body: PersonCreate, key: Enroll, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        with service.write_lock:
            return person_out(service, service.gallery.create_person(body.name, body.metadata), key)

    return await service.run(work)


@router.get("/v1/gallery/people/{person_id}", tags=["gallery"])
async def get_person(person_id: PersonId, key: Read, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        person = service.gallery.person(person_id)
        return {**person_out(service, person, key), "faces": faces_out(service, person.id, key)}

    return await service.run(work)


@router.patch("/v1/gallery/people/{person_id}", tags=["gallery"])
async def update_person(person_id: PersonId, body: PersonUpdate, key: Enroll, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        # by id throughout: a concurrent rename elsewhere cannot redirect this edit to another person
        with service.write_lock:
            if body.name is not None:
                service.gallery.rename(person_id, body.name)
            if body.metadata is not None:
                service.gallery.set_metadata(person_id, body.metadata)
            return person_out(service, service.gallery.person(person_id), key)

    return await service.run(work)


def forget_work(service: Service, person_id: int) -> dict[str, Any]:
    with service.write_lock:
        # by id: ids are never reused, so a stale or repeated request can only miss (404), never erase
        # whoever came after
        receipt = service.gallery.forget(person_id)
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
async def list_faces(person_id: PersonId, key: Read, service: ServiceDep) -> dict[str, Any]:
    return {"faces": await service.run(faces_out, service, person_id, key)}


@router.post("/v1/gallery/people/{person_id}/faces", tags=["gallery"], status_code=201,
             openapi_extra=image_body("image"))
async def add_face(request: Request, person_id: PersonId, _: Enroll, service: ServiceDep,
                   largest: Annotated[bool, Query(description="take the largest of several faces")] = False,
                   require_live: Annotated[bool, Query(description="refuse a face that passive liveness does "
                                                                   "not call live (422 not_live)")] = False,
                   ) -> dict[str, Any]:
    """Enroll the face of an image for this person (refused: no face, several faces, too poor, not live)."""
    data = (await read_images(request, ("image",), service.upload_limit))["image"]

    def work() -> dict[str, Any]:
        with service.write_lock:
            # the person is resolved by id inside the write transaction: forgotten meanwhile = 404; the raw
            # bytes (not decoded pixels) so the duplicate check matches the same photo enrolled as a file
            ids = service.gallery.add_faces(person_id, [data], largest=largest, require_live=require_live)
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
async def gallery_thumbnail(face_id: FaceId, _: Faces, service: ServiceDep,
                            token: Annotated[str | None, Query(max_length=64, description=(
                                "from the face's `thumbnail` URL in a person listing"))] = None) -> Response:
    """An enrolled face's thumbnail: needs the `faces` scope and the token its listing gave."""
    service.check_thumbnail_token("gallery", face_id, token)
    return Response(await service.run(service.gallery.thumbnail, face_id), media_type="image/jpeg")
