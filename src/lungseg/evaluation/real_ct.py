"""Real-CT check: score a segmenter on real scans that are never trained or tuned on.

The synthetic cohort trains and tests the model; these cases (``evaluate.real_ct``, by
default the openly licensed scans in ``../shared/real-ct``) say whether it carries over to
real CT. Each case is a CT (NIfTI or DICOM folder) with an optional lung mask on any grid
(mapped onto the CT's grid through world coordinates, nearest neighbour) and its lung
coverage (``full``, ``partial``, ``none``).

Per case and method (labels ``[i, j, k]`` on the CT's own grid, > 0 = lung):

* ``volume_ml``: predicted lung volume (for ``coverage: none`` every mL is a false positive);
* with a mask: ``dice``, ``iou`` (both lungs together: the real masks do not split sides),
  ``hd95_mm``/``msd_mm`` (surface distances of the whole lung), ``true_volume_ml``, and
  ``volume_below_truth_ml``: predicted lung lying inferior to the mask's lowest voxel by
  more than one voxel (below the diaphragm on an abdominal scan);
* with a mask, ``densitometry_diff``: how far the mask error moves the lung densitometry
  (:func:`densitometry_differences`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.config import RealCTCase
from lungseg.errors import CaseError
from lungseg.evaluation.metrics import dice, iou, surface_distances
from lungseg.inference.densitometry import densitometry
from lungseg.io.geometry import Geometry

log = logging.getLogger(__name__)

Segment = Callable[[np.ndarray, Geometry], Any]  # (hu, geometry) -> labels on the same grid, or a Segmentation


@dataclass(frozen=True)
class RealScan:
    """A loaded real case: CT in HU, its grid, the mask on the same grid (None without one)."""

    name: str
    hu: np.ndarray
    geometry: Geometry
    truth: np.ndarray | None
    coverage: str


def available(cases: dict[str, RealCTCase], root: Path = Path(".")) -> dict[str, RealCTCase]:
    """The cases whose CT (and mask, if named) exist under ``root``; the others are logged and skipped."""
    out = {}
    for name, case in cases.items():
        missing = [p for p in (case.ct, case.truth) if p and not (root / p).exists()]
        if missing:
            log.info("real CT %s skipped: %s not found", name, ", ".join(missing))
        else:
            out[name] = case
    return out


def mask_on_grid(mask: np.ndarray, mask_geometry: Geometry, geometry: Geometry) -> np.ndarray:
    """``mask`` resampled (nearest neighbour, world coordinates) onto ``geometry``'s grid; 0 outside."""
    if tuple(mask.shape) == tuple(geometry.shape) and np.allclose(
        mask_geometry.affine_lps(), geometry.affine_lps(), atol=1e-3
    ):
        return np.asarray(mask)
    to_mask = np.linalg.inv(mask_geometry.affine_lps()) @ geometry.affine_lps()
    return ndimage.affine_transform(
        np.asarray(mask, dtype=np.uint8), to_mask[:3, :3], offset=to_mask[:3, 3], output_shape=tuple(geometry.shape),
        order=0, mode="constant", cval=0,
    )


def split_sides(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A binary lung mask as right (1) and left (2) lung: each connected component goes whole to the side of
    the mask's centroid its own centroid lies on; a component with over 10% of its voxels on either side (the
    lungs touching at the anterior junction) is split voxel by voxel at that centroid."""
    m = np.asarray(mask) > 0
    if not m.any():
        return m.astype(np.uint8)
    affine = geometry.affine_lps()
    idx = np.argwhere(m)
    x = idx @ affine[0, :3] + affine[0, 3]  # LPS x grows toward the patient's left
    left = x >= x.mean()
    components, _ = ndimage.label(m)
    comp = components[tuple(idx.T)]
    n = np.bincount(comp)
    frac_left = np.bincount(comp, weights=left) / np.maximum(n, 1)
    whole = np.minimum(frac_left, 1 - frac_left) <= 0.1
    side_left = np.where(whole[comp], frac_left[comp] > 0.5, left)
    out = np.zeros(m.shape, np.uint8)
    out[tuple(idx.T)] = np.where(side_left, 2, 1)
    return out


#: Densitometry differences reported per real case: predicted minus reference (mask) figure.
DENSITOMETRY_DIFFERENCES = {"laa950_pp": "laa950_pct", "pd15_hu": "pd15_hu", "volume_pct": "volume_l"}


def densitometry_differences(pred: dict, ref: dict) -> dict[str, dict[str, float | None]]:
    """Per region of :mod:`lungseg.inference.densitometry`: LAA-950 (percentage points), PD15 (HU) and volume (% of the
    reference volume), predicted minus reference; None where either region is empty."""
    out: dict[str, dict[str, float | None]] = {}
    for region, r in ref.items():
        p, row = pred[region], {}
        for key, measure in DENSITOMETRY_DIFFERENCES.items():
            a, b = p[measure], r[measure]
            if a is None or b is None or (measure == "volume_l" and not b):
                row[key] = None
            else:
                row[key] = round(100.0 * (a - b) / b if measure == "volume_l" else a - b, 3)
        out[region] = row
    return out


def load_scan(name: str, case: RealCTCase, root: Path = Path(".")) -> RealScan:
    """Read a case's CT (see :func:`lungseg.inference.segmenter.load_ct`) and its mask onto the CT's grid."""
    from lungseg.inference.segmenter import load_ct
    from lungseg.io.nifti import read_nifti

    hu, geometry = load_ct(root / case.ct)
    truth = None
    if case.truth:
        mask, mask_geometry = read_nifti(root / case.truth)
        truth = mask_on_grid(np.asarray(mask) > 0, mask_geometry, geometry)
    return RealScan(name, hu, geometry, truth, case.coverage)


def _superior_mm(geometry: Geometry) -> tuple[np.ndarray, float, int]:
    """World S coordinate (LPS z) along the voxel axis closest to it, that axis, and one voxel's z-extent."""
    affine = geometry.affine_lps()
    axis = int(np.argmax(np.abs(affine[2, :3])))
    z = affine[2, axis] * np.arange(geometry.shape[axis]) + affine[2, 3]
    return z, float(abs(affine[2, axis])), axis


def volume_below_ml(labels: np.ndarray, truth: np.ndarray, geometry: Geometry) -> float:
    """Predicted lung (mL) more than one voxel inferior to the lowest voxel of ``truth``."""
    if not np.any(truth):
        return float(np.count_nonzero(labels)) * geometry.voxel_volume_ml
    z, extent, axis = _superior_mm(geometry)
    other = tuple(a for a in range(3) if a != axis)
    truth_z = z[np.any(truth, axis=other)]
    below = z < truth_z.min() - extent - 1e-6
    counts = np.count_nonzero(labels > 0, axis=other)
    return float(counts[below].sum()) * geometry.voxel_volume_ml


def score(labels: np.ndarray, scan: RealScan) -> dict[str, float]:
    """The metrics of one method's ``labels`` on one real scan (see the module docstring)."""
    if labels.shape != scan.hu.shape:
        raise CaseError(scan.name, f"labels shape {labels.shape} does not match the CT {scan.hu.shape}")
    pred = labels > 0
    v = scan.geometry.voxel_volume_ml
    row: dict[str, float] = {"volume_ml": float(np.count_nonzero(pred)) * v}
    if scan.truth is not None:
        truth = scan.truth > 0
        hd95, msd = surface_distances(pred, truth, tuple(float(s) for s in scan.geometry.spacing_mm))
        row.update({
            "dice": dice(pred, truth), "iou": iou(pred, truth), "hd95_mm": hd95, "msd_mm": msd,
            "true_volume_ml": float(np.count_nonzero(truth)) * v,
            "volume_below_truth_ml": volume_below_ml(pred, truth, scan.geometry),
        })
    return {k: (round(x, 5) if math.isfinite(x) else x) for k, x in row.items()}


def evaluate_real(
    cases: dict[str, RealCTCase], methods: dict[str, Segment], root: Path = Path("."),
    on_labels: Callable[[RealScan, dict[str, np.ndarray]], None] | None = None,
    densitometry_tables: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Score every available case with every method: ``{case: {method: metrics}}``.

    A case with a reference mask also gets, per method, ``densitometry_diff``
    (:func:`densitometry_differences` against the densitometry of the reference mask, its
    sides by :func:`split_sides`); the full tables (``reference`` and each method) go into
    ``densitometry_tables[case]`` when a dict is given.
    ``on_labels`` is called with each scan and its labels per method (e.g. to draw them).
    A case that cannot be read is logged as one line and left out.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, case in available(cases, root).items():
        try:
            scan = load_scan(name, case, root)
        except CaseError as e:
            log.error("real CT %s: %s", name, e)
            continue
        results = {method: segment(scan.hu, scan.geometry) for method, segment in methods.items()}
        labels = {method: getattr(r, "labels", r) for method, r in results.items()}
        out[name] = {method: score(lab, scan) for method, lab in labels.items()}
        if scan.truth is not None and scan.truth.any():
            ref = densitometry(split_sides(scan.truth, scan.geometry), scan.hu, scan.geometry)
            tables = {"reference": ref}
            for method, lab in labels.items():
                tables[method] = densitometry(lab, scan.hu, scan.geometry)
                out[name][method]["densitometry_diff"] = densitometry_differences(tables[method], ref)
            if densitometry_tables is not None:
                densitometry_tables[name] = tables
        for method, r in results.items():
            if hasattr(r, "warnings"):  # a Segmentation (lungseg.inference.segmenter): its quality warnings
                out[name][method]["warnings"] = r.warnings
        if on_labels is not None:
            on_labels(scan, labels)
        log.info("real CT %s (%s coverage): %s", name, scan.coverage, "; ".join(
            f"{m} Dice {r['dice']:.4f}, {r['volume_ml']:.0f} mL" if "dice" in r else f"{m} {r['volume_ml']:.1f} mL"
            for m, r in out[name].items()) + "".join(f"; {m}: {w}" for m, r in out[name].items()
                                                  for w in r.get("warnings", [])))
    return out
