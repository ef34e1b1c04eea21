"""Synthetic-to-real gap: what real CTs show and the phantom does not, applied to a drawn phantom.

Each effect has its own probability (``synthesize.realism``; all 0 = off, and then the
cohort is byte-identical to one written without this module) and draws from its own
generator seeded with ``(seed, patient, 97)``, so turning one effect on or off never changes
the anatomy of any patient. Arrays are ``[i, j, k]`` = (column: patient right -> left, row:
anterior -> posterior, slice: inferior -> superior) on the phantom's HFS grid.

Effects (in the order applied):

* ``bases_only_p``: an abdominal CT that holds only the lung bases. The volume is extended
  downwards (the slab below the lungs mirrored, 100-250 mm) and cut 10-35% of the lung height
  above the lowest lung slice; bowel gas is always added to it.
* ``apex_cut_p``: the scan starts below the lung apex (5-25% of the lung height cut off).
* ``bowel_gas_p``: 3-12 gas pockets (5-25 mm) in the soft tissue under the diaphragm, at
  least 6 mm from the lungs: air that is not lung.
* ``arms_p``: both arms beside the chest (muscle, fat rim, skin, humerus), 0-30 mm from it.
* ``fissures_p``: the major fissures (and the right minor fissure), thin planes of -300 to
  -100 HU through the lung. They stay lung in the masks.
* ``streaks_p``: beam-hardening streaks: dark/bright line pairs through the densest bone
  of each slice, slowly varying along the slices.
* ``low_dose_p``: extra noise with a band-pass (ramp-like) texture, 1.8-3x the scanner noise.
* ``fov_padding_p``: -3024 or -2048 HU outside the reconstruction circle.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lungseg.io.geometry import Geometry

if TYPE_CHECKING:
    from lungseg.config import RealismConfig
    from lungseg.synthetic import Phantom

LUNGS = ("Lung_R", "Lung_L")


def _lung_k_range(masks: dict[str, np.ndarray]) -> tuple[int, int]:
    """First and last slice holding lung."""
    ks = np.flatnonzero(np.any(masks["Lung_R"] | masks["Lung_L"], axis=(0, 1)))
    return int(ks[0]), int(ks[-1])


def _body(hu: np.ndarray) -> np.ndarray:
    """Body mask per slice: tissue above -500 HU with holes (lungs, gas) filled, table excluded by size."""
    body = hu > -500
    out = np.zeros_like(body)
    for k in range(hu.shape[2]):
        lab, n = ndimage.label(body[:, :, k])
        if n:
            sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
            out[:, :, k] = ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    return out


def _crop_k(ph: Phantom, lo: int, hi: int) -> Phantom:
    """Keep slices ``lo..hi-1``; the origin moves with the first kept slice."""
    g = ph.geometry
    origin = np.asarray(g.origin_lps_mm, float) + g.direction_matrix[:, 2] * g.spacing_mm[2] * lo
    geometry = Geometry((g.shape[0], g.shape[1], hi - lo), g.spacing_mm, tuple(float(v) for v in np.round(origin, 3)),
                        g.direction)
    masks = {k: np.ascontiguousarray(m[:, :, lo:hi]) for k, m in ph.masks.items()}
    return dataclasses.replace(ph, hu=np.ascontiguousarray(ph.hu[:, :, lo:hi]), geometry=geometry, masks=masks)


def _extend_down(ph: Phantom, n_new: int) -> Phantom:
    """Add ``n_new`` slices below the volume by mirroring the slab below the lungs (no lung in it)."""
    k_lo, _ = _lung_k_range(ph.masks)
    slab = max(k_lo, 2)
    period = 2 * slab
    src = [(slab - 1 - (d % period)) if d % period < slab else (d % period - slab) for d in range(n_new)]
    src = np.asarray(src[::-1])  # new slice n_new-1 sits just below slice 0
    hu = np.concatenate([ph.hu[:, :, src], ph.hu], axis=2)
    masks = {k: np.concatenate([np.zeros_like(m[:, :, src]), m], axis=2) for k, m in ph.masks.items()}
    g = ph.geometry
    origin = np.asarray(g.origin_lps_mm, float) - g.direction_matrix[:, 2] * g.spacing_mm[2] * n_new
    geometry = Geometry((g.shape[0], g.shape[1], g.shape[2] + n_new), g.spacing_mm,
                        tuple(float(v) for v in np.round(origin, 3)), g.direction)
    return dataclasses.replace(ph, hu=hu, geometry=geometry, masks=masks)


def _ellipsoid(shape: tuple[int, ...], centre: np.ndarray, radii_vox: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    lo = np.maximum(np.floor(centre - radii_vox).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radii_vox).astype(int) + 1, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    grids = np.ogrid[sl]
    d = sum(((gr - c) / r) ** 2 for gr, c, r in zip(grids, centre, radii_vox))
    return sl, d <= 1.0


def _bowel_gas(ph: Phantom, r: np.random.Generator, k_max: int) -> tuple[np.ndarray, int]:
    """Gas pockets in abdominal soft tissue at slices <= ``k_max``, away from the lungs."""
    hu, g = ph.hu, ph.geometry
    sp = np.asarray(g.spacing_mm)
    lungs = ph.masks["Lung_R"] | ph.masks["Lung_L"]
    body = _body(hu[:, :, : k_max + 1])
    inner = ndimage.binary_erosion(body, iterations=max(1, int(round(12 / sp[0]))), border_value=0)
    cand = np.argwhere(inner & (hu[:, :, : k_max + 1] > -200) & (hu[:, :, : k_max + 1] < 200))
    placed = 0
    inner_full = _pad_to(inner, hu.shape)  # once: the pockets below index into it
    if len(cand) == 0:
        return hu, 0
    for _ in range(int(r.integers(3, 13))):
        c = cand[int(r.integers(len(cand)))].astype(float)
        radii = r.uniform(5, 25, 3) * np.array([1, 1, r.uniform(0.6, 1.4)]) / sp
        sl, inside = _ellipsoid(hu.shape, c, radii)
        margin = tuple(slice(max(s.start - int(6 / sp[a]) - 1, 0), s.stop + int(6 / sp[a]) + 1) for a, s in enumerate(sl))
        if lungs[margin].any():
            continue
        inside &= inner_full[sl]
        soft = ndimage.gaussian_filter(inside.astype(np.float32), sigma=0.7)
        gas = np.float32(-1000 + r.normal(0, 15))
        hu[sl] += soft * (gas - hu[sl])
        placed += 1
    return hu, placed


def _pad_to(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[:, :, : mask.shape[2]] = mask
    return out


def _arms(hu: np.ndarray, r: np.random.Generator, sp: np.ndarray, noise_sd: float) -> np.ndarray:
    """Both arms beside the chest: fat-rimmed muscle ellipses with a humerus, along every slice."""
    body = _body(hu)
    cols = np.flatnonzero(body.any(axis=(1, 2)))
    rows = np.flatnonzero(body.any(axis=(0, 2)))
    if len(cols) == 0:
        return hu
    ni, nj, nk = hu.shape
    y_c = 0.5 * (rows[0] + rows[-1]) + r.uniform(-20, 20) / sp[1]
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    for side, edge in ((-1, cols[0]), (1, cols[-1])):
        a, b = r.uniform(38, 55) / sp[0], r.uniform(42, 60) / sp[1]
        x_c = edge + side * (r.uniform(0, 30) / sp[0] + a)
        d = ((ii - x_c) / a) ** 2 + ((jj - y_c) / b) ** 2
        arm = (d <= 1.0) & ~body[:, :, nk // 2]
        if not arm.any():
            continue
        fat = arm & (d > (1 - r.uniform(6, 14) / (a * sp[0])) ** 2)
        bone_r = r.uniform(10, 13) / sp[0]
        db = np.hypot(ii - x_c - side * 0.2 * a, jj - y_c) / bone_r
        plane = np.where(arm, 45.0, np.nan)
        plane[fat] = -100.0
        plane[arm & (db <= 1.0)] = 850.0
        plane[arm & (db <= 0.7)] = 230.0
        plane[arm & (d > 0.97)] = 25.0
        m = np.isfinite(plane)
        values = plane[m].astype(np.float32)
        for k in range(nk):
            view = hu[:, :, k]
            free = m & ~body[:, :, k]
            view[free] = values[free[m]] + r.normal(0, noise_sd, int(free.sum())).astype(np.float32)
    return hu


def _fissures(hu: np.ndarray, masks: dict[str, np.ndarray], r: np.random.Generator, sp: np.ndarray) -> np.ndarray:
    """Major fissures (both lungs) and the right minor fissure as thin, brighter planes inside the lung."""
    for name, minor in (("Lung_R", True), ("Lung_L", False)):
        lung = masks[name]
        idx = np.argwhere(lung)
        if len(idx) < 100:
            continue
        lo, hi = idx.min(0), idx.max(0) + 1
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        x, y, z = (np.arange(s.start, s.stop)[sh] * sp[a]
                   for a, (s, sh) in enumerate(zip(sl, (np.s_[:, None, None], np.s_[None, :, None], np.s_[None, None, :]))))
        c = (lo + hi) / 2 * sp
        planes = []
        tilt = np.deg2rad(r.uniform(40, 60))  # major fissure: posterior-superior to anterior-inferior
        planes.append((np.array([0.0, np.sin(tilt), np.cos(tilt)]) * np.array([1, -1, 1]), c + r.uniform(-10, 10, 3)))
        if minor:
            planes.append((np.array([0.0, 0.15, 1.0]) / np.hypot(0.15, 1.0), c + np.array([0, -15, 15]) + r.uniform(-8, 8, 3)))
        view = hu[sl]
        inside = lung[sl]
        for normal, point in planes:
            dist = normal[0] * (x - point[0]) + normal[1] * (y - point[1]) + normal[2] * (z - point[2])
            w = np.exp(-0.5 * (dist / 0.6) ** 2).astype(np.float32)
            if minor and normal[1] > 0:  # the minor fissure runs only in the anterior half
                w = w * (y < c[1])
            w = np.where(inside, w, 0).astype(np.float32)
            target = np.float32(r.uniform(-300, -100))
            view += w * (target - view)
    return hu


def _streaks(hu: np.ndarray, r: np.random.Generator, sp: np.ndarray) -> np.ndarray:
    """Dark/bright line pairs through the densest bone of each slice (beam hardening)."""
    ni, nj, nk = hu.shape
    ii, jj = np.meshgrid(np.arange(ni) * sp[0], np.arange(nj) * sp[1], indexing="ij")
    angles = r.uniform(0, np.pi, int(r.integers(2, 7)))
    amp, width = r.uniform(30, 120), r.uniform(1.0, 3.0)
    phase = r.uniform(0, 2 * np.pi)
    body = hu > -500
    for k in range(nk):
        dense = hu[:, :, k] > 700
        if dense.sum() < 20:
            continue
        ci, cj = np.argwhere(dense).mean(0) * sp[:2]
        add = np.zeros((ni, nj), np.float32)
        for n, a in enumerate(angles):
            d = (ii - ci) * np.sin(a) - (jj - cj) * np.cos(a)
            s = amp * (0.6 + 0.4 * np.sin(phase + 0.05 * k + n))
            add += (-s * np.exp(-0.5 * (d / width) ** 2) + 0.5 * s * np.exp(-0.5 * ((np.abs(d) - 3 * width) / width) ** 2)).astype(np.float32)
        hu[:, :, k] += np.where(body[:, :, k], add, 0)
    return hu


def _low_dose(hu: np.ndarray, r: np.random.Generator, noise_sd: float) -> np.ndarray:
    """Band-pass (ramp-like NPS) noise adding up to 1.8-3x the scanner's noise SD."""
    factor = r.uniform(1.8, 3.0)
    extra = noise_sd * np.sqrt(factor**2 - 1)
    white = r.standard_normal(hu.shape, dtype=np.float32)
    band = ndimage.gaussian_filter(white, (0.7, 0.7, 0.4)) - ndimage.gaussian_filter(white, (2.5, 2.5, 0.4))
    band *= np.float32(extra / max(float(band.std()), 1e-6))
    return hu + band


def _fov_padding(hu: np.ndarray, r: np.random.Generator) -> np.ndarray:
    ni, nj, _ = hu.shape
    ii, jj = np.meshgrid(np.arange(ni) - (ni - 1) / 2, np.arange(nj) - (nj - 1) / 2, indexing="ij")
    outside = np.hypot(ii, jj) > min(ni, nj) / 2
    hu[outside, :] = np.float32(r.choice([-3024.0, -2048.0]))
    return hu


def apply_realism(ph: Phantom, cfg: RealismConfig, rng: np.random.Generator) -> Phantom:
    """Apply the effects that ``cfg`` draws for this patient; ``info["realism"]`` lists them.

    The generator is used in a fixed order (one uniform draw per effect first), so each
    patient's set of effects does not depend on which effects another patient got.
    """
    draws = {name: rng.uniform() for name in (
        "bases_only", "apex_cut", "bowel_gas", "arms", "fissures", "streaks", "low_dose", "fov_padding")}
    on = {name for name, u in draws.items() if u < getattr(cfg, f"{name}_p")}
    if "bases_only" in on:
        on.discard("apex_cut")
    if not on:
        return dataclasses.replace(ph, info={**ph.info, "realism": []})
    sp = np.asarray(ph.geometry.spacing_mm, float)
    noise_sd = float(ph.info.get("noise_sd_hu", 20.0))
    ph = dataclasses.replace(ph, hu=np.asarray(ph.hu, np.float32).copy())
    if "bases_only" in on:
        k_lo, k_hi = _lung_k_range(ph.masks)
        n_new = int(round(rng.uniform(100, 250) / sp[2]))
        ph = _extend_down(ph, n_new)
        k_lo += n_new
        k_hi += n_new
        top = k_lo + max(2, int(round(rng.uniform(0.10, 0.35) * (k_hi - k_lo))))
        ph = _crop_k(ph, 0, min(top + 1, ph.hu.shape[2]))
        on.add("bowel_gas")
    if "apex_cut" in on:
        k_lo, k_hi = _lung_k_range(ph.masks)
        cut = max(1, int(round(rng.uniform(0.05, 0.25) * (k_hi - k_lo))))
        ph = _crop_k(ph, 0, k_hi + 1 - cut)
    hu = ph.hu
    if "bowel_gas" in on:
        k_lo, k_hi = _lung_k_range(ph.masks)
        hu, placed = _bowel_gas(ph, rng, k_lo + int(0.35 * (k_hi - k_lo)))
        if not placed:
            on.discard("bowel_gas")
    if "arms" in on:
        hu = _arms(hu, rng, sp, noise_sd)
    if "fissures" in on:
        hu = _fissures(hu, ph.masks, rng, sp)
    if "streaks" in on:
        hu = _streaks(hu, rng, sp)
    if "low_dose" in on:
        hu = _low_dose(hu, rng, noise_sd)
    np.rint(hu, out=hu)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    if "fov_padding" in on:
        hu = _fov_padding(hu, rng)
    names = [n for n in draws if n in on]
    v = ph.geometry.voxel_volume_ml
    info = {**ph.info, "realism": names, "n_slices": int(hu.shape[2]),
            "lung_r_ml": round(float(ph.masks["Lung_R"].sum()) * v, 1),
            "lung_l_ml": round(float(ph.masks["Lung_L"].sum()) * v, 1)}
    return dataclasses.replace(ph, hu=hu, info=info)
