"""onnxruntime sessions, one per (model, thread count) per process; TFLite interpreters, one per model per thread."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import onnxruntime as ort

from facelens.models.graph import DISABLED_OPTIMIZERS, fast_graph
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
            path = model_path(name)
            # the load-time rewrites (models/graph.py: PRelu) when the graph has something to rewrite
            source = fast_graph(path) if path.suffix == ".onnx" else None
            session = ort.InferenceSession(
                source or str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                disabled_optimizers=DISABLED_OPTIMIZERS,
            )
            _SESSIONS[key] = session
        return session


_TFLITE = threading.local()  # per thread: {model name: interpreter}


def tflite_interpreter(name: str) -> Any:
    """The calling thread's TFLite interpreter for a model (an interpreter is not thread-safe), one per model
    per thread for the whole process like the onnxruntime sessions, created on first use; run with
    ai-edge-litert."""
    check_allowed(name)  # also for a kept one: the profile may have changed since
    kept = _TFLITE.__dict__.setdefault("interpreters", {})
    interp = kept.get(name)
    if interp is None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from facelens.errors import FacelensError

            raise FacelensError(f"{name} needs ai-edge-litert; run `pip install ai-edge-litert`") from None
        path = str(model_path(name))
        with _LOCK, _quiet_stderr():  # TFLite's C++ log ("INFO: Created ... XNNPACK delegate") would mix into output
            interp = Interpreter(model_path=path, num_threads=1)
            interp.allocate_tensors()
        kept[name] = interp
    return interp


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null for the block (C++ code writes there, below Python's sys.stderr)."""
    with contextlib.suppress(AttributeError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all (a daemon): nothing to quiet
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
