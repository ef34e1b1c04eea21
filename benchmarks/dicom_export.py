"""DICOM export speed: the DICOM SEG and RTSTRUCT writers on one real CT series and its lung mask.

Prints ``name: value`` lines: the host (CPU model, cores, SIMD flags from ``/proc/cpuinfo``),
the load average, the series, and per writer the wall time (best and median of ``--repeats``) and the CPU time
(best), in ms. Each repeat writes one case as ``lungseg predict --output-type dicom-seg rtstruct``
does: the SEG first, reading the series headers (:func:`lungseg.io.dicom_export.forget_series`
before it), then the RTSTRUCT, which reuses them; the first repeat (the process's first calls) is
printed apart. Target (issue 20): both together <= 1 s for a 512x512x~130 series on a 2-core host.

The series is ``--series`` with the mask ``--mask`` (any grid: mapped onto the series' grid through
world coordinates, then split into right = 1 and left = 2 at the centroid); by default NSCLC-Radiomics
LUNG1-001 from ``data/external`` (``make real-ct``) if extracted, else the COPDGene series of
``../shared/real-ct``. Imports and a first write happen before the timing.

Usage: ``.venv/bin/python benchmarks/dicom_export.py [--series DIR --mask FILE] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real-ct"
NSCLC = (REPO / "data" / "external" / "nsclc-radiomics" / "LUNG1-001" / "dicom",
         REAL / "nsclc-radiomics" / "LUNG1-001" / "lungs.nii.gz")
COPDGENE = (REAL / "copdgene-10002k" / "dicom", REAL / "copdgene-10002k" / "lungs.nii.gz")


def load_labels(series: Path, mask: Path) -> np.ndarray:
    """The mask on the series' grid as labels ``[i, j, k]`` (1 right, 2 left)."""
    from lungseg.evaluation.real_ct import mask_on_grid, split_sides
    from lungseg.io.dicom import read_ct_folder
    from lungseg.io.nifti import read_nifti

    geometry = read_ct_folder(series).geometry
    data, mask_geometry = read_nifti(mask)
    return split_sides(mask_on_grid(np.asarray(data) > 0, mask_geometry, geometry), geometry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=Path, help="DICOM folder of the CT series")
    parser.add_argument("--mask", type=Path, help="lung mask (NIfTI) of that CT")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    series, mask = (args.series, args.mask) if args.series else (NSCLC if NSCLC[0].is_dir() else COPDGENE)
    if mask is None:
        parser.error("--series needs --mask")

    from lungseg.io import dicom_export
    from lungseg.nn.runtime import host_description

    host = host_description()
    print(f"host: {host['cpu']}, {host['cores']} cores, SIMD {host['simd']}")
    print(f"load average (1 min) before: {os.getloadavg()[0]:.2f} (other processes on the cores: wall > CPU)")
    labels = load_labels(series, mask)
    print(f"series: {series} {labels.shape}, right {int((labels == 1).sum())} / left {int((labels == 2).sum())} voxels")
    writers = {"dicom-seg": dicom_export.write_dicom_seg, "rtstruct": dicom_export.write_rtstruct}
    wall: dict[str, list[float]] = {name: [] for name in writers}
    cpu: dict[str, list[float]] = {name: [] for name in writers}
    first: dict[str, tuple[float, float]] = {}  # the first call in this process (wall, CPU)
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats + 1):  # the first is a warm-up, reported apart
            dicom_export.forget_series()
            for name, write in writers.items():
                t, c = time.perf_counter(), time.process_time()
                path = write(labels, series, Path(tmp) / f"{name}.dcm")
                if repeat:
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
                else:
                    first[name] = (time.perf_counter() - t, time.process_time() - c)
                if not repeat and name == "rtstruct":
                    sizes = {n: (Path(tmp) / f"{n}.dcm").stat().st_size for n in writers}
                    print(f"sizes: {', '.join(f'{n} {s / 1e6:.1f} MB' for n, s in sizes.items())}")
                del path
    for name in writers:
        print(f"{name} ms: wall best {1e3 * min(wall[name]):.0f}, median {1e3 * statistics.median(wall[name]):.0f}; "
              f"CPU best {1e3 * min(cpu[name]):.0f} (repeats {args.repeats})")
    print(f"first calls ms (the process's first SEG and RTSTRUCT, headers read by the SEG): "
          f"{', '.join(f'{n} wall {1e3 * w:.0f} CPU {1e3 * c:.0f}' for n, (w, c) in first.items())}")
    total = [sum(wall[n][r] for n in writers) for r in range(args.repeats)]
    print(f"both ms: wall best {1e3 * min(total):.0f}, median {1e3 * statistics.median(total):.0f} (target <= 1000)")


if __name__ == "__main__":
    main()
