"""Geometry primitives the anatomy is drawn with, all in the patient frame (mm).

A :class:`Grid` holds the 1D voxel-centre coordinates per axis; every shape is evaluated only
inside its bounding box and returned as ``(slices, values)`` so callers paint ``lab[slices]``.
Arrays are indexed ``[i, j, k]`` = ``[x (left), y (posterior), z (superior)]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungseg.io import exact

#: ``(low, high)`` of a uniform draw, in the unit its field name or comment gives.
Range = tuple[float, float]


class Grid:
    """Axis-aligned grid in the patient frame: 1D coordinates per axis (mm)."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float], lo: np.ndarray) -> None:
        self.shape = shape
        self.sp = np.asarray(spacing, dtype=float)
        self.lo = np.asarray(lo, dtype=float)
        self.x, self.y, self.z = (
            (self.lo[a] + np.arange(shape[a]) * self.sp[a]).astype(np.float32) for a in range(3)
        )

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the mm box [lo, hi]; None if empty."""
        a = np.maximum(np.ceil((np.asarray(lo) - self.lo) / self.sp - 1e-6).astype(int), 0)
        b = np.minimum(np.floor((np.asarray(hi) - self.lo) / self.sp + 1e-6).astype(int) + 1, self.shape)
        if np.any(b <= a):
            return None
        return (slice(int(a[0]), int(b[0])), slice(int(a[1]), int(b[1])), slice(int(a[2]), int(b[2])))

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable x ``[n, 1, 1]``, y ``[1, n, 1]``, z ``[1, 1, n]`` coordinates (mm) of box ``sl``."""
        return self.x[sl[0]][:, None, None], self.y[sl[1]][None, :, None], self.z[sl[2]][None, None, :]

    def index(self, pts: np.ndarray) -> np.ndarray:
        """Nearest voxel index of patient-frame points ``(n, 3)``, clipped to the grid."""
        idx = np.rint((np.asarray(pts) - self.lo) / self.sp).astype(np.int64)
        return np.clip(idx, 0, np.asarray(self.shape) - 1)


def tube(g: Grid, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, zscale: float = 1.0):
    """Voxels within a cone-capped segment (radius r0 -> r1); z distances divided by ``zscale``."""
    p0 = np.asarray(p0, dtype=np.float32)
    p1 = np.asarray(p1, dtype=np.float32)
    rm = max(r0, r1)
    pad = np.array([rm, rm, rm * zscale])
    sl = g.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    if sl is None:
        return None, None
    X, Y, Z = g.coords(sl)
    d = (p1 - p0).astype(np.float32)
    d[2] /= zscale
    ex, ey, ez = X - p0[0], Y - p0[1], (Z - p0[2]) / np.float32(zscale)
    L2 = exact.dot(d, d)
    t = np.clip((ex * d[0] + ey * d[1] + ez * d[2]) / np.float32(max(L2, 1e-9)), 0, 1) if L2 > 1e-9 else np.float32(0)
    dist2 = (ex - t * d[0]) ** 2 + (ey - t * d[1]) ** 2 + (ez - t * d[2]) ** 2
    r = np.float32(r0) + np.float32(r1 - r0) * t
    return sl, dist2 <= r * r


def ellipsoid(g: Grid, c: np.ndarray, axes: np.ndarray, rot: np.ndarray | None = None, scale: float = 1.0):
    """Normalised squared radius ``q`` of an (optionally rotated) ellipsoid inside its box.

    ``rot`` columns are the unit vectors of the ellipsoid axes; ``q < 1`` is inside.
    """
    c = np.asarray(c, dtype=float)
    axes = np.asarray(axes, dtype=float) * scale
    if rot is None:
        half = axes
    else:
        half = np.sqrt(((rot * axes[None, :]) ** 2).sum(axis=1))
    sl = g.box(c - half, c + half)
    if sl is None:
        return None, None
    X, Y, Z = g.coords(sl)
    px, py, pz = X - np.float32(c[0]), Y - np.float32(c[1]), Z - np.float32(c[2])
    if rot is None:
        q = (px / axes[0]) ** 2 + (py / axes[1]) ** 2 + (pz / axes[2]) ** 2
    else:
        q = np.zeros(np.broadcast_shapes(px.shape, py.shape, pz.shape), dtype=np.float32)
        for a in range(3):
            u = px * np.float32(rot[0, a]) + py * np.float32(rot[1, a]) + pz * np.float32(rot[2, a])
            q += (u / np.float32(axes[a])) ** 2
    return sl, np.broadcast_to(q, tuple(s.stop - s.start for s in sl)).astype(np.float32, copy=False)


def spline(points: list, radii: list, step: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom curve through key points, sampled every ~``step`` mm, with interpolated radii."""
    P = np.asarray(points, dtype=float)
    R = np.asarray(radii, dtype=float)
    Q = np.vstack([2 * P[0] - P[1], P, 2 * P[-1] - P[-2]])
    pts, rad = [], []
    for i in range(1, len(Q) - 2):
        p0, p1, p2, p3 = Q[i - 1 : i + 3]
        n = max(2, int(np.ceil(exact.norm(p2 - p1) / step)))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        pts.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t**3))  # fmt: skip
        rad.append(R[i - 1] + (R[i] - R[i - 1]) * t[:, 0])
    pts.append(P[-1][None])
    rad.append(R[-1:])
    return np.vstack(pts), np.concatenate(rad)


def upsample(small: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of ``small`` to ``shape`` (corners aligned)."""
    out = small
    for ax, n in enumerate(shape):
        m = out.shape[ax]
        pos = np.linspace(0, m - 1, n, dtype=np.float32)
        i0 = np.minimum(np.floor(pos).astype(int), m - 2) if m > 1 else np.zeros(n, int)
        w = (pos - i0).astype(np.float32) if m > 1 else np.zeros(n, np.float32)
        shp = [1] * out.ndim
        shp[ax] = n
        w = w.reshape(shp)
        a = np.take(out, i0, axis=ax)
        b = np.take(out, np.minimum(i0 + 1, m - 1), axis=ax)
        out = a + (b - a) * w
    return out.astype(np.float32, copy=False)


def smooth_field(rng: np.random.Generator, g: Grid, sl: tuple[slice, slice, slice], cell_mm: float) -> np.ndarray:
    """Smooth random field (about N(0, 1)) over box ``sl`` with correlation length ~``cell_mm``."""
    shape = tuple(s.stop - s.start for s in sl)
    extent = np.asarray(shape) * g.sp
    n_lo = tuple(int(v) for v in np.clip(np.ceil(extent / cell_mm) + 3, 3, 64))
    small = ndimage.gaussian_filter(rng.standard_normal(n_lo).astype(np.float32), 0.8)
    small /= max(float(small.std()), 1e-6)
    return upsample(small, shape)


def smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 below ``a``, 1 above ``b``, a smooth cubic ramp between."""
    t = np.clip((np.asarray(x, dtype=float) - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def superellipse_term(coord: np.ndarray, centre: np.ndarray, a_neg: np.ndarray, a_pos: np.ndarray, p: np.ndarray):
    """``(|c - centre| / a) ** p`` as ``[len(coord), len(centre)]`` (a = a_neg below the centre)."""
    d = coord[:, None].astype(np.float32) - centre[None, :].astype(np.float32)
    a = np.where(d < 0, a_neg[None, :], a_pos[None, :]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(a > 0, np.abs(d) / a, np.inf)
    return (v ** p[None, :].astype(np.float32)).astype(np.float32)


def inside_superellipse(tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Separable superellipse test ``tx[i, k] + ty[j, k] < 1`` -> bool ``[i, j, k]``."""
    return (tx[:, None, :] + ty[None, :, :]) < 1.0
