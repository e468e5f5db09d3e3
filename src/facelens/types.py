"""The result currency: one `Face` per detected face, one `ImageResult` per image.

Plain dataclasses holding numpy arrays, with lossless JSON round trips so results can cross a
process, a file or an HTTP boundary without a second schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# attributes that hold (x, y) points in image pixels, scaled with the box by `Face.rescale`
POINT_ATTRIBUTES = frozenset({"dlib_shape5", "landmarks_106", "landmarks_68"})


def box_iou(a: Any, b: Any) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes (arrays or lists)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


@dataclass
class Face:
    """What is known about one face in one image.

    `bbox` is (x1, y1, x2, y2) in pixels of the original image; `landmarks` are five (x, y) points in
    the ArcFace order: left eye, right eye, nose tip, left mouth corner, right mouth corner (left and
    right as seen in the image). `embedding` is L2-normalised once a recognizer has run; `attributes`
    holds what later analysers add (pose, quality, expression, ...) keyed by name.
    """

    bbox: np.ndarray
    det_score: float
    landmarks: np.ndarray | None = None
    embedding: np.ndarray | None = None
    recognizer: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # the recognizer's un-normalised output, kept in memory (never serialised) so face quality can
    # read it without a second pass through the network
    raw_embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.bbox = np.asarray(self.bbox, dtype=np.float32).reshape(4)
        self.det_score = float(self.det_score)
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 2)
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def rescale(self, factor: float) -> None:
        """Scale box and landmarks in place (from a reduced decode back to the file's pixels)."""
        self.bbox = self.bbox * np.float32(factor)
        if self.landmarks is not None:
            self.landmarks = self.landmarks * np.float32(factor)
        for key in POINT_ATTRIBUTES & self.attributes.keys():
            self.attributes[key] = (np.asarray(self.attributes[key], dtype=np.float64) * factor).tolist()

    def to_dict(self, embedding: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "det_score": round(self.det_score, 5),
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 2).tolist(),
        }
        if embedding and self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
            out["recognizer"] = self.recognizer
        if self.attributes:
            out["attributes"] = self.attributes
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        return cls(
            bbox=np.asarray(data["bbox"], dtype=np.float32),
            det_score=data["det_score"],
            landmarks=None if data.get("landmarks") is None else np.asarray(data["landmarks"]),
            embedding=None if data.get("embedding") is None else np.asarray(data["embedding"]),
            recognizer=data.get("recognizer"),
            attributes=dict(data.get("attributes") or {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Face:
        return cls.from_dict(json.loads(text))


@dataclass
class ImageResult:
    """The faces found in one image, or the error that stopped it (never both)."""

    source: str
    faces: list[Face] = field(default_factory=list)
    width: int = 0
    height: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, embedding: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.error is not None:
            out["error"] = self.error
            return out
        out.update(width=self.width, height=self.height, faces=[f.to_dict(embedding) for f in self.faces])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageResult:
        return cls(
            source=data["source"],
            faces=[Face.from_dict(f) for f in data.get("faces", [])],
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class Verification:
    """A 1:1 decision: the cosine similarity, the threshold it was held against, and where that came from."""

    similarity: float
    threshold: float
    far: float
    same: bool
    recognizer: str
    # face quality of each side where it was measured (images; None for faces/embeddings given as such)
    quality: tuple[float | None, float | None] = (None, None)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "same": self.same,
            "similarity": round(self.similarity, 5),
            "threshold": round(self.threshold, 5),
            "far": self.far,
            "recognizer": self.recognizer,
        }
        if self.quality != (None, None):
            out["quality"] = [None if q is None else round(q, 4) for q in self.quality]
        return out
