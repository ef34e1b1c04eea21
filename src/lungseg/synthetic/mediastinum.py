"""The mediastinum: trachea and main bronchi, oesophagus, heart, great vessels, hila, nodes.

:func:`place_mediastinum` runs before the lungs: it fixes the geometry (centre lines, heart
ellipsoid, hilar ellipsoids) and marks the lung-free envelope ``pt.medi``.
:func:`paint_mediastinum` paints the organs after the lungs are cut out.
Patient frame (mm): x = left, y = posterior (0 at the vertebral-body centre), z = superior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lungseg.io import exact
from lungseg.synthetic.labels import (
    AIRWAY,
    BLOOD,
    BRONCH_WALL,
    CALC,
    CANCELLOUS,
    CARTILAGE,
    CORTEX,
    DISC,
    ESOPH,
    FAT,
    FLUID,
    GAS,
    HILUM_FAT,
    LIVER,
    LUNG,
    MED_FAT,
    MUSCLE,
    MYOCARD,
    NODE,
    SPLEEN,
    STOMACH,
    lut,
)  # fmt: skip
from lungseg.synthetic.shapes import Range, ellipsoid, smoothstep, spline, tube

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient

Range3 = tuple[Range, Range, Range]  # x, y, z


@dataclass(frozen=True)
class MediastinumRanges:
    """Per-patient ranges of airways, oesophagus, heart and the mediastinal envelope (mm unless noted)."""

    oesophagus_radius: Range = (6.5, 9)
    trachea_radius: Range = (9, 12)
    airway_wall: Range = (1.5, 2.5)  # trachea and main bronchi
    trachea_x: Range = (-2, 3)  # from the midline
    trachea_top_forward: Range = (0, 10)  # the trachea's top lies this much anterior of its carina position
    heart_semi_axes: Range3 = ((52, 62), (34, 42), (36, 44))  # long axis first
    heart_turn_deg: Range = (30, 45)  # long axis turned from +x towards anterior
    heart_tilt_deg: Range = (15, 30)  # long axis tilted down (apex left-anterior-inferior)
    heart_back_gap: Range = (10, 16)  # vertebral body front to the back of the heart
    heart_front_gap: Range = (2, 6)  # anterior cavity wall to the front of the heart
    heart_right_border: Range = (35, 50)  # right of the midline
    heart_lift: Range = (0.7, 0.85)  # centre above the diaphragm, fraction of the heart's z half-extent
    pericardium: Range = (3, 7)  # lung-free margin around the heart
    core_half_width: Range = (13, 18)  # mediastinal core at the carina level ...
    core_half_width_top: Range = (22, 30)  # ... and above the heart (great vessels), less core_widening_base
    core_widening_base: float = 15
    junction_half_width_ant: Range = (2, 6)  # anterior junction line (far in front of the trachea)
    junction_half_width_post: Range = (11, 16)  # behind (oesophagus, azygos)
    core_decay_ant: Range = (20, 35)  # Gaussian fall-off of the core width in front of the trachea
    core_decay_post: Range = (25, 40)  # ... and behind it
    airway_margin: Range = (2, 4)  # lung-free margin around trachea and main bronchi
    stomach_x: Range = (45, 65)  # stomach centre (the oesophagus ends there)
    stomach_y: Range = (-50, -25)
    stomach_depth: Range = (35, 50)  # below the left dome
    oesophagus_x_mid: Range = (3, 9)  # 60 mm below the carina
    oesophagus_x_hiatus: Range = (14, 24)
    oesophagus_margin: Range = (2, 4)
    hilum_semi_axes: Range3 = ((14, 20), (25, 32), (30, 40))
    junction_line: Range = (1.0, 2.5)  # half-width of the midline strip (at least 1.1 pixels)
    node_count: tuple[int, int] = (3, 9)  # lymph nodes, low inclusive, high exclusive
    node_spread: tuple[float, float, float] = (18, 12, 20)  # SD of node centres around the carina (x, y, z)
    node_radius: Range = (3, 7)
    calcification_p: float = 0.35  # probability of aortic calcification
    calcification_count: tuple[int, int] = (2, 7)
    calcification_radius: Range = (1.2, 2.5)
    oesophageal_gas_p: float = 0.4
    oesophageal_gas_length: tuple[int, int] = (5, 25)  # path points (~2.5 mm apart)
    oesophageal_gas_radius: Range = (1.5, 3.5)


@dataclass(frozen=True)
class GreatVesselRanges:
    """Per-patient ranges of the aorta, pulmonary vessels, caval veins and hila (mm unless noted)."""

    arch_above_carina: Range = (18, 32)
    aorta_radius_ascending: Range = (14, 18)
    aorta_radius_arch: Range = (12, 15)
    aorta_radius_descending: Range = (10, 13)
    aorta_spine_gap: Range = (1, 3)  # descending aorta to the vertebral body
    aorta_angle_deg: Range = (35, 50)  # descending aorta, left-anterolateral of the vertebral body
    ascending_forward: Range = (25, 35)  # ascending aorta in front of the trachea
    aorta_x_ascending: Range = (-22, -12)
    aorta_x_arch: Range = (-8, 2)
    aorta_margin: Range = (2, 4)  # lung-free margin
    hilum_behind_trachea: Range = (5, 12)
    right_hilum_x: Range = (38, 46)  # right of the midline
    right_hilum_below_carina: Range = (18, 26)
    left_hilum_x: Range = (40, 50)
    left_hilum_below_carina: Range = (28, 38)
    pulmonary_bifurcation_x: Range = (4, 12)
    pulmonary_bifurcation_below_carina: Range = (8, 14)
    svc_x: Range = (24, 32)  # superior vena cava, right of the midline
    pulmonary_trunk_radius: Range = (13, 15)
    right_pa_radius: Range = (10, 12)
    left_pa_radius: Range = (9, 11)
    svc_radius: Range = (9, 11)
    brachiocephalic_vein_x: Range = (38, 48)  # left brachiocephalic vein starts here at the top
    brachiocephalic_vein_radius: Range = (6, 8)
    pulmonary_vein_radius: Range = (6, 8)


MEDIASTINUM = MediastinumRanges()
VESSELS = GreatVesselRanges()


def place_mediastinum(pt: Patient) -> None:
    """Place trachea, bronchi, oesophagus, heart, great vessels and hila; build the envelope ``medi``.

    Only geometry and the lung-free envelope are made here; the organs are painted by
    :func:`paint_mediastinum` after the lungs. Sets ``trachea``, ``heart``, ``hilum``,
    ``vessel_paths``, ``aorta_path``, ``airways``, ``w_tr``, ``stomach_c``, ``esoph``, ``hilum_q``.
    """
    M, V, r, g, th = MEDIASTINUM, VESSELS, pt.r, pt.g, pt.th
    zc = pt.z_c
    ztop, zbot = float(g.z[-1]) + 15, float(g.z[0]) - 15
    # esophagus and trachea positions
    r_es = r.uniform(*M.oesophagus_radius)
    r_tr = r.uniform(*M.trachea_radius)
    w_tr = r.uniform(*M.airway_wall)
    yv_c = float(pt.y_vb(zc))
    y_es_c = yv_c - pt.rvy - r_es - 2
    y_tr_c = y_es_c - r_es - r_tr - 1
    x_tr = pt.xm + r.uniform(*M.trachea_x)
    y_tr_top = y_tr_c - r.uniform(*M.trachea_top_forward)
    pt.trachea = dict(c=np.array([x_tr, y_tr_c, zc]), r=r_tr)
    # heart: rotated ellipsoid, apex to the left-anterior-inferior
    a, b, cc = (r.uniform(*v) for v in M.heart_semi_axes)
    th_, ph = np.deg2rad(r.uniform(*M.heart_turn_deg)), np.deg2rad(r.uniform(*M.heart_tilt_deg))
    e1 = np.array([np.cos(th_) * np.cos(ph), -np.sin(th_) * np.cos(ph), -np.sin(ph)])
    e2 = np.array([np.sin(th_), np.cos(th_), 0.0])
    e2 -= e1 * exact.dot(e1, e2)
    e2 /= exact.norm(e2)
    e3 = np.cross(e1, e2)
    rot = np.column_stack([e1, e2, e3])
    axes = np.array([a, b, cc])
    half = np.sqrt(((rot * axes[None, :]) ** 2).sum(axis=1))
    # fill the space between the anterior chest wall and the oesophagus/aorta (shrinking by at most 15%)
    y_back_h = yv_c - pt.rvy - r.uniform(*M.heart_back_gap)
    for _ in range(3):
        hz_guess = pt.D[1] + 0.4 * half[2]
        c0 = th.at(np.array([hz_guess]))
        y_wall = float(c0["cy"][0] - c0["aya"][0]) + r.uniform(*M.heart_front_gap)
        k = np.clip((y_back_h - y_wall) / (2 * half[1]), 0.85, 1.0)
        axes, half = axes * k, half * k
    hy = y_wall + half[1]
    hx = -r.uniform(*M.heart_right_border) + half[0]
    ix = int(np.clip(np.rint((hx - g.lo[0]) / g.sp[0]), 0, g.shape[0] - 1))
    iy = int(np.clip(np.rint((hy - g.lo[1]) / g.sp[1]), 0, g.shape[1] - 1))
    hz = float(pt.zd[ix, iy]) + half[2] * r.uniform(*M.heart_lift)
    hc = np.array([hx, hy, hz])
    pt.heart = dict(c=hc, axes=axes, rot=rot, half=half)
    sl, q = ellipsoid(g, hc, axes + r.uniform(*M.pericardium), rot)
    if sl is not None:
        pt.medi[sl] |= q < 1
    # mediastinal core: wide around the trachea and great vessels, a thin anterior junction line,
    # moderate behind (oesophagus, azygos)
    heart_top = hz + half[2]
    wc = r.uniform(*M.core_half_width) + (r.uniform(*M.core_half_width_top) - M.core_widening_base) * smoothstep(
        g.z, heart_top - 30, heart_top + 15
    )
    w_ant, w_post = r.uniform(*M.junction_half_width_ant), r.uniform(*M.junction_half_width_post)
    sa, sp_ = r.uniform(*M.core_decay_ant), r.uniform(*M.core_decay_post)
    Y = g.y[:, None].astype(float)
    W = np.where(Y < y_tr_c, w_ant + (wc - w_ant) * np.exp(-(((Y - y_tr_c) / sa) ** 2)),
                 w_post + (wc - w_post) * np.exp(-(((Y - y_tr_c) / sp_) ** 2)))  # fmt: skip
    pt.medi |= (np.abs(g.x - pt.xm)[:, None, None] < W.astype(np.float32)[None, :, :])
    # vessels: key points
    z_arch = zc + r.uniform(*V.arch_above_carina)
    r_asc = r.uniform(*V.aorta_radius_ascending)
    r_arch = r.uniform(*V.aorta_radius_arch)
    r_desc = r.uniform(*V.aorta_radius_descending)
    d_desc = 0.9 * pt.rvx + r_desc + r.uniform(*V.aorta_spine_gap)  # left anterolateral to the vertebral body
    x_desc = d_desc * np.cos(np.deg2rad(r.uniform(*V.aorta_angle_deg)))
    y_desc = yv_c - np.sqrt(d_desc**2 - x_desc**2)
    root = hc + np.array([-0.35 * half[0], -0.1 * half[1], 0.45 * half[2]])
    y_asc = y_tr_c - r.uniform(*V.ascending_forward)
    aorta = [root, [r.uniform(*V.aorta_x_ascending), y_asc, zc - 10],
             [r.uniform(*V.aorta_x_arch), (y_asc + y_desc) / 2, z_arch],
             [x_desc, y_desc, zc + 4], [x_desc, y_desc, pt.D[1] - 20], [x_desc * 0.6, y_desc + 3, zbot]]  # fmt: skip
    aorta_r = [r_asc, r_asc, r_arch, r_desc, r_desc, r_desc]
    y_h = y_tr_c + r.uniform(*V.hilum_behind_trachea)
    hil = {-1: np.array([-r.uniform(*V.right_hilum_x), y_h, zc - r.uniform(*V.right_hilum_below_carina)]),
           1: np.array([r.uniform(*V.left_hilum_x), y_h + 5,
                        zc - r.uniform(*V.left_hilum_below_carina)])}  # fmt: skip
    pt.hilum = hil
    bif = np.array([r.uniform(*V.pulmonary_bifurcation_x), y_tr_c - 5,
                    zc - r.uniform(*V.pulmonary_bifurcation_below_carina)])  # fmt: skip
    rv = hc + np.array([0.0, -0.6 * half[1], 0.55 * half[2]])
    la = hc + np.array([-10, 0.55 * half[1], 0.4 * half[2]])
    ra = hc + np.array([-0.6 * half[0], 0.0, 0.2 * half[2]])
    svc_x = -r.uniform(*V.svc_x)
    # (key points, radii, label, lung-free margin): aorta, pulmonary trunk and arteries, SVC, left
    # brachiocephalic vein, arch branches, azygos, IVC, then four pulmonary veins
    vessels = [
        (aorta, aorta_r, BLOOD, r.uniform(*V.aorta_margin)),
        ([rv, bif], [r.uniform(*V.pulmonary_trunk_radius)] * 2, BLOOD, 3.0),
        ([bif, [-12, y_tr_c + 2, zc - 14], hil[-1] + [6, -4, 3]], [r.uniform(*V.right_pa_radius)] * 3,
         BLOOD, 3.0),
        ([bif, [24, y_tr_c + 2, zc - 4], hil[1] + [-6, -4, 6]], [r.uniform(*V.left_pa_radius)] * 3,
         BLOOD, 3.0),
        ([[svc_x, y_asc - 5, ztop], [svc_x, y_asc, zc], ra], [r.uniform(*V.svc_radius)] * 3, BLOOD, 3.0),
        ([[r.uniform(*V.brachiocephalic_vein_x), y_asc - 20, ztop], [15, y_asc - 18, zc + 45],
          [svc_x, y_asc - 8, zc + 30]], [r.uniform(*V.brachiocephalic_vein_radius)] * 3, BLOOD, 3.0),
        ([[-5, (y_asc + y_desc) / 2, z_arch], [-16, y_tr_c - 12, ztop]], [6.5, 6.0], BLOOD, 4.0),
        ([[3, (y_asc + y_desc) / 2 + 5, z_arch], [9, y_tr_c - 10, ztop]], [4.5, 4.5], BLOOD, 4.0),
        ([[12, y_desc, z_arch - 4], [26, y_tr_c + 2, ztop]], [5.5, 5.5], BLOOD, 4.0),
        ([[-10, yv_c - pt.rvy + 1, zbot], [-11, yv_c - pt.rvy, zc + 4], [svc_x + 4, y_asc, zc + 12]],
         [4.0, 4.0, 4.5], BLOOD, 2.0),
        ([[-22, yv_c - pt.rvy - 22, zbot], ra], [11, 11], BLOOD, 3.0),
    ]  # fmt: skip
    for s in (-1, 1):
        for dz_, dy_ in ((-15, 10), (-35, 16)):
            p0 = hil[s] + np.array([-s * 4, dy_, dz_])
            rad = [r.uniform(*V.pulmonary_vein_radius)] * 3
            vessels.append(([p0, (p0 + la) / 2 + [0, 5, 0], la], rad, BLOOD, 3.0))
    pt.vessel_paths = []
    for pts, rad, lab, margin in vessels:
        P, R = spline(pts, rad)
        pt.vessel_paths.append((P, R, lab))
        pt.paint_path(P, R, None, margin=margin)
    pt.aorta_path = spline(aorta, aorta_r)
    # trachea, main bronchi
    car = np.array([x_tr + 1, y_tr_c, zc])
    rmb = hil[-1] + np.array([8, -2, 6])
    lmb = hil[1] + np.array([-8, -2, 4])
    pt.airways = [
        spline([[x_tr - 1, y_tr_top, ztop], [x_tr, (y_tr_top + y_tr_c) / 2, (ztop + zc) / 2], car], [r_tr] * 3),
        spline([car, rmb, hil[-1]], [r_tr * 0.75, r_tr * 0.7, r_tr * 0.6]),
        spline([car, (car + lmb) / 2 + [0, 0, 2], lmb, hil[1]], [r_tr * 0.65, r_tr * 0.62, r_tr * 0.6, r_tr * 0.55]),
    ]
    pt.w_tr = w_tr
    for P, R in pt.airways:
        pt.paint_path(P, R, None, margin=r.uniform(*M.airway_margin))
    # esophagus: behind the trachea, then anterior to the spine, through the hiatus to the stomach
    zl = np.array([zc - 60.0])
    st_c = np.array([r.uniform(*M.stomach_x), r.uniform(*M.stomach_y), pt.D[1] - r.uniform(*M.stomach_depth)])
    pt.stomach_c = st_c
    es = [[x_tr + 3, y_tr_top + r_tr + r_es + 1, ztop], [x_tr + 4, y_tr_c + r_tr + r_es + 1, zc],
          [r.uniform(*M.oesophagus_x_mid), float(pt.y_vb(zl)[0]) - pt.rvy - r_es - 2, zl[0]],
          [r.uniform(*M.oesophagus_x_hiatus), float(pt.y_vb(np.array([pt.D[1]]))[0]) - pt.rvy - r_es - 10,
           pt.D[1] - 12],
          st_c + [-20, 0, 10]]  # fmt: skip
    pt.esoph = spline(es, [r_es] * 5)
    pt.paint_path(*pt.esoph, None, margin=r.uniform(*M.oesophagus_margin))
    # hilum: excluded from lungs, filled with hilar fat, vessels and bronchi
    pt.hilum_q = []
    for s in (-1, 1):
        ax = np.array([r.uniform(*v) for v in M.hilum_semi_axes])
        c = hil[s] + np.array([s * 6, 2, -8])
        sl, q = ellipsoid(g, c, ax)
        if sl is not None:
            pt.medi[sl] |= q < 1
            pt.hilum_q.append((sl, q < 1))
    # thin midline strip (anterior/posterior junction lines)
    w = max(1.1 * g.sp[0], r.uniform(*M.junction_line))
    strip = np.abs(g.x - pt.xm) < w
    pt.medi[strip] = True

def paint_mediastinum(pt: Patient) -> None:
    """Heart, great vessels, airways, esophagus, nodes (after the lungs are painted).

    Sets ``heart_mask`` and ``esoph_mask`` (bool ``[i, j, k]``, the RTSTRUCT organs).
    """
    M, r, g = MEDIASTINUM, pt.r, pt.g
    soft = lut((MED_FAT, HILUM_FAT, MUSCLE, FAT, NODE, BLOOD, LIVER, STOMACH, FLUID, SPLEEN))
    for sl, m in pt.hilum_q:
        pt.paint(sl, m, HILUM_FAT, lut((MED_FAT,)))
    h = pt.heart
    sl, q = ellipsoid(g, h["c"], h["axes"], h["rot"])
    heart_mask = np.zeros(g.shape, bool)
    if sl is not None:
        m = (q < 1) & pt.above[sl]
        pt.paint(sl, m, MYOCARD, soft)
        pt.paint(sl, m & (q < 0.72), BLOOD, lut((MYOCARD,)))  # chambers inside the myocardium
        heart_mask[sl] = m & (pt.lab[sl] != LUNG)
    pt.heart_mask = heart_mask
    for P, R, lab in pt.vessel_paths:
        pt.paint_path(P, R, lab, allow=soft)
    # lymph nodes near the carina and hila
    for _ in range(int(r.integers(*M.node_count))):
        c = pt.trachea["c"] + r.normal(0, M.node_spread)
        sl, q = ellipsoid(g, c, r.uniform(*M.node_radius, 3))
        if sl is not None:
            pt.paint(sl, q < 1, NODE, lut((MED_FAT, HILUM_FAT)))
    # aortic calcification
    if r.random() < M.calcification_p:
        P, R = pt.aorta_path
        for _ in range(int(r.integers(*M.calcification_count))):
            a = int(r.integers(len(P) // 4, len(P)))
            v = r.normal(size=3)
            v /= exact.norm(v)
            sl, q = ellipsoid(g, P[a] + v * (R[a] - 1), np.full(3, r.uniform(*M.calcification_radius)))
            if sl is not None:
                pt.paint(sl, q < 1, CALC, lut((BLOOD, MED_FAT)))
    # esophagus (soft tissue, sometimes a little air)
    P, R = pt.esoph
    es_mask = np.zeros(g.shape, bool)
    for a in range(len(P) - 1):
        sl, m = tube(g, P[a], P[a + 1], R[a], R[a + 1])
        if sl is not None:
            m = m & (pt.lab[sl] != LUNG)
            es_mask[sl] |= m
    pt.lab[es_mask & ~lut((CORTEX, CANCELLOUS, DISC, CARTILAGE))[pt.lab]] = ESOPH
    if r.random() < M.oesophageal_gas_p:
        a0 = int(r.integers(0, max(1, len(P) // 2)))
        a1 = min(len(P) - 1, a0 + int(r.integers(*M.oesophageal_gas_length)))
        ra = r.uniform(*M.oesophageal_gas_radius)
        for a in range(a0, a1):
            sl, m = tube(g, P[a], P[a + 1], ra, ra)
            pt.paint(sl, m, GAS, lut((ESOPH,)))
    pt.esoph_mask = es_mask
    # trachea and main bronchi: wall then lumen
    for P, R in pt.airways:
        pt.paint_path(P, R + pt.w_tr, BRONCH_WALL, allow=lut((MED_FAT, HILUM_FAT, BLOOD, ESOPH, NODE, MUSCLE, FAT)))
    for P, R in pt.airways:
        pt.paint_path(P, R, AIRWAY, allow=lut((BRONCH_WALL, MED_FAT, HILUM_FAT, BLOOD)))

