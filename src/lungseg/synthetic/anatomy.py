"""The patient's body plan, drawn before the CT grid exists (so it never depends on the grid).

Sets on the :class:`~lungseg.synthetic.phantom.Patient` (all mm unless noted):

- ``H`` lung height (lowest lung point to apex), ``th`` the :class:`.Thorax` cavity,
  ``z_c`` carina height;
- diaphragm: ``D[s]`` dome height of side ``s`` (-1 right, +1 left), ``xd[s]``, ``yd`` dome
  peak position, ``kx``, ``ky_ant`` lateral/anterior fall-off (fractions of ``D``),
  ``t_diaph`` muscle thickness;
- spine: ``rvx``, ``rvy`` vertebral-body semi-axes, ``kyph`` kyphosis, ``vper`` vertebra +
  disc height, ``vdisc`` disc height, ``vphase`` level offset, ``rc`` canal radius,
  ``rcord`` cord radius, ``scol`` scoliosis;
- chest wall and body: ``habitus`` (0 slim .. 1 obese), ``wall`` ribs + intercostals,
  ``m_lat``/``m_ant`` muscle, ``fat_lat``/``fat_ant``/``fat_post`` subcutaneous fat, ``skin``,
  ``back`` back muscles, ``shoulder`` extra half-width at the top, ``belly``, ``female``,
  ``breast`` (0 .. 1), ``p_lat``/``p_ant``/``p_post`` body superellipse exponents, and the
  derived outline ``y_front0``, ``y_back``, ``Bx[s]``;
- ``xm`` mediastinal midline, ``st_t`` sternum thickness;
- lungs: ``lung_hu`` parenchyma HU, ``grav`` gravity gradient (HU), ``tex_sd`` texture SD (HU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lungseg.synthetic.shapes import Range
from lungseg.synthetic.thorax import Thorax

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient


@dataclass(frozen=True)
class AnatomyRanges:
    """Per-patient uniform ranges of the body plan (mm unless noted)."""

    height: Range = (225, 275)  # H: lowest lung point to the apex
    carina_height: Range = (0.55, 0.61)  # fraction of H
    # diaphragm: two domes, each a paraboloid falling off towards the walls
    right_dome_height: Range = (0.25, 0.33)  # fraction of H above the lowest lung point
    left_dome_drop: Range = (0.03, 0.08)  # fraction of H the left dome lies below the right
    dome_x: Range = (45, 65)  # midline to each dome's peak
    dome_y: Range = (-35, -12)  # y of the dome peaks (anterior of the vertebral bodies)
    dome_lateral_fall: Range = (0.7, 0.9)  # fraction of the dome height lost at the lateral wall
    dome_anterior_fall: Range = (0.45, 0.65)  # ... at the anterior wall (posteriorly 1: deepest recess)
    diaphragm_thickness: Range = (3, 5)
    # spine
    vertebra_half_width: Range = (16, 20)  # vertebral-body lateral semi-axis at the apex (+3 at the base)
    vertebra_depth_ratio: Range = (0.75, 0.85)  # AP / lateral semi-axis
    kyphosis: Range = (0, 10)  # posterior bow of the vertebral bodies at mid-height
    vertebra_period: Range = (22, 27)  # height of one vertebra plus its disc
    disc_height: Range = (4, 6)
    canal_radius: Range = (7, 8.5)
    cord_radius: Range = (4.0, 5.0)
    scoliosis: Range = (-4, 4)  # lateral bow at mid-height
    # chest wall and body outline (nested superellipses around the cavity)
    habitus: Range = (0, 1)  # 0 slim .. 1 obese (unitless)
    chest_wall: Range = (10, 13)  # ribs and intercostal muscle outside the cavity
    muscle_lateral: Range = (4, 9)
    muscle_anterior: Range = (8, 22)  # pectoral muscles
    fat_min: float = 3  # subcutaneous fat scale = fat_min + fat_gain * habitus ** fat_exponent * jitter
    fat_gain: float = 32
    fat_exponent: float = 1.6
    fat_jitter: Range = (0.7, 1.2)  # unitless factor
    fat_lateral: Range = (1.0, 1.4)  # factors on the fat scale
    fat_anterior: Range = (0.7, 1.1)
    fat_posterior: Range = (0.4, 0.8)
    skin: Range = (1.5, 2.5)
    back: Range = (42, 58)  # posterior cavity wall to the back muscles' surface
    shoulder: Range = (5, 30)  # extra half-width towards the top of the scan
    belly: Range = (0.0, 1.2)  # anterior abdominal bulge, factor on the fat scale
    female_p: float = 0.45  # probability
    breast_size: Range = (0.2, 1.0)  # unitless 0 .. 1
    exponent_lateral: Range = (2.0, 2.5)  # body superellipse exponents (2 = ellipse, larger = boxier)
    exponent_anterior: Range = (1.9, 2.3)
    exponent_posterior: Range = (3.0, 4.5)  # flat back on the table
    midline_x: Range = (-3, 3)  # mediastinal midline
    sternum_thickness: Range = (9, 13)
    # lung parenchyma (HU)
    lung_hu: Range = (-885, -835)
    gravity_gradient_hu: Range = (25, 80)  # dependent (posterior) minus non-dependent lung
    texture_sd_hu: Range = (6, 14)


ANATOMY = AnatomyRanges()


def sample_anatomy(pt: Patient) -> None:
    """Draw the body plan onto ``pt`` (the attributes listed in the module docstring)."""
    A, r = ANATOMY, pt.r
    pt.H = H = r.uniform(*A.height)
    pt.th = Thorax(r, H)
    pt.z_c = H * r.uniform(*A.carina_height)  # carina
    pt.D = {-1: H * r.uniform(*A.right_dome_height)}
    pt.D[1] = pt.D[-1] - H * r.uniform(*A.left_dome_drop)  # left dome lower
    pt.xd = {s: r.uniform(*A.dome_x) for s in (-1, 1)}
    pt.yd = r.uniform(*A.dome_y)
    pt.kx = r.uniform(*A.dome_lateral_fall)
    pt.ky_ant = r.uniform(*A.dome_anterior_fall)
    pt.t_diaph = r.uniform(*A.diaphragm_thickness)
    # spine
    pt.rvx = r.uniform(*A.vertebra_half_width)
    pt.rvy = pt.rvx * r.uniform(*A.vertebra_depth_ratio)
    pt.kyph = r.uniform(*A.kyphosis)
    pt.vper = r.uniform(*A.vertebra_period)
    pt.vdisc = r.uniform(*A.disc_height)
    pt.vphase = r.uniform(0, pt.vper)
    pt.rc = r.uniform(*A.canal_radius)
    pt.rcord = r.uniform(*A.cord_radius)
    pt.scol = r.uniform(*A.scoliosis)
    # chest wall and body
    pt.habitus = r.uniform(*A.habitus)
    pt.wall = r.uniform(*A.chest_wall)
    pt.m_lat = r.uniform(*A.muscle_lateral)
    pt.m_ant = r.uniform(*A.muscle_anterior)
    fat = A.fat_min + A.fat_gain * pt.habitus**A.fat_exponent * r.uniform(*A.fat_jitter)
    pt.fat_lat = fat * r.uniform(*A.fat_lateral)
    pt.fat_ant = fat * r.uniform(*A.fat_anterior)
    pt.fat_post = fat * r.uniform(*A.fat_posterior)
    pt.skin = r.uniform(*A.skin)
    pt.back = r.uniform(*A.back)
    pt.shoulder = r.uniform(*A.shoulder)
    pt.belly = fat * r.uniform(*A.belly)
    pt.female = r.random() < A.female_p
    pt.breast = r.uniform(*A.breast_size) if pt.female else 0.0
    pt.p_lat = r.uniform(*A.exponent_lateral)
    pt.p_ant = r.uniform(*A.exponent_anterior)
    pt.p_post = r.uniform(*A.exponent_posterior)
    th = pt.th
    pt.y_front0 = th.cy0 - th.aya0 - pt.wall - pt.m_ant - pt.fat_ant - pt.skin
    pt.y_back = th.y_post + pt.back + pt.fat_post + pt.skin
    pt.Bx = {s: th.E[s] + pt.wall + pt.m_lat + pt.fat_lat + pt.skin for s in (-1, 1)}
    pt.xm = r.uniform(*A.midline_x)  # mediastinal midline
    pt.st_t = r.uniform(*A.sternum_thickness)  # sternum thickness
    # lungs
    pt.lung_hu = r.uniform(*A.lung_hu)
    pt.grav = r.uniform(*A.gravity_gradient_hu)
    pt.tex_sd = r.uniform(*A.texture_sd_hu)
