"""Wall time and disk size of writing the synthetic DICOM cohort.

Defaults are the ``params.yaml`` cohort (60 cases, seed 2017, 2 workers, max matrix 512);
the budget is 5 minutes and 1.5 GB on a 2-core machine. Prints ``name: value`` lines.

    .venv/bin/python benchmarks/synthesize_cohort.py --out /tmp/lctsc-syn
    .venv/bin/python benchmarks/synthesize_cohort.py --check-roundtrip   # + RTSTRUCT round trip per case

``--check-roundtrip`` reads every patient back with the project's DICOM reader
(CT + RTSTRUCT rasterised on the CT grid) and compares the lungs with the
generator's masks (Dice per lung; the acceptance threshold is 0.98).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lungseg.config import PrepareConfig
from lungseg.evaluation.metrics import dice
from lungseg.io.dicom import scan_dicom_tree
from lungseg.io.dicom_case import read_dicom_case
from lungseg.synthetic import has_pathology, make_phantom, synthesize_cohort


def _roundtrip(job: tuple[str, int, int, float, int]) -> tuple[str, float, float, bool]:
    root, seed, n, fraction, max_matrix = job
    pid = f"LCTSC-SYN-{n + 1:03d}"
    case = read_dicom_case(scan_dicom_tree(Path(root) / pid)[pid], pid, PrepareConfig())
    ph = make_phantom(np.random.default_rng([seed, n]), has_pathology(seed, n, fraction), max_matrix=max_matrix)
    same_ct = case.geometry.shape == ph.geometry.shape and bool(np.array_equal(case.hu, ph.hu))
    return pid, dice(case.right, ph.masks["Lung_R"]), dice(case.left, ph.masks["Lung_L"]), same_ct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="output folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2017)
    ap.add_argument("--pathology-fraction", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-matrix", type=int, default=512)
    ap.add_argument("--check-roundtrip", action="store_true", help="read every case back and report lung Dice")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="lungseg-cohort-"))
    try:
        t0 = time.perf_counter()
        rows = synthesize_cohort(out, args.cases, args.seed, args.pathology_fraction, args.workers, args.max_matrix)
        wall = time.perf_counter() - t0
        files = [p for p in out.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        rt = sum(p.stat().st_size for p in files if p.name == "1-1.dcm")
        print(f"cases: {len(rows)}")
        print(f"pathology_cases: {sum(r['pathology'] for r in rows)}")
        print(f"wall_seconds: {wall:.1f}")
        print(f"disk_bytes: {size}")
        print(f"disk_gb: {size / 1e9:.3f}")
        print(f"rtstruct_gb: {rt / 1e9:.3f}")
        print(f"mb_per_case: {size / 1e6 / len(rows):.1f}")
        print(f"files: {len(files)}")
        print(f"matrix_counts: {dict(sorted(Counter(r['matrix'] for r in rows).items()))}")
        print(f"slice_thickness_counts: {dict(sorted(Counter(r['slice_thickness_mm'] for r in rows).items()))}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"worker_peak_rss_mb: {peak:.0f}")
        if args.check_roundtrip:
            jobs = [(str(out), args.seed, n, args.pathology_fraction, args.max_matrix) for n in range(args.cases)]
            with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
                res = pool.map(_roundtrip, jobs, chunksize=1)
            worst = min(res, key=lambda t: min(t[1], t[2]))
            print(f"roundtrip_cases: {len(res)}")
            print(f"roundtrip_dice_right_min: {min(t[1] for t in res):.4f}")
            print(f"roundtrip_dice_left_min: {min(t[2] for t in res):.4f}")
            print(f"roundtrip_dice_mean: {np.mean([t[1:3] for t in res]):.4f}")
            print(f"roundtrip_worst_case: {worst[0]}")
            print(f"roundtrip_cases_below_0.98: {sum(min(t[1], t[2]) < 0.98 for t in res)}")
            print(f"roundtrip_ct_identical: {sum(t[3] for t in res)}/{len(res)}")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
