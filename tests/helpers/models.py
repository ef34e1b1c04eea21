"""A tiny untrained network for the tests that need a real ``.keras`` file but no trained weights."""

from __future__ import annotations

from pathlib import Path


def save_tiny_unet(path: Path, shape: tuple[int, int, int], seed: int = 0, base_filters: int = 2, depth: int = 1) -> Path:
    """Build lungseg's 3D U-Net for ``shape`` (random weights from ``seed``, no dropout), save it to ``path``."""
    import keras

    from lungseg.nn.model import build_unet3d

    keras.utils.set_random_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    build_unet3d(tuple(shape), base_filters=base_filters, depth=depth, dropout=0.0).save(path)
    return path
