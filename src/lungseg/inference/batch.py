"""Segmenting batches of files: ``lungseg predict``'s work, one :class:`Segmenter` for all.

Each input (a NIfTI file or a DICOM series folder) is segmented and written in the output
types asked for; a failing case is one log line and does not stop the batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lungseg.errors import CaseError, LungsegError
from lungseg.fileio import atomic_write_text
from lungseg.inference.segmenter import Segmentation, Segmenter, case_name
from lungseg.io.geometry import Geometry

log = logging.getLogger(__name__)

OUTPUT_TYPES = ("nifti", "dicom-seg", "rtstruct")
SUFFIXES = {"nifti": "_lungs.nii.gz", "dicom-seg": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}
STATISTICS_CSV = "statistics.csv"


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one input of :func:`predict_paths` (``error`` is None on success)."""

    input: str
    name: str
    mask: Path | None = None
    report: Path | None = None
    overlay: Path | None = None
    volumes_ml: dict[str, float] | None = None
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    statistics: dict[str, dict[str, float | int | None]] | None = None
    seconds: float = 0.0


def write_statistics_csv(results: Sequence[CaseResult], path: Path) -> Path:
    """One row per case: ``case``, ``input``, ``error`` and the densitometry
    (:func:`lungseg.inference.densitometry.flatten` columns ``<region>_<measure>``, empty for a failed case);
    rewritten whole (atomically) after every case, so an interrupted batch keeps the rows done."""
    import csv
    import io

    from lungseg.inference.densitometry import MEASURES, REGIONS, flatten

    columns = ["case", "input", "error", *(f"{r}_{m}" for r in REGIONS for m in MEASURES)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({"case": r.name, "input": r.input, "error": r.error or "",
                         **(flatten(r.statistics) if r.statistics else {})})
    return atomic_write_text(path, buf.getvalue())


def unique_names(paths: Sequence[Path]) -> list[str]:
    """:func:`lungseg.inference.segmenter.case_name` of each path, ``_2``, ``_3``... appended to repeats (case-insensitive)."""
    names, taken = [], set()
    for p in paths:
        base, name, n = case_name(p), case_name(p), 1
        while name.lower() in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name.lower())
        names.append(name)
    return names


def check_output_types(inputs: Sequence[Path], output_types: Sequence[str]) -> None:
    """Refuse, before anything is read or written, output types an input cannot have.

    Raises:
        LungsegError: an unknown type, or a DICOM output for an input that is not a DICOM folder.
    """
    unknown = [t for t in output_types if t not in OUTPUT_TYPES]
    if unknown or not output_types:
        raise LungsegError(f"--output-type {' '.join(unknown) or '(none)'}: expected some of {', '.join(OUTPUT_TYPES)}")
    dicom_out = [t for t in output_types if t != "nifti"]
    for path in inputs:
        if dicom_out and not Path(path).is_dir():
            raise LungsegError(f"{path}: --output-type {dicom_out[0]} needs a DICOM series folder as input "
                               "(DICOM outputs reference the input series; use --output-type nifti for NIfTI input)")


def _write_outputs(
    seg: Segmentation, geometry: Geometry, path: Path, out: Path, name: str, output_types: Sequence[str]
) -> dict[str, Path]:
    from concurrent.futures import ThreadPoolExecutor

    from lungseg.io.nifti import write_nifti

    written = {kind: out / f"{name}{SUFFIXES[kind]}" for kind in output_types}
    # the NIfTI on a second thread: its gzip (0.13 s for 512x512x134) releases the GIL while the DICOM writers build
    with ThreadPoolExecutor(1) as pool:
        nifti = pool.submit(write_nifti, seg.labels, geometry, written["nifti"], np.uint8) if "nifti" in written else None
        if "dicom-seg" in written:
            from lungseg.io.dicom_export import write_dicom_seg

            write_dicom_seg(seg.labels, path, written["dicom-seg"])
        if "rtstruct" in written:
            from lungseg.io.dicom_export import write_rtstruct

            write_rtstruct(seg.labels, path, written["rtstruct"])
        if nifti is not None:
            nifti.result()
    return written


def import_case_modules(dicom_in: bool, output_types: Sequence[str]) -> None:
    """Import once, before the first case, what the cases need (readers, writers, post-processing),
    so the first case costs what every later one does (the imports are start-up, read from disk
    on a cold file cache: measured on host D, 1.77 s for the first case instead of 0.9-1.3 s)."""
    import scipy.ndimage  # noqa: F401

    import lungseg.inference.quality  # noqa: F401
    import lungseg.io.nifti  # noqa: F401
    import lungseg.morphology  # noqa: F401

    if dicom_in:
        import lungseg.io.dicom  # noqa: F401
    if any(t != "nifti" for t in output_types):
        import lungseg.io.dicom_export  # noqa: F401


def configure(segmenter: Segmenter, threshold: float | None = None, postprocess: bool = True) -> Segmenter:
    """Apply ``lungseg predict``'s post-processing options to ``segmenter`` (in place; returned).

    ``threshold`` overrides the model's probability threshold (one threshold everywhere: the
    full-resolution surface is off); ``postprocess=False`` thresholds only: every component
    kept, no holes filled, no surface, no gas check.
    """
    import dataclasses

    post = segmenter.postprocess
    if not postprocess:
        post = dataclasses.replace(post.thresholded(), keep_components=0, min_component_ml=0.0, fill_holes=False,
                                   max_gas_fraction=1.0)
    if threshold is not None:
        post = dataclasses.replace(post.thresholded(), threshold=threshold)
    segmenter.postprocess = post
    return segmenter


def segment_case(
    segmenter: Segmenter, path: Path, out: Path, name: str, output_types: Sequence[str] = ("nifti",),
    statistics: bool = False, overlay: bool = False, report_extra: dict[str, object] | None = None,
) -> CaseResult:
    """Segment one input into ``out`` and write its outputs (see :func:`predict_paths`); never raises
    for a bad case (the result's ``error`` is set instead).

    The report ``<name>.json`` is written last, atomically: it names the outputs written before it, so
    its presence marks the case complete (:mod:`lungseg.inference.cohort` resumes from it). ``report_extra``
    adds keys to it (the cohort's ``id`` and ``fingerprint``).
    """
    t0 = time.perf_counter()
    try:
        seg, hu, geometry = segmenter.segment_path(path)
        t = time.perf_counter()
        written = _write_outputs(seg, geometry, path, out, name, output_types)
        seg.timings_s["write"] = time.perf_counter() - t
        stats = None
        if statistics:
            from lungseg.inference.densitometry import densitometry

            t = time.perf_counter()
            stats = densitometry(seg.labels, hu, geometry)
            written["statistics"] = atomic_write_text(out / f"{name}_statistics.json", json.dumps(stats, indent=2) + "\n")
            seg.timings_s["statistics"] = time.perf_counter() - t
        png = None
        if overlay:
            from lungseg.figures import CaseView, plot_lung_overlay
            from lungseg.inference.densitometry import thirds_map

            t = time.perf_counter()
            laa = f", LAA-950 {stats['total']['laa950_pct']:.1f}%" if stats and stats["total"]["voxels"] else ""
            png = plot_lung_overlay(CaseView(name, hu, seg.labels, geometry), thirds_map(seg.labels, geometry),
                                    out / f"{name}_overlay.png", f"{name}: {seg.volumes_ml['total']:.0f} mL of lung{laa}")
            written["overlay"] = png
            seg.timings_s["overlay"] = time.perf_counter() - t
        seg.timings_s["total"] = time.perf_counter() - t0
        report = atomic_write_text(out / f"{name}.json", json.dumps({
            **(report_extra or {}),
            "input": str(path),
            "mask": written["nifti"].name if "nifti" in written else None,
            "outputs": {k: v.name for k, v in written.items()},
            "shape": list(geometry.shape),
            "spacing_mm": [round(s, 4) for s in geometry.spacing_mm],
            "volumes_ml": {k: round(v, 2) for k, v in seg.volumes_ml.items()},
            "warnings": seg.warnings,
            "quality": seg.quality.get("checks", {}),
            "runtime": segmenter.runtime,
            "timings_s": {k: round(v, 3) for k, v in seg.timings_s.items()},
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }, indent=2) + "\n")  # fmt: skip
        log.info("%s: right %.0f mL, left %.0f mL (%.1f s)", name, seg.volumes_ml["right"],
                 seg.volumes_ml["left"], seg.timings_s["total"])
        for w in seg.warnings:
            log.warning("%s: %s", name, w)
        return CaseResult(str(path), name, written.get("nifti"), report, png, seg.volumes_ml, outputs=written,
                          warnings=tuple(seg.warnings), statistics=stats, seconds=seg.timings_s["total"])
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
        message = str(e) if isinstance(e, CaseError) else f"{path}: {type(e).__name__}: {e}"
        log.error("%s", message)
        return CaseResult(str(path), name, error=message, seconds=time.perf_counter() - t0)


def predict_paths(
    inputs: Iterable[str | Path], out_dir: str | Path, segmenter: Segmenter, overlay: bool = False,
    progress: bool = True, output_types: Sequence[str] = ("nifti",), statistics: bool = False,
) -> list[CaseResult]:
    """Segment NIfTI files and/or DICOM folders; an error in one case does not stop the batch.

    Per case (:func:`segment_case`) writes, as ``output_types`` asks: ``<name>_lungs.nii.gz`` (uint8,
    the input's shape and affine; 1 right, 2 left), ``<name>_seg.dcm`` (DICOM SEG) and/or
    ``<name>_rtstruct.dcm`` (RTSTRUCT, ROIs ``Lung_R``/``Lung_L``), both referencing the input
    DICOM series; always ``<name>.json`` (volumes in mL, quality warnings and their checks,
    timings in s, input, shapes; written last); with ``statistics`` ``<name>_statistics.json`` (the lung
    densitometry per lung, per third and in total: :mod:`lungseg.inference.densitometry`) and one
    ``statistics.csv`` for the batch (:func:`write_statistics_csv`); with
    ``overlay`` ``<name>_overlay.png`` (three planes: the lung contours over the lung thirds,
    and the LAA-950 voxels; :func:`lungseg.figures.plot_lung_overlay`).
    A failing case is logged as one line and returned with ``error`` set; warnings are logged.
    (A cohort, one folder per case, resumable: :mod:`lungseg.inference.cohort`.)
    """
    from tqdm import tqdm

    paths = [Path(p) for p in inputs]
    check_output_types(paths, output_types)
    import_case_modules(any(p.is_dir() for p in paths), output_types)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in tqdm(list(zip(paths, unique_names(paths))), desc="predict", unit="case", disable=not progress):
        results.append(segment_case(segmenter, path, out, name, output_types, statistics, overlay))
        if statistics:
            write_statistics_csv(results, out / STATISTICS_CSV)
    return results
