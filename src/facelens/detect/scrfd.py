"""SCRFD (Guo et al., 2021) decoding, written here: anchors, distances to boxes, keypoints, NMS.

The network is fully convolutional, so it runs at any input whose sides are multiples of 32. We
pick the input size from the image instead of always 640x640: a 250x250 portrait detected at 256x256
costs a sixth of the work, and faces blown up past ~500 px fall outside the largest anchors and are
lost. When nothing is found at the first size, one retry at a second size catches the rest.

Large photos (`det_size="auto"`, the default). The first input's longest side is 640, so in a 3200 px
photo every face is shrunk 5x and one under ~80 px (16 px at the input, the smallest SCRFD finds
reliably) is lost without a trace. When the image is large enough for that to matter, a second, fine
pass runs on the image scaled so that a face of AUTO_SMALLEST_FACE (24) px becomes RELIABLE_FACE (16)
px: faces down to ~24 px are seen whatever the photo's size, at a cost proportional to its area
(~0.3 s for 12 MP on one core), capped at FINE_PIXELS of input (beyond ~18 MP the floor rises slowly:
~34 px at 36 MP). It runs in tiles of at most TILE px (memory stays ~100 MB whatever the image; one
4096 px input needs ~1 GB) overlapping by more than the largest face it answers for; a box touching a
tile's inner edge may be a cut face and is left to the neighbour, which holds it whole. The coarse
pass stays responsible for the faces it sees reliably, the fine pass adds the smaller ones; a box
overlapping one already kept (IoU above the NMS threshold, or mostly inside it) is dropped. No fine
pass runs when it could not add a face the first can't see: images up to ~1200 px, or a `min_face`
the first pass already resolves. An int det_size is the old single-scale behaviour at that size.
"""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np

from facelens.detect.base import AUTO, Detector, DetSize, parse_det_size
from facelens.models.runtime import onnx_session
from facelens.types import Face

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2

FIRST_SIZE = 640  # longest side of the first input with det_size="auto"
# measured on faces pasted at known sizes into a blurred background, at the network input:
# 8 px 0 %, 10 px 1 %, 12 px 86 %, 14 px 98 %, 16 px and up 100 %
RELIABLE_FACE = 16.0
AUTO_SMALLEST_FACE = 24.0  # auto mode finds faces down to about this many pixels of the image
AUTO_GAIN = 1.25  # a fine pass runs only if it sees faces at least this much larger than the first
TILE = 1024  # fine-pass tile side: per-pixel cost is flat from 640 to 1536 px, memory grows with it
FINE_PIXELS = 8_000_000  # the fine pass's input is capped at this many pixels (~0.4 s on one core)
EDGE = 4  # a fine-pass box this close to a tile's inner edge may be a cut face: the neighbour has it whole


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

    Parameters: `score_threshold` (0.5, the authors' default), `nms_threshold` (0.4), `det_size`
    ("auto": a first input of 640 px, plus the fine tiled pass on large images, see the module
    docstring; an int, a multiple of 32: the longest side of the only input, as before "auto"
    existed: 640 reproduces the old behaviour, 3200 runs a 3200 px photo at full size in one input),
    `retry_size` (second input size when nothing is found; None picks 640 for small first inputs
    and 320 for large ones), `min_face` (drop boxes whose shorter side is below this many pixels;
    with "auto" it also makes the fine pass cheaper or unnecessary), `max_faces` (keep the largest
    N; 0 keeps all), `threads` (onnxruntime intra-op threads).
    """

    name = "scrfd-500m"
    default_score_threshold, default_nms_threshold = 0.5, 0.4  # a subclass with other outputs sets its own
    rgb, pixel_mean, pixel_scale = True, 127.5, 1.0 / 128.0  # BGR -> RGB, (x - 127.5) / 128

    def __init__(
        self,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        det_size: DetSize = AUTO,
        retry_size: int | None = None,
        min_face: float = 0.0,
        max_faces: int = 0,
        threads: int = 1,
        model: str | None = None,
    ) -> None:
        # None: the model's own defaults (SCRFD: 0.5, its authors'; YuNet: see detect/yunet.py)
        self.score_threshold = self.default_score_threshold if score_threshold is None else score_threshold
        self.nms_threshold = self.default_nms_threshold if nms_threshold is None else nms_threshold
        self.det_size = parse_det_size(det_size)
        self.auto = self.det_size == AUTO
        self.max_size = FIRST_SIZE if self.auto else int(self.det_size)  # longest side of the first input
        self.retry_size = retry_size
        self.min_face = min_face
        self.max_faces = max_faces
        self.threads = threads
        self.model = model or self.name
        self._anchor_cache: dict[tuple[int, int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    # -- preprocessing -----------------------------------------------------------------------
    def _prepare(self, image: np.ndarray, in_h: int, in_w: int) -> tuple[np.ndarray, float]:
        """Resize keeping aspect into the top-left of an in_h x in_w canvas; return NCHW blob and scale."""
        h, w = image.shape[:2]
        scale = min(in_h / h, in_w / w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if scale != 1 else image
        canvas = np.zeros((in_h, in_w, 3), dtype=np.float32)
        # the network's training normalisation; the padding stays black in either
        canvas[:new_h, :new_w] = resized[:, :, ::-1] if self.rgb else resized
        if self.pixel_mean:
            canvas -= self.pixel_mean
            canvas *= self.pixel_scale
        return canvas.transpose(2, 0, 1), scale

    def _session(self) -> object:
        return onnx_session(self.model, self.threads)

    @staticmethod
    def _infer(session: object, input_name: str, batch: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for an (N, 3, H, W) batch, each indexed by batch item first."""
        return session.run(None, {input_name: batch})  # type: ignore[attr-defined]

    def _centers(self, in_h: int, in_w: int, stride: int) -> np.ndarray:
        key = (in_h, in_w, stride)
        centers = self._anchor_cache.get(key)
        if centers is None:
            centers = anchor_centers(in_h, in_w, stride)
            with self._lock:
                self._anchor_cache[key] = centers
        return centers

    # -- decoding ----------------------------------------------------------------------------
    def _decode_raw(
        self, outputs: list[np.ndarray], index: int, in_h: int, in_w: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, scores, points) of batch item `index` above the threshold, after NMS, in input pixels."""
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
        return self._suppress(all_scores, all_boxes, all_points)

    def _suppress(self, all_scores: list[np.ndarray], all_boxes: list[np.ndarray], all_points: list[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The levels' candidates joined and thinned by NMS: (boxes, scores, points)."""
        if not all_scores:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        scores = np.concatenate(all_scores)
        boxes = np.concatenate(all_boxes)
        points = np.concatenate(all_points)
        kept = nms(boxes, scores, self.nms_threshold)
        return boxes[kept], scores[kept], points[kept]

    def _finish(
        self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, image_hw: tuple[int, int], limit: bool
    ) -> list[Face]:
        """Boxes clipped to the image, `min_face` applied (and `max_faces` if `limit`), as `Face`s."""
        h, w = image_hw
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        valid = sides >= max(self.min_face, 1.0)
        boxes, scores, points = boxes[valid], scores[valid], points[valid]
        faces = [Face(bbox=b, det_score=float(s), landmarks=p) for b, s, p in zip(boxes, scores, points, strict=True)]
        return self._largest(faces) if limit else faces

    def _largest(self, faces: list[Face]) -> list[Face]:
        """The `max_faces` largest faces (in their given order), or all when `max_faces` is 0."""
        if not self.max_faces or len(faces) <= self.max_faces:
            return faces
        areas = np.array([f.area for f in faces])
        largest = np.sort(np.argsort(-areas, kind="stable")[: self.max_faces])
        return [faces[i] for i in largest]

    def decode(
        self, outputs: list[np.ndarray], index: int, in_h: int, in_w: int, scale: float, image_hw: tuple[int, int],
        limit: bool = True,
    ) -> list[Face]:
        """Faces of batch item `index` from raw network outputs, in original image coordinates.

        `limit=False` leaves `max_faces` to the caller (applied once, after passes are merged)."""
        boxes, scores, points = self._decode_raw(outputs, index, in_h, in_w)
        return self._finish(boxes / scale, scores, points / scale, image_hw, limit)

    def _run(
        self, images: list[np.ndarray], shapes: list[tuple[int, int]], limit: bool = True
    ) -> list[list[Face]]:
        """Detect each image at its input shape, batching images whose shapes are equal."""
        session = self._session()
        input_name = session.get_inputs()[0].name
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
        results: list[list[Face]] = [[] for _ in images]
        for (in_h, in_w), members in groups.items():
            blobs, scales = zip(*(self._prepare(images[i], in_h, in_w) for i in members), strict=True)
            outputs = self._infer(session, input_name, np.stack(blobs))
            for j, i in enumerate(members):
                results[i] = self.decode(outputs, j, in_h, in_w, scales[j], images[i].shape[:2], limit)
        return results

    def _retry_shape(self, first: tuple[int, int], image: np.ndarray) -> tuple[int, int]:
        # a small first input is enlarged to find small faces; a large one shrunk to catch huge faces
        size = self.retry_size or (self.max_size if max(first) < self.max_size else self.max_size // 2)
        return input_size_for(*image.shape[:2], max_size=size, enlarge=True)

    # -- the fine pass on large images (det_size="auto") ---------------------------------------
    def fine_scale(self, image_hw: tuple[int, int]) -> float:
        """Scale of the fine pass for an image of this size, or 0 when none runs: a face of
        max(AUTO_SMALLEST_FACE, min_face) px becomes RELIABLE_FACE px, never enlarging the image nor
        going over FINE_PIXELS (so above 18 MP the smallest face found grows as the square root); it
        runs only when it sees faces at least AUTO_GAIN x larger than the first pass does."""
        if not self.auto:
            return 0.0
        h, w = image_hw
        in_h, in_w = input_size_for(h, w, max_size=self.max_size)
        first = min(in_h / h, in_w / w)
        fine = min(1.0, RELIABLE_FACE / max(AUTO_SMALLEST_FACE, float(self.min_face)),
                   math.sqrt(FINE_PIXELS / (h * w)))
        return fine if fine >= AUTO_GAIN * first else 0.0

    @staticmethod
    def _tiles(length: int, overlap: int) -> tuple[list[int], int]:
        """(starts, side) of the fewest equal tiles of at most TILE px covering [0, length), consecutive
        ones overlapping by at least `overlap`, each no larger than that needs (multiple of 32)."""
        if length <= TILE:
            return [0], length
        n = math.ceil((length - overlap) / (TILE - overlap))
        side = min(TILE, math.ceil((length + (n - 1) * overlap) / n / 32) * 32)
        return [round(i * (length - side) / (n - 1)) for i in range(n)], side

    def _fine_pass(
        self, image: np.ndarray, scale: float, first_scale: float
    ) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """(box, score, points) in image pixels of the faces the fine pass answers for: those smaller
        than AUTO_GAIN x what the first pass sees reliably, whole inside a tile."""
        h, w = image.shape[:2]
        fine_h, fine_w = max(1, round(h * scale)), max(1, round(w * scale))
        work = image if scale == 1.0 else cv2.resize(image, (fine_w, fine_h), interpolation=cv2.INTER_AREA)
        # the largest face this pass answers for, in its pixels; the overlap must hold it whole
        largest = AUTO_GAIN * RELIABLE_FACE * scale / first_scale
        overlap = min(TILE // 2, max(64, math.ceil((largest + 2 * EDGE) / 32) * 32))
        (ys, tile_h), (xs, tile_w) = self._tiles(fine_h, overlap), self._tiles(fine_w, overlap)
        session = self._session()
        input_name = session.get_inputs()[0].name
        found: list[tuple[np.ndarray, float, np.ndarray]] = []
        for y0 in ys:
            for x0 in xs:
                tile = work[y0 : y0 + tile_h, x0 : x0 + tile_w]
                in_h, in_w = math.ceil(tile.shape[0] / 32) * 32, math.ceil(tile.shape[1] / 32) * 32
                blob, _ = self._prepare(self._pad(tile, in_h, in_w), in_h, in_w)
                outputs = self._infer(session, input_name, blob[None])
                boxes, scores, points = self._decode_raw(outputs, 0, in_h, in_w)
                # inner edges only: at the image's own border a box is as whole as it can be
                lo = np.array([EDGE if x0 > 0 else -np.inf, EDGE if y0 > 0 else -np.inf])
                hi = np.array([tile_w - EDGE if x0 + tile_w < fine_w else np.inf,
                               tile_h - EDGE if y0 + tile_h < fine_h else np.inf])
                offset = np.array([x0, y0], dtype=np.float32)
                for box, score, pts in zip(boxes, scores, points, strict=True):
                    if max(box[2] - box[0], box[3] - box[1]) > largest:
                        continue  # the first pass's face
                    if np.any(box[:2] < lo) or np.any(box[2:] > hi):
                        continue  # maybe cut by the tile: whole in its neighbour, which reports it
                    found.append(((box + np.tile(offset, 2)) / scale, float(score), (pts + offset) / scale))
        return found

    @staticmethod
    def _pad(tile: np.ndarray, in_h: int, in_w: int) -> np.ndarray:
        """The tile in the top-left of a black in_h x in_w canvas: no resizing, so its scale stays 1."""
        if tile.shape[:2] == (in_h, in_w):
            return tile
        canvas = np.zeros((in_h, in_w, 3), dtype=tile.dtype)
        canvas[: tile.shape[0], : tile.shape[1]] = tile
        return canvas

    def _merge(self, coarse: list[Face], first_scale: float, fine: list[tuple[np.ndarray, float, np.ndarray]],
               image_hw: tuple[int, int]) -> list[Face]:
        """The coarse pass's faces it sees reliably first, then the fine pass's, then the coarse pass's
        smallest; each dropped if it overlaps one already kept (IoU above the NMS threshold, or more than
        half of either box inside the other)."""
        fine_faces = self._finish(
            np.array([f[0] for f in fine], np.float32).reshape(-1, 4), np.array([f[1] for f in fine], np.float32),
            np.array([f[2] for f in fine], np.float32).reshape(-1, 5, 2), image_hw, limit=False,
        ) if fine else []
        reliable = [f for f in coarse if min(f.width, f.height) * first_scale >= RELIABLE_FACE]
        small = [f for f in coarse if min(f.width, f.height) * first_scale < RELIABLE_FACE]
        ordered = (sorted(reliable, key=lambda f: -f.det_score) + sorted(fine_faces, key=lambda f: -f.det_score)
                   + sorted(small, key=lambda f: -f.det_score))
        kept: list[Face] = []
        kept_boxes = np.zeros((0, 4))
        for face in ordered:
            if len(kept_boxes):
                b = np.asarray(face.bbox, dtype=np.float64)
                iw = np.maximum(0.0, np.minimum(b[2], kept_boxes[:, 2]) - np.maximum(b[0], kept_boxes[:, 0]))
                ih = np.maximum(0.0, np.minimum(b[3], kept_boxes[:, 3]) - np.maximum(b[1], kept_boxes[:, 1]))
                inter = iw * ih
                area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
                areas = np.maximum((kept_boxes[:, 2] - kept_boxes[:, 0]) * (kept_boxes[:, 3] - kept_boxes[:, 1]), 1e-9)
                iou = inter / (area + areas - inter)
                inside = inter / np.minimum(area, areas)
                if np.any(iou > self.nms_threshold) or np.any(inside > 0.5):
                    continue
            kept.append(face)
            kept_boxes = np.vstack([kept_boxes, np.asarray(face.bbox, dtype=np.float64)[None]])
        return kept

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        shapes = [input_size_for(*im.shape[:2], max_size=self.max_size) for im in images]
        results = self._run(images, shapes, limit=False)
        retry: list[int] = []
        retry_shapes: list[tuple[int, int]] = []
        for i, faces in enumerate(results):
            shape = self._retry_shape(shapes[i], images[i]) if not faces else shapes[i]
            if shape != shapes[i]:
                retry.append(i)
                retry_shapes.append(shape)
        if retry:
            for i, faces in zip(retry, self._run([images[i] for i in retry], retry_shapes, limit=False), strict=True):
                results[i] = faces
        for i, image in enumerate(images):
            scale = self.fine_scale(image.shape[:2])
            if scale:
                h, w = image.shape[:2]
                first_scale = min(shapes[i][0] / h, shapes[i][1] / w)
                fine = self._fine_pass(image, scale, first_scale)
                results[i] = self._merge(results[i], first_scale, fine, (h, w))
        out = []
        for faces in results:
            faces.sort(key=lambda f: -f.det_score)
            out.append(self._largest(faces))
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]
