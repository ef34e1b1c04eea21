"""Lung pathology: tumour (with post-obstructive collapse), atelectasis, pleural effusion,
consolidation, ground glass and emphysema.

The findings of a patient are drawn up front (:func:`draw_kinds`); :func:`add_pathology` places
them after the lungs and trees exist. Dense or lucent lung is not painted as a label but
registered as an *overlay* (box, weights in [0, 1], target HU, labels it may change) that
:func:`.scanner.to_hu` blends in, so the lung masks keep it (RTOG 1106); tumour and effusion are
painted as labels and cut out of the lung masks. Patient frame (mm): x = left, y = posterior,
z = superior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lungseg.io import exact
from lungseg.synthetic.labels import (
    AIRWAY,
    BRONCH_WALL,
    EFFUSION,
    HILUM_FAT,
    LUNG,
    MED_FAT,
    NODE,
    TUMOUR,
    VESSEL,
    lut,
)  # fmt: skip
from lungseg.synthetic.shapes import Range, ellipsoid, smooth_field, smoothstep, tube

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class PathologyRanges:
    """Probabilities (``_p``) and per-finding uniform ranges (mm, HU, or fractions of the lung height H)."""

    # which findings (drawn before the grid)
    tumour_p: float = 0.55
    # one dense finding: atelectasis, consolidation, effusion (cumulative; none above 0.95)
    dense_kind_cumulative_p: tuple[float, float, float] = (0.4, 0.7, 0.95)
    second_dense_p: float = 0.3  # a second dense finding (any of the three)
    ggo_p: float = 0.3
    emphysema_p: float = 0.3
    side_p: tuple[float, float] = (0.55, 0.45)  # right, left
    # fissures (lobes): oblique fissure from posterior (near the carina) to anterior (near the dome)
    fissure_posterior_z: Range = (-15, 15)  # relative to the carina
    fissure_anterior_z: Range = (0.4, 0.8)  # fraction of the dome height
    horizontal_fissure_below_carina: Range = (15, 35)  # right middle lobe
    # emphysema: irregular centrilobular lucencies, upper-zone predominant, and a few bullae
    emphysema_lung_hu_drop: Range = (10, 30)
    emphysema_zone_start: Range = (0.2, 0.5)  # fraction of H; full from 0.75 H
    lucency_cell: Range = (5, 8)  # correlation length of the lucency field
    lucency_threshold: Range = (1.0, 1.8)  # field SDs
    lucency_hu: Range = (-990, -965)
    bulla_count: tuple[int, int] = (0, 4)  # low inclusive, high exclusive
    bulla_radius: Range = (8, 22)
    bulla_aspect: Range = (0.8, 1.2)  # per-axis factor
    bulla_hu: float = -995.0
    # ground glass: a few soft blobs
    ggo_count: tuple[int, int] = (1, 4)
    ggo_radius: Range = (18, 45)
    ggo_aspect: Range = (0.7, 1.3)
    ggo_cell: float = 10.0
    ggo_hu: Range = (-650, -450)
    # dependent (posterior, basal) density: effusion with passive collapse, or atelectasis
    bilateral_p: float = 0.5  # effusion: also atelectasis in the other lung
    layer_top: Range = (0.4, 0.6)  # fraction of H where the layer thins out to nothing
    layer_cell: float = 25.0
    effusion_depth: Range = (15, 50)  # at the base, from the posterior lung edge
    collapse_band: Range = (15, 40)  # passive collapse in front of the effusion
    collapse_edge: Range = (3, 6)  # width of the fall-off
    atelectasis_depth: Range = (20, 50)  # the drawn side
    atelectasis_depth_other: Range = (8, 30)  # the other side (or contralateral to an effusion)
    atelectasis_edge: Range = (3, 7)
    dense_hu: Range = (-80, 35)
    # consolidation: a patchy lobe
    right_lobes: tuple[str, ...] = ("lower", "upper", "middle")
    right_lobe_p: tuple[float, ...] = (0.6, 0.25, 0.15)
    left_lobes: tuple[str, ...] = ("lower", "upper")
    left_lobe_p: tuple[float, ...] = (0.6, 0.4)
    consolidation_cell: float = 30.0
    consolidation_spared: Range = (0.0, 0.4)  # field quantile left aerated
    consolidation_hu: Range = (-60, 35)
    # tumour: central (near the hilum) or peripheral, lobulated, spiculated
    central_p: float = 0.6
    tumour_radius: Range = (10, 30)
    central_lateral: Range = (8, 20)  # beyond its radius, lateral of the hilum
    central_y: Range = (-15, 15)
    central_z: Range = (-20, 15)
    lobule_count: tuple[int, int] = (2, 6)
    lobule_spread: float = 0.5  # SD of lobule centres, fraction of the radius
    lobule_size: Range = (0.4, 0.7)  # fraction of the radius
    lobule_aspect: Range = (0.85, 1.15)
    spicule_count: tuple[int, int] = (5, 15)
    spicule_length: Range = (5, 18)
    spicule_radius: Range = (0.6, 1.2)  # tapering to 0.4
    collapse_p: float = 0.7  # post-obstructive collapse of a lobe behind a central tumour
    collapse_lobes: tuple[str, ...] = ("lower", "upper")
    collapse_extent: Range = (0.4, 0.8)  # quantile of the lobe's distance to the hilum that collapses
    collapse_hu: Range = (10, 40)


PATHOLOGY = PathologyRanges()


def draw_kinds(r: np.random.Generator) -> list[str]:
    """Pathology findings of this patient (drawn before the grid so they do not depend on it)."""
    P = PATHOLOGY
    kinds: list[str] = []
    if r.random() < P.tumour_p:
        kinds.append("tumour")
    u = r.random()
    p_atel, p_cons, p_eff = P.dense_kind_cumulative_p
    dense = ("atelectasis" if u < p_atel else "consolidation" if u < p_cons
             else "effusion" if u < p_eff else None)  # fmt: skip
    if dense:
        kinds.append(dense)
    if r.random() < P.second_dense_p:
        kinds.append(str(r.choice(["atelectasis", "consolidation", "effusion"])))
    if r.random() < P.ggo_p:
        kinds.append("ggo")
    if r.random() < P.emphysema_p:
        kinds.append("emphysema")
    if not kinds:
        kinds.append("ggo")
    return list(dict.fromkeys(kinds))


def lobe_mask(pt: Patient, s: int, sl: Box, which: str) -> np.ndarray:
    """Lobe membership inside box ``sl`` from oblique (and right horizontal) fissure planes."""
    X, Y, Z = pt.g.coords(sl)
    th = pt.th
    y_post, y_ant = th.y_post, th.cy0 - th.aya0
    zf = pt.fiss[s][0] + (pt.fiss[s][1] - pt.fiss[s][0]) * (y_post - Y) / (y_post - y_ant)
    lower = Z < zf
    if which == "lower":
        return np.broadcast_to(lower, tuple(a.stop - a.start for a in sl))
    upper = ~lower
    if s == -1:
        mid = upper & (Z < pt.fiss[s][2])
        return np.broadcast_to(mid if which == "middle" else upper & ~mid, tuple(a.stop - a.start for a in sl))
    return np.broadcast_to(upper, tuple(a.stop - a.start for a in sl))


def posterior_depth(pt: Patient, s: int, sl: Box) -> np.ndarray:
    """Distance (mm, >= 0) from each voxel in ``sl`` forward from the most posterior lung voxel of its column."""
    m = pt.lung[s][sl]
    nj = m.shape[1]
    has = m.any(axis=1)
    jmax = nj - 1 - np.argmax(m[:, ::-1, :], axis=1)
    y = pt.g.y[sl[1]]
    ypost = np.where(has, y[jmax], -1e9)
    return (ypost[:, None, :] - y[None, :, None]).astype(np.float32)


def add_dense(pt: Patient, bb: Box, w: np.ndarray, target: float) -> None:
    """Register a dense-lung overlay (weights ``w`` in box ``bb``) and remember a fully dense voxel."""
    pt.overlays.append((bb, w, target, lut((LUNG, VESSEL, BRONCH_WALL))))
    pt.stats["dense_ml"] += float((w > 0.5).sum()) * float(np.prod(pt.g.sp)) / 1000
    score = w * (pt.lab[bb] == LUNG)
    i = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[i] >= 0.99:
        pt.landmarks["dense"].append(pt.g.lo + (np.asarray(i) + [b.start for b in bb]) * pt.g.sp)


def add_pathology(pt: Patient) -> list[str]:
    """Place the drawn findings; returns their kinds (plus ``collapse`` where a lobe collapsed).

    Always sets the fissures ``fiss`` and the volume ``stats`` (mL), so a healthy patient draws
    the same numbers up to here.
    """
    P, r = PATHOLOGY, pt.r
    pt.fiss = {s: (pt.z_c + r.uniform(*P.fissure_posterior_z), pt.D[s] * r.uniform(*P.fissure_anterior_z),
                   pt.z_c - r.uniform(*P.horizontal_fissure_below_carina))
               for s in (-1, 1)}  # fmt: skip
    pt.stats = {"dense_ml": 0.0, "tumour_ml": 0.0, "effusion_ml": 0.0}
    if not pt.pathology:
        return []
    kinds = list(pt.kinds)
    collapsed: set[int] = set()
    for kind in list(kinds):
        side = int(r.choice([-1, 1], p=P.side_p))
        if kind == "consolidation" and side in collapsed:
            side = -side  # no white-out: pneumonia goes to the other lung
        bb = pt.lung_bbox(side)
        lung = pt.lung[side][bb]
        if kind == "emphysema":
            _emphysema(pt, bb, lung)
        elif kind == "ggo":
            _ground_glass(pt, bb, lung)
        elif kind in ("atelectasis", "effusion"):
            _dependent_density(pt, kind, side)
        elif kind == "consolidation":
            _consolidation(pt, side, bb, lung)
        elif kind == "tumour" and _tumour(pt, side, bb, lung):
            kinds.append("collapse")
            collapsed.add(side)
    return kinds


def _emphysema(pt: Patient, bb: Box, lung: np.ndarray) -> None:
    """Centrilobular lucencies (irregular, upper-zone predominant) and a few peripheral bullae."""
    P, r, g, H = PATHOLOGY, pt.r, pt.g, pt.H
    lung_lut = lut((LUNG,))
    pt.lung_hu -= r.uniform(*P.emphysema_lung_hu_drop)
    _, _, Z = g.coords(bb)
    zone = smoothstep(Z, H * r.uniform(*P.emphysema_zone_start), H * 0.75)
    f = smooth_field(r, g, bb, r.uniform(*P.lucency_cell))
    thr = r.uniform(*P.lucency_threshold)
    w = np.clip((f - thr) * 1.5, 0, 1) * zone * lung
    pt.overlays.append((bb, w.astype(np.float32), r.uniform(*P.lucency_hu), lung_lut))
    idx = np.argwhere(lung & (Z > 0.6 * H))
    for _ in range(int(r.integers(*P.bulla_count)) if len(idx) else 0):
        c = g.lo + (idx[int(r.integers(len(idx)))] + [b.start for b in bb]) * g.sp
        sl, q = ellipsoid(g, c, r.uniform(*P.bulla_radius) * r.uniform(*P.bulla_aspect, 3))
        if sl is not None:
            pt.overlays.append((sl, np.clip((1 - q) * 4, 0, 1).astype(np.float32), P.bulla_hu, lung_lut))


def _ground_glass(pt: Patient, bb: Box, lung: np.ndarray) -> None:
    """A few soft ground-glass blobs with a textured edge."""
    P, r, g = PATHOLOGY, pt.r, pt.g
    idx = np.argwhere(lung)
    for _ in range(int(r.integers(*P.ggo_count))):
        c = g.lo + (idx[int(r.integers(len(idx)))] + [b.start for b in bb]) * g.sp
        rad = r.uniform(*P.ggo_radius)
        sl, q = ellipsoid(g, c, rad * r.uniform(*P.ggo_aspect, 3))
        if sl is None:
            continue
        f = smooth_field(r, g, sl, P.ggo_cell)
        w = np.clip((1 - q) * 2.5 + 0.4 * f, 0, 1).astype(np.float32)
        pt.overlays.append((sl, w, r.uniform(*P.ggo_hu), lut((LUNG,))))


def _dependent_density(pt: Patient, kind: str, side: int) -> None:
    """Dependent (posterior, basal) layer: fluid in the pleural space with passive collapse of the
    adjacent lung, or dependent atelectasis (usually bilateral, unequal)."""
    P, r, g, H = PATHOLOGY, pt.r, pt.g, pt.H
    vml = float(np.prod(g.sp)) / 1000
    both = kind == "atelectasis" or r.random() < P.bilateral_p  # effusion: often contralateral atelectasis
    for s2 in ((side, -side) if both else (side,)):
        bb = pt.lung_bbox(s2)
        lung = pt.lung[s2][bb]
        depth = posterior_depth(pt, s2, bb)
        _, _, Z = g.coords(bb)
        ztop = H * r.uniform(*P.layer_top)
        prof = np.clip((ztop - Z) / ztop, 0, 1) ** 0.6
        f = smooth_field(r, g, bb, P.layer_cell)
        if kind == "effusion" and s2 == side:
            thick = r.uniform(*P.effusion_depth) * prof * (1 + 0.15 * f)
            eff = lung & (depth < thick)
            pt.lung[s2][bb] &= ~eff
            pt.lab[bb][eff] = EFFUSION
            pt.stats["effusion_ml"] += float(eff.sum()) * vml
            band = r.uniform(*P.collapse_band) * (0.5 + prof)  # passive collapse, thickest at the base
            w = np.clip((thick + band - depth) / r.uniform(*P.collapse_edge) + 0.5, 0, 1) * (prof > 0.05)
        else:
            t0 = r.uniform(*P.atelectasis_depth) if (s2 == side and kind == "atelectasis") else r.uniform(
                *P.atelectasis_depth_other
            )
            thick = t0 * prof * (1 + 0.2 * f)
            w = np.clip((thick - depth) / r.uniform(*P.atelectasis_edge) + 0.5, 0, 1)
        w = (w * pt.lung[s2][bb]).astype(np.float32)
        add_dense(pt, bb, w, r.uniform(*P.dense_hu))


def _consolidation(pt: Patient, side: int, bb: Box, lung: np.ndarray) -> None:
    """Patchy consolidation of one lobe."""
    P, r, g = PATHOLOGY, pt.r, pt.g
    lobes, p_l = (P.right_lobes, P.right_lobe_p) if side == -1 else (P.left_lobes, P.left_lobe_p)
    lobe = str(r.choice(lobes, p=p_l))
    lm = lobe_mask(pt, side, bb, lobe) & lung
    if not lm.any():
        lm = lung
    f = smooth_field(r, g, bb, P.consolidation_cell)
    thr = np.quantile(f[lm], r.uniform(*P.consolidation_spared))
    w = np.clip((f - thr) * 2.0, 0, 1) * lm
    w = ndimage.uniform_filter(w.astype(np.float32), 3)
    add_dense(pt, bb, (w * pt.lung[side][bb]).astype(np.float32), r.uniform(*P.consolidation_hu))


def _tumour(pt: Patient, side: int, bb: Box, lung: np.ndarray) -> bool:
    """A lobulated, spiculated tumour; returns whether a lobe behind it collapsed."""
    P, r, g = PATHOLOGY, pt.r, pt.g
    lung_lut = lut((LUNG,))
    vml = float(np.prod(g.sp)) / 1000
    central = r.random() < P.central_p
    R = r.uniform(*P.tumour_radius)
    if central:
        c = pt.hilum[side] + np.array([side * (R + r.uniform(*P.central_lateral)), r.uniform(*P.central_y),
                                       r.uniform(*P.central_z)])  # fmt: skip
    else:
        idx = np.argwhere(lung[::2, ::2, :])
        c = g.lo + (idx[int(r.integers(len(idx)))] * [2, 2, 1] + [b.start for b in bb]) * g.sp
    tm = np.zeros(g.shape, bool)
    parts = [(c, R)] + [(c + r.normal(0, P.lobule_spread, 3) * R, R * r.uniform(*P.lobule_size))
                        for _ in range(int(r.integers(*P.lobule_count)))]  # fmt: skip
    for cc, rr in parts:
        sl, q = ellipsoid(g, cc, rr * r.uniform(*P.lobule_aspect, 3))
        if sl is not None:
            tm[sl] |= q < 1
    tm &= lut((LUNG, VESSEL, BRONCH_WALL, AIRWAY, MED_FAT, HILUM_FAT, NODE))[pt.lab]
    pt.lab[tm] = TUMOUR
    if tm.any():
        ijk = np.argwhere(tm)
        ctr = ijk[np.argmin(((ijk - ijk.mean(axis=0)) ** 2).sum(axis=1))]
        pt.landmarks["tumour"].append(g.lo + ctr * g.sp)
    pt.stats["tumour_ml"] += float(tm.sum()) * vml
    for s2 in (-1, 1):
        pt.lung[s2] &= ~tm
    for _ in range(int(r.integers(*P.spicule_count))):  # spicules
        v = r.normal(size=3)
        v /= exact.norm(v)
        p0 = c + v * R * 0.8
        p1 = p0 + v * r.uniform(*P.spicule_length)
        sl, m = tube(g, p0, p1, r.uniform(*P.spicule_radius), 0.4)
        pt.paint(sl, m, VESSEL, lung_lut)
    if not (central and r.random() < P.collapse_p):
        return False
    # post-obstructive collapse: the lobe shrinks towards the hilum
    lobe = str(r.choice(P.collapse_lobes))
    lm = lobe_mask(pt, side, bb, lobe) & pt.lung[side][bb]
    X, Y, Z = g.coords(bb)
    d = np.sqrt((X - pt.hilum[side][0]) ** 2 + (Y - pt.hilum[side][1]) ** 2
                + ((Z - pt.hilum[side][2]) * 0.8) ** 2) * (1 + 0.12 * smooth_field(r, g, bb, 20.0))  # fmt: skip
    if lm.any():
        rad = np.quantile(d[lm], r.uniform(*P.collapse_extent))
        w = (np.clip((rad - d) / 4.0 + 0.5, 0, 1) * lm).astype(np.float32)
        add_dense(pt, bb, w, r.uniform(*P.collapse_hu))
    return True
