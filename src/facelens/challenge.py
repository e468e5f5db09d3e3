"""Active liveness: a random sequence of actions the person performs on camera, checked frame by frame.

A printed photo cannot blink on request, and a replayed video cannot follow a challenge drawn after it was
recorded. The server draws 2-4 actions per session (`new_session`: a random nonce, an expiry), the client
films the person doing them, and the checker reads per-frame signals:
- `blink`: eye openness (the eye ring's height over its width, from the dense landmarks) falls below 60 % of
  the person's own open-eye level (the clip's median) and comes back above 80 % within 0.8 s;
- `left` / `right`: head yaw (`analysis.pose`) turns 20 degrees from the starting pose, to the person's own
  left / right (the camera not mirrored: turning left moves the nose towards the image's right);
- `mouth`: mouth openness (the mouth points' height over the corner-to-corner width) rises 0.25 above its
  resting level (the clip's 20th percentile);
- `smile`: the expression model's "happy" probability rises above 0.6 from a resting level (20th
  percentile) under 0.4.
Each action must come after the previous one, within `step_timeout` seconds. The passive liveness score is
read on frames as well (when its models are installed): a replayed or printed face fails it even if it
could mimic an action. The verdict is signed (HMAC-SHA256 with the server's secret), so a client cannot
forge or edit one, and a session's nonce is used once and expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelens.analysis.landmarks import eye_rings
from facelens.errors import ConfigError, FacelensError, ImageError
from facelens.types import Face

ACTIONS = ("blink", "left", "right", "mouth", "smile")
YAW_TURN = 20.0  # degrees from the starting pose
BLINK_CLOSED, BLINK_OPEN, BLINK_MAX_S = 0.6, 0.8, 0.8
MOUTH_RISE = 0.25
SMILE_HIGH, SMILE_REST = 0.6, 0.4
BASELINE_S = 0.5  # the first half second sets the person's resting levels
MOUTH = list(range(52, 72))  # 2d106det's lips (analysis/landmarks.py)


class ChallengeError(FacelensError):
    """A bad challenge, session or verdict: unknown action, expired or reused nonce, forged signature."""


def parse_actions(text: str | list[str]) -> list[str]:
    actions = [a.strip().lower() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown or not actions:
        raise ConfigError(f"a challenge is 1-6 of {', '.join(ACTIONS)} (comma-separated); got {text!r}")
    if len(actions) > 6:
        raise ConfigError("a challenge has at most 6 actions")
    return actions


@dataclass
class FrameSignals:
    t: float
    face: bool
    yaw: float | None = None
    eye_open: float | None = None
    mouth_open: float | None = None
    happy: float | None = None
    live_score: float | None = None
    live: bool | None = None


def _openness(points: np.ndarray) -> float:
    """Height over width of a point set, measured along its own axis (the line between its extreme x)."""
    left, right = points[np.argmin(points[:, 0])], points[np.argmax(points[:, 0])]
    axis = right - left
    width = float(np.linalg.norm(axis))
    if width < 1e-6:
        return 0.0
    normal = np.array([-axis[1], axis[0]]) / width
    heights = (points - left) @ normal
    return float((heights.max() - heights.min()) / width)


# FaceMesh's lips, outer ring and inner ring (the 106 layout's mouth is its points 52-71, both rings)
MESH_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
             78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]


def mouth_points(face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image-left corner, image-right corner, lip points) from the face's dense landmarks, or None."""
    for key, n, left, right, lips in (("landmarks_106", 106, 52, 61, MOUTH),
                                      ("landmarks_468", 468, 61, 291, MESH_LIPS)):
        value = face.attributes.get(key)
        if isinstance(value, list) and len(value) == n:
            p = np.asarray(value, np.float64)
            return p[left], p[right], p[lips]
    return None


def face_signals(face: Face, t: float) -> FrameSignals:
    a = face.attributes
    signals = FrameSignals(t=t, face=True)
    mouth = mouth_points(face)
    rings = eye_rings(face)
    if rings is not None and mouth is not None:
        signals.eye_open = (_openness(rings[0]) + _openness(rings[1])) / 2
        left, right, lips = mouth
        corners = np.linalg.norm(left - right)
        axis = (right - left) / max(corners, 1e-6)
        normal = np.array([-axis[1], axis[0]])
        heights = (lips - left) @ normal
        signals.mouth_open = float((heights.max() - heights.min()) / max(corners, 1e-6))
    pose = a.get("pose")
    if isinstance(pose, dict) and "yaw" in pose:
        signals.yaw = float(pose["yaw"])
    expression = a.get("expression")
    if isinstance(expression, dict) and "probabilities" in expression:
        signals.happy = float(expression["probabilities"]["happy"])
    liveness = a.get("liveness")
    if isinstance(liveness, dict) and "decision" in liveness:
        signals.live_score = float(liveness["score"])
        signals.live = liveness.get("live")
    return signals


@dataclass
class ChallengeResult:
    actions: list[str]
    passed: bool
    completed: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    frames: int = 0
    face_frames: int = 0
    passive: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"actions": self.actions, "passed": self.passed, "completed": self.completed,
                "reason": self.reason, "frames": self.frames, "face_frames": self.face_frames,
                "passive": self.passive}


def _shows(action: str, f: FrameSignals, yaw0: float, mouth0: float, happy0: float) -> bool:
    """Whether one frame shows a held action (turns, open mouth, smile) against the resting levels."""
    if action in {"left", "right"}:
        return f.yaw is not None and ((f.yaw - yaw0 >= YAW_TURN) if action == "left" else (f.yaw - yaw0 <= -YAW_TURN))
    if action == "mouth":
        return f.mouth_open is not None and f.mouth_open >= mouth0 + MOUTH_RISE
    return f.happy is not None and happy0 < SMILE_REST and f.happy >= SMILE_HIGH


def check_challenge(frames: list[FrameSignals], actions: list[str], step_timeout: float = 6.0,
                    min_face_share: float = 0.8) -> ChallengeResult:
    """Did the frames show `actions`, in order, each within `step_timeout` s of the previous one?"""
    actions = parse_actions(actions)
    result = ChallengeResult(actions=actions, passed=False, frames=len(frames),
                             face_frames=sum(f.face for f in frames))
    seen = [f for f in frames if f.face and f.eye_open is not None]
    if not frames or result.face_frames < min_face_share * len(frames) or len(seen) < 5:
        result.reason = (f"a face was seen in {result.face_frames} of {len(frames)} frames; the person must stay "
                         "in view")
        return result
    start = seen[0].t
    first = [f for f in seen if f.t <= start + BASELINE_S] or seen[:5]

    def level(frames: list[FrameSignals], attr: str, q: float, default: float) -> float:
        values = [getattr(f, attr) for f in frames if getattr(f, attr) is not None]
        return float(np.percentile(values, q)) if values else default

    # resting levels: the open eye is the typical frame (blinks are brief); the resting mouth and face are
    # the person's low values over the clip (people talk and smile between steps); the starting pose is
    # the first half second's
    eye0, yaw0 = level(seen, "eye_open", 50, 0.3), level(first, "yaw", 50, 0.0)
    mouth0, happy0 = level(seen, "mouth_open", 20, 0.3), level(seen, "happy", 20, 0.0)
    cursor, previous_t = 0, seen[0].t
    for action in actions:
        found = None
        i = cursor
        while i < len(seen) and seen[i].t <= previous_t + step_timeout:
            f = seen[i]
            if action == "blink" and f.eye_open is not None and f.eye_open < BLINK_CLOSED * eye0:
                # closed: it counts once the eyes open again soon after
                j = i + 1
                while j < len(seen) and seen[j].t <= f.t + BLINK_MAX_S:
                    if seen[j].eye_open is not None and seen[j].eye_open > BLINK_OPEN * eye0:
                        found = j
                        break
                    j += 1
            elif action != "blink" and _shows(action, f, yaw0, mouth0, happy0):
                found = i
            if found is not None:
                break
            i += 1
        if found is None:
            result.reason = f"'{action}' was not seen within {step_timeout:g} s of the previous step"
            return result
        result.completed.append({"action": action, "t": round(seen[found].t - start, 3)})
        previous_t, cursor = seen[found].t, found + 1
    scored = [f for f in frames if f.live is not None]
    if scored:
        share = float(np.mean([f.live for f in scored]))
        result.passive = {"frames": len(scored), "live_share": round(share, 3),
                          "median_score": round(float(np.median([f.live_score for f in scored])), 4)}
        if share < 0.5:
            result.reason = f"passive liveness found the face live on only {share:.0%} of the frames checked"
            return result
    result.passed = True
    return result


def read_video(path: str | Path, max_frames: int = 3000) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, BGR frame) of a video file; a missing or unreadable file is one clear error."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such video file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ImageError(f"{path}: not a video this build of OpenCV can read")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        index, any_frame = 0, False
        while index < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            any_frame = True
            yield index / fps, frame
            index += 1
        if not any_frame:
            raise ImageError(f"{path}: no frame could be decoded (empty or corrupt video)")
    finally:
        cap.release()


def video_signals(path: str | Path, analyzer: Any, passive_every: int = 10,
                  on_frame: Callable[[int], None] | None = None) -> list[FrameSignals]:
    """Per-frame signals of a video's main face. `analyzer` must have landmarks, pose and expression; the
    passive liveness part (a second analyzer attribute) is read on every `passive_every`-th frame."""
    from facelens.pipeline import main_face

    out = []
    liveness = next((p for p in analyzer.attribute_models if p.name == "liveness"), None)
    parts = [p for p in analyzer.attribute_models if p.name != "liveness"]
    for index, (t, frame) in enumerate(read_video(path)):
        faces = analyzer.detector_model.detect(frame)
        face = main_face(faces, frame.shape[1], frame.shape[0])
        if face is None:
            out.append(FrameSignals(t=t, face=False))
        else:
            for part in parts:
                part.annotate(frame, [face])
            if liveness is not None and index % passive_every == 0:
                liveness.annotate(frame, [face])
            out.append(face_signals(face, t))
        if on_frame:
            on_frame(index)
    return out


# -- sessions and signed verdicts ------------------------------------------------------------------
def new_session(n_actions: int | None = None, ttl_s: float = 120.0, rng: secrets.SystemRandom | None = None,
                now: float | None = None) -> dict[str, Any]:
    """A challenge drawn by the server: 2-4 distinct actions (blink may repeat once), a nonce, an expiry."""
    rng = rng or secrets.SystemRandom()
    n = n_actions or rng.randint(2, 4)
    if not 1 <= n <= 6:
        raise ConfigError("a session has 1-6 actions")
    pool = ["left", "right", "mouth", "smile", "blink"]
    actions = rng.sample(pool, min(n, len(pool)))
    actions += ["blink"] * (n - len(actions))
    rng.shuffle(actions)
    issued = time.time() if now is None else now
    return {"session_id": secrets.token_hex(16), "actions": actions, "issued_at": issued,
            "expires_at": issued + ttl_s}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_verdict(secret: bytes, verdict: dict[str, Any]) -> str:
    """`payload.signature`: the verdict as canonical JSON (base64url), HMAC-SHA256 with the server secret."""
    payload = _b64(json.dumps(verdict, sort_keys=True, separators=(",", ":")).encode())
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_verdict(secret: bytes, token: str) -> dict[str, Any]:
    """The verdict of a token this server signed; a forged, edited or malformed token raises."""
    try:
        payload, signature = token.strip().split(".")
        expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            raise ChallengeError("the verdict's signature does not match: forged or edited")
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ChallengeError:
        raise
    except (ValueError, UnicodeDecodeError):
        raise ChallengeError("not a verdict token (payload.signature)") from None
