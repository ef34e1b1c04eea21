"""Overlap and surface-distance metrics on boolean masks.

All functions take two arrays of the same shape (``dice``/``iou``: any number of
dimensions; ``surface_distances``: 3D ``[i, j, k]`` volumes on one voxel grid); non-zero
counts as foreground. Empty masks follow explicit rules: Dice/IoU give 1.0 when both are
empty (perfect agreement) and 0.0 when exactly one is; surface distances give 0.0 when
both are empty and ``inf`` when exactly one is.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungseg.morphology import bounding_box


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


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a 6-neighbour outside the mask (or outside the array)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: tuple[float, ...]
) -> tuple[float, float]:
    """Symmetric surface distances between two masks, in mm: ``(hd95_mm, msd_mm)``.

    The surface of a mask is its foreground voxels with at least one 6-neighbour in the
    background (voxels on the array border count as surface). For every surface voxel of
    each mask the Euclidean distance (voxel centres, ``spacing_mm`` per axis) to the nearest
    surface voxel of the other mask is taken; both directions are pooled. ``hd95_mm`` is the
    95th percentile of the pooled distances (the LCTSC challenge's 95% Hausdorff distance;
    MONAI's ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two
    directed 95th percentiles, which is never smaller), ``msd_mm`` their mean (the average
    symmetric surface distance).

    Empty masks: both empty -> ``(0.0, 0.0)``; exactly one empty -> ``(inf, inf)`` (no
    surface to measure to; callers that average should count such cases separately).

    Distance transforms run on the bounding box of both masks (plus one voxel), so the
    cost scales with the lungs, not the scan.

    Args:
        pred: Predicted mask ``[i, j, k]``.
        truth: Reference mask, same shape and grid.
        spacing_mm: Voxel size along each axis in mm.

    Raises:
        ValueError: the shapes differ or ``spacing_mm`` does not match the dimensions.
    """
    p, t = _pair(pred, truth)
    if len(spacing_mm) != p.ndim:
        raise ValueError(f"spacing_mm has {len(spacing_mm)} values for {p.ndim}-dimensional masks")
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0, 0.0
    if not has_p or not has_t:
        return float("inf"), float("inf")
    box = bounding_box(p | t)
    # outside the box is background for both masks, as is outside the array (one voxel of padding)
    p = np.pad(p[box], 1)
    t = np.pad(t[box], 1)
    sp, st = _surface(p), _surface(t)
    sampling = tuple(float(s) for s in spacing_mm)
    to_t = ndimage.distance_transform_edt(~st, sampling=sampling)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)[st]
    pooled = np.concatenate([to_t, to_p])
    return float(np.percentile(pooled, 95)), float(pooled.mean())
