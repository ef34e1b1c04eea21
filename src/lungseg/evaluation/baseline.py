"""Classical threshold + morphology lung segmentation (the "early methods" baseline).

:func:`segment_lungs` is a fair implementation of the textbook pipeline
(Hu et al. 2001 style) that the U-Net is compared against:

1. Light in-plane Gaussian smoothing (sigma ~0.7 voxel) against noise.
2. Threshold: candidate air/lung voxels are ``HU < -320``.
3. Outside air removal: per axial slice, candidate regions connected to the
   image border (air around the body, table core open to the side) are dropped.
4. Airway removal: the trachea is found in the upper slices as a round, very
   dark (< -950 HU) region between the lung apices; it is region-grown in 3D
   at that strict threshold (falling back to stricter thresholds if the growth
   leaks into the lungs), extended over its partial-volume rim (conditional
   in-plane dilation into voxels < -500 HU, ~3 mm) plus one voxel, and removed.
5. Component selection: 3D connected components; the two largest (> 50 ml)
   are the lungs. If only one large component remains (lungs touching at a
   junction line), it is cut along the patient's left-right axis at the
   narrowest column near its centre, slice by slice.
6. Per-slice hole filling (brings vessels, bronchial walls and enclosed
   nodules into the lung) and a small in-plane closing, per lung.
7. Left/right from the geometry: the lung with the smaller LPS x (patient
   right) is label 1, the other label 2.

Dense lung (consolidation, atelectasis) touching the lung boundary is, by
design of such methods, missed; that is what the learned model must beat.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from lungseg.io.geometry import Geometry
from lungseg.morphology import INPLANE, border_connected_2d, fill_holes_2d, split_merged

log = logging.getLogger(__name__)

LUNG_THRESHOLD_HU = -320.0
AIRWAY_THRESHOLDS_HU = (-950.0, -975.0, -990.0, -920.0)
def _find_trachea_seed(dark: np.ndarray, cand: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray | None:
    """Boolean seed (one slice) of the trachea: a round dark blob near the midline in the upper slices.

    The midline is the centroid (along i) of all candidate air inside the body in the searched slab:
    the lung apices flank the trachea.
    """
    area_vox = spacing[0] * spacing[1]
    ks = np.flatnonzero(dark.any(axis=(0, 1)))
    if len(ks) == 0:
        return None
    top = ks[-1]
    k_lo = max(ks[0], top - int(80 / spacing[2]))
    slab = cand[:, :, k_lo : top + 1]
    if not slab.any():
        return None
    mid = float(np.argwhere(slab)[:, 0].mean())
    for k in range(top, k_lo - 1, -1):
        lab, n = ndimage.label(dark[:, :, k])
        best, best_d = None, np.inf
        for c, sl in enumerate(ndimage.find_objects(lab), start=1):
            area = (lab[sl] == c).sum() * area_vox
            if not min(40.0, 3 * area_vox) <= area <= 1200:
                continue
            w, h = (sl[0].stop - sl[0].start) * spacing[0], (sl[1].stop - sl[1].start) * spacing[1]
            if max(w, h) > 2.2 * min(w, h) or area < 0.5 * w * h:
                continue  # not round
            d = abs(0.5 * (sl[0].start + sl[0].stop - 1) - mid) * spacing[0]
            if d < 35 and d < best_d:
                best, best_d = c, d
        if best is not None:
            seed = np.zeros(dark.shape, dtype=bool)
            seed[:, :, k] = lab == best
            return seed
    return None


def _airways(smooth: np.ndarray, cand: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Trachea and main bronchi grown from a seed at a strict threshold (stricter if it leaks)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for thr in AIRWAY_THRESHOLDS_HU:
        dark = cand & (smooth < thr)
        seed = _find_trachea_seed(dark, cand, spacing)
        if seed is None:
            continue
        lab, _ = ndimage.label(dark)
        ids = np.unique(lab[seed & dark])
        ids = ids[ids > 0]
        tree = np.isin(lab, ids)
        if tree.sum() * voxel_ml <= 250.0:  # a plausible airway tree, not the lungs
            # take in the partial-volume rim of the lumen: conditional dilation into dark voxels (~3 mm)
            steps = max(1, int(np.ceil(3.0 / min(spacing[0], spacing[1]))))
            tree = ndimage.binary_dilation(tree, structure=INPLANE, iterations=steps, mask=smooth < -500)
            return ndimage.binary_dilation(tree, structure=INPLANE)
        log.debug("airway growth at %.0f HU leaked (%.0f ml), trying stricter", thr, tree.sum() * voxel_ml)
    return np.zeros_like(cand)


def _lr_axis(geometry: Geometry) -> tuple[int, float]:
    """Voxel axis most aligned with LPS x, and the sign of its x component."""
    d = geometry.direction_matrix
    ax = int(np.argmax(np.abs(d[0, :])))
    return ax, float(np.sign(d[0, ax]) or 1.0)


def segment_lungs(hu: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Segment the lungs of a chest CT by thresholding and morphology.

    Args:
        hu: Hounsfield units, array ``[i, j, k]`` (columns, rows, axial slices) on ``geometry``.
        geometry: The grid of ``hu``; its direction decides which lung is the patient's right.

    Returns:
        uint8 labels ``[i, j, k]``: 0 background, 1 right lung, 2 left lung.

    Raises:
        ValueError: ``hu`` is not 3D or does not match ``geometry.shape``.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3 or hu.shape != tuple(geometry.shape):
        raise ValueError(f"hu shape {hu.shape} does not match geometry shape {tuple(geometry.shape)}")
    spacing = tuple(float(s) for s in geometry.spacing_mm)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), sigma=(0.7, 0.7, 0.0))

    cand = smooth < LUNG_THRESHOLD_HU
    cand &= ~border_connected_2d(cand)
    cand &= ~_airways(smooth, cand, spacing)  # type: ignore[arg-type]

    lab, n = ndimage.label(cand)
    out = np.zeros(hu.shape, dtype=np.uint8)
    if n == 0:
        return out
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    big = [int(i) + 1 for i in order[:2] if sizes[i] * voxel_ml >= 50.0]
    axis, _ = _lr_axis(geometry)
    if len(big) == 2 and sizes[big[1] - 1] >= 0.2 * sizes[big[0] - 1]:
        lungs = [lab == big[0], lab == big[1]]
    elif big:
        lungs = list(split_merged(lab == big[0], axis))
    else:
        return out

    filled = []
    for m in lungs:
        m = fill_holes_2d(m)
        m = ndimage.binary_closing(m, structure=INPLANE, iterations=2)
        filled.append(fill_holes_2d(m))
    # voxels claimed by both after closing go to the lung they originally belonged to
    both = filled[0] & filled[1]
    filled[0] &= ~both | lungs[0]
    filled[1] &= ~filled[0]

    coords = [np.argwhere(m).mean(axis=0) if m.any() else np.zeros(3) for m in filled]
    x = [float(geometry.voxel_to_lps(c)[0]) for c in coords]
    right, left = (0, 1) if x[0] < x[1] else (1, 0)
    out[filled[right]] = 1
    out[filled[left]] = 2
    return out
