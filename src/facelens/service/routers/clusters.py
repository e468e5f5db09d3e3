"""Clustering: background jobs over a server-side photo folder, and the clustered collection with its
corrections (merge, split, not, name)."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from facelens.service.deps import (
    Admin,
    ApiError,
    BodyId,
    Enroll,
    FaceId,
    Faces,
    Read,
    Service,
    ServiceDep,
    under_photos_root,
)
from facelens.service.keys import ApiKey

router = APIRouter()


class ClusterJob(BaseModel):
    root: str = Field(min_length=1, max_length=4096, description="folder under the server's photos root")
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
    target = under_photos_root(service, body.root, "folder")
    if body.far not in (1e-2, 1e-3, 1e-4):
        raise ApiError(400, "invalid_parameter", "far must be 1e-2, 1e-3 or 1e-4")
    return service.jobs.start_cluster(target, body.far).to_dict()


def clusters_out(service: Service, key: ApiKey) -> list[dict[str, Any]]:
    """Clusters as the API shows them: server-side photo paths and thumbnail URLs only for keys that may
    see faces."""
    out = []
    for cluster in service.collection.clusters():
        d = cluster.to_dict()
        if key.allows("faces"):
            d["thumbnails"] = [service.thumbnail_url("cluster", f) for f in cluster.face_ids]
        else:
            d.pop("images", None)
        out.append(d)
    return out


@router.get("/v1/cluster/jobs/{job_id}", tags=["clusters"])
async def cluster_job(job_id: str, key: Read, service: ServiceDep) -> dict[str, Any]:
    job = service.jobs.get(job_id).to_dict()
    if not key.allows("faces") and job.get("result"):
        # the per-file errors name server-side paths
        job["result"] = {**job["result"], "errors": len(job["result"].get("errors", []))}
    return job


@router.get("/v1/clusters", tags=["clusters"])
async def list_clusters(key: Read, service: ServiceDep) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        if not (service.config.collection / "collection.sqlite").exists():
            return {"clusters": [], "summary": None}
        return {"clusters": clusters_out(service, key), "summary": service.collection.summary()}

    return await service.run(work)


@router.get("/v1/clusters/faces/{face_id}/thumbnail", tags=["clusters"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def cluster_thumbnail(face_id: FaceId, _: Faces, service: ServiceDep,
                            token: Annotated[str | None, Query(max_length=64, description=(
                                "from the cluster listing's `thumbnails` URLs"))] = None) -> Response:
    """A clustered face's thumbnail: needs the `faces` scope and the token its listing gave."""
    service.check_thumbnail_token("cluster", face_id, token)

    def work() -> bytes:
        if not (service.config.collection / "collection.sqlite").exists():
            raise ApiError(404, "not_found", "no clustered collection yet")
        return service.collection.thumbnail(face_id)

    return Response(await service.run(work), media_type="image/jpeg")


def edit(service: Service, key: ApiKey, fn: Callable[[Any], Any]) -> Callable[[], dict[str, Any]]:
    """A correction as worker-pool work: applied under the jobs' collection lock, outputs rewritten."""
    def work() -> dict[str, Any]:
        if not (service.config.collection / "collection.sqlite").exists():
            raise ApiError(404, "not_found", "no clustered collection yet")
        with service.jobs.collection_lock:
            fn(service.collection)
            service.collection.write_outputs()
            return {"clusters": clusters_out(service, key)}

    return work


@router.post("/v1/clusters/merge", tags=["clusters"])
async def merge_clusters(body: MergeBody, key: Enroll, service: ServiceDep) -> dict[str, Any]:
    return await service.run(edit(service, key, lambda c: c.merge(body.a, body.b)))


@router.post("/v1/clusters/split", tags=["clusters"])
async def split_face(body: SplitBody, key: Enroll, service: ServiceDep) -> dict[str, Any]:
    return await service.run(edit(service, key, lambda c: c.split(body.face_id)))


@router.post("/v1/clusters/not", tags=["clusters"])
async def not_person(body: NotBody, key: Enroll, service: ServiceDep) -> dict[str, Any]:
    return await service.run(edit(service, key, lambda c: c.not_person(body.face_id, body.cluster)))


@router.post("/v1/clusters/name", tags=["clusters"])
async def name_cluster(body: NameBody, key: Enroll, service: ServiceDep) -> dict[str, Any]:
    def name_and_enroll(c: Any) -> None:
        c.name(body.cluster, body.name)
        if body.enroll:
            with service.write_lock:
                c.enroll(next(x.id for x in c.clusters() if x.name == body.name.strip()), service.gallery)

    return await service.run(edit(service, key, name_and_enroll))
