"""SCRFD decoding against hand-computed values: anchors, boxes, keypoints, NMS, input sizes."""

import numpy as np

from facelens.detect.scrfd import (
    SCRFD,
    STRIDES,
    anchor_centers,
    distance_to_box,
    distance_to_points,
    input_size_for,
    nms,
)


def test_anchor_centers_row_major_two_per_cell():
    centers = anchor_centers(64, 96, 32)  # 2 rows x 3 cols
    expected = [[0, 0], [0, 0], [32, 0], [32, 0], [64, 0], [64, 0],
                [0, 32], [0, 32], [32, 32], [32, 32], [64, 32], [64, 32]]
    np.testing.assert_array_equal(centers, expected)


def test_distance_to_box_and_points():
    centers = np.array([[16.0, 24.0]])
    box = distance_to_box(centers, np.array([[4.0, 6.0, 10.0, 2.0]]))
    np.testing.assert_array_equal(box, [[12, 18, 26, 26]])
    pts = distance_to_points(centers, np.array([[1, 2, -3, 4, 0, 0, 5, -5, 2, 2]], dtype=np.float32))
    np.testing.assert_array_equal(pts[0], [[17, 26], [13, 28], [16, 24], [21, 19], [18, 26]])


def test_nms_keeps_best_and_disjoint():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)
    # at 0.4: box 3 (best) suppresses box 0 (IoU 50/100 = 0.5) but not box 1 (IoU 36/95 = 0.38)
    np.testing.assert_array_equal(nms(boxes, scores, 0.4), [3, 1, 2])
    # at 0.6: box 0 survives box 3 and suppresses box 1 (IoU 81/100)
    np.testing.assert_array_equal(nms(boxes, scores, 0.6), [3, 0, 2])


def test_input_size_fitted_to_image():
    assert input_size_for(250, 250) == (256, 256)
    assert input_size_for(886, 1280) == (448, 640)  # 886 * 0.5 = 443 -> 448
    assert input_size_for(100, 2000) == (32, 640)
    assert input_size_for(250, 250, max_size=640, enlarge=True) == (640, 640)


def _empty_outputs(in_h, in_w, batch=1):
    outs = []
    counts = [(in_h // s) * (in_w // s) * 2 for s in STRIDES]
    outs += [np.zeros((batch, n, 1), np.float32) for n in counts]
    outs += [np.zeros((batch, n, 4), np.float32) for n in counts]
    outs += [np.zeros((batch, n, 10), np.float32) for n in counts]
    return outs


def test_decode_maps_back_to_image_coordinates():
    # a 128x256 input for a 256x512 image (scale 0.5); one positive anchor at stride 16, row 2, col 3, anchor 1
    in_h, in_w, scale = 128, 256, 0.5
    outs = _empty_outputs(in_h, in_w)
    cols = in_w // 16
    index = (2 * cols + 3) * 2 + 1
    outs[1][0, index, 0] = 0.9
    outs[4][0, index] = [1, 1, 2, 3]  # distances in stride units
    outs[7][0, index] = [0.5, -0.5] * 5
    det = SCRFD(score_threshold=0.5)
    faces = det.decode(outs, 0, in_h, in_w, scale, (256, 512))
    assert len(faces) == 1
    # centre (48, 32) in input pixels; box (48-16, 32-16, 48+32, 32+48) / 0.5
    np.testing.assert_allclose(faces[0].bbox, [64, 32, 160, 160])
    np.testing.assert_allclose(faces[0].landmarks, [[112, 48]] * 5)
    assert abs(faces[0].det_score - 0.9) < 1e-6


def test_decode_threshold_min_face_and_max_faces():
    in_h = in_w = 64
    outs = _empty_outputs(in_h, in_w)
    # stride-8 anchors: 0.4 (below threshold); 0.8 at centre (16, 8), box 16 px; 0.7 at (32, 32), box 48 px
    for idx, score, dist in [(0, 0.4, 3), (20, 0.8, 1), (72, 0.7, 3)]:
        outs[0][0, idx, 0] = score
        outs[3][0, idx] = [dist] * 4
    det = SCRFD(score_threshold=0.5)
    assert len(det.decode(outs, 0, in_h, in_w, 1.0, (64, 64))) == 2
    det = SCRFD(score_threshold=0.5, min_face=20)
    faces = det.decode(outs, 0, in_h, in_w, 1.0, (64, 64))
    assert len(faces) == 1 and abs(faces[0].det_score - 0.7) < 1e-6
    det = SCRFD(score_threshold=0.5, max_faces=1)
    faces = det.decode(outs, 0, in_h, in_w, 1.0, (64, 64))
    assert len(faces) == 1 and faces[0].width == 48
