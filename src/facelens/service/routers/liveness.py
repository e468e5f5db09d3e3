"""Active liveness over HTTP: the server draws a challenge per session, the client uploads a short clip of the
person doing it, the server answers with a verdict signed with its secret. A session is used once and expires,
so a clip recorded for an earlier session (or a replay of one) cannot be reused."""

import os
import tempfile
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from facelens.service.deps import ApiError, Read, ServiceDep, image_body, read_images

router = APIRouter()
MAX_OPEN_SESSIONS = 10_000
SESSION_TTL_S = 120.0
STEP_TIMEOUT_S = 6.0
SessionId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the session's nonce")]


class VerdictBody(BaseModel):
    token: str = Field(min_length=3, max_length=16384, description="a verdict token this server signed")


class LivenessSessions:
    """Open sessions in memory (one process), bounded; each is taken out when its clip is checked."""

    def __init__(self) -> None:
        self.secret = (os.environ.get("FACELENS_LIVENESS_SECRET") or "").encode() or os.urandom(32)
        self._open: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def open(self) -> dict[str, Any]:
        from facelens.challenge import new_session

        session = new_session(ttl_s=SESSION_TTL_S)
        with self._lock:
            now = time.time()
            for key in [k for k, s in self._open.items() if s["expires_at"] < now]:
                del self._open[key]
            if len(self._open) >= MAX_OPEN_SESSIONS:
                raise ApiError(429, "too_many_sessions", "too many open liveness sessions; try again shortly")
            self._open[session["session_id"]] = session
        return session

    def take(self, session_id: str) -> dict[str, Any]:
        """The session, removed: a nonce is good for one check, passed or not."""
        with self._lock:
            session = self._open.pop(session_id, None)
        if session is None:
            raise ApiError(404, "unknown_session", "no such open session: unknown, already used or expired")
        if session["expires_at"] < time.time():
            raise ApiError(410, "session_expired", "the session expired; open a new one")
        return session


def sessions_of(service: Any) -> LivenessSessions:
    existing = getattr(service, "liveness_sessions", None)
    if existing is None:
        existing = service.liveness_sessions = LivenessSessions()
    return existing


@router.post("/v1/liveness/sessions", tags=["liveness"], status_code=201)
async def open_session(_: Read, service: ServiceDep) -> dict[str, Any]:
    """A new challenge: 2-4 actions (blink, left, right, mouth, smile; left/right are the person's own, the
    camera not mirrored), to be filmed and uploaded before `expires_at`."""
    session = sessions_of(service).open()
    return {**session, "step_timeout_s": STEP_TIMEOUT_S}


@router.post("/v1/liveness/sessions/{session_id}/video", tags=["liveness"], openapi_extra=image_body("video"))
async def check_session(request: Request, session_id: SessionId, _: Read, service: ServiceDep) -> dict[str, Any]:
    """Check a clip against the session's challenge: the verdict, and `token`, the verdict signed by the
    server (HMAC-SHA256) for whoever must trust it later (`POST /v1/liveness/verify`)."""
    sessions = sessions_of(service)
    session = sessions.take(session_id)  # before reading the upload: a nonce cannot be raced twice
    clip = (await read_images(request, ("video",), service.upload_limit))["video"]

    def work() -> dict[str, Any]:
        from facelens.challenge import check_challenge, sign_verdict, video_signals
        from facelens.models.store import usable

        attributes = ["landmarks", "pose", "expression"] + (["liveness"] if usable("liveness-minifas") else [])
        analyzer = service.attribute_analyzer(attributes)  # shared, loaded once: not one per request
        with tempfile.NamedTemporaryFile(suffix=".video") as fh:
            fh.write(clip)
            fh.flush()
            frames = video_signals(fh.name, analyzer)
        result = check_challenge(frames, session["actions"], STEP_TIMEOUT_S)
        verdict = {"session_id": session_id, **result.to_dict(), "checked_at": time.time()}
        return {**verdict, "token": sign_verdict(sessions.secret, verdict)}

    return await service.run(work)


@router.post("/v1/liveness/verify", tags=["liveness"])
async def verify_token(body: VerdictBody, _: Read, service: ServiceDep) -> dict[str, Any]:
    """The verdict inside a token, if this server signed it (400 forged_verdict otherwise)."""
    from facelens.challenge import ChallengeError, verify_verdict

    try:
        return {"valid": True, "verdict": verify_verdict(sessions_of(service).secret, body.token)}
    except ChallengeError as exc:
        raise ApiError(400, "forged_verdict", str(exc)) from None
