"""Lung densitometry: every measure checked against values worked out by hand on built volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lungseg.inference.densitometry import (
    MEASURES,
    REGIONS,
    densitometry,
    density_g_per_ml,
    flatten,
    measures,
    third_cuts,
    thirds_map,
)
from lungseg.io.geometry import Geometry
from tests.helpers.real_ct import real_ct

CM = Geometry((4, 5, 6), (10.0, 10.0, 10.0), (0.0, 0.0, 0.0))  # 1 mL voxels


def test_density_follows_cips_piecewise_schneider_fit() -> None:
    hu = np.array([-1200.0, -1000.0, -98.0, 0.0, 18.0, 50.0, 100.0, 200.0])
    expected = [0.00121, 0.00121, 1.018 - 0.893 * 0.098, 1.018, 1.018 + 0.893 * 0.018,
                1.003 + 1.169 * 0.05, 1.003 + 1.169 * 0.1, 1.017 + 0.592 * 0.2]
    np.testing.assert_allclose(density_g_per_ml(hu), expected, atol=1e-9)
    # below -98 HU: the straight line from air (0.00121 g/mL at -1000) to 0.93 g/mL at -98
    assert density_g_per_ml(np.array([-549.0]))[0] == pytest.approx((0.00121 + 0.93) / 2, abs=1e-9)
    assert density_g_per_ml(np.array([-98.0 - 1e-9]))[0] == pytest.approx(0.93, abs=1e-6)


def test_measures_of_four_values_by_hand() -> None:
    m = measures(np.array([-1000.0, -900.0, -800.0, -700.0]), voxel_ml=2.0)
    assert m["voxels"] == 4 and m["volume_l"] == 0.008
    assert m["hu_mean"] == -850.0 and m["hu_sd"] == pytest.approx(np.sqrt((150**2 + 50**2) / 2), abs=0.005)
    # numpy's linear percentiles: position (n - 1) q / 100 = 0.3, 0.45, 1.5 between the sorted values
    assert (m["perc10_hu"], m["pd15_hu"], m["hu_median"]) == (-970.0, -955.0, -850.0)
    assert (m["laa950_pct"], m["laa910_pct"], m["laa856_pct"]) == (25.0, 25.0, 50.0)  # strictly below: -900 is not below -910
    assert (m["haa700_pct"], m["haa600_pct"], m["haa250_pct"]) == (0.0, 0.0, 0.0)  # strictly above: -700 is not
    rho = [0.00121, *(0.00121 + (v + 1000) * (0.93 - 0.00121) / 902 for v in (-900, -800, -700))]
    assert m["mass_g"] == pytest.approx(2.0 * sum(rho), abs=0.005)


def test_thresholds_counts_and_empty_region() -> None:
    values = np.array([-1000] * 20 + [-960] * 10 + [-920] * 10 + [-880] * 20 + [-800] * 20 + [-650] * 10
                      + [-500] * 5 + [-100] * 5, float)
    m = measures(values, 1.0)
    assert (m["laa950_pct"], m["laa910_pct"], m["laa856_pct"]) == (30.0, 40.0, 60.0)
    assert (m["haa700_pct"], m["haa600_pct"], m["haa250_pct"]) == (20.0, 10.0, 5.0)
    assert (m["perc10_hu"], m["pd15_hu"], m["hu_median"]) == (-1000.0, -1000.0, -880.0)
    empty = measures(np.array([]), 1.0)
    assert empty["voxels"] == 0 and empty["volume_l"] == 0.0
    assert all(empty[k] is None for k in MEASURES if k not in ("voxels", "volume_l"))


def test_third_cuts_by_volume_from_the_base() -> None:
    assert third_cuts(np.array([5] * 9)) == (3, 6)
    # cumulative 0 1 2 3 4 14 of 14: nearest 14/3 is 4 (four slices), nearest 28/3 is 14 (all five)
    assert third_cuts(np.array([1, 1, 1, 1, 10])) == (4, 5)
    assert third_cuts(np.array([0, 0, 0])) == (0, 0)


def _two_lungs(direction: tuple[tuple[float, float, float], ...]) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """9 lung slices (k = 1..9): right lung columns 0-1, left columns 2-3; HU by slice, so every
    third's measures are known: slice k has HU -1000 + 10 k in the right lung, -900 + 10 k in the left."""
    labels = np.zeros((4, 5, 11), np.uint8)
    labels[0:2, :, 1:10], labels[2:4, :, 1:10] = 1, 2
    k = np.arange(11, dtype=float)[None, None, :]
    hu = np.where(labels == 1, -1000 + 10 * k, np.where(labels == 2, -900 + 10 * k, 40.0)) * np.ones((4, 5, 1))
    return labels, hu, Geometry((4, 5, 11), (10.0, 10.0, 10.0), (0.0, 0.0, 0.0), direction)


@pytest.mark.parametrize("k_superior", [True, False])
def test_regions_of_a_built_volume(k_superior: bool) -> None:
    direction = ((1, 0, 0), (0, 1, 0), (0, 0, 1 if k_superior else -1))
    labels, hu, g = _two_lungs(direction)
    stats = densitometry(labels, hu, g)
    assert list(stats) == list(REGIONS)
    assert stats["total"]["voxels"] == 180 and stats["right"]["voxels"] == stats["left"]["voxels"] == 90
    assert stats["right"]["hu_mean"] == -950.0 and stats["left"]["hu_mean"] == -850.0
    assert stats["total"]["volume_l"] == 0.18
    # thirds: three slices each; with k pointing to the feet, slices 7-9 are the lower third
    upper, lower = ((7, 8, 9), (1, 2, 3)) if k_superior else ((1, 2, 3), (7, 8, 9))
    assert stats["right_upper"]["hu_mean"] == -1000 + 10 * np.mean(upper)
    assert stats["left_lower"]["hu_mean"] == -900 + 10 * np.mean(lower)
    assert stats["right_middle"]["hu_median"] == -950.0
    assert stats["upper"]["voxels"] == 60 and stats["upper"]["hu_mean"] == (stats["right_upper"]["hu_mean"]
                                                                           + stats["left_upper"]["hu_mean"]) / 2
    # right lung LAA-950: slices with -1000 + 10 k < -950, i.e. k = 1..4 of 9
    assert stats["right"]["laa950_pct"] == round(100 * 4 / 9, 3)
    th = thirds_map(labels, g)
    assert set(np.unique(th[labels > 0]).tolist()) == {1, 2, 3} and not th[labels == 0].any()
    assert th[0, 0, upper[0]] == 1 and th[0, 0, lower[0]] == 3


def test_integer_and_float_ct_give_the_same_figures() -> None:
    labels, hu, g = _two_lungs(((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    rng = np.random.default_rng(0)
    hu = hu + rng.integers(-60, 60, hu.shape)
    exact = densitometry(labels, hu.astype(np.int16), g)  # integer HU: the histogram path
    shifted = densitometry(labels, hu.astype(np.float64) + 0.25, g)  # non-integer HU: the exact path
    for region in REGIONS:
        for key in ("hu_mean", "hu_median", "pd15_hu", "perc10_hu"):
            assert shifted[region][key] == pytest.approx(exact[region][key] + 0.25, abs=0.011), (region, key)
        assert shifted[region]["laa950_pct"] == exact[region]["laa950_pct"]
        assert shifted[region]["hu_sd"] == pytest.approx(exact[region]["hu_sd"], abs=0.011)
    for region in ("right", "left_middle"):  # the histogram path against numpy on the region's voxels
        side = 1 if region == "right" else 2
        sel = (labels == side) if region == "right" else (labels == 2) & (thirds_map(labels, g) == 2)
        v = hu[sel].astype(np.float64)
        assert exact[region]["pd15_hu"] == pytest.approx(np.percentile(v, 15), abs=0.005)
        assert exact[region]["hu_median"] == pytest.approx(np.median(v), abs=0.005)
        assert exact[region]["hu_sd"] == pytest.approx(v.std(), abs=0.005)


def test_flatten_is_one_row_in_region_then_measure_order() -> None:
    labels, hu, g = _two_lungs(((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    row = flatten(densitometry(labels, hu, g))
    assert len(row) == len(REGIONS) * len(MEASURES)
    assert next(iter(row)) == "total_voxels" and row["left_lower_voxels"] == 30


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differs"):
        densitometry(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3)), CM)


def test_thirds_match_cips_own_label_map_on_copdgene() -> None:
    """CIP's regions.nii.gz (9-11 left, 12-14 right upper/middle/lower third): our thirds of the same lungs agree
    voxel for voxel."""
    from lungseg.io.nifti import read_nifti

    regions, g = read_nifti(real_ct("copdgene-10002k", "regions.nii.gz"))  # skips visibly where absent
    region = np.asarray(regions).astype(np.int64) % 256
    labels = np.where(np.isin(region, [12, 13, 14]), 1, np.where(np.isin(region, [9, 10, 11]), 2, 0)).astype(np.uint8)
    cip = np.select([np.isin(region, [9, 12]), np.isin(region, [10, 13]), np.isin(region, [11, 14])], [1, 2, 3], 0)
    ours = thirds_map(labels, g)
    assert np.array_equal(ours, cip)
    ct, _ = read_nifti(real_ct("copdgene-10002k", "ct.nii.gz"))
    stats = densitometry(labels, np.asarray(ct), g)
    assert stats["left_upper"]["voxels"] == int((region == 9).sum())
    assert 0 < stats["total"]["laa950_pct"] < 100 and -1000 < stats["total"]["pd15_hu"] < -800


def test_reference_sides_follow_components_and_differences_are_pred_minus_ref() -> None:
    from lungseg.evaluation.real_ct import densitometry_differences, split_sides

    labels, hu, g = _two_lungs(((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    mask = labels > 0
    mask[1, :, :] = False  # two components: column 0 (right) and columns 2-3 (left), centroid between them
    sides = split_sides(mask, g)
    assert (sides[0] == 1 * mask[0]).all() and (sides[2:] == 2 * mask[2:]).all()
    ref = densitometry(labels, hu, g)
    pred_labels = labels.copy()
    pred_labels[:, :, 9] = 0  # the prediction misses the top slice (-910 right, -810 left)
    diff = densitometry_differences(densitometry(pred_labels, hu, g), ref)
    assert set(diff) == set(REGIONS)
    assert diff["total"]["volume_pct"] == pytest.approx(-100 / 9, abs=1e-3)
    # right lung: LAA-950 4 of 8 slices instead of 4 of 9
    assert diff["right"]["laa950_pp"] == pytest.approx(100 * 4 / 8 - 100 * 4 / 9, abs=2e-3)
    empty = densitometry_differences(densitometry(np.zeros_like(labels), hu, g), ref)
    assert empty["total"] == {"laa950_pp": None, "pd15_hu": None, "volume_pct": -100.0}


def test_overlay_draws_the_thirds_and_the_laa_voxels(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    from lungseg.figures import CaseView, plot_lung_overlay

    labels, hu, g = _two_lungs(((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    labels, hu = np.repeat(np.repeat(labels, 8, 0), 8, 1), np.repeat(np.repeat(hu, 8, 0), 8, 1)  # 32 x 40 in-plane
    g = Geometry(labels.shape, (2.0, 2.0, 10.0), (0.0, 0.0, 0.0))

    def magenta_pixels(values: np.ndarray) -> int:
        png = plot_lung_overlay(CaseView("t", values, labels, g), thirds_map(labels, g), tmp_path / "o.png")
        rgb = mpimg.imread(png)[..., :3]
        return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.3) & (rgb[..., 2] > 0.8)).sum())

    legend_only = magenta_pixels(np.where(labels > 0, -800.0, hu))  # no LAA: only the legend's patch
    assert 0 < legend_only < 400
    with_laa = magenta_pixels(hu)
    assert with_laa > legend_only + 1000, (with_laa, legend_only)  # right lung slices 1-4 are below -950 HU
