"""The systems the pipeline benchmark runs, behind one small interface, plus the measuring helpers.

Each system is measured in its own worker process (see bench_pipeline.py), so a worker imports
only the library it measures; every import here of a face library is inside the class using it.

All systems decode the same way: `facelens.io.load_image` (Pillow, EXIF orientation applied,
contiguous BGR uint8), timed as part of end-to-end. face_recognition gets the RGB copy it expects.
"""

from __future__ import annotations

import os
import resource
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Work per network run (multiply-accumulates). SCRFD-500M scales with input pixels: 0.51 GMAC at
# 640x640 (0.08 at 256x256); MobileFaceNet (w600k_mbf) is 0.44 GMAC per 112x112 face.
DET_GMAC_640 = 0.51
REC_GMAC = 0.44

DET_FILE = "scrfd_500m_bnkps.onnx"
REC_FILE = "w600k_mbf.onnx"


@dataclass
class Faces:
    """The faces one system found in one image, as plain arrays."""

    boxes: np.ndarray  # (k, 4) x1, y1, x2, y2
    scores: np.ndarray  # (k,)
    kps: np.ndarray  # (k, 5, 2); zeros where a system gives none
    emb: np.ndarray  # (k, D), L2-normalised

    @staticmethod
    def empty(dim: int) -> Faces:
        return Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                     np.zeros((0, 5, 2), np.float32), np.zeros((0, dim), np.float32))


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    VmHWM from /proc/self/status: it starts afresh at exec. ru_maxrss does not (Linux carries the
    parent's RSS at fork into a child's ru_maxrss), so it is only the fallback off Linux.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def system_busy_seconds() -> float | None:
    """CPU seconds all CPUs have spent busy since boot (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class OrtCounter:
    """Counts the network work every onnxruntime session in this process runs, by input shape.

    Installed by patching `InferenceSession.run` at class level (benchmark-only instrumentation; the
    cost is one Python call and a shape read per run). A 112x112 input is the recognizer, anything
    else the detector, whose work scales with its input pixels. It also records the intra-op thread
    count each session was built with, so the report can say what actually ran.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        self.session_threads: dict[str, set[int]] = {"det": set(), "rec": set()}

    def reset(self) -> None:
        with self.lock:
            self.det_gmac = 0.0
            self.rec_gmac = 0.0
            self.det_runs = 0
            self.rec_faces = 0

    def install(self) -> None:
        from onnxruntime.capi.onnxruntime_inference_collection import InferenceSession

        original = InferenceSession.run
        counter = self

        def run(sess: Any, output_names: Any, input_feed: dict[str, Any], run_options: Any = None) -> Any:
            shape = next(iter(input_feed.values())).shape
            kind = "rec" if tuple(shape[-2:]) == (112, 112) else "det"
            with counter.lock:
                if kind == "rec":
                    counter.rec_gmac += REC_GMAC * shape[0]
                    counter.rec_faces += int(shape[0])
                else:
                    counter.det_gmac += DET_GMAC_640 * shape[0] * shape[-2] * shape[-1] / (640 * 640)
                    counter.det_runs += int(shape[0])
                if not getattr(sess, "_bench_seen", False):
                    counter.session_threads[kind].add(int(sess.get_session_options().intra_op_num_threads))
                    sess._bench_seen = True
            return original(sess, output_names, input_feed, run_options)

        InferenceSession.run = run  # type: ignore[method-assign]

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return {"det_gmac": self.det_gmac, "rec_gmac": self.rec_gmac, "det_runs": self.det_runs,
                    "rec_faces": self.rec_faces}


def load_bgr(path: str) -> np.ndarray:
    from facelens.io import load_image

    return load_image(path)


class Peer(ABC):
    """One system under test. `e2e` includes decoding; the other methods take decoded BGR arrays."""

    name = ""
    dim = 512
    can_split = True  # detection and embedding can be timed apart

    @abstractmethod
    def load(self, threads: int, **options: Any) -> None:
        ...

    @abstractmethod
    def e2e(self, paths: Sequence[str], budget_s: float | None = None) -> list[Faces]:
        ...

    def detect(self, img: np.ndarray) -> list[Any]:
        raise TypeError(f"{self.name} cannot time detection and embedding apart (can_split is False)")

    def embed_one(self, img: np.ndarray, det: Any) -> np.ndarray:
        """Align and embed one face at batch 1, as the pipeline does."""
        raise TypeError(f"{self.name} cannot time detection and embedding apart (can_split is False)")

    def align(self, img: np.ndarray, dets: list[Any]) -> np.ndarray:
        raise TypeError(f"{self.name} cannot time detection and embedding apart (can_split is False)")

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embed aligned 112x112 BGR crops in batches."""
        raise TypeError(f"{self.name} cannot time detection and embedding apart (can_split is False)")

    def describe(self) -> dict[str, Any]:
        return {}


class FacelensPeer(Peer):
    """facelens.FaceAnalyzer: `threads` images at once, each session one intra-op thread.

    `decode_size=0` makes FaceAnalyzer decode every file in full, exactly as `load_image` does for the
    other systems; facelens' default decodes big JPEGs at a reduced scale (Pillow's draft mode).
    """

    name = "facelens"

    def load(self, threads: int, **options: Any) -> None:
        import inspect

        from facelens import FaceAnalyzer

        self.threads = threads
        kwargs: dict[str, Any] = {}
        accepted = inspect.signature(FaceAnalyzer).parameters
        if options.get("decode_size") is not None and "decode_size" in accepted:
            kwargs["decode_size"] = options["decode_size"]
        self.fa = FaceAnalyzer(detector="scrfd-500m", recognizer="arcface-mbf", threads=threads, **kwargs)
        self.fa.check_models(embed=True)
        self.rec = self.fa.recognizer_model

    def _faces(self, faces: list[Any]) -> Faces:
        if not faces:
            return Faces.empty(self.dim)
        return Faces(
            boxes=np.stack([f.bbox for f in faces]).astype(np.float32),
            scores=np.asarray([f.det_score for f in faces], np.float32),
            kps=np.stack([f.landmarks for f in faces]).astype(np.float32),
            emb=l2n(np.stack([f.embedding for f in faces])),
        )

    def e2e(self, paths: Sequence[str], budget_s: float | None = None) -> list[Faces]:
        results = self.fa.analyze_batch(list(paths))
        bad = [r for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"facelens failed on {len(bad)} images, e.g. {bad[0].source}: {bad[0].error}")
        return [self._faces(r.faces) for r in results]

    def detect(self, img: np.ndarray) -> list[Any]:
        return self.fa.detect(img)

    def embed_one(self, img: np.ndarray, det: Any) -> np.ndarray:
        return self.rec.embed_faces(img, [det])[0]

    def align(self, img: np.ndarray, dets: list[Any]) -> np.ndarray:
        return self.rec.align(img, dets)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.rec.embed_crops(crops)

    def describe(self) -> dict[str, Any]:
        det = self.fa.detector_model
        return {"api": f"FaceAnalyzer(threads={self.threads}).analyze_batch(paths)",
                "workers": self.fa.n_threads, "decode_size": getattr(self.fa, "decode_size", None),
                "det_max_size": getattr(det, "max_size", None),
                "det_threshold": getattr(det, "score_threshold", None),
                "rec_batch_size": getattr(self.rec, "batch_size", None)}


def insightface_model_dir(root: Path, det: Path, rec: Path, name: str = "facelens-pair") -> Path:
    """`root/models/<name>/` holding only facelens' two ONNX files (symlinked), for FaceAnalysis.

    FaceAnalysis(name, root) loads every *.onnx in root/models/name (it never downloads when that
    folder exists) and routes each by its graph: 9 outputs -> SCRFD, a 112x112 input -> ArcFace.
    """
    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    for src in (det, rec):
        link = folder / src.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src.resolve())
    return folder


class InsightFacePeer(Peer):
    """insightface.app.FaceAnalysis on the same two ONNX files, det_size=(640, 640), det_thresh 0.5.

    Threads: onnxruntime intra-op threads, set through the `sess_options` keyword FaceAnalysis passes
    to every session it builds (including SCRFD's 640x640 static-shape session, which copies the
    options of the session it derives from). threads=0 passes no options: onnxruntime's default, one
    thread per physical core.
    """

    name = "insightface"

    def __init__(self, root: str, model_name: str = "facelens-pair") -> None:
        self.root = root
        self.model_name = model_name

    def load(self, threads: int, **options: Any) -> None:
        warnings.filterwarnings("ignore", category=FutureWarning)  # skimage's estimate() deprecation
        import onnxruntime as ort
        from insightface.app import FaceAnalysis

        kwargs: dict[str, Any] = {"providers": ["CPUExecutionProvider"]}
        if threads > 0:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            kwargs["sess_options"] = opts
        self.threads = threads
        self.app = FaceAnalysis(name=self.model_name, root=self.root,
                                allowed_modules=["detection", "recognition"], **kwargs)
        self.app.prepare(ctx_id=-1, det_size=(640, 640))
        self.rec = self.app.models["recognition"]
        self.det = self.app.det_model

    def _faces(self, faces: list[Any]) -> Faces:
        if not faces:
            return Faces.empty(self.dim)
        return Faces(
            boxes=np.stack([f.bbox for f in faces]).astype(np.float32),
            scores=np.asarray([f.det_score for f in faces], np.float32),
            kps=np.stack([f.kps for f in faces]).astype(np.float32),
            emb=l2n(np.stack([f.embedding for f in faces])),
        )

    def e2e(self, paths: Sequence[str], budget_s: float | None = None) -> list[Faces]:
        return [self._faces(self.app.get(load_bgr(p))) for p in paths]

    def detect(self, img: np.ndarray) -> list[Any]:
        from insightface.app.common import Face

        bboxes, kpss = self.det.detect(img, max_num=0, metric="default")
        return [Face(bbox=bboxes[i, :4], kps=kpss[i], det_score=bboxes[i, 4]) for i in range(len(bboxes))]

    def embed_one(self, img: np.ndarray, det: Any) -> np.ndarray:
        return self.rec.get(img, det)

    def align(self, img: np.ndarray, dets: list[Any]) -> np.ndarray:
        from insightface.utils import face_align

        return np.stack([face_align.norm_crop(img, landmark=d.kps, image_size=112) for d in dets])

    def embed_crops(self, crops: np.ndarray, batch: int = 32) -> np.ndarray:
        # ArcFaceONNX.get_feat takes a list (cv2.dnn.blobFromImages); FaceAnalysis.get never uses it
        out = [self.rec.get_feat(list(crops[i : i + batch])) for i in range(0, len(crops), batch)]
        return l2n(np.concatenate(out))

    def describe(self) -> dict[str, Any]:
        import insightface

        return {"api": "FaceAnalysis(...).get(img) per image", "version": insightface.__version__,
                "det_size": list(self.app.det_size), "det_thresh": self.app.det_thresh,
                "det_sessions": [list(k) for k in self.det.resolution_session_input_sizes]}


class FaceRecognitionPeer(Peer):
    """face_recognition: face_locations (HOG, upsample 1) then face_encodings (dlib ResNet, 5 points)."""

    name = "face_recognition"
    dim = 128
    can_split = False

    def load(self, threads: int, **options: Any) -> None:
        import face_recognition

        self.fr = face_recognition
        self.threads = threads

    def e2e(self, paths: Sequence[str], budget_s: float | None = None) -> list[Faces]:
        out: list[Faces] = []
        start = time.perf_counter()
        for p in paths:
            if budget_s is not None and out and time.perf_counter() - start > budget_s:
                break
            rgb = np.ascontiguousarray(load_bgr(p)[:, :, ::-1])
            locs = self.fr.face_locations(rgb)
            encs = self.fr.face_encodings(rgb, known_face_locations=locs)
            if not locs:
                out.append(Faces.empty(self.dim))
                continue
            boxes = np.asarray([[left, top, right, bottom] for top, right, bottom, left in locs], np.float32)
            out.append(Faces(boxes, np.ones(len(locs), np.float32), np.zeros((len(locs), 5, 2), np.float32),
                             l2n(np.stack(encs))))
        return out

    def describe(self) -> dict[str, Any]:
        import importlib.metadata as md

        import dlib

        return {"api": "face_locations(rgb) + face_encodings(rgb, locations)",
                "version": md.version("face-recognition"), "dlib": dlib.__version__,
                "dlib_threads": "dlib's own (single-threaded HOG)"}


def make_peer(name: str, models_root: str | None = None) -> Peer:
    if name == "facelens":
        return FacelensPeer()
    if name == "insightface":
        if models_root is None:
            raise ValueError("insightface needs the model root")
        return InsightFacePeer(models_root)
    if name == "face_recognition":
        return FaceRecognitionPeer()
    raise ValueError(f"unknown system {name!r}")


def pin_to_one_cpu() -> int | None:
    """Restrict this process to one CPU (for the 1-thread configurations); returns the CPU used."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]
