"""The cascade's stage 2: fine grid, simulated stage 1, patches, the Refiner inside the Segmenter, bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import PostprocessConfig, PreprocessConfig, RefineConfig
from lungseg.evaluation.metrics import dice
from lungseg.inference.preprocessing import preprocess_image, preprocess_mask, to_canonical
from lungseg.inference.refine import Refiner, fine_shape, refine_box
from lungseg.inference.segmenter import REFINE_FILE, Segmenter, write_bundle
from lungseg.synthetic import make_phantom
from lungseg.training.refine import build_case, fit_refiner, sample_patch, simulated_stage1

PRE = PreprocessConfig(shape=(32, 32, 32))
POST = PostprocessConfig()
CFG = RefineConfig(enabled=True, spacing_mm=4.0, margin_mm=8.0, patch=(16, 16, 16), base_filters=2, depth=1,
                   batch_size=2, patches_per_epoch=4, val_patches_per_case=1, max_epochs=2, max_minutes=0.0)


class Oracle:
    """Stage 1 that outputs the preprocessed reference mask."""

    def __init__(self, mask: np.ndarray) -> None:
        self.output = mask.astype(np.float32)[None, ..., None]
        self.input_shape = (None, *mask.shape, 1)

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.output


class PriorEcho:
    """Stage 2 that returns its stage-1 channel (scaled by ``gain``): the cascade then repeats stage 1."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain, self.shapes = gain, []

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.shapes.append(x.shape)
        return self.gain * x[..., 1:2]


@pytest.fixture(scope="module")
def case():
    ph = make_phantom(np.random.default_rng([5, 2]), False, max_matrix=96)
    truth = ph.masks["Lung_R"].astype(np.uint8) + 2 * ph.masks["Lung_L"]
    _, grid = preprocess_image(ph.hu, ph.geometry, PRE)
    return ph.hu, ph.geometry, truth, grid, preprocess_mask(truth, grid)


def _canonical(case):
    hu, geometry, truth, grid, _ = case
    ornt = np.asarray(grid.ornt)
    spacing = tuple(float(geometry.spacing_mm[int(a)]) for a in np.argsort(ornt[:, 0]))
    return to_canonical(hu, ornt), to_canonical(truth, ornt), spacing


def test_fine_shape_is_a_multiple_near_the_target_spacing() -> None:
    assert fine_shape((100, 50, 7), (1.0, 2.0, 5.0), 2.0, 8) == (56, 56, 24)
    assert fine_shape((3, 3, 3), (1.0, 1.0, 1.0), 2.0, 8) == (8, 8, 8)


def test_refine_box_holds_the_lungs_with_margin_inside_the_crop(case) -> None:
    _, geometry, truth, grid, net_mask = case
    canonical_hu, canonical_truth, spacing = _canonical(case)
    box = refine_box(simulated_stage1(net_mask, grid), grid, spacing, CFG)
    assert box is not None and all(s % 2 == 0 for s in box.shape)
    inside = canonical_truth[tuple(slice(a, b) for a, b in zip(box.lo, box.hi))] > 0
    assert inside.sum() >= 0.995 * (canonical_truth > 0).sum()
    assert all(c <= a and b <= d for a, b, c, d in zip(box.lo, box.hi, grid.crop_lo, grid.crop_hi))
    assert refine_box(np.zeros((4, 4, 4), np.float32), grid, spacing, CFG) is None


def test_training_case_and_patches(case) -> None:
    _, geometry, truth, grid, net_mask = case
    canonical_hu, canonical_truth, spacing = _canonical(case)
    built = build_case("c", canonical_hu, canonical_truth, spacing, grid, net_mask, PRE, CFG)
    assert built.image.shape == built.prior.shape == built.truth.shape and built.image.dtype == np.float16
    assert dice(built.prior > 0.5, built.truth > 0) > 0.85  # the simulated stage 1 is close but not exact
    assert abs(float(built.image.astype(np.float32).mean())) < 1e-2
    rng = np.random.default_rng(0)
    x, y = sample_patch(built, rng, CFG.patch, 1.0)
    assert x.shape == (*CFG.patch, 2) and y.shape == (*CFG.patch, 1)
    assert 0 < y.mean() < 1  # centred on the lung surface
    a = sample_patch(built, np.random.default_rng(3), CFG.patch, 0.5)
    b = sample_patch(built, np.random.default_rng(3), CFG.patch, 0.5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_segmenter_uses_the_refined_probability(case) -> None:
    hu, geometry, truth, grid, net_mask = case
    stage1 = Segmenter(Oracle(net_mask), PRE, POST).segment(hu, geometry)
    echo = PriorEcho()
    cascade = Segmenter(Oracle(net_mask), PRE, POST, Refiner(echo, CFG)).segment(hu, geometry)
    assert len(echo.shapes) == 1 and echo.shapes[0][-1] == 2 and all(s % 2 == 0 for s in echo.shapes[0][1:4])
    assert "refine" in cascade.timings_s
    assert dice(cascade.labels > 0, stage1.labels > 0) > 0.95 and dice(cascade.labels > 0, truth > 0) > 0.85
    empty = Segmenter(Oracle(net_mask), PRE, POST, Refiner(PriorEcho(gain=0.0), CFG)).segment(hu, geometry)
    assert not empty.labels.any()  # stage 2 decides inside its box, which holds all the lung


@pytest.mark.slow  # trains the refiner
def test_fit_and_bundle_round_trip(case, tmp_path: Path) -> None:
    import keras

    from lungseg.nn.model import build_unet3d

    _, geometry, truth, grid, net_mask = case
    canonical_hu, canonical_truth, spacing = _canonical(case)
    built = build_case("c", canonical_hu, canonical_truth, spacing, grid, net_mask, PRE, CFG)
    result = fit_refiner([built], [built], CFG, tmp_path / "refine.keras", verbose=0)
    assert (tmp_path / "refine.keras").is_file() and len(result["history"]) == 2
    assert all(np.isfinite(r["val_loss"]) for r in result["history"])
    stage1_path = tmp_path / "model.keras"
    build_unet3d(PRE.shape, base_filters=2, depth=1, dropout=0.0).save(stage1_path)
    bundle = write_bundle(tmp_path / "bundle", stage1_path, PRE, POST, (tmp_path / "refine.keras", CFG))
    assert (bundle / REFINE_FILE).is_file() and json.loads((bundle / "lungseg_config.json").read_text())["refine"]["spacing_mm"] == 4.0
    loaded = Segmenter.load(bundle, params_path=None)
    assert loaded.refiner is not None and loaded.refiner.cfg == CFG
    direct = Segmenter(keras.models.load_model(stage1_path, compile=False), PRE, POST,
                       Refiner(keras.models.load_model(tmp_path / "refine.keras", compile=False), CFG))
    hu = case[0]
    from_bundle, in_memory = loaded.segment(hu, geometry), direct.segment(hu, geometry)
    # the same two networks: the same probabilities (not only the same, possibly empty, labels; the bundle runs
    # them through ONNX Runtime, about 1e-7 from Keras) ...
    assert float(in_memory.probability.std()) > 1e-3  # ... which vary over the scan, so the comparison means something
    np.testing.assert_allclose(from_bundle.probability, in_memory.probability, atol=1e-5)
    np.testing.assert_array_equal(from_bundle.labels, in_memory.labels)
