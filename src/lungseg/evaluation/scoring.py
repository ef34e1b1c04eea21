"""Test-split evaluation: the U-Net (through the :class:`~lungseg.inference.segmenter.Segmenter`) and the
classical baseline, scored at the network's shape and in each CT's own geometry.

Per case (threshold 0.5 everywhere):

* network grid (the paper's numbers): Dice, IoU and BCE of the network output against the
  preprocessed mask; the Segmenter recomputes the network input from the CT, and
  ``preprocess_max_abs_diff`` records how far it is from the ``preprocess`` stage's array
  (0 up to float rounding: training and inference preprocess identically);
* original geometry (the LCTSC challenge's numbers): Dice per lung (1 right, 2 left) and of
  both lungs together, IoU of both lungs, and per lung the 95% Hausdorff distance and the mean
  surface distance in mm; ``hd95_mm``/``msd_mm`` are the means over the two lungs;
* lung volumes in mL, predicted and true.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungseg.evaluation.metrics import dice, iou, surface_distances
from lungseg.io.geometry import Geometry

log = logging.getLogger(__name__)

RIGHT, LEFT = 1, 2
SUMMARY_KEYS = (
    "net_dice", "net_iou", "net_bce", "dice", "iou", "dice_right", "dice_left",
    "hd95_mm", "msd_mm", "hd95_right_mm", "hd95_left_mm", "volume_error_ml",
)


def bce(prob: np.ndarray, truth: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``prob`` against a 0/1 mask (same shape)."""
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    t = np.asarray(truth) > 0
    return float(-np.mean(np.where(t, np.log(p), np.log1p(-p))))


def geometry_metrics(labels: np.ndarray, truth: np.ndarray, geometry: Geometry) -> dict[str, float]:
    """Original-geometry metrics of a label map (0/1 right/2 left) against the reference labels."""
    spacing = tuple(float(s) for s in geometry.spacing_mm)
    row: dict[str, float] = {
        "dice": dice(labels > 0, truth > 0),
        "iou": iou(labels > 0, truth > 0),
    }
    for label, side in ((RIGHT, "right"), (LEFT, "left")):
        p, t = labels == label, truth == label
        row[f"dice_{side}"] = dice(p, t)
        row[f"hd95_{side}_mm"], row[f"msd_{side}_mm"] = surface_distances(p, t, spacing)
    row["hd95_mm"] = 0.5 * (row["hd95_right_mm"] + row["hd95_left_mm"])
    row["msd_mm"] = 0.5 * (row["msd_right_mm"] + row["msd_left_mm"])
    v = geometry.voxel_volume_ml
    row["volume_ml"] = float(np.count_nonzero(labels)) * v
    row["true_volume_ml"] = float(np.count_nonzero(truth)) * v
    row["volume_error_ml"] = row["volume_ml"] - row["true_volume_ml"]
    return row


@dataclass(frozen=True)
class CaseInputs:
    """One test case: its CT and reference labels on their own grid, and its network-grid arrays."""

    case: str
    hu: np.ndarray
    truth: np.ndarray
    geometry: Geometry
    net_image: np.ndarray
    net_mask: np.ndarray


def evaluate_case(segmenter, inputs: CaseInputs, with_baseline: bool = True):  # noqa: ANN001, ANN201
    """Score the Segmenter (and optionally the baseline) on one case.

    Returns ``(unet_row, baseline_row or None, segmentation)``; rows are flat dicts of floats
    (plus ``case`` and the U-Net's quality-warning codes, ``warnings``).
    """
    from lungseg.evaluation.baseline import segment_lungs
    from lungseg.inference.preprocessing import preprocess_mask

    seg = segmenter.segment(inputs.hu, inputs.geometry)
    net_pred = seg.network_probability > 0.5
    unet = {
        "case": inputs.case,
        "net_dice": dice(net_pred, inputs.net_mask),
        "net_iou": iou(net_pred, inputs.net_mask),
        "net_bce": bce(seg.network_probability, inputs.net_mask),
        "preprocess_max_abs_diff": float(np.max(np.abs(seg.network_image - inputs.net_image))),
        **geometry_metrics(seg.labels, inputs.truth, inputs.geometry),
        **{f"seconds_{k}": v for k, v in seg.timings_s.items()},
        "warnings": "; ".join(w.split(":")[0] for w in seg.warnings),  # the codes (lungseg.inference.quality)
    }
    base = None
    if with_baseline:
        labels = segment_lungs(inputs.hu, inputs.geometry)
        net_base = preprocess_mask(labels, seg.grid) > 0
        base = {
            "case": inputs.case,
            "net_dice": dice(net_base, inputs.net_mask),
            "net_iou": iou(net_base, inputs.net_mask),
            **geometry_metrics(labels, inputs.truth, inputs.geometry),
        }
    return unet, base, seg


def summarize(rows: Sequence[dict], keys: Sequence[str] = SUMMARY_KEYS) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of each metric over cases (infinite values, from an
    empty prediction, are counted in ``n_inf`` and left out of the statistics)."""
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([float(r[key]) for r in rows if key in r], dtype=np.float64)
        if len(values) == 0:
            continue
        finite = values[np.isfinite(values)]
        stats = {"mean": float(finite.mean()), "std": float(finite.std()), "min": float(finite.min()),
                 "max": float(finite.max())} if len(finite) else {}
        if len(finite) < len(values):
            stats["n_inf"] = int(len(values) - len(finite))
        out[key] = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in stats.items()}
    return out


def write_per_case_csv(path: Path, unet_rows: Sequence[dict], base_rows: Sequence[dict]) -> Path:
    """One row per case and method (``unet``, ``baseline``), the union of the metric columns."""
    import csv

    rows = [{"method": "unet", **r} for r in unet_rows] + [{"method": "baseline", **r} for r in base_rows]
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path
