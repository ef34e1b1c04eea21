"""The synthetic cohort on disk: DICOM CT + RTSTRUCT per patient in the TCIA LCTSC layout, plus
``cohort.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import multiprocessing
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.synthetic.phantom import make_phantom

log = logging.getLogger(__name__)

PATIENT_PREFIX = "LCTSC-SYN-"

_CSV_FIELDS = (
    "patient_id", "pathology", "pathology_kinds", "matrix", "pixel_spacing_mm", "slice_thickness_mm",
    "n_slices", "fov_mm", "noise_sd_hu", "kvp", "kernel", "lung_r_ml", "lung_l_ml",
)  # fmt: skip


def _patient_id(n: int) -> str:
    return f"{PATIENT_PREFIX}{n + 1:03d}"


def has_pathology(seed: int, n: int, fraction: float) -> bool:
    """Deterministic pathology flag of patient ``n``: exactly round(10 * fraction) per block of 10.

    The flag depends only on ``(seed, n, fraction)``, never on the cohort size.
    """
    block, pos = divmod(n, 10)
    count = int(np.floor(10 * (block + 1) * fraction + 0.5) - np.floor(10 * block * fraction + 0.5))
    order = np.random.default_rng([seed, block, 7]).permutation(10)
    return bool(pos in order[:count])


def _five_digits(*parts: str) -> str:
    return f"{int(hashlib.sha256('/'.join(parts).encode()).hexdigest(), 16) % 100000:05d}"


def write_case(job: tuple[str, int, int, bool, int, Any]) -> dict[str, Any]:
    """Generate patient ``n`` and write its CT series and RTSTRUCT (runs in a worker process).

    ``job`` is ``(out_dir, seed, n, pathology, max_matrix, realism)``; returns the ``cohort.csv`` row.
    """
    from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series
    from lungseg.io.rtstruct_write import write_rtstruct

    out_dir, seed, n, pathology, max_matrix, realism = job
    pid = _patient_id(n)
    rng = np.random.default_rng([seed, n])
    ph = make_phantom(rng, pathology, max_matrix=max_matrix)
    if realism is not None and realism.any():
        from lungseg.synthetic.realism import apply_realism

        ph = apply_realism(ph, realism, np.random.default_rng([seed, n, 97]))
    info = ph.info
    uid = lambda *p: make_uid(str(seed), pid, *p)  # noqa: E731
    study = StudyInfo(
        patient_id=pid, patient_name=f"SYNTHETIC^{n + 1:03d}", study_uid=uid("study"),
        frame_of_reference_uid=uid("frame-of-reference"), study_date="20170101", study_time="120000",
        study_description="CT THORAX", manufacturer="lungseg-synthetic", patient_sex="O",
    )  # fmt: skip
    ct_uid, rt_uid = uid("ct-series"), uid("rtstruct-series")
    ct_digits = _five_digits(ct_uid)
    rt_digits = _five_digits(rt_uid)
    if rt_digits == ct_digits:
        rt_digits = f"{(int(rt_digits) + 1) % 100000:05d}"
    patient_dir = Path(out_dir) / pid
    if patient_dir.exists():
        shutil.rmtree(patient_dir)
    study_dir = patient_dir / f"01-01-2017-NA-CT THORAX-{_five_digits(study.study_uid)}"
    sops = write_ct_series(
        ph.hu, ph.geometry, study_dir / f"1.000000-NA-{ct_digits}", study, ct_uid,
        kvp=info["kvp"], convolution_kernel=info["kernel"],
    )  # fmt: skip
    write_rtstruct(
        ph.masks, ph.geometry, study_dir / f"1.000000-NA-{rt_digits}" / "1-1.dcm", study, ct_uid, sops,
        rt_uid, uid("rtstruct"),
    )  # fmt: skip
    return {
        "patient_id": pid, "pathology": int(pathology), "pathology_kinds": ";".join(info["pathologies"]) or "none",
        "matrix": info["matrix"], "pixel_spacing_mm": info["pixel_spacing_mm"],
        "slice_thickness_mm": info["slice_thickness_mm"], "n_slices": info["n_slices"], "fov_mm": info["fov_mm"],
        "noise_sd_hu": round(info["noise_sd_hu"], 1), "kvp": info["kvp"], "kernel": info["kernel"],
        "lung_r_ml": info["lung_r_ml"], "lung_l_ml": info["lung_l_ml"],
        **({"realism": ";".join(info["realism"]) or "none"} if "realism" in info else {}),
    }  # fmt: skip


def synthesize_cohort(
    out_dir: Path,
    cases: int,
    seed: int,
    pathology_fraction: float = 0.5,
    workers: int = 2,
    max_matrix: int = 512,
    realism: Any = None,
) -> list[dict[str, Any]]:
    """Write a synthetic LCTSC-style cohort as DICOM CT + RTSTRUCT.

    Layout: ``<out_dir>/LCTSC-SYN-001/01-01-2017-NA-CT THORAX-<5 digits>/1.000000-NA-<5 digits>/1-001.dcm``
    (one file per CT slice) and a second series folder holding the RTSTRUCT ``1-1.dcm`` with the ROIs
    Lung_R, Lung_L, Heart, Esophagus and SpinalCord; plus ``<out_dir>/cohort.csv`` with one row per
    patient (pathology flag and kinds, matrix, spacing, slice thickness, noise SD, lung volumes).

    Patient ``n`` is drawn from its own generator seeded with ``(seed, n)`` and its pathology flag
    depends only on ``(seed, n, pathology_fraction)``, so files do not depend on ``workers`` or on
    ``cases``; the same seed gives byte-identical files. Patient folders left over from a previous
    run with more cases are removed.

    Args:
        out_dir: Destination folder (created if missing).
        cases: Number of patients (>= 1).
        seed: Cohort seed (>= 0).
        pathology_fraction: Fraction of patients with lung pathology, in [0, 1].
        workers: Worker processes (1 = in this process).
        max_matrix: Largest in-plane matrix (smaller caps enlarge pixels, same field of view).
        realism: A :class:`lungseg.config.RealismConfig` (None or all 0: off, and the files and
            ``cohort.csv`` are exactly those of a cohort without it; on: a ``realism`` column).

    Returns:
        The ``cohort.csv`` rows as dicts, in patient order.

    Raises:
        ValueError: a count, seed or fraction is out of range.
    """
    if cases < 1:
        raise ValueError(f"synthetic cohort: cases must be >= 1, got {cases}")
    if seed < 0:
        raise ValueError(f"synthetic cohort: seed must be >= 0, got {seed}")
    if not 0.0 <= pathology_fraction <= 1.0:
        raise ValueError(f"synthetic cohort: pathology_fraction must be in [0, 1], got {pathology_fraction}")
    if max_matrix < 32:
        raise ValueError(f"synthetic cohort: max_matrix must be >= 32, got {max_matrix}")
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {_patient_id(n) for n in range(cases)}
    for p in sorted(out_dir.iterdir()):
        if p.is_dir() and re.fullmatch(re.escape(PATIENT_PREFIX) + r"\d+", p.name) and p.name not in wanted:
            log.info("removing stale synthetic patient %s", p.name)
            shutil.rmtree(p)
    jobs = [(str(out_dir), int(seed), n, has_pathology(seed, n, pathology_fraction), int(max_matrix), realism)
            for n in range(cases)]  # fmt: skip
    bar = dict(total=cases, desc="synthesize", unit="case", leave=False)
    if workers <= 1 or cases == 1:
        rows = [write_case(j) for j in tqdm(jobs, **bar)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, cases)) as pool:
            rows = list(tqdm(pool.imap(write_case, jobs, chunksize=1), **bar))
    with open(out_dir / "cohort.csv", "w", newline="") as f:
        fields = _CSV_FIELDS + (("realism",) if realism is not None and realism.any() else ())
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    log.info("synthetic cohort: %d patients (%d with pathology) in %s",
             len(rows), sum(r["pathology"] for r in rows), out_dir)  # fmt: skip
    return rows
