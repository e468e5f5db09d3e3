"""Clustering: background jobs over a server-side photo folder, and the clustered collection with its
corrections (merge, split, not, name)."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facelens.service.deps import Admin, ApiError, BodyId, Enroll, FaceId, Read, Service, ServiceDep

router = APIRouter()


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


@router.post("/v1/cluster", tags=["clusters"], status_code=202)
async def start_cluster(body: ClusterJob, _: Admin, service: ServiceDep) -> dict[str, Any]:
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


@router.get("/v1/cluster/jobs/{job_id}", tags=["clusters"])
async def cluster_job(job_id: str, _: Read, service: ServiceDep) -> dict[str, Any]:
    return service.jobs.get(job_id).to_dict()


@router.get("/v1/clusters", tags=["clusters"])
async def list_clusters(_: Read, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        if not (service.config.collection / "collection.sqlite").exists():
            return {"clusters": [], "summary": None}
        c = service.collection
        return {"clusters": [x.to_dict() for x in c.clusters()], "summary": c.summary()}

    return await service.run(work)


@router.get("/v1/clusters/faces/{face_id}/thumbnail", tags=["clusters"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def cluster_thumbnail(face_id: FaceId, _: Read, service: ServiceDep) -> Response:
    def work() -> bytes:
        if not (service.config.collection / "collection.sqlite").exists():
            raise ApiError(404, "not_found", "no clustered collection yet")
        return service.collection.thumbnail(face_id)

    return Response(await service.run(work), media_type="image/jpeg")


def edit(service: Service, fn: Callable[[Any], Any]) -> Callable[[], dict[str, Any]]:
    """A correction as worker-pool work: applied under the jobs' collection lock, outputs rewritten."""
    def work() -> dict[str, Any]:
        if not (service.config.collection / "collection.sqlite").exists():
            raise ApiError(404, "not_found", "no clustered collection yet")
        with service.jobs.collection_lock:
            fn(service.collection)
            service.collection.write_outputs()
            return {"clusters": [x.to_dict() for x in service.collection.clusters()]}

    return work


@router.post("/v1/clusters/merge", tags=["clusters"])
async def merge_clusters(body: MergeBody, _: Enroll, service: ServiceDep) -> dict[str, Any]:
    return await service.run(edit(service, lambda c: c.merge(body.a, body.b)))


@router.post("/v1/clusters/split", tags=["clusters"])
async def split_face(body: SplitBody, _: Enroll, service: ServiceDep) -> dict[str, Any]:
    return await service.run(edit(service, lambda c: c.split(body.face_id)))


@router.post("/v1/clusters/not", tags=["clusters"])
async def not_person(body: NotBody, _: Enroll, service: ServiceDep) -> dict[str, Any]:
    return await service.run(edit(service, lambda c: c.not_person(body.face_id, body.cluster)))


@router.post("/v1/clusters/name", tags=["clusters"])
async def name_cluster(body: NameBody, _: Enroll, service: ServiceDep) -> dict[str, Any]:
    def name_and_enroll(c: Any) -> None:
        c.name(body.cluster, body.name)
        if body.enroll:
            with service.write_lock:
                c.enroll(next(x.id for x in c.clusters() if x.name == body.name.strip()), service.gallery)

    return await service.run(edit(service, name_and_enroll))
