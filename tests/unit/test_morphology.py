"""The full-resolution lung surface (:func:`lungseg.morphology.snap_to_ct`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lungseg.morphology import snap_to_ct


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box of lung (-850 HU) in soft tissue (40 HU) holding a dense lesion on its edge, and a blurred,
    shifted probability as a coarse network would give it."""
    lung = np.zeros((40, 40, 20), dtype=bool)
    lung[10:30, 12:28, 4:16] = True
    hu = np.where(lung, -850.0, 40.0).astype(np.float32)
    hu[10:14, 18:22, 8:12] = 30.0  # consolidation touching the lung's edge: lung in the truth, tissue by HU
    coarse = np.zeros_like(lung)
    coarse[11:31, 12:28, 4:16] = True  # one voxel off along axis 0
    prob = ndimage.gaussian_filter(coarse.astype(np.float32), sigma=(2.0, 2.0, 1.0))
    prob[10:14, 18:22, 8:12] = 0.95  # the network is sure of the lesion
    return hu, prob, lung


def test_the_surface_follows_the_ct_edge_and_keeps_sure_tissue() -> None:
    hu, prob, lung = _scene()
    snapped = snap_to_ct(hu, prob, air_hu=-400.0, p_air=0.02, p_tissue=0.75, smooth_sigma=0.0)
    assert np.array_equal(snapped, lung)  # the shifted, blurred edge moved onto the CT's edge; lesion kept
    plain = prob > 0.5
    assert (plain != lung).sum() > 100  # what a single threshold gets wrong there


def test_unsure_tissue_outside_and_air_far_from_the_lungs_stay_background() -> None:
    hu, prob, lung = _scene()
    hu[0:3, 0:3, :] = -1000.0  # air the network gives no probability
    prob[32:35, 14:20, 6:10] = 0.6  # soft tissue the network is unsure of
    snapped = snap_to_ct(hu, prob, air_hu=-400.0, p_air=0.02, p_tissue=0.75, smooth_sigma=0.7)
    assert not snapped[0:3, 0:3, :].any() and not snapped[32:35, 14:20, 6:10].any()


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not match"):
        snap_to_ct(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), -400.0, 0.02, 0.75)


def test_working_inside_the_candidates_box_changes_nothing() -> None:
    """The same mask as the whole-array computation (smoothing everywhere, then the two tests)."""
    rng = np.random.default_rng(3)
    hu = (rng.normal(-400, 500, (30, 28, 12))).astype(np.int16)
    prob = np.zeros(hu.shape, np.float32)
    prob[8:20, 5:17, 3:9] = rng.random((12, 12, 6))
    for sigma in (0.0, 0.4, 1.0):
        smooth = ndimage.gaussian_filter(hu.astype(np.float32), sigma=(sigma, sigma, 0.0)) if sigma else hu
        expected = np.where(smooth < -400.0, prob > 0.05, prob > 0.8)
        assert np.array_equal(snap_to_ct(hu, prob, -400.0, 0.05, 0.8, sigma), expected)


def test_the_rim_adds_partial_volume_voxels_next_to_the_lung_only() -> None:
    """A one-voxel partial-volume edge (-300 HU: lung and wall mixed) around the lung joins it with the rim;
    fat (-100 HU) beside the lung, and a partial-volume voxel two voxels away, do not."""
    hu, prob, lung = _scene()
    edge = ndimage.binary_dilation(lung, structure=np.ones((3, 3, 1), bool)) & ~lung
    hu[edge] = -300.0
    hu[9, 14:16, 6:8] = -100.0  # fat on the edge
    hu[5, 20, 10] = -300.0  # partial volume far from the lung
    without = snap_to_ct(hu, prob, air_hu=-400.0, p_air=0.02, p_tissue=0.75, smooth_sigma=0.0)
    rim = snap_to_ct(hu, prob, air_hu=-400.0, p_air=0.02, p_tissue=0.75, smooth_sigma=0.0, rim_hu=-200.0)
    assert np.array_equal(without, lung)
    added = rim & ~without
    assert added.any() and not (added & ~edge).any()  # only edge voxels join
    assert not rim[9, 14:16, 6:8].any() and not rim[5, 20, 10]
    assert (edge & (hu < -200.0) & ndimage.binary_dilation(lung, structure=np.ones((3, 3, 1), bool)))[added].all()


def test_shift_dilations_equal_scipy() -> None:
    from lungseg.morphology import INPLANE, grow_3d, grow_inplane

    mask = np.random.default_rng(5).random((9, 8, 7)) > 0.85
    assert np.array_equal(grow_inplane(mask), ndimage.binary_dilation(mask, structure=INPLANE))
    assert np.array_equal(grow_3d(mask), ndimage.binary_dilation(mask))
