"""Stage 2 of the cascade, training: fit the refine network (:mod:`lungseg.inference.refine` uses it).

Training (:func:`fit_refiner`) needs no stage-1 model: the stage-1 input is simulated from the
reference mask as stage 1 sees it (the preprocessed 64^3 mask, slightly blurred, mapped back
through the same path), and each training patch perturbs it (dilated or eroded by up to two
fine voxels, blurred). So ``train_refine`` and ``train`` are independent stages. The refine box, the fine grid and
the array conventions are those of :mod:`lungseg.inference.refine`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.config import PreprocessConfig, RefineConfig
from lungseg.inference.preprocessing import (
    GridMap,
    resample_box,
    resample_to_box,
)
from lungseg.inference.refine import box_of_crop, fine_input, refine_box

log = logging.getLogger(__name__)

PRIOR_SIGMA = 0.8  # 64^3 voxels: the blur that turns the preprocessed mask into a stage-1-like probability


def simulated_stage1(net_mask: np.ndarray, grid: GridMap) -> np.ndarray:
    """A stage-1-like probability on the crop box from the preprocessed 64^3 reference mask."""
    prob = ndimage.gaussian_filter(np.asarray(net_mask, np.float32), PRIOR_SIGMA)
    return resample_to_box(prob, tuple(h - lo for lo, h in zip(grid.crop_lo, grid.crop_hi)))


@dataclass
class RefineCase:
    """One training case on its fine grid (float16 image and prior, uint8 truth)."""

    name: str
    image: np.ndarray
    prior: np.ndarray
    truth: np.ndarray
    _surface: np.ndarray | None = None  # lung-surface voxel indices, found on first use

    def surface(self) -> np.ndarray:
        """Indices ``(n, 3)`` of the lung-surface voxels (patch centres)."""
        if self._surface is None:
            t = self.truth.astype(bool)
            self._surface = np.argwhere(t ^ ndimage.binary_erosion(t))
        return self._surface


def build_case(
    name: str, canonical_hu: np.ndarray, canonical_lungs: np.ndarray, spacing_mm: tuple[float, ...], grid: GridMap,
    net_mask: np.ndarray, pre: PreprocessConfig, cfg: RefineConfig,
) -> RefineCase | None:
    """The fine-grid arrays of one prepared case (canonical CT and lung mask, its GridMap and
    its preprocessed 64^3 mask); None when the simulated stage 1 finds no lung."""
    crop_prob = simulated_stage1(net_mask, grid)
    box = refine_box(crop_prob, grid, spacing_mm, cfg)
    if box is None:
        return None
    image, prior = fine_input(canonical_hu, box_of_crop(crop_prob, grid, box), box, pre)
    truth = resample_box((canonical_lungs > 0).astype(np.float32), box.lo, box.hi, box.shape) > 0.5
    return RefineCase(name, image.astype(np.float16), prior.astype(np.float16), truth.astype(np.uint8))


# ------------------------------------------------------------------------- patches


def _patch_slices(shape: tuple[int, ...], centre: np.ndarray, patch: tuple[int, ...]) -> tuple[slice, ...]:
    start = [int(np.clip(c - p // 2, 0, max(s - p, 0))) for c, p, s in zip(centre, patch, shape)]
    return tuple(slice(a, a + p) for a, p in zip(start, patch))


def _pad(a: np.ndarray, patch: tuple[int, ...], value: float) -> np.ndarray:
    pad = [(0, max(p - s, 0)) for s, p in zip(a.shape, patch)]
    return np.pad(a, pad, constant_values=value) if any(b for _, b in pad) else a


def perturb_prior(prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stage-1 errors to learn from: the mask dilated or eroded by 0-2 voxels, then blurred."""
    mask = prior > 0.5
    k = int(rng.integers(-2, 3))
    if k > 0:
        mask = ndimage.binary_dilation(mask, iterations=k)
    elif k < 0:
        mask = ndimage.binary_erosion(mask, iterations=-k)
    soft = ndimage.gaussian_filter(mask.astype(np.float32), rng.uniform(0.5, 1.5))
    w = rng.uniform(0.0, 1.0)  # keep part of stage 1's own soft edge
    return (w * prior + (1 - w) * soft).astype(np.float32)


def sample_patch(
    case: RefineCase, rng: np.random.Generator, patch: tuple[int, ...], boundary_fraction: float, augment: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One training patch: ``x`` (P, P, P, 2) float32 (image, prior), ``y`` (P, P, P, 1) float32."""
    truth = case.truth
    if rng.uniform() < boundary_fraction and truth.any():
        pts = case.surface()
        centre = pts[int(rng.integers(len(pts)))]
    else:
        centre = np.array([rng.integers(s) for s in truth.shape])
    sl = _patch_slices(truth.shape, centre, patch)
    image = _pad(case.image[sl].astype(np.float32), patch, float(case.image.min()))
    prior = _pad(case.prior[sl].astype(np.float32), patch, 0.0)
    y = _pad(truth[sl].astype(np.float32), patch, 0.0)
    if augment:
        prior = perturb_prior(prior, rng)
        if rng.uniform() < 0.5:  # left-right flip (canonical axis 0)
            image, prior, y = image[::-1], prior[::-1], y[::-1]
        image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.1)
    x = np.stack([image, prior], axis=-1).astype(np.float32)
    return x, y[..., None].astype(np.float32)


# ------------------------------------------------------------------------- training


def build_refine_model(cfg: RefineConfig, bn_momentum: float = 0.9) -> Any:
    """The stage-2 U-Net: fully convolutional, two input channels."""
    from lungseg.nn.model import build_unet3d

    return build_unet3d((None, None, None), cfg.base_filters, cfg.depth, cfg.dropout, cfg.l2, bn_momentum, in_channels=2)


def fit_refiner(
    train: list[RefineCase], val: list[RefineCase], cfg: RefineConfig, model_path: Path,
    on_epoch: Any = None, verbose: int = 2,
) -> dict[str, Any]:
    """Train the stage-2 network on random patches; the best validation-loss model goes to ``model_path``.

    Returns the history (one dict per epoch), the best epoch, and whether the time budget or
    early stopping ended it.
    """
    import keras
    import tensorflow as tf

    from lungseg.nn.keras_metrics import VolumeDice
    from lungseg.nn.losses import DiceBCELoss
    from lungseg.nn.runtime import configure_threads
    from lungseg.training.fit import TimeBudget

    configure_threads()
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vrng = np.random.default_rng(cfg.seed + 1)
    vx, vy = zip(*[sample_patch(c, vrng, cfg.patch, 1.0, augment=False)
                   for c in val for _ in range(cfg.val_patches_per_case)])
    val_data = (np.stack(vx), np.stack(vy))

    def patches():
        while True:
            case = train[int(rng.integers(len(train)))]
            yield sample_patch(case, rng, cfg.patch, cfg.boundary_fraction)

    spec = (tf.TensorSpec((*cfg.patch, 2), tf.float32), tf.TensorSpec((*cfg.patch, 1), tf.float32))
    ds = tf.data.Dataset.from_generator(patches, output_signature=spec).batch(cfg.batch_size).prefetch(1)
    model = build_refine_model(cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=DiceBCELoss(), metrics=[VolumeDice()])
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            history.append(row)
            if on_epoch is not None:
                on_epoch(epoch + 1, row)

    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                            restore_best_weights=True)
    budget = [TimeBudget(cfg.max_minutes)] if cfg.max_minutes > 0 else []
    start = time.perf_counter()
    model.fit(
        ds, steps_per_epoch=cfg.patches_per_epoch // cfg.batch_size, epochs=cfg.max_epochs,
        validation_data=val_data, validation_batch_size=cfg.batch_size,
        callbacks=[keras.callbacks.ModelCheckpoint(model_path, monitor="val_loss", save_best_only=True),
                   keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-5),
                   stopper, *budget, Log()],
        verbose=verbose,
    )
    best = min(history, key=lambda r: r["val_loss"])
    return {"history": history, "best_epoch": int(best["epoch"]), "best": best, "seconds": time.perf_counter() - start,
            "stopped_by_budget": bool(budget) and budget[0].stopped, "stopped_early": stopper.stopped_epoch > 0}
