"""onnxruntime sessions, one per (model, thread count) per process."""

from __future__ import annotations

import threading

import onnxruntime as ort

from facelens.models.store import model_path
from facelens.profile import check_allowed

_SESSIONS: dict[tuple[str, int], ort.InferenceSession] = {}
_LOCK = threading.Lock()


def onnx_session(name: str, threads: int = 1) -> ort.InferenceSession:
    """A cached CPU session. One intra-op thread by default: on small models it is as fast as two,
    and leaves the other core for a second image."""
    check_allowed(name)  # also for a cached session: the profile may have changed since it was opened
    key = (name, threads)
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(0, int(threads))
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            session = ort.InferenceSession(
                str(model_path(name)), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            _SESSIONS[key] = session
        return session


def clear_sessions() -> None:
    """Forget every cached session (a profile change: nothing opened before may be used after)."""
    with _LOCK:
        _SESSIONS.clear()
