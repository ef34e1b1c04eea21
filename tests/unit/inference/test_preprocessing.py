from __future__ import annotations

import numpy as np
import pytest

from lungseg.config import PreprocessConfig
from lungseg.evaluation.metrics import dice
from lungseg.inference.preprocessing import (
    GridMap,
    body_box,
    canonical_ornt,
    crop_box,
    crop_coverage,
    from_canonical,
    preprocess_image,
    preprocess_mask,
    probabilities_to_original,
    resample_box,
    smooth,
    standardize,
    to_canonical,
    window_normalize,
)
from lungseg.io.geometry import Geometry


def _phantom(shape=(80, 70, 40)) -> tuple[np.ndarray, np.ndarray]:
    """Air outside, a soft-tissue body ellipse, two air-like lungs inside (labels 1, 2)."""
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    ci, cj = shape[0] / 2, shape[1] / 2
    body = ((i - ci) / 30) ** 2 + ((j - cj) / 25) ** 2 <= 1
    right = ((i - ci + 12) / 9) ** 2 + ((j - cj) / 14) ** 2 + ((k - 20) / 15) ** 2 <= 1
    left = ((i - ci - 12) / 9) ** 2 + ((j - cj) / 14) ** 2 + ((k - 20) / 15) ** 2 <= 1
    hu = np.full(shape, -1000.0, np.float32)
    hu[body] = 40.0
    hu[right | left] = -850.0
    labels = np.zeros(shape, np.uint8)
    labels[right] = 1
    labels[left] = 2
    return hu, labels


GEOMETRIES = {
    "identity": Geometry((80, 70, 40), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0)),
    "flipped_permuted": Geometry((80, 70, 40), (1.0, 1.0, 2.5), (10.0, -5.0, 3.0),
                                 ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0))),
}


@pytest.mark.parametrize("name", GEOMETRIES)
def test_reorientation_round_trip_is_exact(name: str) -> None:
    hu, _ = _phantom()
    ornt = canonical_ornt(GEOMETRIES[name])
    assert np.array_equal(from_canonical(to_canonical(hu, ornt), ornt, hu.shape), hu)


def test_body_box_finds_body_with_margin() -> None:
    hu, _ = _phantom()
    lo, hi = body_box(hu, (1.0, 1.0, 2.5), -500.0, margin_mm=2.0)
    assert lo[0] <= 10 - 2 + 1 and hi[0] >= 70 + 1  # body spans i in [10, 70]
    assert lo[2] == 0 and hi[2] == 40
    assert body_box(np.full((8, 8, 8), -1000.0), (1, 1, 1), -500.0, 0.0) == ((0, 0, 0), (8, 8, 8))


def test_thorax_box_holds_the_lungs_and_is_smaller_than_the_body_box() -> None:
    hu, labels = _phantom()
    spacing = (2.0, 2.0, 5.0)  # lungs of ~160 mL each (the thorax box ignores air pockets < 100 mL)
    body = crop_box(hu, spacing, PreprocessConfig(crop="body", crop_margin_mm=2.0))
    lo, hi = crop_box(hu, spacing, PreprocessConfig(crop="thorax", crop_margin_mm=2.0))
    lung = np.argwhere(labels > 0)
    assert all(lo[a] <= lung[:, a].min() and hi[a] > lung[:, a].max() for a in range(3))
    assert np.prod(np.subtract(hi, lo)) < 0.75 * np.prod(np.subtract(body[1], body[0]))
    assert all(b_lo <= t_lo and t_hi <= b_hi for b_lo, t_lo, t_hi, b_hi in zip(body[0], lo, hi, body[1]))


def test_thorax_box_keeps_a_collapsed_lung_and_falls_back_without_air() -> None:
    hu, labels = _phantom()
    spacing = (2.0, 2.0, 5.0)  # lungs of ~160 mL each (the thorax box ignores air pockets < 100 mL)
    collapsed = hu.copy()
    collapsed[labels == 2] = 30.0  # left lung entirely airless (white lung)
    lo, hi = crop_box(collapsed, spacing, PreprocessConfig(crop="thorax", crop_margin_mm=2.0))
    left = np.argwhere(labels == 2)
    assert lo[0] <= left[:, 0].min() and hi[0] > left[:, 0].max()  # left-right symmetric box keeps it
    airless = np.where(labels > 0, 30.0, hu).astype(np.float32)
    assert crop_box(airless, spacing, PreprocessConfig(crop="thorax", crop_margin_mm=2.0)) == crop_box(
        airless, spacing, PreprocessConfig(crop="body", crop_margin_mm=2.0))


def test_thorax_box_takes_small_lung_bases_cut_by_the_top_of_an_abdominal_scan() -> None:
    """Lung bases (the top 5 slices, under 100 mL each) at the top slice, a 125 mL gas pocket low in the abdomen."""
    hu, labels = _phantom()
    spacing = (2.0, 2.0, 5.0)
    abdomen = np.where(labels > 0, 30.0, hu).astype(np.float32)  # no lung except the bases below
    i, j, k = np.meshgrid(*[np.arange(n) for n in hu.shape], indexing="ij")
    right_base = ((i - 28) / 9) ** 2 + ((j - 35) / 14) ** 2 + ((k - 39) / 3) ** 2 <= 1  # a dome cut by the top
    bases = right_base | (((i - 52) / 9) ** 2 + ((j - 35) / 14) ** 2 + ((k - 39) / 3) ** 2 <= 1)
    assert 10 / 0.02 < right_base.sum() < 100 / 0.02  # between the two size rules (0.02 mL voxels)
    abdomen[bases] = -850.0
    abdomen[25:50, 25:50, 2:12] = -1000.0  # bowel gas: 25x25x10 voxels x 0.02 mL = 125 mL
    lo, hi = crop_box(abdomen, spacing, PreprocessConfig(crop="thorax", crop_margin_mm=2.0))
    assert hi[2] == 40 and lo[2] <= 2  # from the gas up to the top: both inside, for the network to tell apart
    no_top = abdomen.copy()
    no_top[bases] = 30.0
    no_top[np.roll(bases, -15, axis=2)] = -850.0  # the same small air, mid-scan
    lo, hi = crop_box(no_top, spacing, PreprocessConfig(crop="thorax", crop_margin_mm=2.0))
    assert hi[2] <= 12 + 1  # small air away from the top edge does not set the box


def test_thorax_box_axial_extent_ignores_the_trachea_above_the_apices() -> None:
    """A planning CT running into the neck: the trachea alone (about 2 cm^2 a slice) reaches the top slice,
    30 slices above the lungs; the box still ends a margin above the apices."""
    hu, labels = _phantom((80, 70, 70))
    spacing = (2.0, 2.0, 5.0)
    lung_top = int(np.flatnonzero(labels.any(axis=(0, 1))).max())
    neck = hu.copy()
    neck[39:42, 33:37, 18:] = -1000.0  # 3 x 4 voxels of 4 mm^2: 0.5 cm^2 of trachea, from mid-lung to the top slice
    neck[30:50, 33:37, 18:21] = -1000.0  # main bronchi: the trachea joins both lungs
    lo, hi = crop_box(neck, spacing, PreprocessConfig(crop="thorax", crop_margin_mm=10.0))
    assert lung_top < hi[2] <= lung_top + 1 + 2 + 1  # margin 10 mm = 2 slices (+1: coarse-grid rounding)
    assert lo[2] <= int(np.flatnonzero(labels.any(axis=(0, 1))).min())


def test_fixed_normalisation_does_not_depend_on_what_the_crop_holds() -> None:
    """normalize: fixed maps the windowed value w to (w - norm_mean) / norm_sd on every scan, so the lungs
    get the same input value however much air or tissue surrounds them; per-crop (volume) standardisation moves them."""
    hu, labels = _phantom()
    more_tissue = np.where(hu < -900.0, 40.0, hu).astype(np.float32)  # soft tissue fills the air around the body
    g = GEOMETRIES["identity"]
    lung = {}
    for mode in ("fixed", "volume"):
        cfg = PreprocessConfig(shape=(32, 32, 32), smooth_sigma=0.0, normalize=mode, norm_mean=0.5, norm_sd=0.25)
        values = []
        for volume in (hu, more_tissue):
            image, grid = preprocess_image(volume, g, cfg)
            values.append(float(np.median(image[preprocess_mask(labels, grid) == 1])))
        lung[mode] = values
    w = (-850.0 + 1000.0) / 1400.0  # the lungs' windowed value
    assert lung["fixed"] == pytest.approx([(w - 0.5) / 0.25] * 2, abs=1e-4)
    assert abs(lung["volume"][0] - lung["volume"][1]) > 0.3


def test_crop_coverage_counts_lung_outside_the_box() -> None:
    hu, labels = _phantom()
    _, grid = preprocess_image(hu, GEOMETRIES["identity"], PreprocessConfig(shape=(32, 32, 32)))
    assert crop_coverage(labels, grid) == 1.0
    cut = GridMap(grid.original_shape, grid.ornt, grid.canonical_shape, grid.crop_lo,
                  (grid.crop_hi[0], grid.crop_hi[1], 20), grid.shape)
    assert 0.3 < crop_coverage(labels, cut) < 0.7


def test_resample_identity_and_shape() -> None:
    a = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    assert np.allclose(resample_box(a, (0, 0, 0), a.shape, a.shape), a)
    assert resample_box(a, (2, 2, 2), (18, 20, 14), (8, 8, 8)).shape == (8, 8, 8)


def test_intensity_steps() -> None:
    hu = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0], np.float32)
    assert np.allclose(window_normalize(hu, -1000, 400), [0, 0, 0.5, 1, 1])
    z = standardize(np.arange(10, dtype=np.float32))
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    assert np.all(standardize(np.ones(5)) == 0)
    v = np.zeros((9, 9, 9), np.float32)
    v[4, 4, 4] = 1
    assert np.array_equal(smooth(v, 0), v)
    assert smooth(v, 1.0)[4, 4, 4] < 0.5
    with pytest.raises(ValueError):
        window_normalize(hu, 400, -1000)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_preprocess_then_map_back_recovers_the_lungs(name: str) -> None:
    hu, labels = _phantom()
    image, grid = preprocess_image(hu, GEOMETRIES[name], PreprocessConfig(shape=(32, 32, 32), normalize="volume"))
    mask = preprocess_mask(labels, grid)
    assert image.shape == (32, 32, 32) and image.dtype == np.float32
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3
    assert set(np.unique(mask)) == {0, 1}
    # lungs are dark in the network image: mean standardised intensity inside < outside
    assert image[mask == 1].mean() < image[mask == 0].mean()
    back = probabilities_to_original(mask.astype(np.float32), grid) > 0.5
    assert back.shape == hu.shape
    assert dice(back, labels > 0) > 0.9
    assert GridMap.from_json(grid.to_json()) == grid


def test_window_and_smoothing_are_applied() -> None:
    """Changing the HU window or the smoothing changes the network input (nothing thrown away)."""
    hu, _ = _phantom()
    g = GEOMETRIES["identity"]
    base, _ = preprocess_image(hu, g, PreprocessConfig(shape=(32, 32, 32), smooth_sigma=0.0))
    smoothed, _ = preprocess_image(hu, g, PreprocessConfig(shape=(32, 32, 32), smooth_sigma=1.5))
    windowed, _ = preprocess_image(hu, g, PreprocessConfig(shape=(32, 32, 32), smooth_sigma=0.0, hu_max=-900.0))
    assert not np.allclose(base, smoothed)
    assert not np.allclose(base, windowed)
