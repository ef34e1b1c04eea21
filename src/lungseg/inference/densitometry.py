"""Lung densitometry: the Chest Imaging Platform's parenchyma measures per lung, per third, in total.

Regions of a label map (1 right lung, 2 left lung; :func:`region_codes`):

* ``total`` (both lungs), ``right``, ``left``;
* the thirds ``upper``, ``middle``, ``lower`` (both lungs) and ``right_upper`` ... ``left_lower``.
  The thirds are CIP's (``CIPLabelLungRegionsImageFilter``, the ``LeftUpperThird`` ...
  regions of its label maps): both lungs together are cut at whole axial slices into three
  parts of as nearly equal volume as the slices allow, counted from the lung base; each
  lung's third is its share of that part. (So a lung's thirds are thirds of the lungs'
  *volume*, not of its cranio-caudal extent: on COPDGene 10002K this reproduces CIP's own
  ``regions.nii.gz`` voxel for voxel, where extent-thirds would not.) Slices are taken along
  the voxel axis closest to the patient's superior direction.

Measures of one region (CIP ``parenchyma_phenotypes.py`` names in brackets; HU as read,
no filtering):

* ``voxels``; ``volume_l`` [Volume]; ``mass_g`` [Mass]: density from HU by CIP's piecewise
  linear fit to Schneider et al. (Phys Med Biol 2000): HU < -98 (clipped at -1000) linear from
  0.00121 g/mL at -1000 to 0.93 at -98; -98..18: 1.018 + 0.893 HU/1000; 18..100:
  1.003 + 1.169 HU/1000; > 100: 1.017 + 0.592 HU/1000;
* ``hu_mean`` [HUMean], ``hu_sd`` [HUStd: population SD], ``hu_median`` [HUMedian];
* ``pd15_hu`` [Perc15] and ``perc10_hu`` [Perc10]: the 15th / 10th percentile of the HU
  values (linear interpolation, numpy's default, as CIP);
* ``laa950_pct``, ``laa910_pct``, ``laa856_pct`` [LAA950 ...]: % of voxels *below* the
  threshold; ``haa700_pct``, ``haa600_pct``, ``haa250_pct`` [HAA700 ...]: % *above* it
  (CIP reports fractions; here percent).

An empty region has ``voxels`` 0, ``volume_l`` 0 and every other measure None.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lungseg.io.geometry import Geometry

SIDES = {"right": 1, "left": 2}
THIRDS = ("upper", "middle", "lower")
LAA_HU = (-950, -910, -856)
HAA_HU = (-700, -600, -250)
REGIONS = ("total", "right", "left", *THIRDS, *(f"{s}_{t}" for s in SIDES for t in THIRDS))
MEASURES = ("voxels", "volume_l", "mass_g", "hu_mean", "hu_sd", "hu_median", "pd15_hu", "perc10_hu",
            *(f"laa{-t}_pct" for t in LAA_HU), *(f"haa{-t}_pct" for t in HAA_HU))
_LOW_SLOPE = (1.21e-3 - 0.93) / (-1000.0 + 98.0)


def density_g_per_ml(hu: np.ndarray) -> np.ndarray:
    """Tissue density (g/mL) from HU, CIP's piecewise linear form of Schneider et al. (module docstring)."""
    hu = np.asarray(hu, dtype=np.float64)
    low = _LOW_SLOPE * np.clip(hu, -1000.0, None) + (1.21e-3 + 1000.0 * _LOW_SLOPE)
    return np.select(
        [hu < -98.0, hu <= 18.0, hu <= 100.0],
        [low, 1.018 + 0.893e-3 * hu, 1.003 + 1.169e-3 * hu],
        1.017 + 0.592e-3 * hu,
    )


def _from_histogram(hu: np.ndarray, counts: np.ndarray, voxel_ml: float) -> dict[str, float | int | None]:
    """The measures of a region given as sorted distinct HU values and their voxel counts."""
    n = int(counts.sum())
    out: dict[str, float | int | None] = dict.fromkeys(MEASURES)
    out.update(voxels=n, volume_l=round(n * voxel_ml / 1000.0, 5))
    if n == 0:
        return out
    keep = counts > 0
    hu, c = hu[keep].astype(np.float64), counts[keep].astype(np.float64)
    mean = float((c * hu).sum() / n)
    cum = np.cumsum(counts[keep])

    def percentile(q: float) -> float:  # numpy's default (linear) on the sorted values, from the histogram
        h = (n - 1) * q / 100.0
        lo = int(np.floor(h))
        a, b = hu[np.searchsorted(cum, [lo, min(lo + 1, n - 1)], side="right")]
        return float(a + (h - lo) * (b - a))

    out.update(
        mass_g=round(float((c * density_g_per_ml(hu)).sum()) * voxel_ml, 2),
        hu_mean=round(mean, 2),
        hu_sd=round(float(np.sqrt((c * (hu - mean) ** 2).sum() / n)), 2),
        hu_median=round(percentile(50.0), 2),
        pd15_hu=round(percentile(15.0), 2),
        perc10_hu=round(percentile(10.0), 2),
    )
    for t in LAA_HU:
        out[f"laa{-t}_pct"] = round(100.0 * float(c[hu < t].sum()) / n, 3)
    for t in HAA_HU:
        out[f"haa{-t}_pct"] = round(100.0 * float(c[hu > t].sum()) / n, 3)
    return out


def measures(values: np.ndarray, voxel_ml: float) -> dict[str, float | int | None]:
    """The measures of one region from the HU values of its voxels (module docstring)."""
    hu, counts = np.unique(np.asarray(values, dtype=np.float64).ravel(), return_counts=True)
    return _from_histogram(hu, counts, voxel_ml)


def superior_axis(geometry: Geometry) -> tuple[int, bool]:
    """The voxel axis closest to the patient's superior direction, and whether its index grows superiorly."""
    column = geometry.affine_lps()[2, :3]  # LPS z of each voxel axis
    axis = int(np.argmax(np.abs(column)))
    return axis, bool(column[axis] > 0)


def third_cuts(counts: np.ndarray) -> tuple[int, int]:
    """Slices in the lower third and in the lower two thirds, for per-slice lung voxel ``counts`` ordered from
    the base up: each cut where the cumulative volume is nearest 1/3 and 2/3 of the total (the lower cut on a tie)."""
    c = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    total = c[-1]
    cut1 = int(np.argmin(np.abs(3 * c - total)))
    cut2 = int(np.argmin(np.abs(3 * c - 2 * total)))
    return cut1, max(cut1, cut2)


def slice_thirds(labels: np.ndarray, geometry: Geometry) -> tuple[int, np.ndarray]:
    """CIP's thirds per slice: the slice axis (:func:`superior_axis`) and, per slice, 1 upper, 2 middle, 3 lower."""
    axis, up = superior_axis(geometry)
    other = tuple(a for a in range(3) if a != axis)
    counts = np.count_nonzero(np.asarray(labels) > 0, axis=other)
    cut1, cut2 = third_cuts(counts if up else counts[::-1])
    per_slice = np.full(counts.size, 1, np.uint8)  # from the base: lower, middle, upper
    per_slice[:cut1], per_slice[cut1:cut2] = 3, 2
    return axis, per_slice if up else per_slice[::-1]


def thirds_map(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """uint8 map on the labels' grid: 0 outside the lungs, 1 upper, 2 middle, 3 lower third (CIP's thirds)."""
    axis, per_slice = slice_thirds(labels, geometry)
    shape = [1, 1, 1]
    shape[axis] = -1
    return np.where(np.asarray(labels) > 0, per_slice.reshape(shape), 0).astype(np.uint8)


def densitometry(labels: np.ndarray, hu: np.ndarray, geometry: Geometry) -> dict[str, dict[str, float | int | None]]:
    """Every measure for every region of ``REGIONS`` (``labels`` 1 right, 2 left, on ``hu``'s grid)."""
    labels = np.asarray(labels)
    if labels.shape != np.shape(hu):
        raise ValueError(f"labels shape {labels.shape} differs from the CT's {np.shape(hu)}")
    axis, per_slice = slice_thirds(labels, geometry)
    nz = np.nonzero(labels)  # index tuples: no copy of a non-contiguous (transposed) CT
    side = labels[nz].astype(np.int64)
    code = (side - 1) * 3 + per_slice[nz[axis]].astype(np.int64) - 1  # 0..5: right upper ... left lower (thirds 1..3)
    values = np.asarray(np.asarray(hu)[nz], dtype=np.float64)
    groups = {
        "total": range(6), **{s: range(3 * (k - 1), 3 * k) for s, k in SIDES.items()},
        **{t: (i, i + 3) for i, t in enumerate(THIRDS)},
        **{f"{s}_{t}": (3 * (k - 1) + i,) for s, k in SIDES.items() for i, t in enumerate(THIRDS)},
    }
    voxel_ml = geometry.voxel_volume_ml
    if values.size and np.array_equal(values, np.round(values)):  # integer HU (DICOM): one histogram per sub-region
        lo = int(values.min())
        width = int(values.max()) - lo + 1
        hist = np.bincount(code * width + (values.astype(np.int64) - lo), minlength=6 * width).reshape(6, width)
        bins = np.arange(lo, lo + width, dtype=np.float64)
        return {name: _from_histogram(bins, hist[list(g)].sum(axis=0), voxel_ml) for name, g in groups.items()}
    return {name: measures(values[np.isin(code, list(g))], voxel_ml) for name, g in groups.items()}


def flatten(stats: Mapping[str, Mapping[str, float | int | None]]) -> dict[str, float | int | None]:
    """``{region: {measure: x}}`` as one CSV row: ``{"<region>_<measure>": x}`` in REGIONS x MEASURES order."""
    return {f"{r}_{m}": stats[r][m] for r in REGIONS if r in stats for m in MEASURES}
