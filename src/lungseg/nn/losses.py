"""Dice + binary cross-entropy loss (Keras 3, backend-agnostic ops).

Tensors are ``(B, D, H, W, 1)``: ``y_true`` in {0, 1}, ``y_pred`` sigmoid probabilities.
"""

from __future__ import annotations

import keras
from keras import ops


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """Per-volume ``1 - soft Dice`` (shape ``(B,)``); ``smooth`` keeps empty volumes defined."""
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(y_true * y_pred, axis=axes)
    denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - (2.0 * inter + smooth) / (denom + smooth)


def dice_bce_loss(y_true, y_pred, smooth: float = 1.0):
    """Per-volume soft Dice loss plus mean voxel-wise binary cross-entropy (shape ``(B,)``)."""
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=axes[:-1])
    return soft_dice_loss(y_true, y_pred, smooth) + bce


@keras.saving.register_keras_serializable(package="lungseg")
class DiceBCELoss(keras.losses.Loss):
    """Loss class around :func:`dice_bce_loss` with ``get_config`` (serialisable)."""

    def __init__(self, smooth: float = 1.0, name: str = "dice_bce", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def call(self, y_true, y_pred):
        return dice_bce_loss(y_true, y_pred, self.smooth)

    def get_config(self) -> dict:
        return {**super().get_config(), "smooth": self.smooth}
