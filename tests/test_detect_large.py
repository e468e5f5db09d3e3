"""Small faces in large photos (issue 9): det_size "auto" runs a tiled fine pass; an int is the old single scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelens import FaceAnalyzer
from facelens.detect import create_detector
from facelens.detect.scrfd import SCRFD
from facelens.errors import ConfigError
from facelens.io import load_image

SOURCE = "groups/CompreFace__016_8.jpg"  # 800x533, 8 faces of 25-33 px


@pytest.fixture(scope="module")
def tiled(data, tmp_path_factory):
    """tiled.jpg: the group photo 4x4 (3200x2132, 128 faces), and the known face centres."""
    src = load_image(data / SOURCE)
    ref = SCRFD(det_size=640).detect(src)
    assert len(ref) == 8
    h, w = src.shape[:2]
    path = tmp_path_factory.mktemp("large") / "tiled.jpg"
    cv2.imwrite(str(path), np.tile(src, (4, 4, 1)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    boxes = np.array([f.bbox + np.array([j * w, i * h] * 2) for i in range(4) for j in range(4) for f in ref])
    return path, boxes


@pytest.fixture(scope="module")
def fa():
    return FaceAnalyzer(threads=1)


def matched(faces, boxes) -> np.ndarray:
    """For each known box, the distance from its centre to the nearest detection's centre."""
    got = np.array([[(f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2] for f in faces]).reshape(-1, 2)
    want = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    return np.linalg.norm(want[:, None] - got[None], axis=2).min(axis=1) if len(got) else np.full(len(want), np.inf)


def test_auto_finds_the_tiled_crowd_in_original_pixels(fa, tiled):
    path, boxes = tiled
    faces = fa.detect(path)
    # measured: 128 of 128, no extra detection; floor with margin
    assert len(faces) >= 122 and len(faces) <= 130
    dist = matched(faces, boxes)
    assert (dist < 4).sum() >= 122  # centres within 4 px of the tile offsets: boxes in the file's pixels
    for face in faces:
        assert 18 < face.width < 45  # the source's faces are 25-33 px, not rescaled


def test_fixed_640_is_the_old_behaviour(tiled):
    path, _ = tiled
    old = FaceAnalyzer(threads=1, det_size=640)
    assert old.decode_size == 2048
    assert len(old.detect(path)) < 30  # measured 14 of 128, as the issue reported


def test_small_face_in_large_photo(data, fa, tmp_path):
    src = load_image(data / "identities/face-apijs-bbt_amy/01.png")
    face = SCRFD(det_size=640).detect(src)[0]
    # cut the face with its surroundings, scaled so the face is 53 px wide
    side = 2 * face.width
    cx, cy = (face.bbox[0] + face.bbox[2]) / 2, (face.bbox[1] + face.bbox[3]) / 2
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    crop = src[y0 : y0 + int(side), x0 : x0 + int(side)]
    scale = 53 / face.width
    patch = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    photo = np.full((3000, 4000, 3), 120, np.uint8)
    photo[:] = cv2.GaussianBlur(cv2.resize(load_image(data / "nonface/skimage__gravel.png"), (4000, 3000)), (0, 0), 3)
    px, py = 2500, 1700
    photo[py : py + patch.shape[0], px : px + patch.shape[1]] = patch
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    want = np.array([[(cx - x0) * scale + px, (cy - y0) * scale + py] * 2]) + np.array([[-26, -26, 26, 26]])
    faces = fa.detect(path)
    assert len(faces) == 1
    assert matched(faces, want)[0] < 11 and 40 < faces[0].width < 70  # within a fifth of the face
    assert FaceAnalyzer(threads=1, det_size=640).detect(path) == []


def test_small_photos_run_one_pass(data):
    det = SCRFD()
    assert det.fine_scale((533, 800)) == 0.0  # as fast as before
    assert det.fine_scale((2132, 3200)) > 0.5
    assert SCRFD(det_size=640).fine_scale((2132, 3200)) == 0.0
    assert SCRFD(min_face=200).fine_scale((2132, 3200)) == 0.0  # the first pass already sees 200 px faces


@pytest.mark.parametrize("bad", [100, 0, -64, "big", 12.5, True, None])
def test_bad_det_size(bad):
    with pytest.raises(ConfigError, match="det_size must be 'auto' or a positive multiple of 32"):
        FaceAnalyzer(det_size=bad).detect(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="det_size"):
        create_detector("scrfd-500m", det_size=bad)


def test_det_size_forms():
    assert SCRFD(det_size="1280").max_size == 1280 and not SCRFD(det_size=1280).auto
    assert SCRFD(det_size="AUTO").auto and SCRFD().max_size == 640
    assert FaceAnalyzer().decode_size == 4096 and FaceAnalyzer(decode_size=0).decode_size == 0
