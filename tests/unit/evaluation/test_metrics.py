"""Dice and IoU edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.evaluation.metrics import dice, iou, surface_distances


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


# --------------------------------------------------------------------------- surface distances


def _brute_force(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """Reference: surfaces by 6-neighbour test on a zero-padded copy, distances by all pairs."""
    from scipy.spatial.distance import cdist

    def surface_points(m: np.ndarray) -> np.ndarray:
        q = np.pad(m, 1)
        inner = q[1:-1, 1:-1, 1:-1].copy()
        for ax in range(3):
            for shift in (-1, 1):
                inner &= np.roll(q, shift, axis=ax)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    a, b = surface_points(pred), surface_points(truth)
    d = cdist(a, b)
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    return float(np.percentile(pooled, 95)), float(pooled.mean())


@pytest.mark.parametrize("k", [1, 3])
def test_surface_distances_parallel_plates_are_exact(k: int) -> None:
    """Two one-voxel plates k voxels apart along the anisotropic axis: every distance is k * spacing."""
    spacing = (2.5, 0.7, 1.3)
    truth = np.zeros((20, 12, 12), bool)
    pred = np.zeros_like(truth)
    truth[5, 2:10, 3:9] = True
    pred[5 + k, 2:10, 3:9] = True
    hd95, msd = surface_distances(pred, truth, spacing)
    assert hd95 == pytest.approx(k * 2.5)
    assert msd == pytest.approx(k * 2.5)


def test_surface_distances_concentric_cubes_offset_by_k_voxels() -> None:
    """A cube grown by k voxels on every side: face-centre distances are k * spacing of that axis."""
    spacing = (0.8, 0.8, 3.0)
    truth = np.zeros((40, 40, 20), bool)
    truth[10:30, 10:30, 6:14] = True
    pred = np.zeros_like(truth)
    pred[8:32, 8:32, 4:16] = True  # k = 2 voxels on every side
    hd95, msd = surface_distances(pred, truth, spacing)
    ref = _brute_force(pred, truth, spacing)
    assert hd95 == pytest.approx(ref[0]) and msd == pytest.approx(ref[1])
    # most surface voxels face an in-plane side (1.6 mm away); the slab faces are 6 mm away
    assert 1.6 <= msd <= 6.0 and hd95 >= 1.6
    assert surface_distances(truth, truth, spacing) == (0.0, 0.0)


def test_surface_distances_match_brute_force_on_random_blobs() -> None:
    rng = np.random.default_rng(0)
    from scipy import ndimage

    for _ in range(3):
        a = ndimage.gaussian_filter(rng.random((18, 16, 14)), 2) > 0.5
        b = ndimage.gaussian_filter(rng.random((18, 16, 14)), 2) > 0.5
        spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, 3))
        got = surface_distances(a, b, spacing)
        assert got == pytest.approx(_brute_force(a, b, spacing))


def test_surface_distances_mask_touching_the_array_border() -> None:
    truth = np.zeros((10, 10, 10), bool)
    truth[:4] = True
    pred = np.zeros_like(truth)
    pred[:6] = True
    got = surface_distances(pred, truth, (1.0, 1.0, 1.0))
    assert got == pytest.approx(_brute_force(pred, truth, (1.0, 1.0, 1.0)))


def test_surface_distances_empty_rules_and_errors() -> None:
    z = np.zeros((5, 5, 5), bool)
    a = z.copy()
    a[2, 2, 2] = True
    assert surface_distances(z, z, (1, 1, 1)) == (0.0, 0.0)
    assert surface_distances(a, z, (1, 1, 1)) == (float("inf"), float("inf"))
    assert surface_distances(z, a, (1, 1, 1)) == (float("inf"), float("inf"))
    with pytest.raises(ValueError, match="shapes differ"):
        surface_distances(a, np.zeros((5, 5, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        surface_distances(a, a, (1, 1))
