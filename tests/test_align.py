"""Alignment against hand-computed transforms."""

import math

import numpy as np
import pytest

from facelens.align import ARCFACE_TEMPLATE, estimate_norm, norm_crop, similarity_transform, transform_points


def test_identity_transform_on_template():
    m = similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-5)


def test_recovers_known_similarity():
    # dst = 2 * R(30 deg) @ src + (5, -3): the matrix must come back exactly
    angle = math.radians(30)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = np.array([[0, 0], [10, 0], [0, 10], [7, 3], [2, 9]], dtype=np.float64)
    dst = (2 * src @ rot.T) + [5, -3]
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], 2 * rot, atol=1e-5)
    np.testing.assert_allclose(m[:, 2], [5, -3], atol=1e-4)
    np.testing.assert_allclose(transform_points(src, m), dst, atol=1e-4)


def test_two_points_hand_computed():
    # (0,0)->(0,0) and (1,0)->(0,2): a 90 degree turn and scale 2
    m = similarity_transform(np.array([[0, 0], [1, 0]]), np.array([[0, 0], [0, 2]]))
    np.testing.assert_allclose(m, [[0, -2, 0], [2, 0, 0]], atol=1e-6)


def test_least_squares_never_reflects():
    src = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float64)
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_estimate_norm_maps_landmarks_onto_template():
    landmarks = ARCFACE_TEMPLATE * 3 + [100, 40]
    m = estimate_norm(landmarks)
    np.testing.assert_allclose(transform_points(landmarks, m), ARCFACE_TEMPLATE, atol=1e-3)


def test_norm_crop_of_scaled_image_matches_template():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    import cv2

    big = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_NEAREST)
    out = norm_crop(big, ARCFACE_TEMPLATE * 2)
    assert out.shape == (112, 112, 3)
    # the transform is exactly x0.5, so output pixel (x, y) samples big[2y, 2x] == crop[y, x]
    np.testing.assert_array_equal(out, crop)


def test_bad_input_rejected():
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((1, 2)), np.zeros((1, 2)))
