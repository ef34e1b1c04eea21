"""The skeleton: spine (vertebrae, discs, canal, cord), ribs and costal cartilage, sternum,
clavicles and scapulae.

Patient frame (mm): x = left, y = posterior (0 at the vertebral-body centre), z = superior.
The spine's per-patient sizes are drawn in :mod:`.anatomy`; the ranges here are drawn while
building. Ribs are placed first as centre lines (:func:`rib_paths`, before the mediastinum) and
painted last (:func:`paint_chest_bones`) so they never overwrite lung.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lungseg.synthetic.labels import (
    AIR,
    CANCELLOUS,
    CARTILAGE,
    CORD,
    CORTEX,
    CSF,
    DISC,
    EFFUSION,
    FAT,
    LUNG_CONTENT,
    MED_FAT,
    MUSCLE,
    TUMOUR,
    lut,
)  # fmt: skip
from lungseg.synthetic.shapes import Range, spline

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient


@dataclass(frozen=True)
class SkeletonRanges:
    """Per-patient uniform ranges of ribs, sternum and scapulae (mm unless noted)."""

    rib_radius: Range = (3.0, 3.8)
    rib_flattening: Range = (1.5, 1.9)  # rib cross-section height / thickness
    rib_gap: Range = (2.0, 3.5)  # cavity wall to rib surface
    first_rib_below_apex: Range = (8, 16)  # posterior head of rib 1 below the lung apex
    notch_above_carina: Range = (40, 55)  # jugular notch (top of the sternum) ...
    notch_below_apex: float = 25  # ... but at least this far below the apex
    xiphoid_below_dome: Range = (5, 25)  # lower end of the sternum below the right dome
    rib_spacing: Range = (0.95, 1.05)  # rib-to-rib step, factor on the vertebra period
    # how far each rib (1-12) descends from its head to its front end
    rib_drop: tuple[float, ...] = (30, 55, 70, 80, 88, 92, 95, 90, 90, 90, 40, 30)
    rib_drop_jitter: Range = (0.85, 1.15)  # factor
    false_rib_end: Range = (2.2, 2.6)  # ribs 8-10 end at this angle (rad; 0 posterior, pi anterior)
    floating_rib_end: Range = (1.3, 1.8)  # ribs 11-12
    manubrium_half_width: float = 25.0
    sternum_half_width: float = 15.0
    manubrium_height: float = 45  # below the notch
    sternum_width_jitter: Range = (0.85, 1.15)  # factor
    scapula_top_below_apex: Range = (10, 30)
    scapula_bottom_below_apex: Range = (150, 180)
    scapula_thickness: Range = (3, 5)
    scapula_angle: Range = (0.75, 0.95)  # centre angle of the blade (rad from posterior)
    scapula_gap: Range = (8, 14)  # outside the rib surface


SKELETON = SkeletonRanges()


def spine(pt: Patient, paint: bool) -> None:
    """Vertebral bodies, discs, posterior elements, canal and cord.

    With ``paint=False`` only adds the paravertebral envelope (kept free of lung) to ``medi``.
    """
    g = pt.g
    sl = g.box(np.array([-90, -60, -1e4]), np.array([90, 130, 1e4]))
    if sl is None:
        return
    z = g.z[sl[2]].astype(np.float32)
    yv, xv = pt.y_vb(z).astype(np.float32), pt.x_sp(z).astype(np.float32)
    rvx = (pt.rvx + 3 * (1 - np.clip(z / pt.H, 0, 1))).astype(np.float32)  # 3 mm wider at the base
    rvy = rvx * np.float32(pt.rvy / pt.rvx)
    ycan = yv + rvy + np.float32(2 + pt.rc)
    X, Y = g.x[sl[0]][:, None, None], g.y[sl[1]][None, :, None]
    xv_, yv_, rvx_, rvy_, ycan_ = (a[None, None, :] for a in (xv, yv, rvx, rvy, ycan))
    dx = X - xv_
    if not paint:
        env = (dx / (rvx_ + 4)) ** 2 + ((Y - yv_) / (rvy_ + 4)) ** 2 < 1
        env |= ((dx / np.float32(pt.rc + 30)) ** 2 + ((Y - ycan_ - 6) / np.float32(24)) ** 2) < 1
        pt.medi[sl] |= env
        return
    phase = ((z - pt.vphase) % pt.vper) / pt.vper
    disc = phase < pt.vdisc / pt.vper
    end = (~disc) & ((phase < (pt.vdisc + 1.6) / pt.vper) | (phase > 1 - 1.6 / pt.vper))
    body_q = (dx / rvx_) ** 2 + ((Y - yv_) / rvy_) ** 2
    inner_q = (dx / (rvx_ - 1.8)) ** 2 + ((Y - yv_) / (rvy_ - 1.8)) ** 2
    rcan = np.sqrt(dx**2 + (Y - ycan_) ** 2)
    ph = phase[None, None, :]
    view = pt.lab[sl]
    d3, e3 = disc[None, None, :], end[None, None, :]
    view[(body_q < 1) & d3] = DISC
    view[(body_q < 1) & ~d3] = CORTEX
    view[(inner_q < 1) & ~d3 & ~e3] = CANCELLOUS
    # posterior elements: pedicles/lamina ring, transverse and spinous processes
    arch = (ph > 0.2) & (ph < 0.85)
    ring = (rcan >= pt.rc) & (rcan < pt.rc + 4.5) & (Y > ycan_ - pt.rc * 0.9) & arch
    trans = ((np.abs(dx) > pt.rc) & (np.abs(dx) < pt.rc + 24) & (np.abs(Y - ycan_ + 2) < 5)
             & (ph > 0.3) & (ph < 0.7))  # fmt: skip
    spin = ((np.abs(dx) < 3.5) & (Y > ycan_ + pt.rc) & (Y < ycan_ + pt.rc + 30 + 8 * (ph < 0.1))
            & ((ph > 0.45) | (ph < 0.1)))  # fmt: skip
    view[ring | trans | spin] = CORTEX
    view[rcan < pt.rc] = CSF
    view[np.sqrt(dx**2 + (Y - ycan_ + 1) ** 2) < pt.rcord] = CORD


def rib_paths(pt: Patient) -> None:
    """Centre lines of ribs (posterior head -> around the cavity -> anterior end) and cartilages."""
    K, r, th = SKELETON, pt.r, pt.th
    rr, zs = r.uniform(*K.rib_radius), r.uniform(*K.rib_flattening)
    off = rr + r.uniform(*K.rib_gap)
    zT1 = pt.H - r.uniform(*K.first_rib_below_apex)
    pt.z_notch = min(pt.z_c + r.uniform(*K.notch_above_carina), pt.H - K.notch_below_apex)
    pt.z_xiph = pt.D[-1] - r.uniform(*K.xiphoid_below_dome)
    st_len = pt.z_notch - pt.z_xiph
    ribs, carts = [], []
    for n in range(1, 13):
        zp = zT1 - (n - 1) * pt.vper * r.uniform(*K.rib_spacing)
        drop = K.rib_drop[n - 1] * r.uniform(*K.rib_drop_jitter)
        # true ribs reach the front (their cartilage the sternum); false and floating ribs stop short
        a_end = np.pi if n <= 7 else (r.uniform(*K.false_rib_end) if n <= 10 else r.uniform(*K.floating_rib_end))
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
            head = np.array([s * (pt.rvx + 3), float(pt.y_vb(zp)) + 3, zp + 3])
            ribs.append(np.vstack([head, pts]))
            tip = pts[-1]
            if n <= 7:
                zst = pt.z_notch - 5 - (n - 1) / 6.5 * st_len * 0.9
                end = np.array([s * 14, float(pt.y_st(np.array([zst]))[0]), zst])
                carts.append(np.vstack([tip, (tip + end) / 2 + [0, -3, 0], end]))
            elif n <= 10:
                carts.append(np.vstack([tip, tip + [-s * 15, -8, 14]]))
    pt.rib = (rr, zs, off, ribs, carts)


def paint_chest_bones(pt: Patient) -> None:
    """Ribs (cortex + marrow), costal cartilage, sternum, clavicles, scapulae."""
    K, r, g = SKELETON, pt.r, pt.g
    rr, zs, off, ribs, carts = pt.rib
    not_lung = ~lut(LUNG_CONTENT + (AIR, EFFUSION, TUMOUR))
    for pts in carts:
        pt.paint_path(pts, np.full(len(pts), rr), CARTILAGE, not_lung, zscale=zs)
    for pts in ribs:
        pt.paint_path(pts, np.full(len(pts), rr), CORTEX, not_lung, zscale=zs)
    for pts in ribs:
        pt.paint_path(pts, np.full(len(pts), rr - 1.3), CANCELLOUS, lut((CORTEX,)), zscale=zs)
    # sternum: manubrium + body
    zz = np.linspace(pt.z_xiph, pt.z_notch, 40)
    yy = pt.y_st(zz)
    hw = np.where(zz > pt.z_notch - K.manubrium_height, K.manubrium_half_width, K.sternum_half_width)
    hw = hw * r.uniform(*K.sternum_width_jitter)
    for a in range(len(zz) - 1):
        sl = g.box(np.array([-hw[a] - 1, yy[a] - 10, zz[a]]), np.array([hw[a] + 1, yy[a] + 10, zz[a + 1]]))
        if sl is None:
            continue
        X, Y, _ = g.coords(sl)
        shape = tuple(v.stop - v.start for v in sl)
        q = np.broadcast_to((X / hw[a]) ** 2 + ((Y - yy[a]) / (pt.st_t / 2)) ** 2, shape)
        pt.paint(sl, q < 1, CORTEX, not_lung)
        qi = np.broadcast_to((X / (hw[a] - 1.5)) ** 2 + ((Y - yy[a]) / (pt.st_t / 2 - 1.5)) ** 2, shape)
        pt.paint(sl, qi < 1, CANCELLOUS, lut((CORTEX,)))
    # clavicles
    y0 = float(pt.y_st(np.array([pt.z_notch]))[0])
    for s in (-1, 1):
        E = pt.th.E[s]
        pts, rad = spline(
            [[s * 22, y0 - 2, pt.z_notch + 4], [s * 0.55 * E, y0 - 8, pt.z_notch + 14],
             [s * (E + 15), y0 + 25, pt.z_notch + 22], [s * (E + 40), y0 + 45, pt.z_notch + 24]],
            [6, 5.5, 5, 6], step=3.0,
        )  # fmt: skip
        pt.paint_path(pts, rad, CORTEX, lut((MUSCLE, FAT, MED_FAT)))
        pt.paint_path(pts, rad - 1.5, CANCELLOUS, lut((CORTEX,)))
    # scapulae: thin curved plates outside the posterolateral ribs (polar test per side)
    z_top, z_bot = pt.H - r.uniform(*K.scapula_top_below_apex), pt.H - r.uniform(*K.scapula_bottom_below_apex)
    thick = r.uniform(*K.scapula_thickness)
    for s in (-1, 1):
        ac, gap = r.uniform(*K.scapula_angle), off + rr + r.uniform(*K.scapula_gap)
        sl = g.box(np.array([-250, -100, z_bot]), np.array([250, 200, z_top]))
        if sl is None:
            continue
        X, Y, Z = g.coords(sl)
        c = pt.th.at(np.maximum(Z.ravel() - 8, 0))
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
        pt.paint(sl, m, CORTEX, lut((MUSCLE, FAT)))

