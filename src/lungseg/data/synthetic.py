"""Synthetic chest CT phantoms and the embedded LCTSC-style DICOM cohort.

:func:`make_phantom` draws one patient: a thorax with body habitus, chest
wall, ribs, spine, sternum, lungs with airway and vessel trees, mediastinum,
heart and great vessels, diaphragm with the upper abdominal organs, a scanner
table, optional pathology, and scanner settings (matrix, pixel spacing, slice
thickness, patient offset, blur and noise). Everything is evaluated directly on
the target grid, structure by structure inside bounding boxes, as a label
volume that is turned into Hounsfield units at the end.

Arrays follow the lungseg convention (:mod:`lungseg.data.geometry`): indexed
``[i, j, k]`` = ``[column, row, slice]``; the grid is a standard head-first
supine axial CT (direction = identity), so ``i`` runs to the patient's left
(+x LPS), ``j`` to posterior (+y) and ``k`` to superior (+z). Internally the
anatomy is built in a patient frame (mm): x = left, y = posterior (0 at the
vertebral-body centre), z = superior (0 near the lowest lung point).

Mask conventions follow RTOG 1106 / LCTSC: lungs include intrapulmonary vessels
and bronchi and any collapsed, consolidated, ground-glass or emphysematous
lung; they exclude the trachea, main bronchi, hilar structures, tumour (GTV)
and pleural effusion.

:func:`synthesize_cohort` writes a cohort as DICOM CT + RTSTRUCT in the TCIA
LCTSC folder layout plus a ``cohort.csv`` describing each patient.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import multiprocessing
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from lungseg.data.geometry import Geometry

log = logging.getLogger(__name__)

MASK_NAMES = ("Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord")
HU_MIN, HU_MAX = -1024.0, 3071.0
PATIENT_PREFIX = "LCTSC-SYN-"

# ----------------------------------------------------------------------------- tissue labels
(AIR, TABLE_SHELL, TABLE_FOAM, SKIN, FAT, MUSCLE, GLAND, MED_FAT, HILUM_FAT, LUNG, VESSEL, BRONCH_WALL,
 AIRWAY, MYOCARD, BLOOD, ESOPH, GAS, CORTEX, CANCELLOUS, CARTILAGE, DISC, CSF, CORD, LIVER, SPLEEN,
 KIDNEY, STOMACH, FLUID, EFFUSION, TUMOUR, NODE, CALC) = range(32)  # fmt: skip

#: label -> (mean HU, between-patient SD)
_HU: dict[int, tuple[float, float]] = {
    AIR: (-1000, 2), TABLE_SHELL: (250, 80), TABLE_FOAM: (-930, 25), SKIN: (25, 10), FAT: (-100, 8),
    MUSCLE: (45, 6), GLAND: (-30, 25), MED_FAT: (-95, 8), HILUM_FAT: (-80, 10), LUNG: (-850, 0),
    VESSEL: (42, 5), BRONCH_WALL: (20, 15), AIRWAY: (-1000, 3), MYOCARD: (48, 5), BLOOD: (40, 4),
    ESOPH: (40, 6), GAS: (-1000, 3), CORTEX: (850, 120), CANCELLOUS: (230, 50), CARTILAGE: (120, 40),
    DISC: (85, 10), CSF: (12, 4), CORD: (32, 4), LIVER: (58, 7), SPLEEN: (47, 5), KIDNEY: (33, 5),
    STOMACH: (38, 5), FLUID: (15, 8), EFFUSION: (10, 5), TUMOUR: (35, 8), NODE: (38, 6), CALC: (450, 120),
}  # fmt: skip
_LUNG_CONTENT = (LUNG, VESSEL, BRONCH_WALL, AIRWAY)


def _lut(labels: tuple[int, ...] | list[int]) -> np.ndarray:
    out = np.zeros(256, dtype=bool)
    out[list(labels)] = True
    return out


_IS_LUNG_CONTENT = _lut(_LUNG_CONTENT)
_IN_LUNG = _lut((LUNG, HILUM_FAT))


@dataclass
class Phantom:
    """One synthetic patient.

    Attributes:
        hu: float32 Hounsfield units ``[i, j, k]`` (integers stored as float, blur and
            noise applied, clipped to [-1024, 3071]).
        geometry: The CT grid (HFS, identity direction).
        masks: Ground-truth boolean masks ``[i, j, k]`` named as in :data:`MASK_NAMES`.
        info: Pathologies and scanner settings (no identifiers).
    """

    hu: np.ndarray
    geometry: Geometry
    masks: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- small helpers


class _Grid:
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
        return self.x[sl[0]][:, None, None], self.y[sl[1]][None, :, None], self.z[sl[2]][None, None, :]

    def index(self, pts: np.ndarray) -> np.ndarray:
        """Nearest voxel index of patient-frame points ``(n, 3)``, clipped to the grid."""
        idx = np.rint((np.asarray(pts) - self.lo) / self.sp).astype(np.int64)
        return np.clip(idx, 0, np.asarray(self.shape) - 1)


def _tube(g: _Grid, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, zscale: float = 1.0):
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
    L2 = float(d @ d)
    t = np.clip((ex * d[0] + ey * d[1] + ez * d[2]) / np.float32(max(L2, 1e-9)), 0, 1) if L2 > 1e-9 else np.float32(0)
    dist2 = (ex - t * d[0]) ** 2 + (ey - t * d[1]) ** 2 + (ez - t * d[2]) ** 2
    r = np.float32(r0) + np.float32(r1 - r0) * t
    return sl, dist2 <= r * r


def _ellipsoid(g: _Grid, c: np.ndarray, axes: np.ndarray, rot: np.ndarray | None = None, scale: float = 1.0):
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


def _path(points: list, radii: list, step: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom curve through key points, sampled every ~``step`` mm, with interpolated radii."""
    P = np.asarray(points, dtype=float)
    R = np.asarray(radii, dtype=float)
    Q = np.vstack([2 * P[0] - P[1], P, 2 * P[-1] - P[-2]])
    pts, rad = [], []
    for i in range(1, len(Q) - 2):
        p0, p1, p2, p3 = Q[i - 1 : i + 3]
        n = max(2, int(np.ceil(np.linalg.norm(p2 - p1) / step)))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        pts.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t**3))  # fmt: skip
        rad.append(R[i - 1] + (R[i] - R[i - 1]) * t[:, 0])
    pts.append(P[-1][None])
    rad.append(R[-1:])
    return np.vstack(pts), np.concatenate(rad)


def _upsample(small: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
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


def _field(rng: np.random.Generator, g: _Grid, sl: tuple[slice, slice, slice], cell_mm: float) -> np.ndarray:
    """Smooth random field (about N(0, 1)) over box ``sl`` with correlation length ~``cell_mm``."""
    shape = tuple(s.stop - s.start for s in sl)
    extent = np.asarray(shape) * g.sp
    n_lo = tuple(int(v) for v in np.clip(np.ceil(extent / cell_mm) + 3, 3, 64))
    small = ndimage.gaussian_filter(rng.standard_normal(n_lo).astype(np.float32), 0.8)
    small /= max(float(small.std()), 1e-6)
    return _upsample(small, shape)


def _smoothstep(x: np.ndarray, a: float, b: float) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=float) - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ----------------------------------------------------------------------------- thoracic cavity shape


class _Thorax:
    """The pleural cavity as smooth functions of height.

    Each side ``s`` (-1 right, +1 left) is a superellipse cross-section centred at
    ``(s * xs(z), cy(z))`` with lateral semi-axis ``ax_s(z)`` and anterior/posterior
    semi-axes ``aya(z)`` / ``ayp(z)``; near the apex both sides become round domes.
    """

    def __init__(self, r: np.random.Generator, H: float) -> None:
        self.H = H
        self.rho = r.uniform(22, 30)
        self.xa = r.uniform(40, 52)
        self.ya = r.uniform(-8, 8)
        self.zd0 = H - self.rho
        self.E = {1: r.uniform(108, 135)}
        self.E[-1] = self.E[1] * r.uniform(1.01, 1.06)  # right hemithorax larger
        xs0 = r.uniform(4, 14)
        self.y_post = r.uniform(14, 26)
        self.ayp0 = r.uniform(60, 78)
        self.aya0 = r.uniform(82, 108)
        self.cy0 = self.y_post - self.ayp0
        p0 = r.uniform(2.0, 2.4)
        u = [0.0, 0.3, 0.6, 0.85, 1.0]
        rho, xa, ya, cy0 = self.rho, self.xa, self.ya, self.cy0

        def jit() -> np.ndarray:
            return np.r_[1 + r.normal(0, 0.025, 4), 1.0]

        knots = {
            "xs": [xs0, xs0, xs0 + 0.1 * (xa - xs0), xs0 + 0.5 * (xa - xs0), xa],
            "cy": [cy0, cy0, cy0 + 0.15 * (ya - cy0), cy0 + 0.55 * (ya - cy0), ya],
            "p": [p0, p0, p0, (p0 + 2) / 2, 2.0],
        }
        for s in (-1, 1):
            ax0 = self.E[s] - xs0
            knots[f"ax{s}"] = list(ax0 * np.array([1.0, 0.97, 0.86, 0.62, rho / ax0]) * jit())
        knots["aya"] = list(self.aya0 * np.array([0.95, 1.0, 0.9, 0.62, rho / self.aya0]) * jit())
        knots["ayp"] = list(self.ayp0 * np.array([1.0, 1.0, 0.93, 0.72, rho / self.ayp0]) * jit())
        self._f = {k: PchipInterpolator(u, v) for k, v in knots.items()}

    def at(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Cross-section parameters at heights ``z`` (mm); empty (zero axes) above the apex."""
        z = np.atleast_1d(np.asarray(z, dtype=float))
        u = np.clip(z / self.zd0, 0.0, 1.0)
        out = {k: np.asarray(f(u), dtype=float) for k, f in self._f.items()}
        dome = z > self.zd0
        if dome.any():
            rad = self.rho * np.sqrt(np.clip(1 - ((z[dome] - self.zd0) / self.rho) ** 2, 0, 1))
            for k in ("ax-1", "ax1", "aya", "ayp"):
                out[k][dome] = rad
            out["xs"][dome], out["cy"][dome], out["p"][dome] = self.xa, self.ya, 2.0
        return out

    def radius(self, z: np.ndarray, alpha: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boundary point of side ``s`` at angle ``alpha`` (0 posterior, pi/2 lateral, pi anterior).

        Returns ``(x, y, r)`` with r the distance from the side centre.
        """
        c = self.at(z)
        dx, dy = np.abs(np.sin(alpha)), np.cos(alpha)
        ay = np.where(dy > 0, c["ayp"], c["aya"])
        p = c["p"]
        with np.errstate(divide="ignore"):
            r = ((dx / np.maximum(c[f"ax{s}"], 1e-3)) ** p + (np.abs(dy) / np.maximum(ay, 1e-3)) ** p) ** (-1 / p)
        return s * (c["xs"] + r * dx), c["cy"] + r * dy, r


def _se_term(coord: np.ndarray, centre: np.ndarray, a_neg: np.ndarray, a_pos: np.ndarray, p: np.ndarray):
    """``(|c - centre| / a) ** p`` as ``[len(coord), len(centre)]`` (a = a_neg below the centre)."""
    d = coord[:, None].astype(np.float32) - centre[None, :].astype(np.float32)
    a = np.where(d < 0, a_neg[None, :], a_pos[None, :]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(a > 0, np.abs(d) / a, np.inf)
    return (v ** p[None, :].astype(np.float32)).astype(np.float32)


def _inside(tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Separable superellipse test ``tx[i, k] + ty[j, k] < 1`` -> bool ``[i, j, k]``."""
    return (tx[:, None, :] + ty[None, :, :]) < 1.0


# ----------------------------------------------------------------------------- the phantom builder


class _Builder:
    def __init__(self, rng: np.random.Generator, pathology: bool, max_matrix: int) -> None:
        if max_matrix < 32:
            raise ValueError(f"max_matrix must be >= 32, got {max_matrix}")
        self.r = rng
        self.pathology = pathology
        self.max_matrix = int(max_matrix)
        self._sample_anatomy()
        self._sample_scanner()
        g = self.g
        self.lab = np.zeros(g.shape, dtype=np.uint8)
        self.medi = np.zeros(g.shape, dtype=bool)
        self.overlays: list[tuple[tuple[slice, slice, slice], np.ndarray, float, np.ndarray]] = []
        self.vessel_deposits: list[tuple[np.ndarray, np.ndarray]] = []
        self.landmarks: dict[str, list[np.ndarray]] = {"tumour": [], "dense": []}
        self.hu_of = {lab: float(m + rng.normal(0, sd)) for lab, (m, sd) in _HU.items()}

    # ------------------------------------------------------------------ sampling
    def _sample_anatomy(self) -> None:
        r = self.r
        self.H = H = r.uniform(225, 275)
        self.th = _Thorax(r, H)
        self.z_c = H * r.uniform(0.55, 0.61)  # carina
        self.D = {-1: H * r.uniform(0.25, 0.33)}
        self.D[1] = self.D[-1] - H * r.uniform(0.03, 0.08)  # left dome lower
        self.xd = {s: r.uniform(45, 65) for s in (-1, 1)}
        self.yd = r.uniform(-35, -12)
        self.kx = r.uniform(0.7, 0.9)
        self.ky_ant = r.uniform(0.45, 0.65)
        self.t_diaph = r.uniform(3, 5)
        # spine
        self.rvx = r.uniform(16, 20)
        self.rvy = self.rvx * r.uniform(0.75, 0.85)
        self.kyph = r.uniform(0, 10)
        self.vper = r.uniform(22, 27)
        self.vdisc = r.uniform(4, 6)
        self.vphase = r.uniform(0, self.vper)
        self.rc = r.uniform(7, 8.5)
        self.rcord = r.uniform(4.0, 5.0)
        self.scol = r.uniform(-4, 4)
        # chest wall and body
        self.habitus = r.uniform(0, 1)
        self.wall = r.uniform(10, 13)
        self.m_lat = r.uniform(4, 9)
        self.m_ant = r.uniform(8, 22)
        fat = 3 + 32 * self.habitus**1.6 * r.uniform(0.7, 1.2)
        self.fat_lat = fat * r.uniform(1.0, 1.4)
        self.fat_ant = fat * r.uniform(0.7, 1.1)
        self.fat_post = fat * r.uniform(0.4, 0.8)
        self.skin = r.uniform(1.5, 2.5)
        self.back = r.uniform(42, 58)
        self.shoulder = r.uniform(5, 30)
        self.belly = fat * r.uniform(0.0, 1.2)
        self.female = r.random() < 0.45
        self.breast = r.uniform(0.2, 1.0) if self.female else 0.0
        self.p_lat = r.uniform(2.0, 2.5)
        self.p_ant = r.uniform(1.9, 2.3)
        self.p_post = r.uniform(3.0, 4.5)
        th = self.th
        self.y_front0 = th.cy0 - th.aya0 - self.wall - self.m_ant - self.fat_ant - self.skin
        self.y_back = th.y_post + self.back + self.fat_post + self.skin
        self.Bx = {s: th.E[s] + self.wall + self.m_lat + self.fat_lat + self.skin for s in (-1, 1)}
        self.xm = r.uniform(-3, 3)  # mediastinal midline
        self.st_t = r.uniform(9, 13)  # sternum thickness
        # lungs
        self.lung_hu = r.uniform(-885, -835)
        self.grav = r.uniform(25, 80)
        self.tex_sd = r.uniform(6, 14)
        self.kinds = self._draw_kinds() if self.pathology else []

    def _draw_kinds(self) -> list[str]:
        """Pathology findings of this patient (drawn before the grid so they do not depend on it)."""
        r = self.r
        kinds: list[str] = []
        if r.random() < 0.55:
            kinds.append("tumour")
        u = r.random()
        dense = "atelectasis" if u < 0.4 else "consolidation" if u < 0.7 else "effusion" if u < 0.95 else None
        if dense:
            kinds.append(dense)
        if r.random() < 0.3:
            kinds.append(str(r.choice(["atelectasis", "consolidation", "effusion"])))
        if r.random() < 0.3:
            kinds.append("ggo")
        if r.random() < 0.3:
            kinds.append("emphysema")
        if not kinds:
            kinds.append("ggo")
        return list(dict.fromkeys(kinds))

    def _sample_scanner(self) -> None:
        r = self.r
        n = int(r.choice([512, 384, 320, 256], p=[0.12, 0.18, 0.22, 0.48]))
        options = {512: ([3.0, 5.0], [0.25, 0.75]), 384: ([2.5, 3.0, 5.0], [0.25, 0.5, 0.25]),
                   320: ([2.0, 2.5, 3.0], [0.15, 0.4, 0.45]),
                   256: ([1.25, 2.0, 2.5, 3.0], [0.06, 0.24, 0.4, 0.3])}[n]  # fmt: skip
        dz = float(r.choice(options[0], p=options[1]))
        n = min(n, self.max_matrix)
        width = 2 * max(self.Bx.values()) + 2 * self.shoulder
        depth = self.y_back - self.y_front0 + 2 * self.belly + 60
        fovs = [f for f in (360, 380, 400, 420, 450, 480, 500) if f >= max(width + 20, depth)]
        fov = float(r.choice(fovs)) if fovs else 500.0
        ps = round(fov / n, 4)
        lo_margin, hi_margin = r.uniform(12, 30), r.uniform(8, 25)
        extent = self.H + lo_margin + hi_margin
        if extent < 250:
            lo_margin += (250 - extent) / 2
            hi_margin += (250 - extent) / 2
        elif extent > 330:
            cut = extent - 330
            lo_margin, hi_margin = max(12.0, lo_margin - cut / 2), max(8.0, hi_margin - cut / 2)
        thick = [1.25, 2.0, 2.5, 3.0, 5.0]
        while n * n * 2 * (self.H + lo_margin + hi_margin) / dz > 27e6 and dz < 5.0:  # disk budget
            dz = next(t for t in thick if t > dz)
        nk = int(round((self.H + lo_margin + hi_margin) / dz)) + 1
        # world placement: reconstruction centre near isocentre, patient shifted on the table
        centre = np.array([r.uniform(-10, 10), r.uniform(-10, 25)])
        half = ps * (n - 1) / 2
        y_lo, y_hi = self.y_front0 - self.belly, self.y_back
        off = np.array([centre[0] + r.uniform(-20, 20), centre[1] + r.uniform(-15, 25) - (y_lo + y_hi) / 2])
        lo_w, hi_w = centre[1] - half + 5, centre[1] + half - 5
        if y_hi + off[1] > hi_w:
            off[1] -= y_hi + off[1] - hi_w
        if y_lo + off[1] < lo_w:
            off[1] += lo_w - (y_lo + off[1])
        z0_world = round(r.uniform(-420, -180), 1)
        self.world_off = np.array([off[0], off[1], z0_world + lo_margin])
        ipp = np.round(np.array([centre[0] - half, centre[1] - half, z0_world]), 3)
        self.geometry = Geometry(
            shape=(n, n, nk), spacing_mm=(ps, ps, dz), origin_lps_mm=tuple(float(v) for v in ipp)
        )
        self.g = _Grid((n, n, nk), (ps, ps, dz), ipp - self.world_off)
        self.scanner = {
            "matrix": n, "pixel_spacing_mm": ps, "slice_thickness_mm": dz, "n_slices": nk, "fov_mm": fov,
            "kvp": float(r.choice([100.0, 120.0, 120.0, 120.0, 140.0])),
            "kernel": str(r.choice(["STANDARD", "B30f", "B31f", "FC13", "SOFT"])),
            "noise_sd_hu": float(np.clip((10 + 26 * r.uniform() ** 1.5) * np.sqrt(max(self.Bx.values()) / 150), 10, 40)),
            "blur_sigma_vox": float(r.uniform(0.5, 1.0)), "blur_sigma_z_vox": float(r.uniform(0.3, 0.6)),
        }  # fmt: skip

    # ------------------------------------------------------------------ painting primitives
    def paint(self, sl, inside, label: int, allow: np.ndarray | None = None) -> None:
        if sl is None:
            return
        view = self.lab[sl]
        m = inside if allow is None else inside & allow[view]
        view[m] = label

    def paint_path(self, pts, rad, label: int | None, allow: np.ndarray | None = None,
                   margin: float | None = None, zscale: float = 1.0) -> None:
        """Paint a tube along ``pts`` and/or add it (radius + margin) to the mediastinal envelope."""
        for a in range(len(pts) - 1):
            if label is not None:
                sl, m = _tube(self.g, pts[a], pts[a + 1], rad[a], rad[a + 1], zscale)
                self.paint(sl, m, label, allow)
            if margin is not None:
                sl, m = _tube(self.g, pts[a], pts[a + 1], rad[a] + margin, rad[a + 1] + margin, zscale)
                if sl is not None:
                    self.medi[sl] |= m

    # ------------------------------------------------------------------ geometry fields
    def _fields(self) -> None:
        """Per-side cavity masks, the whole cavity (incl. the upper abdomen) and the diaphragm height."""
        g, th = self.g, self.th
        c = th.at(g.z)
        sides = {}
        for s in (-1, 1):
            tx = _se_term(g.x, s * c["xs"], c[f"ax{s}"], c[f"ax{s}"], c["p"])
            ty = _se_term(g.y, c["cy"], c["aya"], c["ayp"], c["p"])
            sides[s] = _inside(tx, ty)
        bx = np.abs(g.x[:, None]) < c["xs"][None, :]
        by = (g.y[:, None] > (c["cy"] - c["aya"])[None, :]) & (g.y[:, None] < (c["cy"] + c["ayp"])[None, :])
        self.side = sides
        self.cavity = sides[-1] | sides[1] | (bx[:, None, :] & by[None, :, :])
        # below the lung base the cavity keeps the base cross-section (upper abdomen)
        base = g.z < 0
        if base.any():
            c0 = th.at(np.zeros(1))
            tx = {s: _se_term(g.x, s * c0["xs"], c0[f"ax{s}"], c0[f"ax{s}"], c0["p"])[:, 0] for s in (-1, 1)}
            ty = _se_term(g.y, c0["cy"], c0["aya"], c0["ayp"], c0["p"])[:, 0]
            sl2 = (np.minimum(tx[-1][:, None], tx[1][:, None]) + ty[None, :]) < 1.0
            self.cavity[:, :, base] |= sl2[:, :, None]
        # diaphragm height zd[i, j]
        X, Y = g.x[:, None].astype(float), g.y[None, :].astype(float)
        zd = np.full((len(g.x), len(g.y)), -np.inf)
        for s in (-1, 1):
            D = self.D[s]
            lx = th.E[s] - self.xd[s]
            ly = np.where(Y > self.yd, th.y_post - self.yd, self.yd - (th.cy0 - th.aya0))
            ky = np.where(Y > self.yd, 1.0, self.ky_ant)  # posterior recess deepest
            zs = D - D * self.kx * ((X - s * self.xd[s]) / lx) ** 2 - D * ky * ((Y - self.yd) / ly) ** 2
            zd = np.maximum(zd, zs)
        # soft floor so the recesses end in a rounded sliver
        zd = -8 + 6 * np.log1p(np.exp((zd + 8) / 6))
        self.zd = zd.astype(np.float32)
        self.above = g.z[None, None, :] > self.zd[:, :, None]

    def y_vb(self, z: np.ndarray) -> np.ndarray:
        return self.kyph * (1 - ((np.asarray(z) - 0.5 * self.H) / (0.7 * self.H)) ** 2)

    def x_sp(self, z: np.ndarray) -> np.ndarray:
        return self.scol * np.sin(np.asarray(z) / self.H * np.pi)

    # ------------------------------------------------------------------ body, table
    def _body(self) -> None:
        g, r = self.g, self.r
        z = g.z.astype(float)
        u = z / self.H
        sh = self.shoulder * _smoothstep(u, 0.7, 1.0)
        front = self.y_front0 - self.belly * _smoothstep(-z, -self.D[1], -self.D[1] + 80)
        yc = (front + self.y_back) / 2
        by = (self.y_back - front) / 2
        # table: curved couch top under the back, open at the ends
        R = r.uniform(700, 1500)
        yt0 = self.y_back + r.uniform(0.5, 3)
        t_shell, t_core, hw = r.uniform(2, 3.5), r.uniform(25, 45), r.uniform(200, 240)
        X, Y = g.x[:, None], g.y[None, :]
        top = yt0 - X**2 / (2 * R)
        inside_w = np.abs(X) < hw
        shell = inside_w & (((Y >= top) & (Y < top + t_shell)) | ((Y >= top + t_shell + t_core) & (Y < top + 2 * t_shell + t_core)))
        core = inside_w & (Y >= top + t_shell) & (Y < top + t_shell + t_core) & (np.abs(X) < hw - 1)
        np.copyto(self.lab, TABLE_SHELL, where=shell[:, :, None])
        np.copyto(self.lab, TABLE_FOAM, where=core[:, :, None])
        # body layers (skin, fat, muscle): nested superellipses
        for label, dl, da, dp in (
            (SKIN, 0.0, 0.0, 0.0),
            (FAT, self.skin, self.skin, self.skin),
            (MUSCLE, self.skin + self.fat_lat, self.skin + self.fat_ant, self.skin + self.fat_post),
        ):
            ax_r = self.Bx[-1] + sh - dl
            ax_l = self.Bx[1] + sh - dl
            tx = np.where(g.x[:, None] < 0,
                          (np.abs(g.x[:, None]) / ax_r[None, :]) ** self.p_lat,
                          (np.abs(g.x[:, None]) / ax_l[None, :]) ** self.p_lat).astype(np.float32)  # fmt: skip
            dy = g.y[:, None] - yc[None, :]
            ty = np.where(dy < 0, (np.abs(dy) / (by - da)[None, :]) ** self.p_ant,
                          (np.abs(dy) / (by - dp)[None, :]) ** self.p_post).astype(np.float32)  # fmt: skip
            np.copyto(self.lab, label, where=_inside(tx, ty))
        # breasts (supine: broad, flattened mounds blending into the anterior chest)
        if self.breast > 0:
            zb = self.H * r.uniform(0.3, 0.45)
            kb = int(np.argmin(np.abs(z - zb)))
            for s in (-1, 1):
                axes = np.array([r.uniform(60, 90), 12 + 30 * self.breast, r.uniform(50, 70)])
                c = np.array([s * r.uniform(65, 95), front[kb] + 0.45 * axes[1], zb])
                sl, q = _ellipsoid(g, c, axes)
                if sl is None:
                    continue
                self.paint(sl, q < 1, SKIN, _lut((AIR,)))
                self.paint(sl, q < (1 - self.skin / axes[1]) ** 2, FAT, _lut((AIR, SKIN)))
                gl = (q < 0.5) & (_field(r, g, sl, 12.0) > -0.2)
                self.paint(sl, gl, GLAND, _lut((AIR, SKIN, FAT)))

    # ------------------------------------------------------------------ spine
    def _spine(self, paint: bool) -> None:
        """Vertebral bodies, discs, posterior elements, canal and cord.

        With ``paint=False`` only adds the paravertebral envelope (kept free of lung) to ``medi``.
        """
        g = self.g
        sl = g.box(np.array([-90, -60, -1e4]), np.array([90, 130, 1e4]))
        if sl is None:
            return
        z = g.z[sl[2]].astype(np.float32)
        yv, xv = self.y_vb(z).astype(np.float32), self.x_sp(z).astype(np.float32)
        rvx = (self.rvx + 3 * (1 - np.clip(z / self.H, 0, 1))).astype(np.float32)
        rvy = rvx * np.float32(self.rvy / self.rvx)
        ycan = yv + rvy + np.float32(2 + self.rc)
        X, Y = g.x[sl[0]][:, None, None], g.y[sl[1]][None, :, None]
        xv_, yv_, rvx_, rvy_, ycan_ = (a[None, None, :] for a in (xv, yv, rvx, rvy, ycan))
        dx = X - xv_
        if not paint:
            env = (dx / (rvx_ + 4)) ** 2 + ((Y - yv_) / (rvy_ + 4)) ** 2 < 1
            env |= ((dx / np.float32(self.rc + 30)) ** 2 + ((Y - ycan_ - 6) / np.float32(24)) ** 2) < 1
            self.medi[sl] |= env
            return
        phase = ((z - self.vphase) % self.vper) / self.vper
        disc = phase < self.vdisc / self.vper
        end = (~disc) & ((phase < (self.vdisc + 1.6) / self.vper) | (phase > 1 - 1.6 / self.vper))
        body_q = (dx / rvx_) ** 2 + ((Y - yv_) / rvy_) ** 2
        inner_q = (dx / (rvx_ - 1.8)) ** 2 + ((Y - yv_) / (rvy_ - 1.8)) ** 2
        rcan = np.sqrt(dx**2 + (Y - ycan_) ** 2)
        ph = phase[None, None, :]
        view = self.lab[sl]
        d3, e3 = disc[None, None, :], end[None, None, :]
        view[(body_q < 1) & d3] = DISC
        view[(body_q < 1) & ~d3] = CORTEX
        view[(inner_q < 1) & ~d3 & ~e3] = CANCELLOUS
        # posterior elements: pedicles/lamina ring, transverse and spinous processes
        arch = (ph > 0.2) & (ph < 0.85)
        ring = (rcan >= self.rc) & (rcan < self.rc + 4.5) & (Y > ycan_ - self.rc * 0.9) & arch
        trans = ((np.abs(dx) > self.rc) & (np.abs(dx) < self.rc + 24) & (np.abs(Y - ycan_ + 2) < 5)
                 & (ph > 0.3) & (ph < 0.7))  # fmt: skip
        spin = ((np.abs(dx) < 3.5) & (Y > ycan_ + self.rc) & (Y < ycan_ + self.rc + 30 + 8 * (ph < 0.1))
                & ((ph > 0.45) | (ph < 0.1)))  # fmt: skip
        view[ring | trans | spin] = CORTEX
        view[rcan < self.rc] = CSF
        view[np.sqrt(dx**2 + (Y - ycan_ + 1) ** 2) < self.rcord] = CORD

    # ------------------------------------------------------------------ ribs, sternum, clavicles, scapulae
    def y_st(self, z: np.ndarray) -> np.ndarray:
        """Sternum centre y at heights ``z`` (just in front of the cavity)."""
        c = self.th.at(np.asarray(z, dtype=float))
        return c["cy"] - c["aya"] - self.st_t / 2 - 2.0

    def _rib_paths(self) -> None:
        """Centre lines of ribs (posterior head -> around the cavity -> anterior end) and cartilages."""
        r, th = self.r, self.th
        rr, zs = r.uniform(3.0, 3.8), r.uniform(1.5, 1.9)
        off = rr + r.uniform(2.0, 3.5)
        zT1 = self.H - r.uniform(8, 16)
        self.z_notch = min(self.z_c + r.uniform(40, 55), self.H - 25)
        self.z_xiph = self.D[-1] - r.uniform(5, 25)
        st_len = self.z_notch - self.z_xiph
        ribs, carts = [], []
        for n in range(1, 13):
            zp = zT1 - (n - 1) * self.vper * r.uniform(0.95, 1.05)
            drop = {1: 30, 2: 55, 3: 70, 4: 80, 5: 88, 6: 92, 7: 95, 11: 40, 12: 30}.get(n, 90) * r.uniform(0.85, 1.15)
            a_end = np.pi if n <= 7 else (r.uniform(2.2, 2.6) if n <= 10 else r.uniform(1.3, 1.8))
            for s in (-1, 1):
                a = np.linspace(0.35, a_end, 36)
                zz = zp - drop * ((a - a[0]) / (a[-1] - a[0])) ** 1.15
                rad = np.maximum(th.radius(zz - rr * zs, a, s)[2], th.radius(zz + rr * zs, a, s)[2]) + off
                cen = th.at(zz)
                px = s * (cen["xs"] + rad * np.abs(np.sin(a)))
                py = cen["cy"] + rad * np.cos(a)
                pts = np.column_stack([px, py, zz])
                if n <= 7:  # stop short of the sternum; costal cartilage continues
                    stop = np.flatnonzero((a > np.pi / 2) & (np.abs(px) < 30 + 3 * n))
                    pts = pts[: stop[0]] if len(stop) else pts
                if len(pts) < 2:
                    continue
                head = np.array([s * (self.rvx + 3), float(self.y_vb(zp)) + 3, zp + 3])
                ribs.append(np.vstack([head, pts]))
                tip = pts[-1]
                if n <= 7:
                    zst = self.z_notch - 5 - (n - 1) / 6.5 * st_len * 0.9
                    end = np.array([s * 14, float(self.y_st(np.array([zst]))[0]), zst])
                    carts.append(np.vstack([tip, (tip + end) / 2 + [0, -3, 0], end]))
                elif n <= 10:
                    carts.append(np.vstack([tip, tip + [-s * 15, -8, 14]]))
        self.rib = (rr, zs, off, ribs, carts)

    def _bones_chest(self) -> None:
        """Ribs (cortex + marrow), costal cartilage, sternum, clavicles, scapulae."""
        r, g = self.r, self.g
        rr, zs, off, ribs, carts = self.rib
        not_lung = ~_lut(_LUNG_CONTENT + (AIR, EFFUSION, TUMOUR))
        for pts in carts:
            self.paint_path(pts, np.full(len(pts), rr), CARTILAGE, not_lung, zscale=zs)
        for pts in ribs:
            self.paint_path(pts, np.full(len(pts), rr), CORTEX, not_lung, zscale=zs)
        for pts in ribs:
            self.paint_path(pts, np.full(len(pts), rr - 1.3), CANCELLOUS, _lut((CORTEX,)), zscale=zs)
        # sternum: manubrium + body
        zz = np.linspace(self.z_xiph, self.z_notch, 40)
        yy = self.y_st(zz)
        hw = np.where(zz > self.z_notch - 45, 25.0, 15.0) * r.uniform(0.85, 1.15)
        for a in range(len(zz) - 1):
            sl = g.box(np.array([-hw[a] - 1, yy[a] - 10, zz[a]]), np.array([hw[a] + 1, yy[a] + 10, zz[a + 1]]))
            if sl is None:
                continue
            X, Y, _ = g.coords(sl)
            shape = tuple(v.stop - v.start for v in sl)
            q = np.broadcast_to((X / hw[a]) ** 2 + ((Y - yy[a]) / (self.st_t / 2)) ** 2, shape)
            self.paint(sl, q < 1, CORTEX, not_lung)
            qi = np.broadcast_to((X / (hw[a] - 1.5)) ** 2 + ((Y - yy[a]) / (self.st_t / 2 - 1.5)) ** 2, shape)
            self.paint(sl, qi < 1, CANCELLOUS, _lut((CORTEX,)))
        # clavicles
        y0 = float(self.y_st(np.array([self.z_notch]))[0])
        for s in (-1, 1):
            E = self.th.E[s]
            pts, rad = _path(
                [[s * 22, y0 - 2, self.z_notch + 4], [s * 0.55 * E, y0 - 8, self.z_notch + 14],
                 [s * (E + 15), y0 + 25, self.z_notch + 22], [s * (E + 40), y0 + 45, self.z_notch + 24]],
                [6, 5.5, 5, 6], step=3.0,
            )  # fmt: skip
            self.paint_path(pts, rad, CORTEX, _lut((MUSCLE, FAT, MED_FAT)))
            self.paint_path(pts, rad - 1.5, CANCELLOUS, _lut((CORTEX,)))
        # scapulae: thin curved plates outside the posterolateral ribs (polar test per side)
        z_top, z_bot = self.H - r.uniform(10, 30), self.H - r.uniform(150, 180)
        thick = r.uniform(3, 5)
        for s in (-1, 1):
            ac, gap = r.uniform(0.75, 0.95), off + rr + r.uniform(8, 14)
            sl = g.box(np.array([-250, -100, z_bot]), np.array([250, 200, z_top]))
            if sl is None:
                continue
            X, Y, Z = g.coords(sl)
            c = self.th.at(np.maximum(Z.ravel() - 8, 0))
            cx, cy = (s * c["xs"])[None, None, :], c["cy"][None, None, :]
            dxy, dyy = (X - cx) * s, Y - cy
            alpha = np.arctan2(dxy, dyy)
            rho = np.sqrt(dxy**2 + dyy**2)
            p = c["p"][None, None, :]
            ay = np.where(dyy > 0, c["ayp"][None, None, :], c["aya"][None, None, :])
            with np.errstate(divide="ignore", invalid="ignore"):
                rb = ((np.abs(np.sin(alpha)) / np.maximum(c[f"ax{s}"][None, None, :], 1)) ** p
                      + (np.abs(np.cos(alpha)) / np.maximum(ay, 1)) ** p) ** (-1 / p)  # fmt: skip
            w = 0.05 + 0.4 * (Z - z_bot) / (z_top - z_bot)
            m = (np.abs(alpha - ac) < w) & (rho > rb + gap) & (rho < rb + gap + thick) & (dxy > 0)
            self.paint(sl, m, CORTEX, _lut((MUSCLE, FAT)))

    # ------------------------------------------------------------------ mediastinum
    def _mediastinum(self) -> None:
        """Place trachea, bronchi, oesophagus, heart, great vessels and hila; build the envelope ``medi``.

        Only geometry and the lung-free envelope are made here; the organs are painted by
        :meth:`_paint_mediastinum` after the lungs.
        """
        r, g, th = self.r, self.g, self.th
        zc = self.z_c
        ztop, zbot = float(g.z[-1]) + 15, float(g.z[0]) - 15
        # esophagus and trachea positions
        r_es = r.uniform(6.5, 9)
        r_tr = r.uniform(9, 12)
        w_tr = r.uniform(1.5, 2.5)
        yv_c = float(self.y_vb(zc))
        y_es_c = yv_c - self.rvy - r_es - 2
        y_tr_c = y_es_c - r_es - r_tr - 1
        x_tr = self.xm + r.uniform(-2, 3)
        y_tr_top = y_tr_c - r.uniform(0, 10)
        self.trachea = dict(c=np.array([x_tr, y_tr_c, zc]), r=r_tr)
        # heart: rotated ellipsoid, apex to the left-anterior-inferior
        a, b, cc = r.uniform(52, 62), r.uniform(34, 42), r.uniform(36, 44)
        th_, ph = np.deg2rad(r.uniform(30, 45)), np.deg2rad(r.uniform(15, 30))
        e1 = np.array([np.cos(th_) * np.cos(ph), -np.sin(th_) * np.cos(ph), -np.sin(ph)])
        e2 = np.array([np.sin(th_), np.cos(th_), 0.0])
        e2 -= e1 * (e1 @ e2)
        e2 /= np.linalg.norm(e2)
        e3 = np.cross(e1, e2)
        rot = np.column_stack([e1, e2, e3])
        axes = np.array([a, b, cc])
        half = np.sqrt(((rot * axes[None, :]) ** 2).sum(axis=1))
        # fill the space between the anterior chest wall and the oesophagus/aorta; right border 35-50 mm right
        y_back_h = yv_c - self.rvy - r.uniform(10, 16)
        for _ in range(3):
            hz_guess = self.D[1] + 0.4 * half[2]
            c0 = th.at(np.array([hz_guess]))
            y_wall = float(c0["cy"][0] - c0["aya"][0]) + r.uniform(2, 6)
            k = np.clip((y_back_h - y_wall) / (2 * half[1]), 0.85, 1.0)
            axes, half = axes * k, half * k
        hy = y_wall + half[1]
        hx = -r.uniform(35, 50) + half[0]
        ix = int(np.clip(np.rint((hx - g.lo[0]) / g.sp[0]), 0, g.shape[0] - 1))
        iy = int(np.clip(np.rint((hy - g.lo[1]) / g.sp[1]), 0, g.shape[1] - 1))
        hz = float(self.zd[ix, iy]) + half[2] * r.uniform(0.7, 0.85)
        hc = np.array([hx, hy, hz])
        self.heart = dict(c=hc, axes=axes, rot=rot, half=half)
        sl, q = _ellipsoid(g, hc, axes + r.uniform(3, 7), rot)
        if sl is not None:
            self.medi[sl] |= q < 1
        # mediastinal core: wide around the trachea and great vessels, a thin anterior junction line,
        # moderate behind (oesophagus, azygos)
        heart_top = hz + half[2]
        wc = r.uniform(13, 18) + (r.uniform(22, 30) - 15) * _smoothstep(g.z, heart_top - 30, heart_top + 15)
        w_ant, w_post = r.uniform(2, 6), r.uniform(11, 16)
        sa, sp_ = r.uniform(20, 35), r.uniform(25, 40)
        Y = g.y[:, None].astype(float)
        W = np.where(Y < y_tr_c, w_ant + (wc - w_ant) * np.exp(-(((Y - y_tr_c) / sa) ** 2)),
                     w_post + (wc - w_post) * np.exp(-(((Y - y_tr_c) / sp_) ** 2)))  # fmt: skip
        self.medi |= (np.abs(g.x - self.xm)[:, None, None] < W.astype(np.float32)[None, :, :])
        # vessels: key points
        z_arch = zc + r.uniform(18, 32)
        r_asc, r_arch, r_desc = r.uniform(14, 18), r.uniform(12, 15), r.uniform(10, 13)
        d_desc = 0.9 * self.rvx + r_desc + r.uniform(1, 3)  # left anterolateral to the vertebral body
        x_desc = d_desc * np.cos(np.deg2rad(r.uniform(35, 50)))
        y_desc = yv_c - np.sqrt(d_desc**2 - x_desc**2)
        root = hc + np.array([-0.35 * half[0], -0.1 * half[1], 0.45 * half[2]])
        y_asc = y_tr_c - r.uniform(25, 35)
        aorta = [root, [r.uniform(-22, -12), y_asc, zc - 10], [r.uniform(-8, 2), (y_asc + y_desc) / 2, z_arch],
                 [x_desc, y_desc, zc + 4], [x_desc, y_desc, self.D[1] - 20], [x_desc * 0.6, y_desc + 3, zbot]]  # fmt: skip
        aorta_r = [r_asc, r_asc, r_arch, r_desc, r_desc, r_desc]
        y_h = y_tr_c + r.uniform(5, 12)
        hil = {-1: np.array([-r.uniform(38, 46), y_h, zc - r.uniform(18, 26)]),
               1: np.array([r.uniform(40, 50), y_h + 5, zc - r.uniform(28, 38)])}  # fmt: skip
        self.hilum = hil
        bif = np.array([r.uniform(4, 12), y_tr_c - 5, zc - r.uniform(8, 14)])
        rv = hc + np.array([0.0, -0.6 * half[1], 0.55 * half[2]])
        la = hc + np.array([-10, 0.55 * half[1], 0.4 * half[2]])
        ra = hc + np.array([-0.6 * half[0], 0.0, 0.2 * half[2]])
        svc_x = -r.uniform(24, 32)
        vessels = [
            (aorta, aorta_r, BLOOD, r.uniform(2, 4)),
            ([rv, bif], [r.uniform(13, 15)] * 2, BLOOD, 3.0),
            ([bif, [-12, y_tr_c + 2, zc - 14], hil[-1] + [6, -4, 3]], [r.uniform(10, 12)] * 3, BLOOD, 3.0),
            ([bif, [24, y_tr_c + 2, zc - 4], hil[1] + [-6, -4, 6]], [r.uniform(9, 11)] * 3, BLOOD, 3.0),
            ([[svc_x, y_asc - 5, ztop], [svc_x, y_asc, zc], ra], [r.uniform(9, 11)] * 3, BLOOD, 3.0),
            ([[r.uniform(38, 48), y_asc - 20, ztop], [15, y_asc - 18, zc + 45], [svc_x, y_asc - 8, zc + 30]],
             [r.uniform(6, 8)] * 3, BLOOD, 3.0),
            ([[-5, (y_asc + y_desc) / 2, z_arch], [-16, y_tr_c - 12, ztop]], [6.5, 6.0], BLOOD, 4.0),
            ([[3, (y_asc + y_desc) / 2 + 5, z_arch], [9, y_tr_c - 10, ztop]], [4.5, 4.5], BLOOD, 4.0),
            ([[12, y_desc, z_arch - 4], [26, y_tr_c + 2, ztop]], [5.5, 5.5], BLOOD, 4.0),
            ([[-10, yv_c - self.rvy + 1, zbot], [-11, yv_c - self.rvy, zc + 4], [svc_x + 4, y_asc, zc + 12]],
             [4.0, 4.0, 4.5], BLOOD, 2.0),
            ([[-22, yv_c - self.rvy - 22, zbot], ra], [11, 11], BLOOD, 3.0),
        ]  # fmt: skip
        for s in (-1, 1):
            for dz_, dy_ in ((-15, 10), (-35, 16)):
                p0 = hil[s] + np.array([-s * 4, dy_, dz_])
                vessels.append(([p0, (p0 + la) / 2 + [0, 5, 0], la], [r.uniform(6, 8)] * 3, BLOOD, 3.0))
        self._vessel_paths = []
        for pts, rad, lab, margin in vessels:
            P, R = _path(pts, rad)
            self._vessel_paths.append((P, R, lab))
            self.paint_path(P, R, None, margin=margin)
        self._aorta_path = _path(aorta, aorta_r)
        # trachea, main bronchi
        car = np.array([x_tr + 1, y_tr_c, zc])
        rmb = hil[-1] + np.array([8, -2, 6])
        lmb = hil[1] + np.array([-8, -2, 4])
        self.airways = [
            _path([[x_tr - 1, y_tr_top, ztop], [x_tr, (y_tr_top + y_tr_c) / 2, (ztop + zc) / 2], car], [r_tr] * 3),
            _path([car, rmb, hil[-1]], [r_tr * 0.75, r_tr * 0.7, r_tr * 0.6]),
            _path([car, (car + lmb) / 2 + [0, 0, 2], lmb, hil[1]], [r_tr * 0.65, r_tr * 0.62, r_tr * 0.6, r_tr * 0.55]),
        ]
        self.w_tr = w_tr
        for P, R in self.airways:
            self.paint_path(P, R, None, margin=r.uniform(2, 4))
        # esophagus: behind the trachea, then anterior to the spine, through the hiatus to the stomach
        zl = np.array([zc - 60.0])
        st_c = np.array([r.uniform(45, 65), r.uniform(-50, -25), self.D[1] - r.uniform(35, 50)])
        self.stomach_c = st_c
        es = [[x_tr + 3, y_tr_top + r_tr + r_es + 1, ztop], [x_tr + 4, y_tr_c + r_tr + r_es + 1, zc],
              [r.uniform(3, 9), float(self.y_vb(zl)[0]) - self.rvy - r_es - 2, zl[0]],
              [r.uniform(14, 24), float(self.y_vb(np.array([self.D[1]]))[0]) - self.rvy - r_es - 10, self.D[1] - 12],
              st_c + [-20, 0, 10]]  # fmt: skip
        self.esoph = _path(es, [r_es] * 5)
        self.paint_path(*self.esoph, None, margin=r.uniform(2, 4))
        # hilum: excluded from lungs, filled with hilar fat, vessels and bronchi
        self.hilum_q = []
        for s in (-1, 1):
            ax = np.array([r.uniform(14, 20), r.uniform(25, 32), r.uniform(30, 40)])
            c = hil[s] + np.array([s * 6, 2, -8])
            sl, q = _ellipsoid(g, c, ax)
            if sl is not None:
                self.medi[sl] |= q < 1
                self.hilum_q.append((sl, q < 1))
        # thin midline strip (anterior/posterior junction lines)
        w = max(1.1 * g.sp[0], r.uniform(1.0, 2.5))
        strip = np.abs(g.x - self.xm) < w
        self.medi[strip] = True

    def _paint_mediastinum(self) -> None:
        """Heart, great vessels, airways, esophagus, nodes (after the lungs are painted)."""
        r, g = self.r, self.g
        soft = _lut((MED_FAT, HILUM_FAT, MUSCLE, FAT, NODE, BLOOD, LIVER, STOMACH, FLUID, SPLEEN))
        for sl, m in self.hilum_q:
            self.paint(sl, m, HILUM_FAT, _lut((MED_FAT,)))
        h = self.heart
        sl, q = _ellipsoid(g, h["c"], h["axes"], h["rot"])
        heart_mask = np.zeros(g.shape, bool)
        if sl is not None:
            m = (q < 1) & self.above[sl]
            self.paint(sl, m, MYOCARD, soft)
            self.paint(sl, m & (q < 0.72), BLOOD, _lut((MYOCARD,)))
            heart_mask[sl] = m & (self.lab[sl] != LUNG)
        self.heart_mask = heart_mask
        for P, R, lab in self._vessel_paths:
            self.paint_path(P, R, lab, allow=soft)
        # lymph nodes near the carina and hila
        for _ in range(int(r.integers(3, 9))):
            c = self.trachea["c"] + r.normal(0, [18, 12, 20])
            sl, q = _ellipsoid(g, c, r.uniform(3, 7, 3))
            if sl is not None:
                self.paint(sl, q < 1, NODE, _lut((MED_FAT, HILUM_FAT)))
        # aortic calcification
        if r.random() < 0.35:
            P, R = self._aorta_path
            for _ in range(int(r.integers(2, 7))):
                a = int(r.integers(len(P) // 4, len(P)))
                v = r.normal(size=3)
                v /= np.linalg.norm(v)
                sl, q = _ellipsoid(g, P[a] + v * (R[a] - 1), np.full(3, r.uniform(1.2, 2.5)))
                if sl is not None:
                    self.paint(sl, q < 1, CALC, _lut((BLOOD, MED_FAT)))
        # esophagus (soft tissue, sometimes a little air)
        P, R = self.esoph
        es_mask = np.zeros(g.shape, bool)
        for a in range(len(P) - 1):
            sl, m = _tube(g, P[a], P[a + 1], R[a], R[a + 1])
            if sl is not None:
                m = m & (self.lab[sl] != LUNG)
                es_mask[sl] |= m
        self.lab[es_mask & ~_lut((CORTEX, CANCELLOUS, DISC, CARTILAGE))[self.lab]] = ESOPH
        if r.random() < 0.4:
            a0 = int(r.integers(0, max(1, len(P) // 2)))
            a1 = min(len(P) - 1, a0 + int(r.integers(5, 25)))
            ra = r.uniform(1.5, 3.5)
            for a in range(a0, a1):
                sl, m = _tube(g, P[a], P[a + 1], ra, ra)
                self.paint(sl, m, GAS, _lut((ESOPH,)))
        self.esoph_mask = es_mask
        # trachea and main bronchi: wall then lumen
        for P, R in self.airways:
            self.paint_path(P, R + self.w_tr, BRONCH_WALL, allow=_lut((MED_FAT, HILUM_FAT, BLOOD, ESOPH, NODE, MUSCLE, FAT)))
        for P, R in self.airways:
            self.paint_path(P, R, AIRWAY, allow=_lut((BRONCH_WALL, MED_FAT, HILUM_FAT, BLOOD)))

    # ------------------------------------------------------------------ abdomen
    def _abdomen(self) -> None:
        """Diaphragm muscle, then liver, kidneys, spleen, stomach (gas cap) and colon below it."""
        r, g = self.r, self.g
        below = ~self.above
        band = g.z[None, None, :] > (self.zd - self.t_diaph)[:, :, None]
        np.copyto(self.lab, MUSCLE, where=self.cavity & below & band)
        abd = self.cavity & ~band
        np.copyto(self.lab, FAT, where=abd)
        # liver: right, left lobe reaching across anteriorly
        X, Y = g.x[:, None], g.y[None, :]
        edge = 10 + 55 * np.clip((-Y - 10) / 70, 0, 1) + r.uniform(-10, 10)
        liver2d = X < edge
        np.copyto(self.lab, LIVER, where=abd & liver2d[:, :, None])
        # kidneys (upper poles in the lowest slices)
        for s in (-1, 1):
            c = np.array([s * r.uniform(50, 62), float(self.y_vb(0)) + r.uniform(0, 12), -r.uniform(45, 70) + (8 if s > 0 else 0)])
            sl, q = _ellipsoid(g, c, np.array([28, 24, 52]))
            if sl is not None:
                self.paint(sl, (q < 1.25) & abd[sl], FAT)
                self.paint(sl, (q < 1) & abd[sl], KIDNEY)
        # spleen (posterolateral left)
        ang = np.deg2rad(r.uniform(30, 50))
        rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
        c = np.array([r.uniform(75, 95), r.uniform(0, 20), self.D[1] - r.uniform(35, 55)])
        sl, q = _ellipsoid(g, c, np.array([r.uniform(20, 28), r.uniform(45, 60), r.uniform(40, 55)]), rot)
        if sl is not None:
            self.paint(sl, (q < 1) & abd[sl], SPLEEN)
        # stomach with a gas cap on the anterior (non-dependent) side
        c = self.stomach_c
        ax = np.array([r.uniform(30, 45), r.uniform(28, 40), r.uniform(35, 50)])
        sl, q = _ellipsoid(g, c, ax)
        if sl is not None:
            inside = (q < 1) & abd[sl]
            self.paint(sl, inside, STOMACH)
            inner = (q < (1 - 3.5 / ax.min()) ** 2) & inside
            self.paint(sl, inner, FLUID)
            _, Y3, _ = g.coords(sl)
            level = c[1] - ax[1] * (1 - 2 * r.uniform(0.1, 0.45))
            self.paint(sl, inner & (Y3 < level), GAS)
        # colon (splenic flexure) with gas, sometimes
        if r.random() < 0.5:
            c = np.array([r.uniform(60, 90), r.uniform(-70, -40), self.D[1] - r.uniform(50, 80)])
            sl, q = _ellipsoid(g, c, np.array([r.uniform(15, 25), r.uniform(15, 22), r.uniform(20, 35)]))
            if sl is not None:
                self.paint(sl, (q < 1) & abd[sl], STOMACH)
                self.paint(sl, (q < 0.6) & abd[sl], GAS)

    # ------------------------------------------------------------------ lungs
    def _lungs(self) -> None:
        """Lungs = side cavity above the diaphragm minus the mediastinal envelope (largest component)."""
        g = self.g
        cav = self.cavity & self.above
        np.copyto(self.lab, MED_FAT, where=cav)
        self.lung = {}
        x = g.x[:, None, None]
        for s in (-1, 1):
            m = self.side[s] & self.above & ~self.medi & ((s * (x - self.xm)) > 0)
            lab, n = ndimage.label(m)
            if n > 1:
                sizes = np.bincount(lab.ravel())[1:]
                m = lab == (1 + int(np.argmax(sizes)))
            self.lung[s] = m
            np.copyto(self.lab, LUNG, where=m)
        del self.side

    def _lung_bbox(self, s: int) -> tuple[slice, slice, slice]:
        m = self.lung[s]
        sl = []
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            idx = np.flatnonzero(m.any(axis=other))
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(sl)  # type: ignore[return-value]

    # ------------------------------------------------------------------ intrapulmonary trees
    def _tree(self, root: np.ndarray, pts: np.ndarray, r_root: float, jitter: float) -> list:
        """Territory-splitting branching tree from ``root`` filling the point cloud ``pts``.

        Each node heads towards the centroid of its territory, which is then split in two
        across its principal axis; radii follow Murray's law (r^3 proportional to territory).
        Returns segments ``(start, end, r_start, r_end, parent_index)``.
        """
        r = self.r
        N = len(pts)
        segs: list = []
        stack = [(np.asarray(root, float), np.arange(N), -1)]
        while stack:
            start, idx, parent = stack.pop()
            P = pts[idx]
            n = len(idx)
            rad = r_root * (n / N) ** (1 / 3)
            c = P.mean(axis=0)
            if n <= 2:
                segs.append((start, P[int(r.integers(n))], rad, rad * 0.8, parent))
                continue
            end = start + (c - start) * r.uniform(0.35, 0.6)
            segs.append((start, end, rad, rad * 0.92, parent))
            me = len(segs) - 1
            _, v = np.linalg.eigh(np.cov((P - c).T))
            proj = (P - c) @ (v[:, -1] + r.normal(0, jitter, 3))
            cut = np.quantile(proj, r.uniform(0.35, 0.65))
            a, b = idx[proj < cut], idx[proj >= cut]
            if len(a) == 0 or len(b) == 0:
                order = np.argsort(proj)
                a, b = idx[order[: n // 2]], idx[order[n // 2 :]]
            stack.append((end, a, me))
            stack.append((end, b, me))
        return segs

    def _trees(self) -> None:
        """Pulmonary arteries (with bronchi alongside) and veins; thin vessels as partial volume."""
        r, g = self.r, self.g
        thin = max(1.5 * g.sp[0], 1.2)
        vox = float(np.prod(g.sp))
        rb_min = max(1.0, 0.7 * g.sp[0])
        for s in (-1, 1):
            idx = np.argwhere(self.lung[s][::3, ::3, ::2])
            n_pts = min(len(idx), 1000)
            if n_pts < 10:
                continue
            pick = idx[r.choice(len(idx), n_pts, replace=False)] * np.array([3, 3, 2])
            pts = g.lo + (pick + r.uniform(-0.5, 0.5, pick.shape)) * g.sp
            size = (float(self.lung[s].sum()) * vox / 1.7e6) ** (1 / 3)  # calibre scales with lung size
            roots = {"artery": self.hilum[s], "vein": self.hilum[s] + np.array([-s * 2, 14, -28])}
            for kind, root in roots.items():
                segs = self._tree(root, pts, r.uniform(5.0, 6.8) * size, 0.35 if kind == "artery" else 0.6)
                small_p, small_w = [], []
                offs: list[np.ndarray] = []
                for p0, p1, r0, r1, parent in segs:
                    if r0 >= thin:
                        sl, m = _tube(g, p0, p1, r0, r1)
                        self.paint(sl, m, VESSEL, _IN_LUNG)
                    else:
                        L = float(np.linalg.norm(p1 - p0))
                        ns = max(2, int(np.ceil(L / (0.5 * g.sp.min()))))
                        t = np.linspace(0, 1, ns)[:, None]
                        small_p.append(p0 + (p1 - p0) * t)
                        small_w.append(np.pi * (r0 + (r1 - r0) * t[:, 0]) ** 2 * (L / ns) / vox)
                    # bronchus alongside the artery: offset direction carried down the tree
                    d = (p1 - p0) / max(float(np.linalg.norm(p1 - p0)), 1e-6)
                    prev = offs[parent] if parent >= 0 else np.cross(d, [0.0, 0.0, 1.0])
                    nrm = prev - d * (prev @ d)
                    if np.linalg.norm(nrm) < 1e-3:
                        nrm = np.cross(d, [1.0, 0.0, 0.0])
                    nrm = nrm / np.linalg.norm(nrm)
                    offs.append(nrm)
                    rb = 0.7 * r0
                    if kind == "artery" and rb >= rb_min:
                        wall = max(0.6, 0.2 * rb)
                        o1 = nrm * (r0 + rb + wall)
                        o0 = offs[parent] * (segs[parent][3] + rb + wall) if parent >= 0 else np.zeros(3)
                        self._bronchi.append((p0 + o0, p1 + o1, rb, 0.9 * rb, wall))
                if small_p:
                    self.vessel_deposits.append((np.vstack(small_p), np.concatenate(small_w)))

    def _paint_bronchi(self) -> None:
        g = self.g
        for p0, p1, r0, r1, w in self._bronchi:
            sl, m = _tube(g, p0, p1, r0 + w, r1 + w)
            self.paint(sl, m, BRONCH_WALL, _lut((LUNG, HILUM_FAT, VESSEL)))
        for p0, p1, r0, r1, w in self._bronchi:
            sl, m = _tube(g, p0, p1, r0, r1)
            self.paint(sl, m, AIRWAY, _lut((BRONCH_WALL, LUNG, HILUM_FAT)))

    # ------------------------------------------------------------------ pathology
    def _lobe(self, s: int, sl: tuple[slice, slice, slice], which: str) -> np.ndarray:
        """Lobe membership inside box ``sl`` from oblique (and right horizontal) fissure planes."""
        X, Y, Z = self.g.coords(sl)
        th = self.th
        y_post, y_ant = th.y_post, th.cy0 - th.aya0
        zf = self.fiss[s][0] + (self.fiss[s][1] - self.fiss[s][0]) * (y_post - Y) / (y_post - y_ant)
        lower = Z < zf
        if which == "lower":
            return np.broadcast_to(lower, tuple(a.stop - a.start for a in sl))
        upper = ~lower
        if s == -1:
            mid = upper & (Z < self.fiss[s][2])
            return np.broadcast_to(mid if which == "middle" else upper & ~mid, tuple(a.stop - a.start for a in sl))
        return np.broadcast_to(upper, tuple(a.stop - a.start for a in sl))

    def _posterior_depth(self, s: int, sl) -> np.ndarray:
        """Distance (mm, >= 0) from each voxel in ``sl`` forward from the most posterior lung voxel of its column."""
        m = self.lung[s][sl]
        nj = m.shape[1]
        has = m.any(axis=1)
        jmax = nj - 1 - np.argmax(m[:, ::-1, :], axis=1)
        y = self.g.y[sl[1]]
        ypost = np.where(has, y[jmax], -1e9)
        return (ypost[:, None, :] - y[None, :, None]).astype(np.float32)

    def _add_dense(self, bb, w: np.ndarray, target: float) -> None:
        """Register a dense-lung overlay (weights ``w`` in box ``bb``) and remember a fully dense voxel."""
        self.overlays.append((bb, w, target, _lut((LUNG, VESSEL, BRONCH_WALL))))
        self.stats["dense_ml"] += float((w > 0.5).sum()) * float(np.prod(self.g.sp)) / 1000
        score = w * (self.lab[bb] == LUNG)
        i = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i] >= 0.99:
            self.landmarks["dense"].append(self.g.lo + (np.asarray(i) + [b.start for b in bb]) * self.g.sp)

    def _pathology(self) -> list[str]:
        r, g = self.r, self.g
        H = self.H
        self.fiss = {s: (self.z_c + r.uniform(-15, 15), self.D[s] * r.uniform(0.4, 0.8), self.z_c - r.uniform(15, 35))
                     for s in (-1, 1)}  # fmt: skip
        self.stats = {"dense_ml": 0.0, "tumour_ml": 0.0, "effusion_ml": 0.0}
        if not self.pathology:
            return []
        kinds = list(self.kinds)
        lung_lut = _lut((LUNG,))
        vml = float(np.prod(g.sp)) / 1000
        collapsed: set[int] = set()
        for kind in list(kinds):
            side = int(r.choice([-1, 1], p=[0.55, 0.45]))
            if kind == "consolidation" and side in collapsed:
                side = -side  # no white-out: pneumonia goes to the other lung
            bb = self._lung_bbox(side)
            lung = self.lung[side][bb]
            if kind == "emphysema":
                # centrilobular lucencies (irregular, upper-zone predominant) and a few peripheral bullae
                self.lung_hu -= r.uniform(10, 30)
                _, _, Z = g.coords(bb)
                zone = _smoothstep(Z, H * r.uniform(0.2, 0.5), H * 0.75)
                f = _field(r, g, bb, r.uniform(5, 8))
                thr = r.uniform(1.0, 1.8)
                w = np.clip((f - thr) * 1.5, 0, 1) * zone * lung
                self.overlays.append((bb, w.astype(np.float32), r.uniform(-990, -965), lung_lut))
                idx = np.argwhere(lung & (Z > 0.6 * H))
                for _ in range(int(r.integers(0, 4)) if len(idx) else 0):
                    c = g.lo + (idx[int(r.integers(len(idx)))] + [b.start for b in bb]) * g.sp
                    sl, q = _ellipsoid(g, c, r.uniform(8, 22) * r.uniform(0.8, 1.2, 3))
                    if sl is not None:
                        self.overlays.append((sl, np.clip((1 - q) * 4, 0, 1).astype(np.float32), -995.0, lung_lut))
            elif kind == "ggo":
                idx = np.argwhere(lung)
                for _ in range(int(r.integers(1, 4))):
                    c = g.lo + (idx[int(r.integers(len(idx)))] + [b.start for b in bb]) * g.sp
                    rad = r.uniform(18, 45)
                    sl, q = _ellipsoid(g, c, rad * r.uniform(0.7, 1.3, 3))
                    if sl is None:
                        continue
                    f = _field(r, g, sl, 10.0)
                    w = np.clip((1 - q) * 2.5 + 0.4 * f, 0, 1).astype(np.float32)
                    self.overlays.append((sl, w, r.uniform(-650, -450), lung_lut))
            elif kind in ("atelectasis", "effusion"):
                # dependent (posterior, basal) layer: fluid in the pleural space with passive collapse of
                # the adjacent lung, or dependent atelectasis (usually bilateral, unequal)
                both = kind == "atelectasis" or r.random() < 0.5  # effusion: often contralateral atelectasis
                for s2 in ((side, -side) if both else (side,)):
                    bb = self._lung_bbox(s2)
                    lung = self.lung[s2][bb]
                    depth = self._posterior_depth(s2, bb)
                    _, _, Z = g.coords(bb)
                    ztop = H * r.uniform(0.4, 0.6)
                    prof = np.clip((ztop - Z) / ztop, 0, 1) ** 0.6
                    f = _field(r, g, bb, 25.0)
                    if kind == "effusion" and s2 == side:
                        thick = r.uniform(15, 50) * prof * (1 + 0.15 * f)
                        eff = lung & (depth < thick)
                        self.lung[s2][bb] &= ~eff
                        self.lab[bb][eff] = EFFUSION
                        self.stats["effusion_ml"] += float(eff.sum()) * vml
                        band = r.uniform(15, 40) * (0.5 + prof)  # passive collapse, thickest at the base
                        w = np.clip((thick + band - depth) / r.uniform(3, 6) + 0.5, 0, 1) * (prof > 0.05)
                    else:
                        t0 = r.uniform(20, 50) if (s2 == side and kind == "atelectasis") else r.uniform(8, 30)
                        thick = t0 * prof * (1 + 0.2 * f)
                        w = np.clip((thick - depth) / r.uniform(3, 7) + 0.5, 0, 1)
                    w = (w * self.lung[s2][bb]).astype(np.float32)
                    self._add_dense(bb, w, r.uniform(-80, 35))
            elif kind == "consolidation":
                lobes, p_l = (["lower", "upper", "middle"], [0.6, 0.25, 0.15]) if side == -1 else (["lower", "upper"], [0.6, 0.4])
                lobe = str(r.choice(lobes, p=p_l))
                lm = self._lobe(side, bb, lobe) & lung
                if not lm.any():
                    lm = lung
                f = _field(r, g, bb, 30.0)
                thr = np.quantile(f[lm], r.uniform(0.0, 0.4))
                w = np.clip((f - thr) * 2.0, 0, 1) * lm
                w = ndimage.uniform_filter(w.astype(np.float32), 3)
                self._add_dense(bb, (w * self.lung[side][bb]).astype(np.float32), r.uniform(-60, 35))
            elif kind == "tumour":
                central = r.random() < 0.6
                R = r.uniform(10, 30)
                if central:
                    c = self.hilum[side] + np.array([side * (R + r.uniform(8, 20)), r.uniform(-15, 15), r.uniform(-20, 15)])
                else:
                    idx = np.argwhere(lung[::2, ::2, :])
                    c = g.lo + (idx[int(r.integers(len(idx)))] * [2, 2, 1] + [b.start for b in bb]) * g.sp
                tm = np.zeros(g.shape, bool)
                parts = [(c, R)] + [(c + r.normal(0, 0.5, 3) * R, R * r.uniform(0.4, 0.7)) for _ in range(int(r.integers(2, 6)))]
                for cc, rr in parts:
                    sl, q = _ellipsoid(g, cc, rr * r.uniform(0.85, 1.15, 3))
                    if sl is not None:
                        tm[sl] |= q < 1
                tm &= _lut((LUNG, VESSEL, BRONCH_WALL, AIRWAY, MED_FAT, HILUM_FAT, NODE))[self.lab]
                self.lab[tm] = TUMOUR
                if tm.any():
                    ijk = np.argwhere(tm)
                    ctr = ijk[np.argmin(((ijk - ijk.mean(axis=0)) ** 2).sum(axis=1))]
                    self.landmarks["tumour"].append(g.lo + ctr * g.sp)
                self.stats["tumour_ml"] += float(tm.sum()) * vml
                for s2 in (-1, 1):
                    self.lung[s2] &= ~tm
                for _ in range(int(r.integers(5, 15))):  # spicules
                    v = r.normal(size=3)
                    v /= np.linalg.norm(v)
                    p0 = c + v * R * 0.8
                    p1 = p0 + v * r.uniform(5, 18)
                    sl, m = _tube(g, p0, p1, r.uniform(0.6, 1.2), 0.4)
                    self.paint(sl, m, VESSEL, lung_lut)
                if central and r.random() < 0.7:  # post-obstructive collapse: lobe shrinks towards the hilum
                    lobe = str(r.choice(["lower", "upper"]))
                    lm = self._lobe(side, bb, lobe) & self.lung[side][bb]
                    X, Y, Z = g.coords(bb)
                    d = np.sqrt((X - self.hilum[side][0]) ** 2 + (Y - self.hilum[side][1]) ** 2
                                + ((Z - self.hilum[side][2]) * 0.8) ** 2) * (1 + 0.12 * _field(r, g, bb, 20.0))  # fmt: skip
                    if lm.any():
                        rad = np.quantile(d[lm], r.uniform(0.4, 0.8))
                        w = (np.clip((rad - d) / 4.0 + 0.5, 0, 1) * lm).astype(np.float32)
                        self._add_dense(bb, w, r.uniform(10, 40))
                    kinds.append("collapse")
                    collapsed.add(side)
        return kinds

    # ------------------------------------------------------------------ assembly
    def build(self) -> Phantom:
        self._fields()
        self._body()
        self._spine(paint=False)
        self._rib_paths()
        self._mediastinum()
        self._abdomen()
        self._lungs()
        self._spine(paint=True)
        self._paint_mediastinum()
        self._bronchi: list = []
        self._trees()
        self._paint_bronchi()
        kinds = self._pathology()
        self._bones_chest()
        del self.medi, self.cavity, self.above
        hu = self._to_hu()
        masks = self._masks()
        info = {
            "pathology": bool(self.pathology), "pathologies": kinds,
            "parenchyma_hu": round(self.lung_hu, 1),
            "lung_r_ml": round(float(masks["Lung_R"].sum()) * self.geometry.voxel_volume_ml, 1),
            "lung_l_ml": round(float(masks["Lung_L"].sum()) * self.geometry.voxel_volume_ml, 1),
            **{k: round(v, 1) for k, v in self.stats.items()},
            "landmarks_lps_mm": self._landmarks_world(),
            **self.scanner,
        }  # fmt: skip
        return Phantom(hu=hu, geometry=self.geometry, masks=masks, info=info)

    def _landmarks_world(self) -> dict[str, list[list[float]]]:
        """Carina, a mid-trachea point, tumour centres and fully dense lung points in world LPS mm."""
        P, _ = self.airways[0]
        z_mid = 0.5 * (self.z_c + float(self.g.z[-1]))
        pts = {
            "carina": [self.trachea["c"]],
            "trachea": [P[int(np.argmin(np.abs(P[:, 2] - z_mid)))]],
            "tumour": self.landmarks["tumour"],
            "dense": self.landmarks["dense"],
        }
        return {k: [[round(float(v), 2) for v in np.asarray(p) + self.world_off] for p in ps] for k, ps in pts.items()}

    def _masks(self) -> dict[str, np.ndarray]:
        lab = self.lab
        content = _IS_LUNG_CONTENT[lab]
        cord = lab == CORD
        return {
            "Lung_R": self.lung[-1] & content,
            "Lung_L": self.lung[1] & content,
            "Heart": self.heart_mask & _lut((MYOCARD, BLOOD, CALC))[lab],
            "Esophagus": self.esoph_mask & _lut((ESOPH, GAS))[lab],
            "SpinalCord": cord,
        }

    def _to_hu(self) -> np.ndarray:
        g, r = self.g, self.r
        lut = np.zeros(256, dtype=np.float32)
        for lab, v in self.hu_of.items():
            lut[lab] = v
        lut[LUNG] = self.lung_hu
        hu = lut[self.lab]
        # lung: gravity gradient (dependent = posterior denser) and smooth texture
        for s in (-1, 1):
            if not self.lung[s].any():
                continue
            bb = self._lung_bbox(s)
            y = g.y[bb[1]]
            grad = self.grav * (np.clip((y - y.min()) / max(float(y.max() - y.min()), 1.0), 0, 1) - 0.5)
            add = grad[None, :, None].astype(np.float32) + self.tex_sd * _field(r, g, bb, 20.0)
            view = hu[bb]
            m = self.lab[bb] == LUNG
            view[m] += add[m]
        # thin vessels: partial-volume fractions splatted trilinearly onto the grid
        if self.vessel_deposits:
            pos = (np.vstack([p for p, _ in self.vessel_deposits]) - g.lo) / g.sp
            w = np.concatenate([w for _, w in self.vessel_deposits])
            i0 = np.floor(pos).astype(np.int64)
            f = pos - i0
            flats, weights = [], []
            for corner in np.ndindex(2, 2, 2):
                c = np.asarray(corner)
                idx = i0 + c
                ok = np.all((idx >= 0) & (idx < np.asarray(g.shape)), axis=1)
                flats.append(np.ravel_multi_index(idx[ok].T, g.shape))
                weights.append(w[ok] * np.prod(np.where(c == 1, f[ok], 1 - f[ok]), axis=1))
            uniq, inv = np.unique(np.concatenate(flats), return_inverse=True)
            frac = np.minimum(np.bincount(inv, weights=np.concatenate(weights)), 1.0).astype(np.float32)
            ok = self.lab.ravel()[uniq] == LUNG
            uniq, frac = uniq[ok], frac[ok]
            flat_hu = hu.ravel()
            flat_hu[uniq] += frac * (self.hu_of[VESSEL] - flat_hu[uniq])
        # pathology overlays (weights in [0, 1] blend towards a target HU)
        for sl, w, target, allow in self.overlays:
            view = hu[sl]
            m = (w > 0) & allow[self.lab[sl]]
            view[m] += w[m] * (np.float32(target) - view[m])
        # scanner: correlated noise (white noise then the system blur) and clipping
        sx, sz = self.scanner["blur_sigma_vox"], self.scanner["blur_sigma_z_vox"]
        gain = 1.0
        for s_ in (sx, sx, sz):
            rad = int(4 * s_ + 0.5)
            k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / s_) ** 2)
            k /= k.sum()
            gain *= float((k**2).sum())
        sd = self.scanner["noise_sd_hu"] / np.sqrt(gain)
        zmod = 1 + 0.25 * _smoothstep(g.z.astype(float), 0.75 * self.H, self.H)  # tube-current modulation
        noise = r.standard_normal(g.shape, dtype=np.float32)
        noise *= (sd * zmod).astype(np.float32)[None, None, :]
        hu += noise
        del noise
        hu = ndimage.gaussian_filter(hu, sigma=(sx, sx, sz), mode="nearest")
        np.rint(hu, out=hu)
        np.clip(hu, HU_MIN, HU_MAX, out=hu)
        return hu


def make_phantom(rng: np.random.Generator, pathology: bool, *, max_matrix: int = 512) -> Phantom:
    """Draw one synthetic chest CT with ground-truth masks.

    Args:
        rng: Source of all randomness (the same generator state gives the same phantom).
        pathology: Whether to add lung pathology (tumour, atelectasis, consolidation,
            effusion, ground glass, emphysema; one or more).
        max_matrix: Largest in-plane matrix; a smaller cap keeps the field of view and
            enlarges the pixels.

    Returns:
        A :class:`Phantom` whose arrays are indexed ``[i, j, k]`` on an HFS axial grid.
    """
    return _Builder(rng, pathology, max_matrix).build()


# ----------------------------------------------------------------------------- cohort writer

_CSV_FIELDS = (
    "patient_id", "pathology", "pathology_kinds", "matrix", "pixel_spacing_mm", "slice_thickness_mm",
    "n_slices", "fov_mm", "noise_sd_hu", "kvp", "kernel", "lung_r_ml", "lung_l_ml",
)  # fmt: skip


def _patient_id(n: int) -> str:
    return f"{PATIENT_PREFIX}{n + 1:03d}"


def _has_pathology(seed: int, n: int, fraction: float) -> bool:
    """Deterministic pathology flag of patient ``n``: exactly round(10 * fraction) per block of 10.

    The flag depends only on ``(seed, n, fraction)``, never on the cohort size.
    """
    block, pos = divmod(n, 10)
    count = int(np.floor(10 * (block + 1) * fraction + 0.5) - np.floor(10 * block * fraction + 0.5))
    order = np.random.default_rng([seed, block, 7]).permutation(10)
    return bool(pos in order[:count])


def _five_digits(*parts: str) -> str:
    return f"{int(hashlib.sha256('/'.join(parts).encode()).hexdigest(), 16) % 100000:05d}"


def _write_case(job: tuple[str, int, int, bool, int, Any]) -> dict[str, Any]:
    """Generate patient ``n`` and write its CT series and RTSTRUCT (runs in a worker process)."""
    from lungseg.data.dicom_write import StudyInfo, make_uid, write_ct_series, write_rtstruct

    out_dir, seed, n, pathology, max_matrix, realism = job
    pid = _patient_id(n)
    rng = np.random.default_rng([seed, n])
    ph = make_phantom(rng, pathology, max_matrix=max_matrix)
    if realism is not None and realism.any():
        from lungseg.data.realism import apply_realism

        ph = apply_realism(ph, realism, np.random.default_rng([seed, n, 97]))
    info = ph.info
    uid = lambda *p: make_uid(str(seed), pid, *p)  # noqa: E731
    study = StudyInfo(
        patient_id=pid, patient_name=f"SYNTHETIC^{n + 1:03d}", study_uid=uid("study"),
        frame_of_reference_uid=uid("frame-of-reference"), study_date="20170101", study_time="120000",
        study_description="CT THORAX", manufacturer="lungseg-synthetic", patient_sex="O",
    )  # fmt: skip
    ct_uid, rt_uid = uid("ct-series"), uid("rtstruct-series")
    ct_digits = _five_digits(ct_uid)
    rt_digits = _five_digits(rt_uid)
    if rt_digits == ct_digits:
        rt_digits = f"{(int(rt_digits) + 1) % 100000:05d}"
    patient_dir = Path(out_dir) / pid
    if patient_dir.exists():
        shutil.rmtree(patient_dir)
    study_dir = patient_dir / f"01-01-2017-NA-CT THORAX-{_five_digits(study.study_uid)}"
    sops = write_ct_series(
        ph.hu, ph.geometry, study_dir / f"1.000000-NA-{ct_digits}", study, ct_uid,
        kvp=info["kvp"], convolution_kernel=info["kernel"],
    )  # fmt: skip
    write_rtstruct(
        ph.masks, ph.geometry, study_dir / f"1.000000-NA-{rt_digits}" / "1-1.dcm", study, ct_uid, sops,
        rt_uid, uid("rtstruct"),
    )  # fmt: skip
    return {
        "patient_id": pid, "pathology": int(pathology), "pathology_kinds": ";".join(info["pathologies"]) or "none",
        "matrix": info["matrix"], "pixel_spacing_mm": info["pixel_spacing_mm"],
        "slice_thickness_mm": info["slice_thickness_mm"], "n_slices": info["n_slices"], "fov_mm": info["fov_mm"],
        "noise_sd_hu": round(info["noise_sd_hu"], 1), "kvp": info["kvp"], "kernel": info["kernel"],
        "lung_r_ml": info["lung_r_ml"], "lung_l_ml": info["lung_l_ml"],
        **({"realism": ";".join(info["realism"]) or "none"} if "realism" in info else {}),
    }  # fmt: skip


def synthesize_cohort(
    out_dir: Path,
    cases: int,
    seed: int,
    pathology_fraction: float = 0.5,
    workers: int = 2,
    max_matrix: int = 512,
    realism: Any = None,
) -> list[dict[str, Any]]:
    """Write a synthetic LCTSC-style cohort as DICOM CT + RTSTRUCT.

    Layout: ``<out_dir>/LCTSC-SYN-001/01-01-2017-NA-CT THORAX-<5 digits>/1.000000-NA-<5 digits>/1-001.dcm``
    (one file per CT slice) and a second series folder holding the RTSTRUCT ``1-1.dcm`` with the ROIs
    Lung_R, Lung_L, Heart, Esophagus and SpinalCord; plus ``<out_dir>/cohort.csv`` with one row per
    patient (pathology flag and kinds, matrix, spacing, slice thickness, noise SD, lung volumes).

    Patient ``n`` is drawn from its own generator seeded with ``(seed, n)`` and its pathology flag
    depends only on ``(seed, n, pathology_fraction)``, so files do not depend on ``workers`` or on
    ``cases``; the same seed gives byte-identical files. Patient folders left over from a previous
    run with more cases are removed.

    Args:
        out_dir: Destination folder (created if missing).
        cases: Number of patients (>= 1).
        seed: Cohort seed (>= 0).
        pathology_fraction: Fraction of patients with lung pathology, in [0, 1].
        workers: Worker processes (1 = in this process).
        max_matrix: Largest in-plane matrix (smaller caps enlarge pixels, same field of view).
        realism: A :class:`lungseg.config.RealismConfig` (None or all 0: off, and the files and
            ``cohort.csv`` are exactly those of a cohort without it; on: a ``realism`` column).

    Returns:
        The ``cohort.csv`` rows as dicts, in patient order.

    Raises:
        ValueError: a count, seed or fraction is out of range.
    """
    if cases < 1:
        raise ValueError(f"synthetic cohort: cases must be >= 1, got {cases}")
    if seed < 0:
        raise ValueError(f"synthetic cohort: seed must be >= 0, got {seed}")
    if not 0.0 <= pathology_fraction <= 1.0:
        raise ValueError(f"synthetic cohort: pathology_fraction must be in [0, 1], got {pathology_fraction}")
    if max_matrix < 32:
        raise ValueError(f"synthetic cohort: max_matrix must be >= 32, got {max_matrix}")
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {_patient_id(n) for n in range(cases)}
    for p in sorted(out_dir.iterdir()):
        if p.is_dir() and re.fullmatch(re.escape(PATIENT_PREFIX) + r"\d+", p.name) and p.name not in wanted:
            log.info("removing stale synthetic patient %s", p.name)
            shutil.rmtree(p)
    jobs = [(str(out_dir), int(seed), n, _has_pathology(seed, n, pathology_fraction), int(max_matrix), realism)
            for n in range(cases)]  # fmt: skip
    bar = dict(total=cases, desc="synthesize", unit="case", leave=False)
    if workers <= 1 or cases == 1:
        rows = [_write_case(j) for j in tqdm(jobs, **bar)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, cases)) as pool:
            rows = list(tqdm(pool.imap(_write_case, jobs, chunksize=1), **bar))
    with open(out_dir / "cohort.csv", "w", newline="") as f:
        fields = _CSV_FIELDS + (("realism",) if realism is not None and realism.any() else ())
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    log.info("synthetic cohort: %d patients (%d with pathology) in %s",
             len(rows), sum(r["pathology"] for r in rows), out_dir)  # fmt: skip
    return rows
