from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import AugmentConfig
from lungseg.errors import ConfigError
from lungseg.evaluation import metrics
from lungseg.figures import plot_augmentation
from lungseg.training.augmentation import (
    AugmentParams,
    apply,
    augment,
    check_config,
    elastic_field,
    sample_params,
)

SHAPE = (40, 44, 36)
ALL_ON = AugmentConfig(
    elastic_p=1.0, rotate_p=1.0, flip_p=1.0, flip_axes=(0, 1, 2), scale_p=1.0,
    intensity_p=1.0, noise_p=1.0, brightness_p=1.0,
)
NONE_ON = AugmentConfig(
    elastic_p=0.0, rotate_p=0.0, flip_p=0.0, scale_p=0.0, intensity_p=0.0, noise_p=0.0, brightness_p=0.0,
)
GEOMETRIC = ("elastic_p", "rotate_p", "scale_p")
INTENSITY = ("intensity_p", "noise_p", "brightness_p")


def ellipsoid(shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grids = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0).astype(np.float32)


def two_lungs(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    d, h, w = shape
    right = ellipsoid(shape, (d / 2, h / 2, w * 0.3), (d * 0.35, h * 0.3, w * 0.15))
    left = ellipsoid(shape, (d / 2, h / 2, w * 0.7), (d * 0.3, h * 0.3, w * 0.15))
    return np.maximum(right, left)


def ct_like(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1.0 - 2.0 * mask + 0.3 * rng.standard_normal(mask.shape)).astype(np.float32)


def only(*names: str, **overrides: float) -> AugmentConfig:
    return dataclasses.replace(NONE_ON, **{n: 1.0 for n in names}, **overrides)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two float volumes thresholded at 0.5 (lungseg.evaluation.metrics.dice, tested in test_metrics.py)."""
    return metrics.dice(a > 0.5, b > 0.5)


@pytest.mark.parametrize(
    "cfg",
    [
        NONE_ON,
        dataclasses.replace(  # everything on, every strength 0 (flips have no strength: axes empty)
            ALL_ON, elastic_strength=0.0, rotate_max_deg=0.0, flip_axes=(), scale_max=0.0,
            intensity_shift_max=0.0, noise_sd=0.0, brightness_max=0.0,
        ),
    ],
    ids=["probabilities-0", "strengths-0"],
)
def test_zero_augmentation_is_the_identity(cfg: AugmentConfig) -> None:
    mask = two_lungs()
    image = ct_like(mask)
    for seed in range(3):
        out_image, out_mask = augment(image, mask, cfg, seed)
        assert np.array_equal(out_image, image)
        assert np.array_equal(out_mask, mask)
        assert out_image is not image and out_mask is not mask


@pytest.mark.parametrize("name", [*GEOMETRIC, "flip_p", *INTENSITY])
def test_each_transform_alone_changes_the_image(name: str) -> None:
    mask = two_lungs()
    image = ct_like(mask)
    out_image, out_mask = augment(image, mask, only(name, flip_axes=(0, 1, 2)), seed=5)
    assert not np.array_equal(out_image, image)
    if name in INTENSITY:
        assert np.array_equal(out_mask, mask)


def test_intensity_transforms_do_not_touch_the_mask() -> None:
    mask = two_lungs().astype(np.uint8)
    image = ct_like(mask)
    for seed in range(5):
        out_image, out_mask = augment(image, mask, only(*INTENSITY), seed)
        assert np.array_equal(out_mask, mask)
        assert not np.array_equal(out_image, image)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_stays_aligned_with_the_image(seed: int) -> None:
    """Image = mask: after strong geometric transforms, thresholding the image gives the mask."""
    mask = two_lungs()
    cfg = dataclasses.replace(
        only(*GEOMETRIC, flip_p=1.0, flip_axes=(0, 1, 2)),
        elastic_strength=4.0, elastic_sigma=5.0, rotate_max_deg=20.0, scale_max=0.2,
    )
    out_image, out_mask = augment(mask.copy(), mask, cfg, seed)
    assert dice(out_image, out_mask) >= 0.99
    assert 0.5 < dice(out_mask, mask) < 0.99  # it did move


def test_mask_stays_binary_and_dtypes_shapes_are_kept() -> None:
    mask = two_lungs().astype(np.uint8)
    image = ct_like(mask).astype(np.float64)
    for seed in range(3):
        out_image, out_mask = augment(image, mask, ALL_ON, seed)
        assert out_image.shape == out_mask.shape == SHAPE
        assert out_image.dtype == out_mask.dtype == np.float32
        assert set(np.unique(out_mask)) <= {0.0, 1.0}
        assert out_mask.sum() > 0


def test_same_seed_same_output_different_seed_different() -> None:
    mask = two_lungs()
    image = ct_like(mask)
    a_image, a_mask = augment(image, mask, ALL_ON, seed=7)
    b_image, b_mask = augment(image, mask, ALL_ON, seed=7)
    c_image, _ = augment(image, mask, ALL_ON, seed=8)
    assert np.array_equal(a_image, b_image) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_image, c_image)


def test_a_transform_draws_do_not_depend_on_other_probabilities() -> None:
    a = sample_params(ALL_ON, np.random.default_rng(3), SHAPE)
    b = sample_params(dataclasses.replace(ALL_ON, noise_p=0.0, elastic_p=0.0), np.random.default_rng(3), SHAPE)
    assert a.angles_deg == b.angles_deg and a.zoom == b.zoom and a.brightness == b.brightness
    assert b.noise_sd == 0.0 and b.elastic_strength == 0.0


def test_sampled_values_stay_in_their_ranges() -> None:
    cfg = ALL_ON
    for seed in range(50):
        p = sample_params(cfg, np.random.default_rng(seed), SHAPE)
        assert all(abs(a) <= cfg.rotate_max_deg for a in p.angles_deg)
        assert abs(p.zoom - 1.0) <= cfg.scale_max and abs(p.brightness - 1.0) <= cfg.brightness_max
        assert abs(p.shift) <= cfg.intensity_shift_max and 0.0 <= p.noise_sd <= cfg.noise_sd
        assert p.elastic_strength == cfg.elastic_strength and p.flip_axes == (0, 1, 2)


def test_elastic_field_is_smooth_with_the_requested_max_displacement() -> None:
    field = elastic_field(SHAPE, strength=3.0, sigma=6.0, seed=1)
    assert field.shape == (3, *SHAPE) and field.dtype == np.float32
    assert np.sqrt((field**2).sum(axis=0)).max() == pytest.approx(3.0, rel=1e-4)
    assert np.abs(np.diff(field, axis=1)).max() < 1.0  # neighbouring voxels move together


def test_flip_is_an_array_flip() -> None:
    mask = two_lungs()
    image = ct_like(mask)
    out_image, out_mask = apply(image, mask, AugmentParams(shape=SHAPE, flip_axes=(2,)))
    assert np.array_equal(out_image, image[:, :, ::-1]) and np.array_equal(out_mask, mask[:, :, ::-1])


def test_rotation_and_zoom_act_about_the_centre() -> None:
    shape = (33, 33, 33)
    blob = ellipsoid(shape, (16, 24, 16), (4, 4, 4))  # +8 voxels along axis 1 from the centre
    _, rotated = apply(blob, blob, AugmentParams(shape=shape, angles_deg=(90.0, 0.0, 0.0)))
    assert np.allclose(np.argwhere(rotated > 0).mean(axis=0), (16, 16, 24), atol=0.5)  # now along axis 2
    ball = ellipsoid(shape, (16, 16, 16), (8, 8, 8))
    _, zoomed = apply(ball, ball, AugmentParams(shape=shape, zoom=1.25))
    assert zoomed.sum() / ball.sum() == pytest.approx(1.25**3, rel=0.05)
    assert np.allclose(np.argwhere(zoomed > 0).mean(axis=0), 16, atol=0.1)


def test_apply_rejects_a_shape_mismatch() -> None:
    mask = two_lungs()
    with pytest.raises(ValueError, match="shape"):
        apply(mask, mask, AugmentParams(shape=(8, 8, 8), zoom=1.1))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("elastic_p", 1.5),
        ("rotate_p", -0.1),
        ("noise_p", float("nan")),
        ("elastic_strength", -1.0),
        ("rotate_max_deg", -5.0),
        ("rotate_max_deg", 181.0),
        ("intensity_shift_max", -0.1),
        ("noise_sd", -0.01),
        ("scale_max", 1.0),
        ("brightness_max", 1.2),
        ("elastic_sigma", 0.0),
        ("flip_axes", (3,)),
        ("flip_axes", (0, 0)),
    ],
)
def test_bad_ranges_raise_config_error_naming_the_key(key: str, value: object) -> None:
    cfg = dataclasses.replace(AugmentConfig(), **{key: value})
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        check_config(cfg)
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        augment(np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32), cfg, seed=0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (None, None),  # the defaults (= params.yaml's augment section, test_config.py)
        ("elastic_p", 1.0), ("rotate_p", 0.0), ("elastic_strength", 0.0), ("rotate_max_deg", 180.0),
        ("intensity_shift_max", 0.0), ("noise_sd", 0.0), ("scale_max", 0.99), ("brightness_max", 0.99),
        ("elastic_sigma", 0.1), ("flip_axes", ()), ("flip_axes", (0, 1, 2)),
    ],
)
def test_defaults_and_boundary_values_are_accepted_and_used(key: str | None, value: object) -> None:
    """The other side of the bad ranges above: the defaults and each range's edge pass check_config, and augment
    with everything switched on at that value returns a finite volume of the same shape with a binary, non-empty mask."""
    cfg = AugmentConfig() if key is None else dataclasses.replace(AugmentConfig(), **{key: value})
    assert check_config(cfg) is None
    on = dataclasses.replace(cfg, **{k: 1.0 for k in ("elastic_p", "rotate_p", "flip_p", "scale_p", "intensity_p",
                                                      "noise_p", "brightness_p") if k != key})
    mask = two_lungs()
    out_image, out_mask = augment(ct_like(mask), mask, on, seed=3)
    assert out_image.shape == out_mask.shape == SHAPE and np.isfinite(out_image).all()
    assert set(np.unique(out_mask)) <= {0.0, 1.0} and out_mask.any()


def test_plot_augmentation_writes_a_png(tmp_path: Path) -> None:
    mask = two_lungs()
    image = ct_like(mask)
    aug_image, aug_mask = augment(image, mask, ALL_ON, seed=0)
    out = plot_augmentation(image, mask, aug_image, aug_mask, tmp_path / "fig" / "aug.png", title="augmentation")
    assert out.exists() and out.stat().st_size > 5_000
