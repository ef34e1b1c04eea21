"""Stage 2 of the cascade at prediction time: the refine box and the :class:`Refiner`.

Stage 1 (the paper's network on the 64^3 grid) finds the lungs; its probability, mapped onto
the canonical CT grid inside its crop box, gives the *refine box*: the box around
``probability > threshold``, grown by ``refine.margin_mm`` and kept inside the crop box.
That box is resampled to about ``refine.spacing_mm`` (each side a multiple of ``2**depth``,
box-edge rule of :mod:`lungseg.inference.preprocessing`) and fed to the stage-2 network as two
channels: the CT (HU window to [0, 1], standardised over the box) and the stage-1
probability. Its output goes back onto the canonical voxels of the box by linear
interpolation and replaces stage 1's probability there. Training: :mod:`lungseg.training.refine`.

Arrays are in canonical RAS axis order ``[x, y, z]`` (:func:`lungseg.inference.preprocessing.to_canonical`)
unless stated; "fine" arrays are on the refine grid; "box" arrays on the canonical voxels of
the refine box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lungseg.config import PreprocessConfig, RefineConfig
from lungseg.inference.preprocessing import (
    GridMap,
    resample_box,
    resample_to_box,
    standardize,
    window_normalize,
)
from lungseg.morphology import bounding_box


@dataclass(frozen=True)
class RefineBox:
    """Where the fine grid sits: canonical voxels ``[lo, hi)`` resampled to ``shape``."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(h - lo for lo, h in zip(self.lo, self.hi))  # type: ignore[return-value]


def fine_shape(size: tuple[int, ...], spacing_mm: tuple[float, ...], target_mm: float, multiple: int) -> tuple[int, ...]:
    """Fine grid shape for a box of ``size`` canonical voxels: about ``target_mm`` voxels, each
    side a multiple of ``multiple`` (at least one multiple)."""
    return tuple(max(multiple, int(math.ceil(n * s / target_mm / multiple)) * multiple) for n, s in zip(size, spacing_mm))


def refine_box(
    crop_prob: np.ndarray, grid: GridMap, spacing_mm: tuple[float, ...], cfg: RefineConfig, threshold: float = 0.5
) -> RefineBox | None:
    """The refine box for stage 1's probability on the crop box (canonical), or None if it finds no lung."""
    margins = tuple(int(math.ceil(cfg.margin_mm / s)) for s in spacing_mm)
    box = bounding_box(crop_prob > threshold, margins)
    if box is None:
        return None
    lo = [c + sl.start for c, sl in zip(grid.crop_lo, box)]
    hi = [c + sl.stop for c, sl in zip(grid.crop_lo, box)]
    size = tuple(h - a for a, h in zip(lo, hi))
    return RefineBox(tuple(lo), tuple(hi), fine_shape(size, spacing_mm, cfg.spacing_mm, 2**cfg.depth))  # type: ignore[arg-type]


def box_of_crop(crop_values: np.ndarray, grid: GridMap, box: RefineBox) -> np.ndarray:
    """The part of a crop-box array (canonical voxels of the crop box) that is the refine box."""
    sl = tuple(slice(lo - c, hi - c) for lo, hi, c in zip(box.lo, box.hi, grid.crop_lo))
    return crop_values[sl]


def fine_input(
    canonical_hu: np.ndarray, prior_box: np.ndarray, box: RefineBox, pre: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, prior)`` on the fine grid: standardised windowed CT and the stage-1 probability."""
    image = standardize(window_normalize(resample_box(canonical_hu, box.lo, box.hi, box.shape), pre.hu_min, pre.hu_max))
    prior = resample_box(prior_box, (0, 0, 0), box.size, box.shape)
    return image, np.clip(prior, 0.0, 1.0).astype(np.float32)


class Refiner:
    """A loaded stage-2 network and its config."""

    def __init__(self, model: Any, cfg: RefineConfig) -> None:
        self.model, self.cfg = model, cfg

    def predict_fine(self, image: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Fine-grid probability for the whole box in one pass (shape multiple of ``2**depth``)."""
        x = np.stack([image, prior], axis=-1)[None].astype(np.float32)
        y = self.model(x, training=False)
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        return np.asarray(y, dtype=np.float32)[0, ..., 0]

    def refine(
        self, canonical_hu: np.ndarray, spacing_mm: tuple[float, ...], crop_prob: np.ndarray, grid: GridMap,
        pre: PreprocessConfig, threshold: float = 0.5,
    ) -> np.ndarray:
        """Stage 1's crop-box probability with the refine box replaced by stage 2's (a new array)."""
        box = refine_box(crop_prob, grid, spacing_mm, self.cfg, threshold)
        out = np.array(crop_prob, dtype=np.float32, copy=True)
        if box is None:
            return out
        image, prior = fine_input(canonical_hu, box_of_crop(crop_prob, grid, box), box, pre)
        fine = self.predict_fine(image, prior)
        sl = tuple(slice(lo - c, hi - c) for lo, hi, c in zip(box.lo, box.hi, grid.crop_lo))
        out[sl] = resample_to_box(fine, box.size)
        return out
