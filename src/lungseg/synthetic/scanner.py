"""The scanner: acquisition settings, world placement, and turning the label volume into HU.

:func:`sample_scanner` draws the matrix, pixel spacing, slice thickness, scan range, table
position, kVp, kernel, noise and blur, and sets ``geometry`` (world LPS), ``g`` (the patient-frame
:class:`.Grid`), ``world_off`` (patient frame -> world LPS, mm) and ``scanner`` (the settings dict
that ends up in ``Phantom.info``). :func:`to_hu` maps labels to the patient's HU, adds lung
texture, thin vessels as partial volume, pathology overlays, then noise, blur and clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lungseg.io.geometry import Geometry
from lungseg.synthetic.labels import LUNG, VESSEL
from lungseg.synthetic.shapes import Grid, Range, smooth_field, smoothstep

if TYPE_CHECKING:
    from lungseg.synthetic.phantom import Patient

HU_MIN, HU_MAX = -1024.0, 3071.0

#: matrix -> (slice thicknesses in mm, their probabilities)
SLICE_THICKNESS_MM = {512: ([3.0, 5.0], [0.25, 0.75]), 384: ([2.5, 3.0, 5.0], [0.25, 0.5, 0.25]),
                      320: ([2.0, 2.5, 3.0], [0.15, 0.4, 0.45]),
                      256: ([1.25, 2.0, 2.5, 3.0], [0.06, 0.24, 0.4, 0.3])}  # fmt: skip


@dataclass(frozen=True)
class ScannerRanges:
    """Acquisition choices and per-patient uniform ranges (mm unless noted)."""

    matrices: tuple[int, ...] = (512, 384, 320, 256)  # in-plane matrix before the max_matrix cap
    matrix_p: tuple[float, ...] = (0.12, 0.18, 0.22, 0.48)  # their probabilities
    fovs: tuple[int, ...] = (360, 380, 400, 420, 450, 480, 500)  # the smallest that fit are drawn from
    fov_max: float = 500.0  # when none fits
    fov_margin_lr: float = 20  # body width + this must fit
    fov_margin_ap: float = 60  # body depth + twice the belly + this must fit
    margin_below: Range = (12, 30)  # scan range below the lowest lung point
    margin_above: Range = (8, 25)  # scan range above the apex
    min_margin_below: float = 12.0
    min_margin_above: float = 8.0
    scan_length: Range = (250, 330)  # the margins are stretched or cut to keep the range in here
    thicknesses: tuple[float, ...] = (1.25, 2.0, 2.5, 3.0, 5.0)  # thicker slices when over the disk budget
    disk_budget_bytes: float = 27e6  # int16 voxels per series
    centre_x: Range = (-10, 10)  # reconstruction centre in world LPS
    centre_y: Range = (-10, 25)
    shift_x: Range = (-20, 20)  # patient offset from the reconstruction centre
    shift_y: Range = (-15, 25)
    fov_edge: float = 5  # the body stays this far inside the field of view (y)
    first_slice_z: Range = (-420, -180)  # world z of the first slice (rounded to 0.1 mm)
    kvps: tuple[float, ...] = (100.0, 120.0, 120.0, 120.0, 140.0)  # drawn uniformly: 120 kVp is 3x as likely
    kernels: tuple[str, ...] = ("STANDARD", "B30f", "B31f", "FC13", "SOFT")
    noise_sd_base_hu: float = 10  # noise SD = (base + spread * u ** exponent) * size factor, u ~ U(0, 1)
    noise_sd_spread_hu: float = 26
    noise_exponent: float = 1.5
    noise_ref_half_width: float = 150  # noise scales with sqrt(body half-width / this)
    noise_sd_clip_hu: Range = (10, 40)
    blur_sigma_vox: Range = (0.5, 1.0)  # in-plane system blur (Gaussian SD, voxels)
    blur_sigma_z_vox: Range = (0.3, 0.6)
    lung_texture_mm: float = 20.0  # correlation length of the parenchyma texture
    tube_current_boost: float = 0.25  # extra noise towards the apex (shoulders), fraction
    tube_current_from: float = 0.75  # fraction of H where the boost starts (full at H)


SCANNER = ScannerRanges()


def sample_scanner(pt: Patient) -> None:
    """Draw the acquisition of ``pt`` and set ``geometry``, ``g``, ``world_off`` and ``scanner``."""
    S, r = SCANNER, pt.r
    n = int(r.choice(S.matrices, p=S.matrix_p))
    options = SLICE_THICKNESS_MM[n]
    dz = float(r.choice(options[0], p=options[1]))
    n = min(n, pt.max_matrix)
    width = 2 * max(pt.Bx.values()) + 2 * pt.shoulder
    depth = pt.y_back - pt.y_front0 + 2 * pt.belly + S.fov_margin_ap
    fovs = [f for f in S.fovs if f >= max(width + S.fov_margin_lr, depth)]
    fov = float(r.choice(fovs)) if fovs else S.fov_max
    ps = round(fov / n, 4)
    lo_margin, hi_margin = r.uniform(*S.margin_below), r.uniform(*S.margin_above)
    extent = pt.H + lo_margin + hi_margin
    shortest, longest = S.scan_length
    if extent < shortest:
        lo_margin += (shortest - extent) / 2
        hi_margin += (shortest - extent) / 2
    elif extent > longest:
        cut = extent - longest
        lo_margin = max(S.min_margin_below, lo_margin - cut / 2)
        hi_margin = max(S.min_margin_above, hi_margin - cut / 2)
    thick = S.thicknesses
    while n * n * 2 * (pt.H + lo_margin + hi_margin) / dz > S.disk_budget_bytes and dz < thick[-1]:
        dz = next(t for t in thick if t > dz)
    nk = int(round((pt.H + lo_margin + hi_margin) / dz)) + 1
    # world placement: reconstruction centre near isocentre, patient shifted on the table
    centre = np.array([r.uniform(*S.centre_x), r.uniform(*S.centre_y)])
    half = ps * (n - 1) / 2
    y_lo, y_hi = pt.y_front0 - pt.belly, pt.y_back
    off = np.array([centre[0] + r.uniform(*S.shift_x), centre[1] + r.uniform(*S.shift_y) - (y_lo + y_hi) / 2])
    lo_w, hi_w = centre[1] - half + S.fov_edge, centre[1] + half - S.fov_edge
    if y_hi + off[1] > hi_w:
        off[1] -= y_hi + off[1] - hi_w
    if y_lo + off[1] < lo_w:
        off[1] += lo_w - (y_lo + off[1])
    z0_world = round(r.uniform(*S.first_slice_z), 1)
    pt.world_off = np.array([off[0], off[1], z0_world + lo_margin])
    ipp = np.round(np.array([centre[0] - half, centre[1] - half, z0_world]), 3)
    pt.geometry = Geometry(
        shape=(n, n, nk), spacing_mm=(ps, ps, dz), origin_lps_mm=tuple(float(v) for v in ipp)
    )
    pt.g = Grid((n, n, nk), (ps, ps, dz), ipp - pt.world_off)
    pt.scanner = {
        "matrix": n, "pixel_spacing_mm": ps, "slice_thickness_mm": dz, "n_slices": nk, "fov_mm": fov,
        "kvp": float(r.choice(S.kvps)),
        "kernel": str(r.choice(S.kernels)),
        "noise_sd_hu": float(np.clip((S.noise_sd_base_hu + S.noise_sd_spread_hu * r.uniform() ** S.noise_exponent)
                                     * np.sqrt(max(pt.Bx.values()) / S.noise_ref_half_width),
                                     *S.noise_sd_clip_hu)),
        "blur_sigma_vox": float(r.uniform(*S.blur_sigma_vox)),
        "blur_sigma_z_vox": float(r.uniform(*S.blur_sigma_z_vox)),
    }  # fmt: skip


def to_hu(pt: Patient) -> np.ndarray:
    """The finished CT: float32 HU ``[i, j, k]`` (integers, noise and blur applied, clipped)."""
    S, g, r = SCANNER, pt.g, pt.r
    hu_lut = np.zeros(256, dtype=np.float32)
    for lab, v in pt.hu_of.items():
        hu_lut[lab] = v
    hu_lut[LUNG] = pt.lung_hu
    hu = hu_lut[pt.lab]
    # lung: gravity gradient (dependent = posterior denser) and smooth texture
    for s in (-1, 1):
        if not pt.lung[s].any():
            continue
        bb = pt.lung_bbox(s)
        y = g.y[bb[1]]
        grad = pt.grav * (np.clip((y - y.min()) / max(float(y.max() - y.min()), 1.0), 0, 1) - 0.5)
        add = grad[None, :, None].astype(np.float32) + pt.tex_sd * smooth_field(r, g, bb, S.lung_texture_mm)
        view = hu[bb]
        m = pt.lab[bb] == LUNG
        view[m] += add[m]
    # thin vessels: partial-volume fractions splatted trilinearly onto the grid
    if pt.vessel_deposits:
        pos = (np.vstack([p for p, _ in pt.vessel_deposits]) - g.lo) / g.sp
        w = np.concatenate([w for _, w in pt.vessel_deposits])
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
        ok = pt.lab.ravel()[uniq] == LUNG
        uniq, frac = uniq[ok], frac[ok]
        flat_hu = hu.ravel()
        flat_hu[uniq] += frac * (pt.hu_of[VESSEL] - flat_hu[uniq])
    # pathology overlays (weights in [0, 1] blend towards a target HU)
    for sl, w, target, allow in pt.overlays:
        view = hu[sl]
        m = (w > 0) & allow[pt.lab[sl]]
        view[m] += w[m] * (np.float32(target) - view[m])
    # scanner: correlated noise (white noise then the system blur) and clipping
    sx, sz = pt.scanner["blur_sigma_vox"], pt.scanner["blur_sigma_z_vox"]
    # variance kept by the blur (kernel cut at 4 SD, as ndimage does), so the blurred noise has noise_sd_hu
    gain = 1.0
    for s_ in (sx, sx, sz):
        rad = int(4 * s_ + 0.5)
        k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / s_) ** 2)
        k /= k.sum()
        gain *= float((k**2).sum())
    sd = pt.scanner["noise_sd_hu"] / np.sqrt(gain)
    # tube-current modulation: more noise towards the shoulders
    zmod = 1 + S.tube_current_boost * smoothstep(g.z.astype(float), S.tube_current_from * pt.H, pt.H)
    noise = r.standard_normal(g.shape, dtype=np.float32)
    noise *= (sd * zmod).astype(np.float32)[None, None, :]
    hu += noise
    del noise
    hu = ndimage.gaussian_filter(hu, sigma=(sx, sx, sz), mode="nearest")
    np.rint(hu, out=hu)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return hu

