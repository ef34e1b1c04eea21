"""The lungs and their intrapulmonary trees (pulmonary arteries with bronchi alongside, and veins).

:func:`cut_lungs` makes each lung its side's cavity above the diaphragm minus the mediastinal
envelope; :func:`grow_trees` fills each lung with a territory-splitting arterial and venous tree
(thick branches painted as tubes, thin ones kept as partial-volume deposits for
:func:`.scanner.to_hu`) and queues the bronchi that :func:`paint_bronchi` paints.
Patient frame (mm): x = left, y = posterior, z = superior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lungseg.io import exact
from lungseg.synthetic.labels import AIRWAY, BRONCH_WALL, HILUM_FAT, IN_LUNG, LUNG, MED_FAT, VESSEL, lut
from lungseg.synthetic.shapes import Range, tube

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient


@dataclass(frozen=True)
class TreeRanges:
    """Vascular and bronchial tree settings (mm unless noted)."""

    max_points: int = 1000  # lung points (from every 3rd column/row, 2nd slice) a tree is grown into
    min_points: int = 10  # fewer: no tree (a tiny lung)
    reference_lung_mm3: float = 1.7e6  # calibre scales with (lung volume / this) ** (1/3)
    root_radius: Range = (5.0, 6.8)  # at the hilum, for a reference-size lung
    split_jitter_artery: float = 0.35  # SD added to the split direction (unit vector), unitless
    split_jitter_vein: float = 0.6
    step_to_centroid: Range = (0.35, 0.6)  # a branch's length, fraction of the way to its territory centroid
    split_quantile: Range = (0.35, 0.65)  # where the territory is cut along its principal axis
    bronchus_to_artery: float = 0.7  # bronchus radius / artery radius


TREES = TreeRanges()


def cut_lungs(pt: Patient) -> None:
    """Lungs = side cavity above the diaphragm minus the mediastinal envelope (largest component).

    Sets ``lung[s]`` (bool ``[i, j, k]``, -1 right, +1 left), the masks pathology later trims.
    """
    g = pt.g
    cav = pt.cavity & pt.above
    np.copyto(pt.lab, MED_FAT, where=cav)
    pt.lung = {}
    x = g.x[:, None, None]
    for s in (-1, 1):
        m = pt.side[s] & pt.above & ~pt.medi & ((s * (x - pt.xm)) > 0)
        lab, n = ndimage.label(m)
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (1 + int(np.argmax(sizes)))
        pt.lung[s] = m
        np.copyto(pt.lab, LUNG, where=m)
    del pt.side


def branching_tree(
    r: np.random.Generator, root: np.ndarray, pts: np.ndarray, r_root: float, jitter: float
) -> list:
    """Territory-splitting branching tree from ``root`` filling the point cloud ``pts`` (patient frame, mm).

    Each node heads towards the centroid of its territory, which is then split in two
    across its principal axis; radii follow Murray's law (r^3 proportional to territory).
    Returns segments ``(start, end, r_start, r_end, parent_index)``.
    """
    T = TREES
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
        end = start + (c - start) * r.uniform(*T.step_to_centroid)
        segs.append((start, end, rad, rad * 0.92, parent))
        me = len(segs) - 1
        axis = exact.principal_axis(exact.covariance(P))
        proj = exact.matmul(P - c, axis + r.normal(0, jitter, 3))
        cut = np.quantile(proj, r.uniform(*T.split_quantile))
        a, b = idx[proj < cut], idx[proj >= cut]
        if len(a) == 0 or len(b) == 0:
            order = np.argsort(proj)
            a, b = idx[order[: n // 2]], idx[order[n // 2 :]]
        stack.append((end, a, me))
        stack.append((end, b, me))
    return segs


def grow_trees(pt: Patient) -> None:
    """Pulmonary arteries (with bronchi alongside) and veins; thin vessels as partial volume.

    Paints the thick vessels, appends to ``vessel_deposits`` and ``bronchi``.
    """
    T, r, g = TREES, pt.r, pt.g
    thin = max(1.5 * g.sp[0], 1.2)  # thinner branches: partial-volume deposits, not voxels
    vox = float(np.prod(g.sp))
    rb_min = max(1.0, 0.7 * g.sp[0])
    for s in (-1, 1):
        idx = np.argwhere(pt.lung[s][::3, ::3, ::2])
        n_pts = min(len(idx), T.max_points)
        if n_pts < T.min_points:
            continue
        pick = idx[r.choice(len(idx), n_pts, replace=False)] * np.array([3, 3, 2])
        pts = g.lo + (pick + r.uniform(-0.5, 0.5, pick.shape)) * g.sp  # anywhere in the picked voxel
        size = (float(pt.lung[s].sum()) * vox / T.reference_lung_mm3) ** (1 / 3)  # calibre ~ lung size
        # the veins leave the hilum 2 mm medial, 14 mm posterior and 28 mm below the arteries
        roots = {"artery": pt.hilum[s], "vein": pt.hilum[s] + np.array([-s * 2, 14, -28])}
        for kind, root in roots.items():
            jitter = T.split_jitter_artery if kind == "artery" else T.split_jitter_vein
            segs = branching_tree(r, root, pts, r.uniform(*T.root_radius) * size, jitter)
            small_p, small_w = [], []
            offs: list[np.ndarray] = []
            for p0, p1, r0, r1, parent in segs:
                if r0 >= thin:
                    sl, m = tube(g, p0, p1, r0, r1)
                    pt.paint(sl, m, VESSEL, IN_LUNG)
                else:
                    L = exact.norm(p1 - p0)
                    ns = max(2, int(np.ceil(L / (0.5 * g.sp.min()))))
                    t = np.linspace(0, 1, ns)[:, None]
                    small_p.append(p0 + (p1 - p0) * t)
                    small_w.append(np.pi * (r0 + (r1 - r0) * t[:, 0]) ** 2 * (L / ns) / vox)
                # bronchus alongside the artery: offset direction carried down the tree
                d = (p1 - p0) / max(exact.norm(p1 - p0), 1e-6)
                prev = offs[parent] if parent >= 0 else np.cross(d, [0.0, 0.0, 1.0])
                nrm = prev - d * exact.dot(prev, d)
                if exact.norm(nrm) < 1e-3:
                    nrm = np.cross(d, [1.0, 0.0, 0.0])
                nrm = nrm / exact.norm(nrm)
                offs.append(nrm)
                rb = T.bronchus_to_artery * r0
                if kind == "artery" and rb >= rb_min:
                    wall = max(0.6, 0.2 * rb)
                    o1 = nrm * (r0 + rb + wall)
                    o0 = offs[parent] * (segs[parent][3] + rb + wall) if parent >= 0 else np.zeros(3)
                    pt.bronchi.append((p0 + o0, p1 + o1, rb, 0.9 * rb, wall))
            if small_p:
                pt.vessel_deposits.append((np.vstack(small_p), np.concatenate(small_w)))


def paint_bronchi(pt: Patient) -> None:
    """Intrapulmonary bronchi queued by :func:`grow_trees`: wall, then lumen."""
    g = pt.g
    for p0, p1, r0, r1, w in pt.bronchi:
        sl, m = tube(g, p0, p1, r0 + w, r1 + w)
        pt.paint(sl, m, BRONCH_WALL, lut((LUNG, HILUM_FAT, VESSEL)))
    for p0, p1, r0, r1, w in pt.bronchi:
        sl, m = tube(g, p0, p1, r0, r1)
        pt.paint(sl, m, AIRWAY, lut((BRONCH_WALL, LUNG, HILUM_FAT)))

