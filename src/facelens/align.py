"""Alignment: a similarity transform from five landmarks to the ArcFace 112x112 template.

The transform is the least-squares similarity (Umeyama, 1991): rotation, uniform scale and
translation, no shear, so a face is never distorted to fit the template.
"""

from __future__ import annotations

import cv2
import numpy as np

# The reference points the ArcFace models were trained with (InsightFace's `arcface_dst`), in a
# 112x112 crop: left eye, right eye, nose tip, left mouth corner, right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112

# Where SCRFD puts the five points inside FER-2013's 48x48 crops (median over 2,032 Training crops,
# `scripts/measure_fer_framing.py`): FER-2013 was cut by a face detector's box, tighter than the ArcFace
# framing (inter-ocular distance 18.1 of 48 px vs 35.2 of 112). Expression models trained on FER-style
# crops are fed photos warped onto this framing; a face crop given whole (`crops=True`) without
# detectable points gets these points as its landmarks.
FER_TEMPLATE = np.array(
    [
        [14.82, 18.70],
        [33.09, 18.41],
        [24.09, 28.78],
        [17.14, 36.63],
        [31.51, 36.33],
    ],
    dtype=np.float32,
)
FER_SIZE = 48


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M minimising sum ||M [src;1] - dst||^2 over similarities (Umeyama).

    Needs at least two distinct points; with reflection excluded (det of the rotation is +1).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("similarity_transform needs two equal-length sets of at least 2 points")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rotation = u @ d @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(s) @ d) / src_var) if src_var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix.astype(np.float32)


def estimate_norm(landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """Transform taking five ArcFace-order landmarks to the template scaled to `size`."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    return similarity_transform(landmarks, template)


def norm_crop(image: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The aligned size x size crop of the face whose five landmarks are given."""
    matrix = estimate_norm(landmarks, size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (points @ matrix[:, :2].T.astype(np.float64) + matrix[:, 2]).astype(np.float32)


def loose_crop(image: np.ndarray, landmarks: np.ndarray, size: int, margin: float = 1.2) -> np.ndarray:
    """An aligned crop with the ArcFace framing shrunk by `margin` and centred: the face upright, with
    some forehead, chin and cheeks around it, as face-attribute models (trained on looser crops than
    a recognizer's) expect."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE / margin) + size * (1 - 1 / margin) / 2
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def template_crop(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, template_size: int,
                  size: int) -> np.ndarray:
    """The face warped (similarity) so its five points land on `template` (given for a square of
    `template_size`), output `size` x `size`; borders replicated, as a crop cut from a larger photo would be."""
    matrix = similarity_transform(landmarks, template * np.float32(size / template_size))
    # warpAffine samples points; a face shrunk several times over would alias, so warp at up to 4x the
    # size and average down (what a dataset's own downscaling did)
    shrink = 1.0 / max(float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))), 1e-6)
    over = int(min(4, max(1, np.ceil(shrink))))
    if over == 1:
        return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    big = cv2.warpAffine(image, matrix * np.float32(over), (size * over,) * 2,
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
