"""Dice and IoU edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.metrics import dice, iou


def test_both_empty_is_perfect() -> None:
    z = np.zeros((4, 4, 4), bool)
    assert dice(z, z) == 1.0
    assert iou(z, z) == 1.0


def test_one_empty_is_zero() -> None:
    z = np.zeros((4, 4), bool)
    a = z.copy()
    a[1, 1] = True
    assert dice(a, z) == 0.0 and dice(z, a) == 0.0
    assert iou(a, z) == 0.0 and iou(z, a) == 0.0


def test_known_overlaps() -> None:
    a = np.zeros(10, bool)
    b = np.zeros(10, bool)
    a[:4] = True  # 4 voxels
    b[2:8] = True  # 6 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 10)
    assert iou(a, b) == pytest.approx(2 / 8)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_non_boolean_input_counts_nonzero() -> None:
    labels = np.array([0, 1, 2, 2])
    assert dice(labels, labels > 0) == 1.0
    assert iou(labels == 2, labels > 0) == pytest.approx(2 / 3)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        iou(np.zeros(3), np.zeros(4))
