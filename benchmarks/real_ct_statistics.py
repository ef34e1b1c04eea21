"""Image statistics of real chest CTs next to the synthetic training cohort.

Loads each real case (``lungseg.config.DEFAULT_REAL_CT``: CT + lung mask on the CT grid)
and the first ``--max-synthetic`` prepared synthetic pairs (``<case>_ct.nii.gz`` in HU,
``<case>_lungs.nii.gz`` labels > 0 = lung), one at a time, and measures per case (volumes
in canonical RAS order; in-plane statistics on <= 24 axial slices spread over the lung):

* Lung HU: percentiles 5..95 of HU inside the lung mask; the fractions below -950, -910,
  -856 HU (emphysema / low-attenuation thresholds) and above -500 HU (vessels, dense lung);
  the mean lung HU.
* Noise: robust SD (1.4826 x MAD) of the in-plane residual ``HU - Gaussian(HU, 2 mm)``
  inside the lung eroded by 4 mm (noise + parenchymal texture), soft tissue (smoothed HU in
  0..100 inside the body, eroded 4 mm), subcutaneous/other fat (-150..-50) and outside air
  (smoothed HU < -900 outside the body; real scanners clip air at -1024, so it reads low).
* NPS: 2D noise power spectrum of 24 x 24 mm soft-tissue patches (plane-detrended),
  ``NPS = dx dy / (Nx Ny) |FFT|^2``, radially averaged (cycles/mm). ``noise SD`` is the
  patch SD (the NPS integral), ``f_mean`` the power-weighted mean frequency, ``f50`` the
  frequency above the peak where the radial NPS falls to 50 % of its peak.
* Edge: mean HU against the signed in-plane distance to the lung-mask surface (EDT with the
  pixel spacing, +outside); ``rise`` is the 10-90 % distance between the plateaus at
  -10..-6 mm (lung) and +6..+10 mm (wall/mediastinum).
* Layout: FOV (mm), pixel spacing, slice thickness, fraction of voxels outside the
  reconstruction circle (< -1500 HU), body = largest 6-connected component of HU > -500
  (litres), lung volume, lung share of the body's bounding box; in the mid-lung slice (HU >
  -500 opened by an 8 mm square): number of other components >= 5 cm2 beside the trunk (arms down = 2),
  trunk width / lung width, and the left-right extent (mm) of dense voxels posterior to the
  trunk (the couch); scan range above the lung apex and below the lung base (mm).
* Network input (``lungseg.inference.preprocessing`` with the default ``PreprocessConfig`` and
  ``--normalize``: thorax crop, 64^3 resample, HU window -> [0, 1], smoothing, standardisation;
  the README's figures were taken with ``--normalize volume``, the per-crop z-score): crop size (sqrt of the
  in-plane area, mm), lung share of the input, mean and SD of the windowed crop (``w``),
  windowed lung mean, share of non-lung air (w < 0.1, HU < -860), and the mean and SD of
  the standardised lung (what the network sees).

Prints a markdown table (real cases, then synthetic mean +- SD (min..max)); cases with a
pixel spacing > 2 mm (the downsampled COPDGene volume) are starred: their noise, NPS and
edge statistics are not comparable. Writes a figure (lung HU histograms, NPS, edge profiles;
synthetic as mean and 16-84th percentile band) and optionally all numbers as JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/real_ct_statistics.py \
        --synthetic-dir data/interim --max-synthetic 12 --json /tmp/stats.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from lungseg.config import DEFAULT_REAL_CT, PreprocessConfig
from lungseg.evaluation.real_ct import load_scan
from lungseg.inference.preprocessing import (
    canonical_ornt,
    canonical_view,
    preprocess_image,
    preprocess_mask,
    resample_box,
    window_normalize,
)
from lungseg.io.geometry import Geometry
from lungseg.io.nifti import read_nifti

NORMALIZE = ["fixed"]  # set by --normalize

REPO = Path(__file__).resolve().parents[1]
REAL = ("nsclc_001", "nsclc_002", "nsclc_003", "copdgene_10002k")
HIST_EDGES = np.arange(-1024.0, 1.0, 8.0)
NPS_EDGES = np.arange(0.02, 0.53, 0.05)  # > 1 / 24 mm, so each bin holds patch frequencies; no DC
PROFILE_EDGES = np.arange(-10.0, 10.01, 0.5)
PCTS = (5, 15, 25, 50, 75, 95)


def _rsd(x: np.ndarray) -> float:
    """Robust SD (1.4826 x median absolute deviation); NaN for fewer than 100 values."""
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size >= 100 else float("nan")


def _erode(mask: np.ndarray, n: int) -> np.ndarray:
    """In-plane erosion of ``[i, j, k]`` by an ``n x n`` square (separable minimum filter)."""
    return ndimage.minimum_filter(mask.astype(np.uint8), size=(n, n, 1)) > 0 if n > 1 else mask


def _nps(hu: np.ndarray, soft: np.ndarray, ps: float, rng: np.random.Generator) -> dict:
    """Radial NPS (HU^2 mm^2 on NPS_EDGES bins), patch SD, f_mean and f50 of soft-tissue patches."""
    n = max(8, int(round(24.0 / ps)))
    inside = ndimage.minimum_filter(soft.astype(np.uint8), size=(n, n, 1)) > 0  # window centred here fits
    yy, xx = np.mgrid[:n, :n].astype(float)
    design = np.stack([np.ones(n * n), xx.ravel(), yy.ravel()], 1)
    spectra = []
    for k in range(hu.shape[2]):
        centres = np.argwhere(inside[::n, ::n, k]) * n
        for ci, cj in centres[rng.permutation(len(centres))[:8]]:
            p = hu[ci - n // 2 : ci - n // 2 + n, cj - n // 2 : cj - n // 2 + n, k].astype(float)
            if p.shape != (n, n):
                continue
            p = p - (design @ np.linalg.lstsq(design, p.ravel(), rcond=None)[0]).reshape(n, n)
            spectra.append(np.abs(np.fft.fft2(p)) ** 2 * ps * ps / (n * n))
    if not spectra:
        return {"nps": [float("nan")] * (len(NPS_EDGES) - 1), "patches": 0,
                **dict.fromkeys(("sd", "sd_lt025", "f_mean", "f50"), float("nan"))}
    nps = np.mean(spectra, 0)
    f = np.fft.fftfreq(n, ps)
    fr = np.hypot(f[:, None], f[None, :])
    sums = np.histogram(fr, NPS_EDGES, weights=nps)[0]
    counts = np.histogram(fr, NPS_EDGES)[0]
    radial = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    centres_f = 0.5 * (NPS_EDGES[1:] + NPS_EDGES[:-1])
    peak = int(np.nanargmax(radial))
    below = [i for i in range(peak, len(radial)) if np.isfinite(radial[i]) and radial[i] < 0.5 * radial[peak]]
    f50 = float(centres_f[below[0]]) if below else float("nan")
    var = nps / (n * n * ps * ps)  # Parseval: the sum is the variance
    return {"nps": radial.tolist(), "sd": float(var.sum()) ** 0.5,
            "sd_lt025": float(var[fr < 0.25].sum()) ** 0.5, "f_mean": float((fr * nps).sum() / nps.sum()),
            "f50": f50, "patches": len(spectra)}


def _rise(profile: np.ndarray) -> float:
    """10-90 % distance (mm) of a lung -> wall HU profile on PROFILE_EDGES bins."""
    x = 0.5 * (PROFILE_EDGES[1:] + PROFILE_EDGES[:-1])
    ok = np.isfinite(profile)
    x, p = x[ok], profile[ok]
    lo, hi = np.mean(p[x <= -6]), np.mean(p[x >= 6])

    def cross(level: float) -> float:
        i = int(np.argmax(p >= level))
        return float(x[0] if i == 0 else np.interp(level, [p[i - 1], p[i]], [x[i - 1], x[i]]))

    return cross(lo + 0.9 * (hi - lo)) - cross(lo + 0.1 * (hi - lo))


def case_stats(hu0: np.ndarray, lung0: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> dict:
    """All statistics of one case (see the module docstring)."""
    ornt = canonical_ornt(geometry)
    hu, lung = canonical_view(hu0, ornt), canonical_view(lung0 > 0, ornt)
    sx, sy, sz = (float(geometry.spacing_mm[int(a)]) for a in np.argsort(ornt[:, 0]))
    vals = hu[lung].astype(np.float64)
    s: dict = {"fov_mm": hu.shape[0] * sx, "pixel_mm": sx, "slice_mm": sz}
    s.update({f"lung_p{p}": float(v) for p, v in zip(PCTS, np.percentile(vals, PCTS))})
    for t in (-950, -910, -856):
        s[f"lung_below_{-t}"] = float(np.mean(vals < t))
    s["lung_above_500"], s["lung_mean_hu"] = float(np.mean(vals > -500)), float(vals.mean())
    hist = np.histogram(vals, HIST_EDGES, density=True)[0]
    # layout (3D)
    dense = hu > -500
    lab, _ = ndimage.label(dense)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    del lab, dense
    s["pad_frac"] = float(np.mean(hu < -1500))
    e = max(1, int(round(2 * 4.0 / sx)) + 1)  # 8 mm square: erosion / opening by 4 mm
    s["body_l"], s["lung_l"] = (float(m.sum()) * sx * sy * sz / 1e6 for m in (body, lung))
    box = ndimage.find_objects(body.astype(np.uint8))[0]
    s["lung_frac_body_box"] = float(lung.sum()) / float(np.prod([b.stop - b.start for b in box]))
    zs = np.flatnonzero(lung.any(axis=(0, 1)))
    s["z_above_lung_mm"], s["z_below_lung_mm"] = (hu.shape[2] - 1 - zs[-1]) * sz, zs[0] * sz
    mid = int(np.round(np.average(np.arange(hu.shape[2]), weights=lung.sum(axis=(0, 1)))))
    opened = ndimage.binary_opening(hu[:, :, mid] > -500, np.ones((e, e), bool))
    cl, n = ndimage.label(opened)
    areas = np.bincount(cl.ravel())[1:] * sx * sy / 100.0
    trunk = cl == int(np.argmax(areas)) + 1 if n else opened
    s["side_components_mid"] = int(np.sum(areas >= 5.0)) - 1 if n else 0

    def width(m: np.ndarray) -> float:  # left-right extent (mm) of a 2D mask
        return float(np.ptp(np.flatnonzero(m.any(axis=1))) + 1) * sx if m.any() else float("nan")

    s["trunk_over_lung_width"] = width(trunk) / width(lung[:, :, mid])
    post = np.flatnonzero(trunk.any(axis=0)).min() if trunk.any() else 0  # RAS: low j = posterior
    couch = (hu[:, :, mid] > -500) & ~ndimage.binary_dilation(trunk, iterations=2)
    couch[:, post:] = False
    s["couch_width_mm"] = width(couch) if couch.sum() * sx * sy >= 100 else 0.0
    # in-plane statistics on up to 24 slices of the central 80 % of the lung
    ks = np.unique(np.linspace(zs[0] + 0.1 * len(zs), zs[-1] - 0.1 * len(zs), 24).astype(int))
    h = np.ascontiguousarray(hu[:, :, ks], dtype=np.float32)
    lk, bk = np.ascontiguousarray(lung[:, :, ks]), np.ascontiguousarray(body[:, :, ks])
    del body
    bk = np.stack([ndimage.binary_fill_holes(bk[:, :, i]) for i in range(len(ks))], 2)
    sm = ndimage.gaussian_filter(h, (2.0 / sx, 2.0 / sy, 0))
    res = h - sm
    regions = {"lung": lk, "soft": bk & (sm >= 0) & (sm <= 100), "fat": bk & (sm >= -150) & (sm <= -50),
               "air": ~bk & (sm < -900) & (h > -1500)}
    for name, m in regions.items():
        s[f"res_sd_{name}"] = _rsd(res[_erode(m, e)])
    nps = _nps(h, _erode(regions["soft"], e // 2 + 1), sx, rng)
    air = h[_erode(regions["air"], e)]
    s["air_median_hu"] = float(np.median(air)) if air.size else float("nan")
    s.update({f"nps_{k}": nps[k] for k in ("sd", "sd_lt025", "f_mean", "f50", "patches")})
    d = np.zeros(h.shape, np.float32)
    for i in range(len(ks)):
        d_in = ndimage.distance_transform_edt(lk[:, :, i], sampling=(sx, sy))
        d_out = ndimage.distance_transform_edt(~lk[:, :, i], sampling=(sx, sy))
        d[:, :, i] = np.where(lk[:, :, i], -(d_in - sx / 2), d_out - sx / 2)
    near = (np.abs(d) < PROFILE_EDGES[-1]) & bk
    sums = np.histogram(d[near], PROFILE_EDGES, weights=h[near])[0]
    counts = np.histogram(d[near], PROFILE_EDGES)[0]
    profile = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    s["edge_rise_mm"] = _rise(profile)
    # network input
    cfg = PreprocessConfig(normalize=NORMALIZE[0])
    image, grid = preprocess_image(hu0, geometry, cfg)
    net_lung = preprocess_mask(lung0.astype(np.uint8), grid) > 0
    w = window_normalize(resample_box(canonical_view(hu0, ornt), grid.crop_lo, grid.crop_hi, cfg.shape),
                         cfg.hu_min, cfg.hu_max)  # [0, 1] before smoothing and z-scoring
    s["net_crop_mm"] = float(np.prod(np.subtract(grid.crop_hi, grid.crop_lo)[:2] * [sx, sy]) ** 0.5)
    s["net_lung_share"], s["net_crop_w_mean"] = float(net_lung.mean()), float(w.mean())
    s["net_crop_w_sd"] = float(w.std())
    s["net_lung_w_mean"] = float(w[net_lung].mean())
    s["net_air_share"] = float(np.mean((w < 0.1) & ~net_lung))
    s["net_lung_z_mean"], s["net_lung_z_sd"] = float(image[net_lung].mean()), float(image[net_lung].std())
    return {"stats": s, "hist": hist.tolist(), "nps": nps["nps"], "profile": profile.tolist()}


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def table(real: dict[str, dict], synth: dict[str, dict]) -> str:
    """Markdown: a row per statistic, a column per real case, then synthetic mean +- SD (min..max)."""
    names = [n + (" *" if r["stats"]["pixel_mm"] > 2 else "") for n, r in real.items()]
    keys = list(next(iter({**real, **synth}.values()))["stats"])
    lines = ["| statistic | " + " | ".join(names) + f" | synthetic (n={len(synth)}) |",
             "|---" * (len(names) + 2) + "|"]
    for k in keys:
        v = np.array([c["stats"][k] for c in synth.values()], float)
        syn = "" if not np.isfinite(v).any() else (
            f"{_fmt(np.nanmean(v))} ± {_fmt(np.nanstd(v))} ({_fmt(np.nanmin(v))}..{_fmt(np.nanmax(v))})")
        lines.append(f"| {k} | " + " | ".join(_fmt(r["stats"][k]) for r in real.values()) + f" | {syn} |")
    return "\n".join(lines)


def figure(real: dict[str, dict], synth: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    panels = [("hist", HIST_EDGES, "lung HU", "density", "Lung HU histogram"),
              ("nps", NPS_EDGES, "spatial frequency (cycles/mm)", "NPS (HU² mm²)", "Soft-tissue NPS"),
              ("profile", PROFILE_EDGES, "signed distance to lung surface (mm, + outside)", "mean HU",
               "Lung-boundary edge profile")]
    for ax, (key, edges, xl, yl, title) in zip(axes, panels):
        x = 0.5 * (edges[1:] + edges[:-1])
        for name, r in real.items():
            y = np.asarray(r[key], float)
            ls = "--" if r["stats"]["pixel_mm"] > 2 else "-"
            ax.plot(x[np.isfinite(y)], y[np.isfinite(y)], lw=1.5, ls=ls, label=name)
        if synth:
            ys = np.array([c[key] for c in synth.values()], float)
            with warnings.catch_warnings():  # NPS bins above the synthetic Nyquist frequency are all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                m, lo, hi = np.nanmean(ys, 0), np.nanpercentile(ys, 16, 0), np.nanpercentile(ys, 84, 0)
            ok = np.isfinite(m)
            ax.plot(x[ok], m[ok], color="k", lw=2, label=f"synthetic mean (n={len(ys)})")
            ax.fill_between(x[ok], lo[ok], hi[ok], color="k", alpha=0.2, label="synthetic 16-84th pct")
        ax.set(xlabel=xl, ylabel=yl, title=title)
        if key == "nps":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic-dir", type=Path, default=REPO / "data/interim")
    ap.add_argument("--max-synthetic", type=int, default=12)
    ap.add_argument("--real", nargs="*", default=list(REAL), help="names in lungseg.config.DEFAULT_REAL_CT")
    ap.add_argument("--figure", type=Path, default=Path("/tmp/real_ct_statistics.png"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0, help="NPS patch choice (the same for every case)")
    ap.add_argument("--normalize", choices=("fixed", "volume"), default="fixed",
                    help="preprocess.normalize for the network-input rows (volume: the per-crop z-score of the README)")
    a = ap.parse_args()
    NORMALIZE[0] = a.normalize
    real: dict[str, dict] = {}
    for name in tqdm(a.real, desc="real"):
        case = DEFAULT_REAL_CT[name]
        if not all((REPO / p).exists() for p in (case.ct, case.truth) if p):
            tqdm.write(f"{name}: files not found, skipped")
            continue
        scan = load_scan(name, case, REPO)
        real[name] = case_stats(scan.hu, scan.truth, scan.geometry, np.random.default_rng(a.seed))
    synth: dict[str, dict] = {}
    for ct in tqdm(sorted(a.synthetic_dir.glob("*_ct.nii.gz"))[: a.max_synthetic], desc="synthetic"):
        hu, geometry = read_nifti(ct)
        lungs, _ = read_nifti(ct.with_name(ct.name.replace("_ct.nii.gz", "_lungs.nii.gz")))
        name = ct.name.replace("_ct.nii.gz", "")
        synth[name] = case_stats(np.asarray(hu, np.float32), np.asarray(lungs) > 0, geometry,
                                 np.random.default_rng(a.seed))
    print(table(real, synth))
    figure(real, synth, a.figure)
    print(f"\nfigure: {a.figure}")
    if a.json:
        a.json.write_text(json.dumps({"real": real, "synthetic": synth}, indent=1, allow_nan=True))
        print(f"json: {a.json}")


if __name__ == "__main__":
    main()
