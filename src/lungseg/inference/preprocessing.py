"""Pure preprocessing functions: CT volume on its own grid -> fixed-shape network input.

Order (the paper's steps, all applied, in this order):

1. reorient the volume ``[i, j, k]`` to the closest canonical RAS axis order (a permutation
   and flips only, no interpolation);
2. crop (``crop``): ``body`` is the body (HU above ``body_threshold_hu``, largest connected
   component); ``thorax`` (default) is the box around the air inside the body (the lungs
   and airways), symmetric left-right about the body centre, within the body box. Either
   grows by ``crop_margin_mm``. The thorax box gives the lungs about 20% of the network grid
   instead of about 9% with the body box, so the same 64^3 resolves them twice as finely;
3. resample the crop to ``shape`` (area-average by integer factors against aliasing, then
   linear interpolation; voxel centres of the crop's first and last voxels map to the
   network grid's ends by the "align box edges" rule below); the lung mask goes through the
   same resampling as a float and is thresholded at 0.5;
4. HU window: clip to ``[hu_min, hu_max]`` and scale to [0, 1] ("normalisation");
5. Gaussian smoothing with ``smooth_sigma`` voxels of the network grid (0 = off);
6. standardisation (``normalize``): ``fixed`` subtracts ``norm_mean`` and divides by ``norm_sd``,
   the same constants for every scan (nnU-Net's CT normalisation: one scale for the whole
   dataset); ``volume`` uses the crop's own mean and SD (the paper's way), which makes the
   lung's value depend on what else the crop holds (on real planning CTs the outside air
   around neck and shoulders moved the lung 0.7-1.0 SD brighter than on any training scan).

Everything needed to map a network-grid prediction back onto the original voxel grid
(orientation, crop box, target shape) is in :class:`GridMap`, saved as JSON per case.

Box-edge rule: network voxel ``n`` (0..S-1) along an axis covers canonical voxels
``lo + (n + 0.5) * N / S - 0.5`` where ``N = hi - lo`` is the crop size.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from lungseg.config import PreprocessConfig
from lungseg.io.geometry import Geometry

log = logging.getLogger(__name__)

MIN_THORAX_AIR_ML = 100.0  # smaller air pockets inside the body (bowel gas, ...) do not set the thorax box
MIN_TOP_AIR_ML = 10.0  # ... unless they reach the scan's top slice (lung bases of an abdominal CT)
MIN_SLICE_AIR_FRACTION = 0.03  # thorax crop: axial slices whose inside air is below this share of the largest
# slice's (the trachea alone above the apices: about 1% of a mid-lung slice) do not set the box's axial extent


@dataclass(frozen=True)
class GridMap:
    """How a case's own grid relates to the network grid (JSON-serialisable).

    Attributes:
        original_shape: Shape of the volume ``[i, j, k]`` as read from disk.
        ornt: nibabel orientation transform (rows ``[axis, flip]``) from the original
            axis order to canonical RAS.
        canonical_shape: Shape after reorientation.
        crop_lo: First canonical voxel of the crop box, per axis.
        crop_hi: One past the last canonical voxel of the crop box, per axis.
        shape: Network grid shape.
    """

    original_shape: tuple[int, int, int]
    ornt: tuple[tuple[float, float], ...]
    canonical_shape: tuple[int, int, int]
    crop_lo: tuple[int, int, int]
    crop_hi: tuple[int, int, int]
    shape: tuple[int, int, int]

    def to_json(self) -> dict:
        """Plain dict for ``json.dump``."""
        return {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> GridMap:
        """Inverse of :meth:`to_json`."""
        return cls(
            original_shape=tuple(d["original_shape"]),
            ornt=tuple(tuple(float(x) for x in row) for row in d["ornt"]),
            canonical_shape=tuple(d["canonical_shape"]),
            crop_lo=tuple(d["crop_lo"]),
            crop_hi=tuple(d["crop_hi"]),
            shape=tuple(d["shape"]),
        )

    @property
    def zoom(self) -> tuple[float, float, float]:
        """Network voxels per canonical voxel along each canonical axis."""
        return tuple(s / (h - lo) for s, lo, h in zip(self.shape, self.crop_lo, self.crop_hi))


def canonical_ornt(geometry: Geometry) -> np.ndarray:
    """Orientation transform from the volume's axis order to closest canonical RAS."""
    return nib.orientations.io_orientation(geometry.affine_ras())


def to_canonical(volume: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Reorient ``volume`` ``[i, j, k]`` with a nibabel orientation transform (no interpolation)."""
    return np.ascontiguousarray(nib.orientations.apply_orientation(volume, ornt))


def canonical_view(volume: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """:func:`to_canonical` as a view (flips and transposes, no copy): for reading boxes of a
    large scan (a contiguous copy of a 512x512x130 scan stored column-major took over 1 s)."""
    return nib.orientations.apply_orientation(volume, ornt)


def from_canonical(volume: np.ndarray, ornt: np.ndarray, original_shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`to_canonical`: canonical-order volume back to the original ``[i, j, k]`` order."""
    inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), _axcodes(ornt))
    out = nib.orientations.apply_orientation(volume, inverse)
    if out.shape != tuple(original_shape):
        raise ValueError(f"reoriented shape {out.shape} does not match original {tuple(original_shape)}")
    return np.ascontiguousarray(out)


def _axcodes(ornt: np.ndarray) -> np.ndarray:
    """Orientation (as an ornt array) of the original axes, given the transform to RAS."""
    return nib.orientations.axcodes2ornt(nib.orientations.ornt2axcodes(np.asarray(ornt)))


def _coarse_steps(spacing_mm: tuple[float, float, float]) -> list[int]:
    """Subsampling steps giving about 4 mm voxels (fast box finding on 512x512 scans)."""
    return [max(1, int(4.0 // s)) for s in spacing_mm]


def _grown_box(
    idx: np.ndarray, step: list[int], offset: tuple[int, ...], shape: tuple[int, ...],
    spacing_mm: tuple[float, float, float], margin_mm: float,
) -> tuple[list[int], list[int]]:
    """Box ``[lo, hi)`` on the full grid of coarse voxel indices ``idx``, grown by ``margin_mm``."""
    lo, hi = [], []
    for ax in range(3):
        m = int(np.ceil(margin_mm / spacing_mm[ax]))
        lo.append(max(0, offset[ax] + int(idx[:, ax].min()) * step[ax] - (step[ax] - 1) - m))
        hi.append(min(shape[ax], offset[ax] + (int(idx[:, ax].max()) + 1) * step[ax] + m))
    return lo, hi


def body_box(
    hu: np.ndarray, spacing_mm: tuple[float, float, float], threshold_hu: float, margin_mm: float
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Bounding box ``[lo, hi)`` of the body in a volume ``[i, j, k]`` (any axis order).

    The body is the largest 26-connected component above ``threshold_hu`` found on a grid
    subsampled to about 4 mm (fast on 512x512 scans), then grown by ``margin_mm``. A volume
    with nothing above the threshold gives the whole volume.
    """
    step = _coarse_steps(spacing_mm)
    coarse = hu[:: step[0], :: step[1], :: step[2]] > threshold_hu
    labels, n = ndimage.label(coarse, structure=np.ones((3, 3, 3)))
    if n == 0:
        return (0, 0, 0), tuple(int(s) for s in hu.shape)  # type: ignore[return-value]
    sizes = np.bincount(labels.ravel())[1:]
    idx = np.argwhere(labels == int(np.argmax(sizes)) + 1)
    lo, hi = _grown_box(idx, step, (0, 0, 0), hu.shape, spacing_mm, margin_mm)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def thorax_box(
    hu: np.ndarray, spacing_mm: tuple[float, float, float], body: tuple[tuple[int, ...], tuple[int, ...]],
    air_threshold_hu: float, margin_mm: float,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Box ``[lo, hi)`` around the air inside the body (lungs and airways), inside ``body``.

    ``hu`` is in canonical RAS axis order ``[i, j, k]`` (axis 0 the patient's left-right
    axis, axis 2 the axial slice index); ``body`` is its :func:`body_box`. Air is ``HU < air_threshold_hu``; air
    regions connected to the border of their axial slice (outside the body) are dropped,
    and 26-connected regions of at least :data:`MIN_THORAX_AIR_ML` are kept, and those of at least
    :data:`MIN_TOP_AIR_ML` that reach the top slice (lungs cut by the scan's upper edge). Along the
    axial axis the box spans the slices whose kept air is at least :data:`MIN_SLICE_AIR_FRACTION`
    of the largest slice's, so the trachea alone (a planning CT often runs 40-90 mm above the
    apices into the neck) does not stretch it. The box is grown by ``margin_mm``; along the
    left-right axis it is made symmetric about the body's centre, so that a lung that is
    entirely collapsed (no air) is still inside the box when the other lung is not. Without such air the body box is returned unchanged.
    """
    from lungseg.morphology import border_connected_2d

    step = _coarse_steps(spacing_mm)
    b_lo, b_hi = body
    coarse = hu[b_lo[0] : b_hi[0] : step[0], b_lo[1] : b_hi[1] : step[1], b_lo[2] : b_hi[2] : step[2]]
    air = coarse < air_threshold_hu
    inside = air & ~border_connected_2d(air)
    labels, n = ndimage.label(inside, structure=np.ones((3, 3, 3)))
    voxel_ml = float(np.prod(np.asarray(spacing_mm) * np.asarray(step))) / 1000.0
    sizes_ml = np.bincount(labels.ravel())[1:] * voxel_ml
    keep = np.flatnonzero(sizes_ml >= MIN_THORAX_AIR_ML) + 1
    # partial coverage: lung cut by the top of the scan (e.g. the bases on an abdominal CT) counts when smaller
    top = np.unique(labels[:, :, -1])
    top = top[top > 0]
    top = top[sizes_ml[top - 1] >= MIN_TOP_AIR_ML]
    keep = np.union1d(keep, top).astype(int)
    if n == 0 or len(keep) == 0:
        log.warning("no air inside the body (>= %.0f mL): cropping to the body instead", MIN_THORAX_AIR_ML)
        return tuple(b_lo), tuple(b_hi)  # type: ignore[return-value]
    kept = np.isin(labels, keep)
    area = kept.sum(axis=(0, 1))
    ks = np.flatnonzero(area >= MIN_SLICE_AIR_FRACTION * area.max())
    kept[:, :, : ks[0]] = False
    kept[:, :, ks[-1] + 1 :] = False
    idx = np.argwhere(kept)
    lo, hi = _grown_box(idx, step, tuple(b_lo), hu.shape, spacing_mm, margin_mm)
    centre = 0.5 * (b_lo[0] + b_hi[0])
    half = max(centre - lo[0], hi[0] - centre)
    lo[0], hi[0] = int(np.floor(centre - half)), int(np.ceil(centre + half))
    lo = [max(a, b) for a, b in zip(lo, b_lo)]
    hi = [min(a, b) for a, b in zip(hi, b_hi)]
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def crop_box(
    hu: np.ndarray, spacing_mm: tuple[float, float, float], cfg: PreprocessConfig
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The crop box ``[lo, hi)`` of ``cfg.crop`` (``thorax`` or ``body``) for canonical ``hu``."""
    body = body_box(hu, spacing_mm, cfg.body_threshold_hu, cfg.crop_margin_mm)
    if cfg.crop == "body":
        return body
    return thorax_box(hu, spacing_mm, body, cfg.air_threshold_hu, cfg.crop_margin_mm)


def _area_factors(size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, n // s) for n, s in zip(size, shape))


def _block_mean(a: np.ndarray, f: tuple[int, ...]) -> np.ndarray:
    """Average non-overlapping blocks of size ``f`` (the trailing remainder is dropped)."""
    n = [(s // k) * k for s, k in zip(a.shape, f)]
    a = a[: n[0], : n[1], : n[2]]
    return a.reshape(n[0] // f[0], f[0], n[1] // f[1], f[1], n[2] // f[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float32)


def resample_box(
    volume: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...], shape: tuple[int, ...], order: int = 1
) -> np.ndarray:
    """Resample the box ``[lo, hi)`` of ``volume`` (any axis order) onto a grid of ``shape``.

    Uses the box-edge rule of the module docstring; area-averages by integer factors first
    when downsampling by 2x or more. Returns float32.
    """
    crop = np.asarray(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    size = crop.shape
    f = _area_factors(size, shape)
    if any(k > 1 for k in f):
        crop = _block_mean(crop, f)
    # output n -> crop coordinate c = (n + 0.5) * N / S - 0.5 ; reduced r = (c - (f - 1) / 2) / f
    scale = np.array([n / s / k for n, s, k in zip(size, shape, f)])
    offset = np.array([(0.5 * n / s - 0.5 - (k - 1) / 2) / k for n, s, k in zip(size, shape, f)])
    return ndimage.affine_transform(crop, scale, offset=offset, output_shape=tuple(shape), order=order, mode="nearest")


def _linear_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower source index and weight of the upper neighbour for box-edge linear upsampling
    (output voxel ``c`` sits at source position ``(c + 0.5) * n_in / n_out - 0.5``, clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lo = np.minimum(np.floor(pos).astype(np.intp), max(n_in - 2, 0))
    return lo, (pos - lo).astype(np.float32)


def resample_to_box(grid: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Linearly interpolate a network-grid array onto a box of ``size`` voxels (box-edge rule of
    the module docstring, edge values held); float32.

    Trilinear interpolation is separable, so it runs one axis at a time, which is several
    times faster than a 3D ``affine_transform`` on 512x512 scans.
    """
    out = np.asarray(grid, dtype=np.float32)
    for axis in (2, 1, 0):  # largest (final) step along axis 0: contiguous slabs
        n_in = out.shape[axis]
        if n_in == 1:
            out = np.repeat(out, size[axis], axis=axis)
            continue
        lo, w = _linear_weights(size[axis], n_in)
        shape = [1, 1, 1]
        shape[axis] = -1
        a = np.take(out, lo, axis=axis)
        b = np.take(out, lo + 1, axis=axis)
        b -= a
        b *= w.reshape(shape)
        a += b
        out = a
    return out


def resample_back(
    grid: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...], full_shape: tuple[int, ...], fill: float = 0.0
) -> np.ndarray:
    """Map a network-grid array (e.g. probabilities) back onto the box ``[lo, hi)`` of a
    canonical grid of ``full_shape`` by linear interpolation; outside the box is ``fill``."""
    out = np.full(full_shape, fill, dtype=np.float32)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = resample_to_box(grid, tuple(h - a for a, h in zip(lo, hi)))
    return out


def window_normalize(hu: np.ndarray, hu_min: float, hu_max: float) -> np.ndarray:
    """Clip HU to ``[hu_min, hu_max]`` and scale linearly to [0, 1] (float32)."""
    if hu_max <= hu_min:
        raise ValueError(f"HU window must have hu_max > hu_min, got [{hu_min}, {hu_max}]")
    return ((np.clip(hu, hu_min, hu_max) - hu_min) / (hu_max - hu_min)).astype(np.float32)


def smooth(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass with ``sigma`` voxels (0 = unchanged copy)."""
    if sigma < 0:
        raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return np.array(volume, dtype=np.float32, copy=True)
    return ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma, mode="nearest")


def standardize(volume: np.ndarray) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation (float32; constant input -> zeros)."""
    v = np.asarray(volume, dtype=np.float32)
    sd = float(v.std())
    return ((v - float(v.mean())) / sd).astype(np.float32) if sd > 0 else np.zeros_like(v)


def preprocess_image(hu: np.ndarray, geometry: Geometry, cfg: PreprocessConfig) -> tuple[np.ndarray, GridMap]:
    """Full preprocessing of one CT (HU, ``[i, j, k]`` on ``geometry``) -> network input.

    Returns the standardised float32 image of shape ``cfg.shape`` in canonical RAS axis
    order and the :class:`GridMap` needed to map predictions back.
    """
    ornt = canonical_ornt(geometry)
    canonical = canonical_view(hu, ornt)  # only the crop box is read in full
    spacing = tuple(float(geometry.spacing_mm[int(a)]) for a in np.argsort(ornt[:, 0]))
    lo, hi = crop_box(canonical, spacing, cfg)  # type: ignore[arg-type]
    grid = GridMap(
        original_shape=tuple(int(s) for s in hu.shape),  # type: ignore[arg-type]
        ornt=tuple((float(a), float(f)) for a, f in ornt),
        canonical_shape=tuple(int(s) for s in canonical.shape),  # type: ignore[arg-type]
        crop_lo=lo,
        crop_hi=hi,
        shape=tuple(int(s) for s in cfg.shape),  # type: ignore[arg-type]
    )
    resampled = resample_box(canonical, lo, hi, cfg.shape)
    image = normalize(smooth(window_normalize(resampled, cfg.hu_min, cfg.hu_max), cfg.smooth_sigma), cfg)
    return image, grid


def normalize(volume: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Step 6: windowed values -> network input, by ``cfg.normalize`` (``fixed`` or ``volume``)."""
    if cfg.normalize == "volume":
        return standardize(volume)
    return ((np.asarray(volume, dtype=np.float32) - cfg.norm_mean) / cfg.norm_sd).astype(np.float32)


def preprocess_mask(labels: np.ndarray, grid: GridMap) -> np.ndarray:
    """Lung label map ``[i, j, k]`` (any lung label > 0) -> binary uint8 mask on the network grid,
    resampled exactly like its image (linear, threshold 0.5)."""
    canonical = to_canonical((labels > 0).astype(np.float32), np.asarray(grid.ornt))
    return (resample_box(canonical, grid.crop_lo, grid.crop_hi, grid.shape) > 0.5).astype(np.uint8)


def crop_coverage(labels: np.ndarray, grid: GridMap) -> float:
    """Share of the lung voxels of ``labels`` ``[i, j, k]`` (original grid) inside the crop box
    of ``grid`` (1.0 for an empty mask)."""
    canonical = to_canonical(labels > 0, np.asarray(grid.ornt))
    total = int(canonical.sum())
    lo, hi = grid.crop_lo, grid.crop_hi
    inside = int(canonical[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].sum())
    return inside / total if total else 1.0


def probabilities_to_original(prob: np.ndarray, grid: GridMap) -> np.ndarray:
    """Network-grid probabilities -> float32 probabilities on the case's own ``[i, j, k]`` grid
    (interpolate first; threshold afterwards)."""
    canonical = resample_back(prob, grid.crop_lo, grid.crop_hi, grid.canonical_shape)
    return from_canonical(canonical, np.asarray(grid.ornt), grid.original_shape)
