"""How hard is the synthetic cohort for the classical baseline?

Generates the patients of the default cohort in memory (same per-patient seeds and
pathology flags as ``synthesize_cohort``), runs :func:`lungseg.evaluation.baseline.segment_lungs`
and prints ``name: value`` lines: combined-lung Dice (mean/min) for patients with and
without pathology, per-lung means, and timings.

    .venv/bin/python benchmarks/baseline_realism.py               # 60 cases, seed 2017
    .venv/bin/python benchmarks/baseline_realism.py --cases 10 --per-case
    .venv/bin/python benchmarks/baseline_realism.py --preview /tmp/phantom_preview.png  # 1 healthy + 1 sick
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np

from lungseg.evaluation.baseline import segment_lungs
from lungseg.evaluation.metrics import dice
from lungseg.synthetic import has_pathology, make_phantom


def _one(job: tuple[int, int, float, int]) -> dict:
    seed, n, fraction, max_matrix = job
    pathology = has_pathology(seed, n, fraction)
    t0 = time.perf_counter()
    ph = make_phantom(np.random.default_rng([seed, n]), pathology, max_matrix=max_matrix)
    t1 = time.perf_counter()
    pred = segment_lungs(ph.hu, ph.geometry)
    t2 = time.perf_counter()
    right, left = ph.masks["Lung_R"], ph.masks["Lung_L"]
    return {
        "n": n, "pathology": pathology, "kinds": ph.info["pathologies"], "matrix": ph.info["matrix"],
        "dz": ph.info["slice_thickness_mm"], "noise": ph.info["noise_sd_hu"],
        "dice": dice(pred > 0, right | left), "dice_r": dice(pred == 1, right), "dice_l": dice(pred == 2, left),
        "t_phantom": t1 - t0, "t_baseline": t2 - t1,
    }  # fmt: skip


def _preview(path: str, seed: int, ns: list[int], fraction: float, max_matrix: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(ns), 3, figsize=(15, 10 * len(ns)))
    for row, n in enumerate(ns):
        ph = make_phantom(np.random.default_rng([seed, n]), has_pathology(seed, n, fraction), max_matrix=max_matrix)
        hu, sp = ph.hu, ph.geometry.spacing_mm
        lungs = ph.masks["Lung_R"] | ph.masks["Lung_L"]
        ks = np.flatnonzero(lungs.any(axis=(0, 1)))
        k = int(ks[int(0.55 * len(ks))])
        j = int(np.flatnonzero(lungs.any(axis=(0, 2))).mean())
        i = int(np.flatnonzero(ph.masks["Lung_R"].any(axis=(1, 2))).mean())
        views = [
            (hu[:, :, k].T, lungs[:, :, k].T, "upper", 1.0, f"axial k={k}"),
            (hu[:, j, :].T, lungs[:, j, :].T, "lower", sp[2] / sp[0], f"coronal j={j}"),
            (hu[i, :, :].T, lungs[i, :, :].T, "lower", sp[2] / sp[1], f"sagittal i={i} (right lung)"),
        ]
        for w, (lo, hi) in enumerate(((-1350, 150), (-160, 240))):
            for c, (img, m, origin, aspect, title) in enumerate(views):
                ax = axes[2 * row + w, c]
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin=origin, aspect=aspect)
                ax.contour(m, [0.5], colors="y", linewidths=0.6)  # pixel centres match imshow
                ax.set_title(f"patient {n + 1}: {title}, {', '.join(ph.info['pathologies']) or 'healthy'}", fontsize=9)
                ax.axis("off")
    plt.tight_layout()
    plt.savefig(path, dpi=60)
    print(f"preview: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2017)
    ap.add_argument("--pathology-fraction", type=float, default=0.5)
    ap.add_argument("--max-matrix", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-case", action="store_true", help="also print one line per case")
    ap.add_argument("--preview", help="save a PNG (mid slices, lung contours) of the first healthy and the first "
                    "pathology patient, then exit")
    args = ap.parse_args()
    if args.preview:  # first healthy and first pathology patient
        flags = [has_pathology(args.seed, n, args.pathology_fraction) for n in range(args.cases)]
        ns = sorted({flags.index(f) for f in (False, True) if f in flags})
        _preview(args.preview, args.seed, ns, args.pathology_fraction, args.max_matrix)
        return
    jobs = [(args.seed, n, args.pathology_fraction, args.max_matrix) for n in range(args.cases)]
    t0 = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            rows = pool.map(_one, jobs, chunksize=1)
    else:
        rows = [_one(j) for j in jobs]
    wall = time.perf_counter() - t0
    if args.per_case:
        for r in rows:
            print(f"case {r['n'] + 1:03d}: dice {r['dice']:.4f} (R {r['dice_r']:.4f} L {r['dice_l']:.4f}) "
                  f"{r['matrix']} dz {r['dz']} noise {r['noise']:.0f} {','.join(r['kinds']) or 'healthy'}")  # fmt: skip
    for name, group in (("pathology", [r for r in rows if r["pathology"]]),
                        ("healthy", [r for r in rows if not r["pathology"]])):  # fmt: skip
        if not group:
            continue
        d = np.array([r["dice"] for r in group])
        print(f"{name}_cases: {len(group)}")
        print(f"{name}_dice_mean: {d.mean():.4f}")
        print(f"{name}_dice_min: {d.min():.4f}")
        print(f"{name}_dice_right_mean: {np.mean([r['dice_r'] for r in group]):.4f}")
        print(f"{name}_dice_left_mean: {np.mean([r['dice_l'] for r in group]):.4f}")
    print(f"phantom_seconds_mean: {np.mean([r['t_phantom'] for r in rows]):.2f}")
    print(f"baseline_seconds_mean: {np.mean([r['t_baseline'] for r in rows]):.2f}")
    print(f"wall_seconds: {wall:.1f}")


if __name__ == "__main__":
    main()
