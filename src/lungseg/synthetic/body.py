"""Body outline, scanner table, breasts, the cavity and diaphragm fields, and the upper abdomen.

Patient frame (mm): x = left, y = posterior (0 at the vertebral-body centre), z = superior
(0 near the lowest lung point). Functions paint ``pt.lab`` (labels from :mod:`.labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lungseg.synthetic.labels import (
    AIR,
    FAT,
    FLUID,
    GAS,
    GLAND,
    KIDNEY,
    LIVER,
    MUSCLE,
    SKIN,
    SPLEEN,
    STOMACH,
    TABLE_FOAM,
    TABLE_SHELL,
    lut,
)  # fmt: skip
from lungseg.synthetic.shapes import (
    Range,
    ellipsoid,
    inside_superellipse,
    smooth_field,
    smoothstep,
    superellipse_term,
)  # fmt: skip

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient


@dataclass(frozen=True)
class BodyRanges:
    """Table and body-surface ranges (mm unless noted)."""

    table_radius: Range = (700, 1500)  # curvature radius of the couch top
    table_gap: Range = (0.5, 3)  # back surface to couch top
    table_shell: Range = (2, 3.5)  # carbon-fibre shell thickness (top and bottom)
    table_core: Range = (25, 45)  # foam core thickness
    table_half_width: Range = (200, 240)
    shoulder_from: float = 0.7  # fraction of H where the shoulders start to widen the body
    belly_span: float = 80  # the belly bulge builds up over this distance below the left dome
    breast_height: Range = (0.3, 0.45)  # fraction of H
    breast_half_width: Range = (60, 90)
    breast_depth_min: float = 12  # AP semi-axis = min + gain * breast size
    breast_depth_gain: float = 30
    breast_half_length: Range = (50, 70)  # z semi-axis
    breast_x: Range = (65, 95)  # midline to a breast's centre
    breast_centre_depth: float = 0.45  # centre behind the chest surface, fraction of the AP semi-axis
    gland_cell: float = 12.0  # correlation length of the glandular tissue pattern
    gland_threshold: float = -0.2  # field level above which tissue is glandular (unitless)


@dataclass(frozen=True)
class AbdomenRanges:
    """Upper-abdominal organ ranges (mm unless noted); the stomach centre is drawn with the oesophagus."""

    liver_edge_x: float = 10  # left edge of the liver behind (posterior), reaching further left in front:
    liver_reach: float = 55  # edge = x + reach * clip((-y - start) / span, 0, 1) + jitter
    liver_reach_start: float = 10
    liver_reach_span: float = 70
    liver_edge_jitter: Range = (-10, 10)
    kidney_x: Range = (50, 62)  # midline to a kidney's centre
    kidney_y: Range = (0, 12)  # behind the vertebral-body centre
    kidney_depth: Range = (45, 70)  # centre below the lowest lung point
    left_kidney_higher: float = 8
    kidney_axes: tuple[float, float, float] = (28, 24, 52)  # semi-axes x, y, z
    perirenal_fat: float = 1.25  # fat out to this normalised squared radius
    spleen_angle_deg: Range = (30, 50)  # rotation about z
    spleen_x: Range = (75, 95)
    spleen_y: Range = (0, 20)
    spleen_depth: Range = (35, 55)  # centre below the left dome
    spleen_axes: tuple[Range, Range, Range] = ((20, 28), (45, 60), (40, 55))
    stomach_axes: tuple[Range, Range, Range] = ((30, 45), (28, 40), (35, 50))
    stomach_wall: float = 3.5
    stomach_gas: Range = (0.1, 0.45)  # depth of the anterior gas cap, fraction of the AP diameter
    colon_p: float = 0.5  # probability of a gas-filled splenic flexure
    colon_x: Range = (60, 90)
    colon_y: Range = (-70, -40)
    colon_depth: Range = (50, 80)  # centre below the left dome
    colon_axes: tuple[Range, Range, Range] = ((15, 25), (15, 22), (20, 35))
    colon_gas: float = 0.6  # gas inside this normalised squared radius


BODY = BodyRanges()
ABDOMEN = AbdomenRanges()


def cavity_fields(pt: Patient) -> None:
    """Per-side cavity masks ``side[s]``, the whole ``cavity`` (incl. the upper abdomen), the diaphragm height
    ``zd[i, j]`` (mm) and ``above`` (voxels above the diaphragm), all bool ``[i, j, k]`` unless noted."""
    g, th = pt.g, pt.th
    c = th.at(g.z)
    sides = {}
    for s in (-1, 1):
        tx = superellipse_term(g.x, s * c["xs"], c[f"ax{s}"], c[f"ax{s}"], c["p"])
        ty = superellipse_term(g.y, c["cy"], c["aya"], c["ayp"], c["p"])
        sides[s] = inside_superellipse(tx, ty)
    bx = np.abs(g.x[:, None]) < c["xs"][None, :]
    by = (g.y[:, None] > (c["cy"] - c["aya"])[None, :]) & (g.y[:, None] < (c["cy"] + c["ayp"])[None, :])
    pt.side = sides
    pt.cavity = sides[-1] | sides[1] | (bx[:, None, :] & by[None, :, :])
    # below the lung base the cavity keeps the base cross-section (upper abdomen)
    base = g.z < 0
    if base.any():
        c0 = th.at(np.zeros(1))
        tx = {s: superellipse_term(g.x, s * c0["xs"], c0[f"ax{s}"], c0[f"ax{s}"], c0["p"])[:, 0] for s in (-1, 1)}
        ty = superellipse_term(g.y, c0["cy"], c0["aya"], c0["ayp"], c0["p"])[:, 0]
        sl2 = (np.minimum(tx[-1][:, None], tx[1][:, None]) + ty[None, :]) < 1.0
        pt.cavity[:, :, base] |= sl2[:, :, None]
    # diaphragm height zd[i, j]
    X, Y = g.x[:, None].astype(float), g.y[None, :].astype(float)
    zd = np.full((len(g.x), len(g.y)), -np.inf)
    for s in (-1, 1):
        D = pt.D[s]
        lx = th.E[s] - pt.xd[s]
        ly = np.where(Y > pt.yd, th.y_post - pt.yd, pt.yd - (th.cy0 - th.aya0))
        ky = np.where(Y > pt.yd, 1.0, pt.ky_ant)  # posterior recess deepest
        zs = D - D * pt.kx * ((X - s * pt.xd[s]) / lx) ** 2 - D * ky * ((Y - pt.yd) / ly) ** 2
        zd = np.maximum(zd, zs)
    # soft floor (softplus at z = -8 mm, 6 mm wide) so the recesses end in a rounded sliver
    zd = -8 + 6 * np.log1p(np.exp((zd + 8) / 6))
    pt.zd = zd.astype(np.float32)
    pt.above = g.z[None, None, :] > pt.zd[:, :, None]


def paint_body(pt: Patient) -> None:
    """Scanner table, skin, subcutaneous fat, chest-wall muscle and breasts."""
    B, g, r = BODY, pt.g, pt.r
    z = g.z.astype(float)
    u = z / pt.H
    sh = pt.shoulder * smoothstep(u, B.shoulder_from, 1.0)
    front = pt.y_front0 - pt.belly * smoothstep(-z, -pt.D[1], -pt.D[1] + B.belly_span)
    yc = (front + pt.y_back) / 2
    by = (pt.y_back - front) / 2
    # table: curved couch top under the back, open at the ends
    R = r.uniform(*B.table_radius)
    yt0 = pt.y_back + r.uniform(*B.table_gap)
    t_shell, t_core, hw = r.uniform(*B.table_shell), r.uniform(*B.table_core), r.uniform(*B.table_half_width)
    X, Y = g.x[:, None], g.y[None, :]
    top = yt0 - X**2 / (2 * R)
    inside_w = np.abs(X) < hw
    shell = inside_w & (((Y >= top) & (Y < top + t_shell)) | ((Y >= top + t_shell + t_core) & (Y < top + 2 * t_shell + t_core)))
    core = inside_w & (Y >= top + t_shell) & (Y < top + t_shell + t_core) & (np.abs(X) < hw - 1)
    np.copyto(pt.lab, TABLE_SHELL, where=shell[:, :, None])
    np.copyto(pt.lab, TABLE_FOAM, where=core[:, :, None])
    # body layers (skin, fat, muscle): nested superellipses
    for label, dl, da, dp in (
        (SKIN, 0.0, 0.0, 0.0),
        (FAT, pt.skin, pt.skin, pt.skin),
        (MUSCLE, pt.skin + pt.fat_lat, pt.skin + pt.fat_ant, pt.skin + pt.fat_post),
    ):
        ax_r = pt.Bx[-1] + sh - dl
        ax_l = pt.Bx[1] + sh - dl
        tx = np.where(g.x[:, None] < 0,
                      (np.abs(g.x[:, None]) / ax_r[None, :]) ** pt.p_lat,
                      (np.abs(g.x[:, None]) / ax_l[None, :]) ** pt.p_lat).astype(np.float32)  # fmt: skip
        dy = g.y[:, None] - yc[None, :]
        ty = np.where(dy < 0, (np.abs(dy) / (by - da)[None, :]) ** pt.p_ant,
                      (np.abs(dy) / (by - dp)[None, :]) ** pt.p_post).astype(np.float32)  # fmt: skip
        np.copyto(pt.lab, label, where=inside_superellipse(tx, ty))
    # breasts (supine: broad, flattened mounds blending into the anterior chest)
    if pt.breast > 0:
        zb = pt.H * r.uniform(*B.breast_height)
        kb = int(np.argmin(np.abs(z - zb)))
        for s in (-1, 1):
            axes = np.array([r.uniform(*B.breast_half_width),
                             B.breast_depth_min + B.breast_depth_gain * pt.breast,
                             r.uniform(*B.breast_half_length)])
            c = np.array([s * r.uniform(*B.breast_x), front[kb] + B.breast_centre_depth * axes[1], zb])
            sl, q = ellipsoid(g, c, axes)
            if sl is None:
                continue
            pt.paint(sl, q < 1, SKIN, lut((AIR,)))
            pt.paint(sl, q < (1 - pt.skin / axes[1]) ** 2, FAT, lut((AIR, SKIN)))
            gl = (q < 0.5) & (smooth_field(r, g, sl, B.gland_cell) > B.gland_threshold)
            pt.paint(sl, gl, GLAND, lut((AIR, SKIN, FAT)))


def paint_abdomen(pt: Patient) -> None:
    """Diaphragm muscle, then liver, kidneys, spleen, stomach (gas cap) and colon below it."""
    A, r, g = ABDOMEN, pt.r, pt.g
    below = ~pt.above
    band = g.z[None, None, :] > (pt.zd - pt.t_diaph)[:, :, None]
    np.copyto(pt.lab, MUSCLE, where=pt.cavity & below & band)
    abd = pt.cavity & ~band
    np.copyto(pt.lab, FAT, where=abd)
    # liver: right, left lobe reaching across anteriorly
    X, Y = g.x[:, None], g.y[None, :]
    edge = (A.liver_edge_x + A.liver_reach * np.clip((-Y - A.liver_reach_start) / A.liver_reach_span, 0, 1)
            + r.uniform(*A.liver_edge_jitter))
    liver2d = X < edge
    np.copyto(pt.lab, LIVER, where=abd & liver2d[:, :, None])
    # kidneys (upper poles in the lowest slices)
    for s in (-1, 1):
        c = np.array([s * r.uniform(*A.kidney_x), float(pt.y_vb(0)) + r.uniform(*A.kidney_y),
                      -r.uniform(*A.kidney_depth) + (A.left_kidney_higher if s > 0 else 0)])
        sl, q = ellipsoid(g, c, np.array(A.kidney_axes))
        if sl is not None:
            pt.paint(sl, (q < A.perirenal_fat) & abd[sl], FAT)
            pt.paint(sl, (q < 1) & abd[sl], KIDNEY)
    # spleen (posterolateral left)
    ang = np.deg2rad(r.uniform(*A.spleen_angle_deg))
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    c = np.array([r.uniform(*A.spleen_x), r.uniform(*A.spleen_y), pt.D[1] - r.uniform(*A.spleen_depth)])
    sl, q = ellipsoid(g, c, np.array([r.uniform(*v) for v in A.spleen_axes]), rot)
    if sl is not None:
        pt.paint(sl, (q < 1) & abd[sl], SPLEEN)
    # stomach with a gas cap on the anterior (non-dependent) side
    c = pt.stomach_c
    ax = np.array([r.uniform(*v) for v in A.stomach_axes])
    sl, q = ellipsoid(g, c, ax)
    if sl is not None:
        inside = (q < 1) & abd[sl]
        pt.paint(sl, inside, STOMACH)
        inner = (q < (1 - A.stomach_wall / ax.min()) ** 2) & inside
        pt.paint(sl, inner, FLUID)
        _, Y3, _ = g.coords(sl)
        level = c[1] - ax[1] * (1 - 2 * r.uniform(*A.stomach_gas))
        pt.paint(sl, inner & (Y3 < level), GAS)
    # colon (splenic flexure) with gas, sometimes
    if r.random() < A.colon_p:
        c = np.array([r.uniform(*A.colon_x), r.uniform(*A.colon_y), pt.D[1] - r.uniform(*A.colon_depth)])
        sl, q = ellipsoid(g, c, np.array([r.uniform(*v) for v in A.colon_axes]))
        if sl is not None:
            pt.paint(sl, (q < 1) & abd[sl], STOMACH)
            pt.paint(sl, (q < A.colon_gas) & abd[sl], GAS)

