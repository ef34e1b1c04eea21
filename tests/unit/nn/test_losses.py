from __future__ import annotations

import numpy as np
import pytest

from lungseg.nn.keras_metrics import SoftDice, VolumeDice, VolumeIoU
from lungseg.nn.losses import DiceBCELoss, dice_bce_loss, soft_dice_loss


def _masks():
    t = np.zeros((1, 4, 4, 4, 1), np.float32)
    t[:, :2] = 1  # 32 of 64 voxels
    return t


def test_loss_on_known_inputs() -> None:
    t = _masks()
    p = np.full_like(t, 0.5)
    # soft Dice: 2*16 / (32 + 32) = 0.5 (smooth 1 -> (32+1)/(64+1))
    assert float(soft_dice_loss(t, p)[0]) == pytest.approx(1 - 33 / 65, abs=1e-6)
    # BCE of p = 0.5 everywhere is ln 2
    assert float(dice_bce_loss(t, p)[0]) == pytest.approx(1 - 33 / 65 + np.log(2), abs=1e-4)
    perfect = float(DiceBCELoss()(t, np.clip(t, 1e-7, 1 - 1e-7)))
    assert perfect < 1e-3
    assert float(DiceBCELoss()(t, 1 - t)) > 1.0
    assert DiceBCELoss.from_config(DiceBCELoss(smooth=2.0).get_config()).smooth == 2.0


def _metric(cls, t, p) -> float:
    m = cls()
    m.update_state(t, p)
    return float(m.result())


def test_metric_edge_cases() -> None:
    empty = np.zeros((1, 4, 4, 4, 1), np.float32)
    t = _masks()
    assert _metric(VolumeDice, empty, empty) == 1.0  # both empty
    assert _metric(VolumeIoU, empty, empty) == 1.0
    assert _metric(VolumeDice, t, empty) == 0.0  # one empty
    assert _metric(VolumeDice, empty, t) == 0.0
    assert _metric(VolumeIoU, t, empty) == 0.0
    assert _metric(VolumeDice, t, t) == 1.0


def test_metrics_threshold_and_per_volume_mean() -> None:
    t = np.concatenate([_masks(), _masks()])
    p = t.copy()
    p[1, 0] = 0  # second volume: 16 of 32 predicted -> Dice 2*16/48, IoU 16/32
    p[0] = p[0] * 0.49 + (t[0] * 0.02)  # first volume: probs 0.51 inside, 0 outside -> perfect at 0.5
    assert _metric(VolumeDice, t, p) == pytest.approx((1 + 32 / 48) / 2)
    assert _metric(VolumeIoU, t, p) == pytest.approx((1 + 0.5) / 2)
    assert 0 < _metric(SoftDice, t, p) < 1
