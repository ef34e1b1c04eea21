"""The paper's 3D U-Net (Keras 3).

Input ``(batch, D, H, W, 1)`` float32 standardised CT on the network grid; output
``(batch, D, H, W, 1)`` sigmoid lung probability. Per level: two (Conv3D 3x3x3 + BatchNorm
+ ReLU), SpatialDropout3D; MaxPool3D down; Conv3DTranspose up, concatenated with the skip;
L2 on every conv kernel. D, H, W must be divisible by ``2**depth``.
"""

from __future__ import annotations

import keras
from keras import layers, regularizers


def conv_block(
    x: keras.KerasTensor, filters: int, l2: float, dropout: float, name: str, bn_momentum: float = 0.9
) -> keras.KerasTensor:
    """Two (Conv3D 3x3x3 -> BatchNorm -> ReLU) then SpatialDropout3D; shape ``(B, D, H, W, filters)``."""
    for n in (1, 2):
        x = layers.Conv3D(
            filters, 3, padding="same", use_bias=False,
            kernel_regularizer=regularizers.L2(l2) if l2 > 0 else None, name=f"{name}_conv{n}",
        )(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{n}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{n}")(x)
    if dropout > 0:
        x = layers.SpatialDropout3D(dropout, name=f"{name}_drop")(x)
    return x


def build_unet3d(
    shape: tuple[int, int, int] = (64, 64, 64),
    base_filters: int = 16,
    depth: int = 3,
    dropout: float = 0.1,
    l2: float = 1e-5,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """Build the 3D U-Net.

    Args:
        shape: Network grid ``(D, H, W)``, each divisible by ``2**depth``.
        base_filters: Filters at the first level; doubled at each level down.
        depth: Number of poolings (levels below the first).
        dropout: SpatialDropout3D rate in encoder and decoder blocks (0 = none).
        l2: L2 factor on conv kernels (0 = none).
        bn_momentum: BatchNorm moving-average momentum. 0.9 rather than Keras' 0.99: with ~10
            steps per epoch the moving statistics used for validation catch up within an epoch
            instead of ten, so validation loss (which drives LR and early stopping) is meaningful
            from the start.

    Returns:
        An uncompiled ``keras.Model`` mapping ``(B, D, H, W, 1)`` -> ``(B, D, H, W, 1)`` in [0, 1].
    """
    if any(s % (2**depth) for s in shape):
        raise ValueError(f"network shape {tuple(shape)} must be divisible by 2**depth = {2**depth}")
    inputs = keras.Input((*shape, 1), name="ct")
    x, skips = inputs, []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, l2, dropout, f"enc{level}", bn_momentum)
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"pool{level}")(x)
    x = conv_block(x, base_filters * 2**depth, l2, dropout, "bottleneck", bn_momentum)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv3DTranspose(
            filters, 2, strides=2, padding="same",
            kernel_regularizer=regularizers.L2(l2) if l2 > 0 else None, name=f"up{level}",
        )(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = conv_block(x, filters, l2, dropout, f"dec{level}", bn_momentum)
    outputs = layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="lung_prob")(x)
    return keras.Model(inputs, outputs, name="unet3d")
