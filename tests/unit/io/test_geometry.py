"""Geometry: voxel <-> world round trips, LPS/RAS, volumes, and bad affines."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.io.geometry import Geometry

OBLIQUE = Geometry((7, 5, 3), (0.8, 1.25, 2.5), (-12.0, 30.0, 101.0),
                   ((0.0, 1.0, 0.0), (0.6, 0.0, -0.8), (0.8, 0.0, 0.6)))  # columns: i, j, k directions


def test_voxel_world_round_trip_and_the_axes_directions() -> None:
    ijk = np.array([[0, 0, 0], [6, 4, 2], [1.5, 2.25, 0.5]])
    xyz = OBLIQUE.voxel_to_lps(ijk)
    np.testing.assert_allclose(xyz[0], OBLIQUE.origin_lps_mm)
    np.testing.assert_allclose(OBLIQUE.lps_to_voxel(xyz), ijk, atol=1e-9)
    # one step along k moves spacing_k mm along the k direction column
    step = OBLIQUE.voxel_to_lps(np.array([0, 0, 1])) - OBLIQUE.voxel_to_lps(np.array([0, 0, 0]))
    np.testing.assert_allclose(step, 2.5 * OBLIQUE.direction_matrix[:, 2])


def test_ras_affine_flips_x_and_y_and_comes_back() -> None:
    lps, ras = OBLIQUE.affine_lps(), OBLIQUE.affine_ras()
    np.testing.assert_allclose(ras[:2], -lps[:2])
    np.testing.assert_allclose(ras[2:], lps[2:])
    back = Geometry.from_affine_ras(ras, OBLIQUE.shape)
    assert back.shape == OBLIQUE.shape
    np.testing.assert_allclose(back.spacing_mm, OBLIQUE.spacing_mm)
    np.testing.assert_allclose(back.origin_lps_mm, OBLIQUE.origin_lps_mm)
    np.testing.assert_allclose(back.direction_matrix, OBLIQUE.direction_matrix, atol=1e-12)


def test_voxel_volume_and_bad_affines() -> None:
    assert OBLIQUE.voxel_volume_ml == pytest.approx(0.8 * 1.25 * 2.5 / 1000)
    flat = np.eye(4)
    flat[2, 2] = 0.0
    with pytest.raises(ValueError, match="zero or non-finite voxel size"):
        Geometry.from_affine_ras(flat, (2, 2, 2))
