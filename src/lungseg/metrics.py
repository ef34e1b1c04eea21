"""Overlap metrics on boolean masks (numpy only).

Both functions take two arrays of the same shape (any number of dimensions,
e.g. ``[i, j, k]`` volumes); non-zero counts as foreground. Empty masks follow
an explicit rule: both empty -> 1.0 (perfect agreement), exactly one empty ->
0.0.
"""

from __future__ import annotations

import numpy as np


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred).astype(bool, copy=False), np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: pred {p.shape} vs truth {t.shape}")
    return p, t


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|P & T| / (|P| + |T|)``.

    Returns 1.0 when both masks are empty and 0.0 when exactly one is empty.

    Raises:
        ValueError: the shapes differ.
    """
    p, t = _pair(pred, truth)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard) ``|P & T| / |P | T|``.

    Returns 1.0 when both masks are empty and 0.0 when exactly one is empty.

    Raises:
        ValueError: the shapes differ.
    """
    p, t = _pair(pred, truth)
    union = int(np.count_nonzero(p | t))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & t)) / union
