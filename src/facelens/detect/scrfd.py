"""SCRFD (Guo et al., 2021) decoding, written here: anchors, distances to boxes, keypoints, NMS.

The network is fully convolutional, so it runs at any input whose sides are multiples of 32. We
pick the input size from the image instead of always 640x640: a 250x250 portrait detected at 256x256
costs a sixth of the work, and faces blown up past ~500 px fall outside the largest anchors and are
lost. When nothing is found at the first size, one retry at a second size catches the rest.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from facelens.detect.base import Detector
from facelens.models.runtime import onnx_session
from facelens.types import Face

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


def input_size_for(height: int, width: int, max_size: int = 640, enlarge: bool = False) -> tuple[int, int]:
    """(H, W) of the network input: the image scaled so its longest side fits `max_size` (enlarged only
    if `enlarge`), each side rounded up to a multiple of 32."""
    scale = max_size / max(height, width)
    if not enlarge:
        scale = min(1.0, scale)
    in_h = max(32, math.ceil(height * scale / 32) * 32)
    in_w = max(32, math.ceil(width * scale / 32) * 32)
    return in_h, in_w


def anchor_centers(in_h: int, in_w: int, stride: int) -> np.ndarray:
    """(N*2, 2) (x, y) centres of every anchor at one stride, row-major, two anchors per cell."""
    rows, cols = in_h // stride, in_w // stride
    ys, xs = np.mgrid[:rows, :cols]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, ANCHORS_PER_CELL, axis=0)


def distance_to_box(centers: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) from distances (left, top, right, bottom) to an anchor centre."""
    return np.concatenate([centers - distances[:, :2], centers + distances[:, 2:4]], axis=1)


def distance_to_points(centers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Keypoints (N, K, 2) from per-anchor offsets (N, 2K) relative to the centre."""
    return centers[:, None, :] + offsets.reshape(len(offsets), -1, 2)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class SCRFD(Detector):
    """SCRFD-500M with five keypoints.

    Parameters: `score_threshold` (0.5, the authors' default), `nms_threshold` (0.4), `max_size`
    (longest side of the first input, 640), `retry_size` (second input size when nothing is found;
    None picks 640 for small first inputs and 320 for large ones), `min_face` (drop boxes whose
    shorter side is below this many pixels), `max_faces` (keep the largest N; 0 keeps all),
    `threads` (onnxruntime intra-op threads).
    """

    name = "scrfd-500m"

    def __init__(
        self,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_size: int = 640,
        retry_size: int | None = None,
        min_face: float = 0.0,
        max_faces: int = 0,
        threads: int = 1,
        model: str = "scrfd-500m",
    ) -> None:
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.retry_size = retry_size
        self.min_face = min_face
        self.max_faces = max_faces
        self.threads = threads
        self.model = model
        self._anchor_cache: dict[tuple[int, int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    # -- preprocessing -----------------------------------------------------------------------
    @staticmethod
    def _prepare(image: np.ndarray, in_h: int, in_w: int) -> tuple[np.ndarray, float]:
        """Resize keeping aspect into the top-left of an in_h x in_w canvas; return NCHW blob and scale."""
        h, w = image.shape[:2]
        scale = min(in_h / h, in_w / w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if scale != 1 else image
        canvas = np.zeros((in_h, in_w, 3), dtype=np.float32)
        # BGR -> RGB, (x - 127.5) / 128: the network's training normalisation
        canvas[:new_h, :new_w] = resized[:, :, ::-1]
        canvas -= 127.5
        canvas *= 1.0 / 128.0
        return canvas.transpose(2, 0, 1), scale

    def _centers(self, in_h: int, in_w: int, stride: int) -> np.ndarray:
        key = (in_h, in_w, stride)
        centers = self._anchor_cache.get(key)
        if centers is None:
            centers = anchor_centers(in_h, in_w, stride)
            with self._lock:
                self._anchor_cache[key] = centers
        return centers

    # -- decoding ----------------------------------------------------------------------------
    def decode(
        self, outputs: list[np.ndarray], index: int, in_h: int, in_w: int, scale: float, image_hw: tuple[int, int]
    ) -> list[Face]:
        """Faces of batch item `index` from raw network outputs, in original image coordinates."""
        levels = len(STRIDES)
        all_scores, all_boxes, all_points = [], [], []
        for level, stride in enumerate(STRIDES):
            scores = outputs[level][index].reshape(-1)
            keep = np.nonzero(scores >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            centers = self._centers(in_h, in_w, stride)[keep]
            distances = outputs[levels + level][index][keep] * stride
            offsets = outputs[2 * levels + level][index][keep] * stride
            all_scores.append(scores[keep])
            all_boxes.append(distance_to_box(centers, distances))
            all_points.append(distance_to_points(centers, offsets))
        if not all_scores:
            return []
        scores = np.concatenate(all_scores)
        boxes = np.concatenate(all_boxes) / scale
        points = np.concatenate(all_points) / scale
        kept = nms(boxes, scores, self.nms_threshold)
        boxes, scores, points = boxes[kept], scores[kept], points[kept]
        h, w = image_hw
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        valid = sides >= max(self.min_face, 1.0)
        boxes, scores, points = boxes[valid], scores[valid], points[valid]
        if self.max_faces and len(boxes) > self.max_faces:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            largest = np.sort(np.argsort(-areas, kind="stable")[: self.max_faces])
            boxes, scores, points = boxes[largest], scores[largest], points[largest]
        return [Face(bbox=b, det_score=float(s), landmarks=p) for b, s, p in zip(boxes, scores, points, strict=True)]

    def _run(self, images: list[np.ndarray], shapes: list[tuple[int, int]]) -> list[list[Face]]:
        """Detect each image at its input shape, batching images whose shapes are equal."""
        session = onnx_session(self.model, self.threads)
        input_name = session.get_inputs()[0].name
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
        results: list[list[Face]] = [[] for _ in images]
        for (in_h, in_w), members in groups.items():
            blobs, scales = zip(*(self._prepare(images[i], in_h, in_w) for i in members), strict=True)
            outputs = session.run(None, {input_name: np.stack(blobs)})
            for j, i in enumerate(members):
                results[i] = self.decode(outputs, j, in_h, in_w, scales[j], images[i].shape[:2])
        return results

    def _retry_shape(self, first: tuple[int, int], image: np.ndarray) -> tuple[int, int]:
        # a small first input is enlarged to find small faces; a large one shrunk to catch huge faces
        size = self.retry_size or (self.max_size if max(first) < self.max_size else self.max_size // 2)
        return input_size_for(*image.shape[:2], max_size=size, enlarge=True)

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        shapes = [input_size_for(*im.shape[:2], max_size=self.max_size) for im in images]
        results = self._run(images, shapes)
        retry: list[int] = []
        retry_shapes: list[tuple[int, int]] = []
        for i, faces in enumerate(results):
            shape = self._retry_shape(shapes[i], images[i]) if not faces else shapes[i]
            if shape != shapes[i]:
                retry.append(i)
                retry_shapes.append(shape)
        if retry:
            for i, faces in zip(retry, self._run([images[i] for i in retry], retry_shapes), strict=True):
                results[i] = faces
        for faces in results:
            faces.sort(key=lambda f: -f.det_score)
        return results

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]
