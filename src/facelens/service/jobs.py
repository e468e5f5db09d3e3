"""Background jobs: clustering (POST /v1/cluster, polled by GET /v1/cluster/jobs/{id}) and video (POST
/v1/video, polled by GET /v1/video/jobs/{id})."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelens.errors import FacelensError, NotFoundError

log = logging.getLogger("facelens.service")
MAX_FINISHED = 200
MAX_KEPT_OUTPUTS = 8  # anonymized videos waiting to be downloaded; older ones are deleted (disk is finite)


class JobNotFound(NotFoundError):
    """No job with that id (ids live as long as the process)."""


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "progress": {"done": self.done,
                "total": self.total}, "result": self.result, "error": self.error, "created": self.created,
                "finished": self.finished}


class JobRunner:
    """One job at a time (clustering uses both cores on its own); the rest wait in order."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.jobs: dict[str, Job] = {}
        self.collection_lock = threading.Lock()  # a job and a user's correction never interleave
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facelens-job")
        self._uploads: dict[str, Path] = {}  # job id -> its uploaded temporary file, until the job ends
        self.outputs: dict[str, Path] = {}  # job id -> its anonymized video, until downloaded enough or replaced

    def get(self, job_id: str) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job {job_id!r}") from None

    def start_cluster(self, root: Path, far: float) -> Job:
        # random 128-bit ids: never reused, even across restarts, and not guessable by another client
        job = Job(id=uuid.uuid4().hex, kind="cluster")
        self.jobs[job.id] = job
        self._pool.submit(self._cluster, job, root, far)
        return job

    def _cluster(self, job: Job, root: Path, far: float) -> None:
        from facelens.io import expand_paths

        job.status = "running"
        try:
            with self.collection_lock:
                collection = self.service.collection
                collection.far = far
                fence = self.service.config.photos_root
                job.total = len(expand_paths([str(root)], confine_to=fence, videos=True))

                def advance(_entry: dict[str, Any]) -> None:
                    job.done += 1

                report = collection.scan(root, on_result=advance, confine_to=fence)
                run = collection.cluster()
                collection.write_outputs()
                job.result = {**collection.summary(), "run": run,
                              "errors": [r["error"] for r in report if r["status"] == "error"]}
            job.status = "done"
        except (FacelensError, OSError) as exc:
            job.status, job.error = "failed", str(exc)
            log.warning("cluster job %s failed: %s", job.id, exc)
        except Exception as exc:  # a job must end, never stay "running" with its error lost
            job.status, job.error = "failed", f"internal error ({type(exc).__name__}: {exc})"
            log.exception("cluster job %s failed", job.id)
        finally:
            job.finished = time.time()
            self._forget_old()

    def pending(self, kind: str) -> int:
        return sum(1 for j in list(self.jobs.values()) if j.kind == kind and j.finished is None)

    def start_video(self, source: Path, fps: float, gallery: Any, cleanup: bool, label: str | None) -> Job:
        """A video job; `cleanup`: the source is an uploaded temporary file, deleted when the job ends."""

        def work(job: Job, limit: float, advance: Any) -> None:
            from facelens.video import VideoAnalyzer

            result = VideoAnalyzer(fps=fps, threads=1).process(source, gallery=gallery, on_progress=advance,
                                                               max_seconds=limit)
            job.result = result.to_dict()
            # an upload's temporary path means nothing to the client (and is the server's business)
            job.result["source"] = label or "upload"
            if result.seconds >= limit - 0.5:
                job.result["limited_to_seconds"] = limit  # the server's --max-video-seconds
            if job.result.get("video"):
                job.result["video"]["source"] = label or "upload"
            if job.result.get("error"):
                job.result["error"] = job.result["error"].replace(str(source), label or "upload")
            if gallery is not None and job.result.get("gallery"):
                job.result["gallery"].pop("path", None)

        return self._start_video_job("video", source, label or "upload", cleanup, work)

    def start_anonymize_video(self, source: Path, options: dict[str, Any]) -> Job:
        """Anonymize an uploaded video (a temporary file, deleted when the job ends) into a server-side file
        the client downloads from GET /v1/anonymize/jobs/{id}/video."""

        def work(job: Job, limit: float, advance: Any) -> None:
            import tempfile

            from facelens.anonymize import Anonymizer
            from facelens.anonymize.video import anonymize_video

            target = Path(tempfile.mkstemp(prefix="facelens-anonymized-", suffix=".mp4")[1])
            try:
                result = anonymize_video(Anonymizer(**options), source, target, max_seconds=limit,
                                         on_progress=advance)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            job.result = result.to_dict()
            job.result.update(source="upload", output=f"/v1/anonymize/jobs/{job.id}/video")
            if job.result.get("error"):
                job.result["error"] = job.result["error"].replace(str(source), "upload")
            self.outputs[job.id] = target
            for old in list(self.outputs)[:-MAX_KEPT_OUTPUTS]:
                self.outputs.pop(old).unlink(missing_ok=True)

        return self._start_video_job("anonymize-video", source, "upload", True, work)

    def _start_video_job(self, kind: str, source: Path, label: str, cleanup: bool, work: Any) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind)
        self.jobs[job.id] = job
        if cleanup:
            self._uploads[job.id] = source
        self._pool.submit(self._run_video_job, job, source, label, cleanup, work)
        return job

    def _run_video_job(self, job: Job, source: Path, label: str, cleanup: bool, work: Any) -> None:
        """What every video job shares: its length for the progress (capped by --max-video-seconds), errors
        with the server's paths hidden, and the upload removed however the job ends."""
        job.status = "running"
        try:
            from facelens.video import VideoReader

            with VideoReader(source) as probe:
                job.total = round(probe.info.duration or 0.0, 2) if probe.info else 0
            limit = self.service.config.max_video_seconds
            job.total = min(job.total, limit) if job.total else job.total

            def advance(seconds: float) -> None:
                job.done = round(seconds, 2)

            work(job, limit, advance)
            job.status = "done"
        except (FacelensError, OSError) as exc:
            job.status, job.error = "failed", str(exc).replace(str(source), label)  # never a server temp path
            log.warning("%s job %s failed: %s", job.kind, job.id, job.error)
        except Exception as exc:  # a job must end, never stay "running" with its error lost
            job.status, job.error = "failed", f"internal error ({type(exc).__name__})"
            log.exception("%s job %s failed", job.kind, job.id)
        finally:
            if cleanup:
                source.unlink(missing_ok=True)
                self._uploads.pop(job.id, None)
            job.finished = time.time()
            self._forget_old()

    def _forget_old(self) -> None:
        """Keep the newest MAX_FINISHED finished jobs: a long-running server must not grow without bound."""
        finished = [j for j in self.jobs.values() if j.finished is not None]
        for job in sorted(finished, key=lambda j: j.finished or 0.0)[:-MAX_FINISHED]:
            self.jobs.pop(job.id, None)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for path in [*self._uploads.values(), *self.outputs.values()]:  # uploads never begun, results unfetched
            path.unlink(missing_ok=True)
        self._uploads.clear()
        self.outputs.clear()
