"""Ingestion: raw DICOM (CT + RTSTRUCT) or NIfTI pairs -> canonical NIfTI per case.

For every case ``prepare_cohort`` writes, into the output folder:

* ``<case>_ct.nii.gz``: int16 HU (rounded, clipped to the int16 range);
* ``<case>_lungs.nii.gz``: uint8 labels, 0 background, 1 RIGHT lung, 2 LEFT lung;

both on the CT grid with the RAS affine ``geometry.affine_ras()``; and, once
for the cohort, ``manifest.csv``, ``split.json`` and ``skipped.csv``. Arrays are
indexed ``[i, j, k]`` = ``[column, row, slice]`` (see :mod:`lungseg.io.geometry`).

Rules worth knowing:

* Overlap: a voxel inside both the right and the left lung goes to the lung
  whose centroid is nearer along the patient's left-right (RAS x) axis; ties
  go to the right lung.
* Binary NIfTI masks (only 0/1, ``nifti.binary_split`` true) are split at a
  midline: the RAS x midpoint between the centroids of the two largest
  6-connected components (the mask centroid when there is only one component).
  Every voxel with RAS x greater than the midline (the patient's right side)
  is right lung, the rest left lung.
* Case IDs come from PatientID (DICOM) or ``{case}`` (NIfTI), sanitised to
  ``[A-Za-z0-9._-]`` without leading dots (empty -> ``unnamed``); ``case_id:
  hashed`` uses the first 12 hex digits of sha256 of the raw ID instead. IDs
  that collide (case-insensitively) get ``_2``, ``_3``... in sorted raw-ID order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from lungseg.config import NiftiConfig, PrepareConfig
from lungseg.errors import CaseError, LungsegError
from lungseg.fileio import atomic_write_bytes
from lungseg.io.dicom import scan_dicom_tree
from lungseg.io.dicom_case import read_dicom_case
from lungseg.io.geometry import Geometry
from lungseg.io.nifti import nifti_bytes, read_nifti
from lungseg.io.split import cv_folds, split_cases

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "case", "source", "shape", "spacing_mm", "rois",
    "lung_volume_ml", "right_volume_ml", "left_volume_ml", "checksum",
)  # fmt: skip
RIGHT_LABEL, LEFT_LABEL = 1, 2
CT_SUFFIX, LUNGS_SUFFIX = "_ct.nii.gz", "_lungs.nii.gz"


@dataclass(frozen=True)
class PrepareResult:
    """Outcome of :func:`prepare_cohort`.

    Attributes:
        prepared: Case IDs written, sorted.
        skipped: ``(case, problem)`` for every case that could not be prepared.
        split: ``{"train": [...], "val": [...], "test": [...]}`` over ``prepared``.
    """

    prepared: list[str]
    skipped: list[tuple[str, str]]
    split: dict[str, list[str]]


@dataclass
class LoadedCase:
    """One case read from the raw data, before writing.

    Attributes:
        hu: Hounsfield units ``[i, j, k]`` (any real dtype).
        geometry: Grid of ``hu`` and the masks.
        right: Boolean right-lung mask ``[i, j, k]``.
        left: Boolean left-lung mask ``[i, j, k]``.
        source: Where it came from, relative to the raw folder (POSIX form).
        rois: ROI names (DICOM) or ``label_<v>`` for each non-zero mask value (NIfTI).
        right_from: What the right mask was made from, for messages.
        left_from: What the left mask was made from, for messages.
    """

    hu: np.ndarray
    geometry: Geometry
    right: np.ndarray
    left: np.ndarray
    source: str
    rois: list[str]
    right_from: str
    left_from: str


def sanitize_case_id(raw: str) -> str:
    """Make a safe file-name stem: ``[A-Za-z0-9._-]`` only, no leading dot, never empty."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip(".")[:100]
    return safe or "unnamed"


def assign_case_ids(raw_ids: list[str], mode: str) -> dict[str, str]:
    """Map raw IDs (PatientID or NIfTI ``{case}``) to unique, safe case IDs.

    Args:
        raw_ids: Raw identifiers.
        mode: ``"patient_id"`` (sanitised raw ID) or ``"hashed"`` (12 hex digits of sha256).

    Returns:
        Raw ID -> case ID; collisions (case-insensitive) get ``_2``, ``_3``...
        in sorted raw-ID order.
    """
    taken: set[str] = set()
    out: dict[str, str] = {}
    for raw in sorted(set(raw_ids)):
        base = hashlib.sha256(raw.encode()).hexdigest()[:12] if mode == "hashed" else sanitize_case_id(raw)
        case, n = base, 1
        while case.lower() in taken:
            n += 1
            case = f"{base}_{n}"
        taken.add(case.lower())
        out[raw] = case
    return out


def _ras_x(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """RAS x (mm) of every voxel of ``mask`` ``[i, j, k]``, in ``np.nonzero`` order."""
    idx = np.nonzero(mask)
    row = geometry.affine_ras()[0]
    return row[0] * idx[0] + row[1] * idx[1] + row[2] * idx[2] + row[3]


def split_binary_mask(mask: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Split a binary lung mask into (right, left) at the left-right midline.

    The midline is the RAS x midpoint between the centroids of the two largest
    6-connected components (the whole mask's centroid when there is only one);
    voxels with RAS x above it (patient right) are right lung.

    Args:
        mask: Boolean ``[i, j, k]`` both-lungs mask on ``geometry``.
        geometry: Grid of ``mask``.

    Returns:
        ``(right, left)`` boolean masks ``[i, j, k]``.
    """
    labels, n = ndimage.label(mask)
    if n >= 2:
        sizes = np.bincount(labels.ravel())[1:]
        a, b = np.argsort(-sizes, kind="stable")[:2] + 1
        midline = (_ras_x(labels == a, geometry).mean() + _ras_x(labels == b, geometry).mean()) / 2
    else:
        midline = _ras_x(mask, geometry).mean() if mask.any() else 0.0
    right = np.zeros(mask.shape, dtype=bool)
    right[np.nonzero(mask)] = _ras_x(mask, geometry) > midline
    return right, mask & ~right


def lung_labels(right: np.ndarray, left: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Combine right and left masks into uint8 labels (0 background, 1 right, 2 left).

    Voxels in both masks go to the lung whose centroid is nearer in RAS x
    (ties: right).

    Args:
        right: Boolean right-lung mask ``[i, j, k]``.
        left: Boolean left-lung mask ``[i, j, k]``, same shape.
        geometry: Grid of the masks.
    """
    labels = np.zeros(right.shape, dtype=np.uint8)
    labels[right] = RIGHT_LABEL
    labels[left & ~right] = LEFT_LABEL
    overlap = right & left
    if overlap.any():
        cx_right, cx_left = _ras_x(right, geometry).mean(), _ras_x(left, geometry).mean()
        x = _ras_x(overlap, geometry)
        nearer_right = np.abs(x - cx_right) <= np.abs(x - cx_left)
        labels[np.nonzero(overlap)] = np.where(nearer_right, RIGHT_LABEL, LEFT_LABEL)
        logger.debug("%d voxels in both lungs assigned by nearest centroid", int(overlap.sum()))
    return labels


# --------------------------------------------------------------------------- discovery


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _dicom_jobs(raw_dir: Path, out_dir: Path, cfg: PrepareConfig) -> dict[str, Callable[[str], LoadedCase]]:
    """Raw PatientID -> loader for every patient found under ``raw_dir``."""
    patients = scan_dicom_tree(raw_dir, exclude=[out_dir])

    def loader(pid: str) -> Callable[[str], LoadedCase]:
        def load(case: str) -> LoadedCase:
            d = read_dicom_case(patients[pid], case, cfg)
            return LoadedCase(
                hu=d.hu, geometry=d.geometry, right=d.right, left=d.left,
                source=_rel(d.series_dir, raw_dir), rois=d.roi_names,
                right_from=f"ROI {d.lung_rois['right']!r}", left_from=f"ROI {d.lung_rois['left']!r}",
            )  # fmt: skip

        return load

    return {pid: loader(pid) for pid in patients}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    head, sep, tail = pattern.partition("{case}")
    if not sep:
        raise LungsegError(f"NIfTI pattern {pattern!r} has no {{case}} placeholder")
    return re.compile(r"(?:.*/)?" + re.escape(head) + r"(?P<case>[^/]+?)" + re.escape(tail))


def _read_nifti_rel(path: Path, raw_dir: Path, case: str) -> tuple[np.ndarray, Geometry]:
    try:
        return read_nifti(path)
    except CaseError as e:
        raise CaseError(case, f"{_rel(path, raw_dir)}: {e.problem}") from e


def _load_nifti_case(
    case: str, image: Path, mask: Path | None, raw_dir: Path, ncfg: NiftiConfig
) -> LoadedCase:
    if mask is None:
        raise CaseError(case, f"no mask matching {ncfg.mask_pattern!r} for image {_rel(image, raw_dir)}")
    hu, geometry = _read_nifti_rel(image, raw_dir, case)
    labels, mask_geometry = _read_nifti_rel(mask, raw_dir, case)
    image_rel, mask_rel = _rel(image, raw_dir), _rel(mask, raw_dir)
    if labels.shape != hu.shape:
        raise CaseError(
            case, f"image {image_rel} has shape {hu.shape} but mask {mask_rel} has {labels.shape}"
        )
    if not np.allclose(geometry.affine_ras(), mask_geometry.affine_ras(), atol=1e-3):
        raise CaseError(case, f"image {image_rel} and mask {mask_rel} have different affines")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise CaseError(case, f"mask {mask_rel} holds non-integer values")
    values = [int(v) for v in np.unique(labels) if v != 0]
    if ncfg.binary_split and set(values) <= {1}:
        right, left = split_binary_mask(labels == 1, geometry)
        right_from = left_from = "binary mask split at the midline"
    else:
        right, left = labels == ncfg.right_label, labels == ncfg.left_label
        right_from, left_from = f"label {ncfg.right_label}", f"label {ncfg.left_label}"
        others = sorted(set(values) - {ncfg.right_label, ncfg.left_label})
        if others:
            logger.debug("%s: ignoring mask labels %s", case, others)
    return LoadedCase(
        hu=hu, geometry=geometry, right=right, left=left, source=_rel(image, raw_dir),
        rois=[f"label_{v}" for v in values], right_from=right_from, left_from=left_from,
    )  # fmt: skip


def _nifti_jobs(raw_dir: Path, out_dir: Path, ncfg: NiftiConfig) -> dict[str, Callable[[str], LoadedCase]]:
    """Raw ``{case}`` -> loader for every image matching ``image_pattern`` under ``raw_dir``."""
    image_re, mask_re = _pattern_regex(ncfg.image_pattern), _pattern_regex(ncfg.mask_pattern)
    out = out_dir.resolve()
    files = sorted(p for p in raw_dir.rglob("*") if p.is_file() and not p.resolve().is_relative_to(out))
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    for p in files:
        rel = _rel(p, raw_dir)
        if m := mask_re.fullmatch(rel):
            masks.setdefault(m["case"], []).append(p)
        elif m := image_re.fullmatch(rel):
            images.setdefault(m["case"], []).append(p)

    def loader(raw: str) -> Callable[[str], LoadedCase]:
        def load(case: str) -> LoadedCase:
            found = images[raw]
            if len(found) > 1:
                listed = ", ".join(_rel(p, raw_dir) for p in found)
                raise CaseError(case, f"several images match {ncfg.image_pattern!r}: {listed}")
            image = found[0]
            candidates = masks.get(raw, [])
            same_dir = [p for p in candidates if p.parent == image.parent]
            chosen = same_dir or candidates
            if len(chosen) > 1:
                listed = ", ".join(_rel(p, raw_dir) for p in chosen)
                raise CaseError(case, f"several masks match {ncfg.mask_pattern!r}: {listed}")
            return _load_nifti_case(case, image, chosen[0] if chosen else None, raw_dir, ncfg)

        return load

    return {raw: loader(raw) for raw in images}


# --------------------------------------------------------------------------- writing


def _csv_bytes(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _write_case(case: str, data: LoadedCase, out_dir: Path) -> list[str]:
    """Check the masks, write both NIfTI files and return the manifest row."""
    g = data.geometry
    if not data.hu.shape == data.right.shape == data.left.shape == tuple(g.shape):
        raise CaseError(
            case, f"image shape {data.hu.shape} and mask shapes {data.right.shape}/{data.left.shape} differ"
        )
    for side, mask, origin in (("right", data.right, data.right_from), ("left", data.left, data.left_from)):
        if not mask.any():
            raise CaseError(case, f"empty {side} lung mask ({origin})")
    hu = np.asarray(data.hu)
    if hu.dtype.kind == "f":
        if not np.all(np.isfinite(hu)):
            raise CaseError(case, "NaN or infinite HU values")
        hu = np.rint(hu)
    ct = np.clip(hu, -32768, 32767).astype(np.int16)
    labels = lung_labels(data.right, data.left, g)
    ct_bytes = nifti_bytes(ct, g, np.int16)
    atomic_write_bytes(out_dir / f"{case}{CT_SUFFIX}", ct_bytes)
    atomic_write_bytes(out_dir / f"{case}{LUNGS_SUFFIX}", nifti_bytes(labels, g, np.uint8))
    right_ml = int(np.count_nonzero(labels == RIGHT_LABEL)) * g.voxel_volume_ml
    left_ml = int(np.count_nonzero(labels == LEFT_LABEL)) * g.voxel_volume_ml
    return [
        case,
        data.source,
        "x".join(str(s) for s in g.shape),
        "x".join(f"{s:.6g}" for s in g.spacing_mm),
        ";".join(data.rois),
        f"{right_ml + left_ml:.3f}",
        f"{right_ml:.3f}",
        f"{left_ml:.3f}",
        hashlib.sha256(ct_bytes).hexdigest(),
    ]


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for suffix in (CT_SUFFIX, LUNGS_SUFFIX):
        for p in sorted(out_dir.glob(f"*{suffix}")):
            if p.name[: -len(suffix)] not in keep:
                logger.info("removing stale output %s", p.name)
                p.unlink()
    for p in sorted(out_dir.glob(".*.partial")):
        p.unlink()


def prepare_cohort(raw_dir: Path, out_dir: Path, cfg: PrepareConfig, fmt: str | None = None) -> PrepareResult:
    """Convert every case under ``raw_dir`` into canonical NIfTI files in ``out_dir``.

    Args:
        raw_dir: Folder tree with DICOM files (any layout) or NIfTI image/mask pairs.
        out_dir: Output folder (created); may not be ``raw_dir`` itself.
        cfg: Prepare settings (format, error policy, case IDs, tolerances, split).
        fmt: ``"dicom"`` or ``"nifti"``; overrides ``cfg.format`` when given.

    Returns:
        The prepared case IDs, the skipped cases with their problems, and the split.

    Raises:
        LungsegError: ``raw_dir`` is missing, ``fmt`` is unknown, or (with
            ``on_error: fail``) the first bad case, as a :class:`CaseError`.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    fmt = fmt or cfg.format
    if not raw_dir.is_dir():
        raise LungsegError(f"{raw_dir}: raw data folder not found")
    if fmt not in ("dicom", "nifti"):
        raise LungsegError(f"unknown input format {fmt!r} (expected 'dicom' or 'nifti')")
    if out_dir.resolve() == raw_dir.resolve():
        raise LungsegError(f"{out_dir}: output folder must differ from the raw data folder")
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = _dicom_jobs(raw_dir, out_dir, cfg) if fmt == "dicom" else _nifti_jobs(raw_dir, out_dir, cfg.nifti)
    case_ids = assign_case_ids(list(jobs), cfg.case_id)
    logger.info("found %d %s case(s) under %s", len(jobs), fmt, raw_dir)

    rows: list[list[str]] = []
    skipped: list[tuple[str, str]] = []
    for raw in tqdm(sorted(jobs, key=lambda r: case_ids[r]), desc="prepare", unit="case"):
        case = case_ids[raw]
        try:
            try:
                data = jobs[raw](case)
                row = _write_case(case, data, out_dir)
                if cfg.case_id == "hashed":  # the source path may hold identifiers too (folder names)
                    row[1] = "sha256:" + hashlib.sha256(row[1].encode()).hexdigest()[:16]
                rows.append(row)
            except CaseError as e:
                if e.case != case:
                    raise CaseError(case, f"{e.case}: {e.problem}") from e
                raise
            except OSError as e:
                raise LungsegError(f"{case}: cannot read or write ({e})") from e
            except Exception as e:  # noqa: BLE001 - unexpected reader failure: report, never a traceback
                raise CaseError(case, f"unexpected {type(e).__name__}: {e}") from e
        except CaseError as e:
            if cfg.on_error == "fail":
                raise
            logger.warning("%s", e)
            skipped.append((case, e.problem))

    prepared = sorted(r[0] for r in rows)
    split = split_cases(prepared, cfg.split)
    atomic_write_bytes(out_dir / "manifest.csv", _csv_bytes(MANIFEST_COLUMNS, sorted(rows)))
    atomic_write_bytes(out_dir / "skipped.csv", _csv_bytes(("case", "problem"), [list(s) for s in skipped]))
    atomic_write_bytes(out_dir / "split.json", (json.dumps(split, indent=2) + "\n").encode())
    folds = {"k": cfg.split.folds, "seed": cfg.split.seed, "folds": cv_folds(split, cfg.split)}
    atomic_write_bytes(out_dir / "folds.json", (json.dumps(folds, indent=1) + "\n").encode())
    _remove_stale(out_dir, set(prepared))
    logger.info("prepared %d case(s), skipped %d", len(prepared), len(skipped))
    return PrepareResult(prepared=prepared, skipped=skipped, split=split)
