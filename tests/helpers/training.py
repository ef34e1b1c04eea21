"""Tiny training data: standardised noisy images of dark ellipsoids ('lungs') and their masks."""

from __future__ import annotations

import numpy as np

from lungseg.config import AugmentConfig
from lungseg.training.dataset import SplitArrays

#: every augmentation probability 0: each training batch is exactly one of the processed volumes
ZERO_AUG = AugmentConfig(**{k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k.endswith("_p")})


def blobs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (float32, about -1 inside, +1 outside, noise 0.3) and masks (uint8), ``(n, size, size, size)``."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[:size, :size, :size].astype(np.float32) / size - 0.5
    images, masks = [], []
    for _ in range(n):
        c = rng.uniform(-0.1, 0.1, 3)
        r = rng.uniform(0.2, 0.3, 3)
        m = (((g - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
        img = np.where(m, -1.0, 1.0) + rng.normal(0, 0.3, m.shape)
        images.append(img.astype(np.float32))
        masks.append(m.astype(np.uint8))
    return np.stack(images), np.stack(masks)


def blob_split(n: int, seed: int, size: int = 16, prefix: str = "c") -> SplitArrays:
    """:func:`blobs` as a split with case IDs ``<prefix>0`` ... ``<prefix><n-1>``."""
    images, masks = blobs(n, size, seed)
    return SplitArrays(images, masks, [f"{prefix}{i}" for i in range(n)])
