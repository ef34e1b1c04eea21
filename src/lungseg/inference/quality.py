"""Quality warnings and lung statistics for one segmented CT.

A mask is only useful when the user knows it can be trusted. :func:`assess` looks at the
result and the input and returns plain-language warnings (each starts with a fixed code so
scripts can match it) plus the figures behind them; every prediction's JSON, the served
response, the log and ``evaluate``'s per-case report carry them:

* ``no lung``: less than :data:`NO_LUNG_ML` of lung found;
* ``partial coverage``: lung touches the first or last axial slice (the scan cuts the lungs,
  e.g. an abdominal CT holding only the lung bases);
* ``implausible volume``: a whole-chest total outside :data:`WHOLE_CHEST_ML`;
* ``left/right imbalance``: the smaller lung under :data:`MIN_SIDE_RATIO` of the larger
  (whole-chest scans only);
* ``HU not CT-like``: (almost) no voxel below :data:`AIR_HU` (air), e.g. raw stored values
  or an MR image;
* ``low confidence``: more than :data:`MAX_UNCERTAIN` of the lung voxels have a probability
  between 0.3 and 0.7;
* ``aerated tissue left out``: more than :data:`MAX_LEFT_OUT` of the lung volume (and at least
  :data:`MIN_LEFT_OUT_ML`) is aerated tissue (:data:`AERATED_HU`, lung parenchyma, not airway gas)
  joined to the lungs that the model did not call lung (:func:`aerated_left_out`): on real
  planning CTs a network that misses whole regions of aerated lung leaves exactly that.

The densitometry ``lungseg predict --statistics`` writes is :mod:`lungseg.inference.densitometry`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungseg.morphology import grow_3d

NO_LUNG_ML = 50.0
WHOLE_CHEST_ML = (1000.0, 10000.0)
MIN_SIDE_RATIO = 0.4
AIR_HU = -900.0
MIN_AIR_FRACTION = 1e-3
UNCERTAIN = (0.3, 0.7)
MAX_UNCERTAIN = 0.2
AERATED_HU = (-950.0, -600.0)  # parenchyma: below -950 is gas (airways, bowel), above -600 partial volume or tissue
MAX_LEFT_OUT = 0.03
MIN_LEFT_OUT_ML = 50.0


def aerated_left_out(lungs: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Aerated voxels (HU within :data:`AERATED_HU`) outside ``lungs`` but 6-connected to them through
    such voxels: lung the model may have missed. ``lungs`` (bool) and ``hu`` share one grid (any order)."""
    aerated = (hu > AERATED_HU[0]) & (hu < AERATED_HU[1])
    lab, n = ndimage.label(aerated & ~lungs)
    if n == 0:
        return np.zeros(lungs.shape, dtype=bool)
    touching = np.unique(lab[grow_3d(lungs) & (lab > 0)])
    return np.isin(lab, touching)


def assess(
    canonical_labels: np.ndarray, volumes_ml: dict[str, float], hu: np.ndarray, probability: np.ndarray | None,
    left_out_ml: float | None = None,
) -> dict:
    """Warnings for one result.

    Args:
        canonical_labels: uint8 labels in canonical RAS axis order (axis 2 runs inferior to
            superior), the CT's full extent.
        volumes_ml: ``right``, ``left``, ``total`` in mL.
        hu: The input CT in HU (any axis order).
        probability: The thresholded lung probability (any grid; None to skip the confidence check).
        left_out_ml: Volume of :func:`aerated_left_out` (None to skip that check).

    Returns:
        ``{"warnings": [...], "checks": {...}}``; ``checks`` holds the figures tested.
    """
    warnings: list[str] = []
    total = float(volumes_ml["total"])
    below = int(np.count_nonzero(hu < AIR_HU))
    air_fraction = below / max(int(hu.size), 1)
    first = bool(canonical_labels[:, :, 0].any())
    last = bool(canonical_labels[:, :, -1].any())
    checks: dict = {
        "total_ml": round(total, 2),
        "touches_first_slice": first,
        "touches_last_slice": last,
        "air_fraction": round(air_fraction, 5),
    }
    if air_fraction < MIN_AIR_FRACTION:
        warnings.append(f"HU not CT-like: {100 * air_fraction:.2f}% of voxels below {AIR_HU:.0f} HU (no air; "
                        f"values {float(hu.min()):.0f} to {float(hu.max()):.0f}): is the input a CT in Hounsfield units?")
    if total < NO_LUNG_ML:
        warnings.append(f"no lung: {total:.0f} mL of lung found (under {NO_LUNG_ML:.0f} mL)")
    else:
        if first or last:
            where = " and ".join(n for n, t in (("first (most inferior)", first), ("last (most superior)", last)) if t)
            warnings.append(f"partial coverage: lung touches the {where} axial slice; the scan may not hold "
                            "the whole lungs (volumes are partial)")
        else:
            lo, hi = WHOLE_CHEST_ML
            if not lo <= total <= hi:
                warnings.append(f"implausible volume: {total / 1000:.2f} L of lung in a whole-chest scan "
                                f"(expected {lo / 1000:.0f}-{hi / 1000:.0f} L)")
            r, left = float(volumes_ml["right"]), float(volumes_ml["left"])
            ratio = min(r, left) / max(r, left)
            checks["side_ratio"] = round(ratio, 3)
            if ratio < MIN_SIDE_RATIO:
                warnings.append(f"left/right imbalance: right {r:.0f} mL, left {left:.0f} mL (the smaller is "
                                f"{100 * ratio:.0f}% of the larger)")
    if probability is not None and total >= NO_LUNG_ML:
        lo, hi = UNCERTAIN
        lungish = int(np.count_nonzero(probability > lo))
        unsure = lungish - int(np.count_nonzero(probability >= hi))
        frac = unsure / max(lungish, 1)
        checks["uncertain_fraction"] = round(frac, 4)
        if frac > MAX_UNCERTAIN:
            warnings.append(f"low confidence: {100 * frac:.0f}% of the lung voxels have a probability between "
                            f"{lo} and {hi} (more than {100 * MAX_UNCERTAIN:.0f}%)")
    if left_out_ml is not None and total >= NO_LUNG_ML:
        checks["aerated_left_out_ml"] = round(left_out_ml, 1)
        if left_out_ml >= max(MIN_LEFT_OUT_ML, MAX_LEFT_OUT * total):
            warnings.append(f"aerated tissue left out: {left_out_ml:.0f} mL of aerated tissue ({AERATED_HU[0]:.0f} to "
                            f"{AERATED_HU[1]:.0f} HU) joined to the lungs is not in the mask ({100 * left_out_ml / total:.0f}% "
                            "of the lung volume): the model may have missed lung there")
    return {"warnings": warnings, "checks": checks}
