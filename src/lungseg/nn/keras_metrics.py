"""Per-volume Dice and IoU at a fixed threshold as Keras metrics (the paper's test metrics).

Tensors are ``(B, D, H, W, 1)``. Each volume's score is computed on the binarised
prediction (``y_pred >= threshold``) and averaged over volumes; the empty-mask rule
matches :mod:`lungseg.evaluation.metrics`: both empty = 1, one empty = 0.
"""

from __future__ import annotations

import keras
from keras import ops


def _per_volume(y_true, y_pred, threshold: float, iou: bool):
    t = ops.cast(y_true > 0.5, "float32")
    p = ops.cast(y_pred >= threshold, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(t * p, axis=axes)
    st, sp = ops.sum(t, axis=axes), ops.sum(p, axis=axes)
    denom = st + sp - inter if iou else st + sp
    num = inter if iou else 2.0 * inter
    both_empty = ops.cast(ops.equal(st + sp, 0.0), "float32")
    return both_empty + (1.0 - both_empty) * num / ops.maximum(denom, 1.0)


class _VolumeMean(keras.metrics.Metric):
    iou = False

    def __init__(self, threshold: float = 0.5, name: str | None = None, **kwargs) -> None:
        super().__init__(name=name or self.default_name, **kwargs)
        self.threshold = threshold
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        scores = _per_volume(y_true, y_pred, self.threshold, self.iou)
        self.total.assign_add(ops.sum(scores))
        self.count.assign_add(ops.cast(ops.shape(scores)[0], "float32"))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="lungseg")
class VolumeDice(_VolumeMean):
    """Mean per-volume Dice of the thresholded prediction."""

    default_name = "dice"


@keras.saving.register_keras_serializable(package="lungseg")
class VolumeIoU(_VolumeMean):
    """Mean per-volume IoU of the thresholded prediction."""

    default_name = "iou"
    iou = True


@keras.saving.register_keras_serializable(package="lungseg")
class SoftDice(keras.metrics.MeanMetricWrapper):
    """Mean per-volume soft Dice on probabilities (not thresholded; logged as ``soft_dice``)."""

    def __init__(self, name: str = "soft_dice", **kwargs) -> None:
        from lungseg.nn.losses import soft_dice_loss

        super().__init__(fn=lambda t, p: 1.0 - soft_dice_loss(t, p), name=name, **kwargs)

    def get_config(self) -> dict:
        return {"name": self.name}
