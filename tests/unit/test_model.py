from __future__ import annotations

import numpy as np
import pytest

from lungseg.model import build_unet3d


def test_output_shape_and_range() -> None:
    model = build_unet3d((32, 32, 16), base_filters=4, depth=2, dropout=0.1, l2=1e-5)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 16, 1)).astype(np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 32, 32, 16, 1)
    assert np.all(y >= 0) and np.all(y <= 1)


def test_architecture_follows_the_paper() -> None:
    model = build_unet3d((16, 16, 16), base_filters=4, depth=2, dropout=0.2, l2=1e-4)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("MaxPooling3D") == 2
    assert kinds.count("Conv3DTranspose") == 2
    assert kinds.count("Concatenate") == 2
    assert kinds.count("SpatialDropout3D") == 5  # 2 encoder + bottleneck + 2 decoder blocks
    assert kinds.count("BatchNormalization") == 2 * 5
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv3D" and layer.kernel_size == (3, 3, 3)]
    assert len(convs) == 10 and all(c.kernel_regularizer is not None for c in convs)
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_shape_must_be_divisible() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build_unet3d((30, 32, 32), depth=2)
