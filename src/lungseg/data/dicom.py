"""Reading DICOM CT series and RT structure sets into lungseg volumes.

The reader scans a folder tree of any layout (any file names, with or without
``.dcm``), reading headers only; pixels are read for the one CT series that is
chosen per patient. Volumes follow the lungseg convention (see
:mod:`lungseg.data.geometry`): arrays indexed ``[i, j, k]`` = ``[column, row,
slice]``, world coordinates LPS mm. PatientName and other identifiers are never
logged or returned; PatientID is used only to group files into cases.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, MediaStorageDirectoryStorage, RTStructureSetStorage

from lungseg.config import PrepareConfig, RoiAliasConfig
from lungseg.data.geometry import Geometry
from lungseg.errors import CaseError

logger = logging.getLogger(__name__)

Side = Literal["right", "left"]

_CONTOUR_DATA = Tag(0x3006, 0x0050)
_MAX_AXIAL_TILT_COS = np.cos(np.deg2rad(30.0))  # slice normal within 30 degrees of the z axis
_SAME_POSITION_MM = 0.01  # slices closer than this along the normal are duplicates


@dataclass(frozen=True)
class DicomFile:
    """One DICOM file found by :func:`scan_dicom_tree`.

    Attributes:
        path: Absolute path of the file.
        rel: Path relative to the scanned root (POSIX form), used in messages.
        header: Dataset read with ``stop_before_pixels=True``.
    """

    path: Path
    rel: str
    header: Dataset


@dataclass
class PatientFiles:
    """The DICOM files of one patient (one case).

    Attributes:
        patient_id: PatientID as found in the files (may be empty).
        ct: CT Image Storage files with Modality CT.
        rtstructs: RT Structure Set Storage files.
        ignored: Reason -> number of other files of this patient that were ignored.
        errors: Problems with files that claim to be DICOM but cannot be read.
    """

    patient_id: str
    ct: list[DicomFile] = field(default_factory=list)
    rtstructs: list[DicomFile] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@dataclass
class DicomCase:
    """A CT volume and its two lung masks read from DICOM.

    Attributes:
        hu: Hounsfield units, float32 ``[i, j, k]`` (rescale slope/intercept applied,
            not rounded).
        geometry: Grid of ``hu`` and the masks (LPS mm).
        series_uid: SeriesInstanceUID of the CT series used.
        series_dir: Deepest folder holding every file of that series.
        rtstruct: The RTSTRUCT file the masks come from.
        roi_names: All ROI names of that RTSTRUCT, in StructureSetROISequence order.
        lung_rois: ``{"right": name, "left": name}`` as matched by :func:`match_lung_rois`.
        right: Boolean right-lung mask ``[i, j, k]`` on the CT grid.
        left: Boolean left-lung mask ``[i, j, k]`` on the CT grid.
    """

    hu: np.ndarray
    geometry: Geometry
    series_uid: str
    series_dir: Path
    rtstruct: DicomFile
    roi_names: list[str]
    lung_rois: dict[Side, str]
    right: np.ndarray
    left: np.ndarray


def _claims_dicom(path: Path) -> bool:
    """True when the file has the "DICM" marker after a 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if not uid and getattr(ds, "file_meta", None) is not None:  # absent, or present but empty (seen in real exports)
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(uid) if uid is not None else ""


def _sop_instance(ds: Dataset) -> str:
    """SOPInstanceUID, else the file meta's MediaStorageSOPInstanceUID (anonymised exports blank the former)."""
    uid = ds.get("SOPInstanceUID")
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPInstanceUID")
    return str(uid) if uid else ""


def _patient_id_only(path: Path) -> str | None:
    """Best-effort PatientID of a file whose full header cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"], force=True)
        pid = ds.get("PatientID")
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        return None
    return str(pid).strip() if pid else None


def scan_dicom_tree(root: Path, exclude: Sequence[Path] = ()) -> dict[str, PatientFiles]:
    """Find the DICOM files under ``root`` and group them by PatientID.

    Files that are not DICOM (no "DICM" marker and pydicom cannot parse a
    SOPClassUID) are ignored with a debug message. A file with the "DICM"
    marker that cannot be read is recorded in ``errors`` of its patient (found
    from a partial read, else from the other files in its folder; failing both
    it becomes its own entry keyed by its relative path).

    Args:
        root: Folder to scan recursively.
        exclude: Folders below ``root`` to leave out (e.g. an output folder).

    Returns:
        PatientID -> files, in sorted PatientID order; a missing PatientID is ``""``.
    """
    root = Path(root)
    excluded = [Path(p).resolve() for p in exclude]
    patients: dict[str, PatientFiles] = {}
    unattributed: list[tuple[Path, str, str]] = []  # (path, rel, problem)
    folder_patients: dict[Path, set[str]] = {}

    def patient(pid: str) -> PatientFiles:
        return patients.setdefault(pid, PatientFiles(patient_id=pid))

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        resolved = path.resolve()
        if any(resolved.is_relative_to(e) for e in excluded):
            continue
        rel = path.relative_to(root).as_posix()
        claims = _claims_dicom(path)
        problem = None
        try:
            with warnings.catch_warnings():
                if not claims:
                    warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=not claims)
        except Exception as e:  # noqa: BLE001 - pydicom raises many types for bad files
            ds, problem = None, f"unreadable DICOM file {rel} ({type(e).__name__}: {e})"
        if ds is not None and _sop_class(ds) == MediaStorageDirectoryStorage:
            logger.debug("ignoring %s: DICOMDIR", rel)
            continue
        if ds is not None and ("SOPClassUID" not in ds or "SOPInstanceUID" not in ds):
            problem = f"incomplete DICOM file {rel} (no SOPClassUID/SOPInstanceUID; truncated?)"
        if problem is not None:
            if not claims:
                logger.debug("ignoring %s: not a DICOM file", rel)
                continue
            pid = _patient_id_only(path)
            if pid is None:
                unattributed.append((path, rel, problem))
            else:
                patient(pid).errors.append(problem)
            continue
        assert ds is not None
        sop_class = _sop_class(ds)
        pid = str(ds.get("PatientID", "") or "").strip()
        folder_patients.setdefault(path.parent, set()).add(pid)
        entry = patient(pid)
        modality = str(ds.get("Modality", "")).upper()
        item = DicomFile(path=path, rel=rel, header=ds)
        if sop_class == CTImageStorage and modality == "CT":
            entry.ct.append(item)
        elif sop_class == RTStructureSetStorage:
            entry.rtstructs.append(item)
        else:
            entry.ignored[f"{modality or 'unknown modality'} (SOP class {sop_class})"] += 1
            logger.debug("ignoring %s: modality %s, SOP class %s", rel, modality, sop_class)

    for path, rel, problem in unattributed:
        owners = folder_patients.get(path.parent, set())
        if len(owners) == 1:
            patient(next(iter(owners))).errors.append(problem)
        else:
            patient(rel).errors.append(problem)
    return dict(sorted(patients.items()))


def normalize_roi_name(name: str) -> str:
    """Lowercase ``name`` and drop everything but letters and digits ("Lung_L" -> "lungl")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match_lung_rois(
    roi_names: Sequence[str], aliases: RoiAliasConfig, case: str = "RTSTRUCT"
) -> dict[Side, str]:
    """Find the right and left lung among ROI names.

    Names are compared case- and punctuation-insensitively with the alias lists
    ("Lung_L", "lung l" and "LUNG-L" are the same).

    Args:
        roi_names: ROI names of one structure set.
        aliases: Accepted spellings for each lung.
        case: Case ID used in error messages.

    Returns:
        ``{"right": roi_name, "left": roi_name}`` with the names as spelt in ``roi_names``.

    Raises:
        CaseError: no lung ROI, only one lung, or several ROIs for the same lung.
    """
    wanted: dict[Side, set[str]] = {
        "right": {normalize_roi_name(a) for a in aliases.right},
        "left": {normalize_roi_name(a) for a in aliases.left},
    }
    found: dict[Side, list[str]] = {"right": [], "left": []}
    for name in roi_names:
        for side in ("right", "left"):
            if normalize_roi_name(name) in wanted[side]:
                found[side].append(name)
    listed = ", ".join(repr(n) for n in roi_names) or "none"
    if not found["right"] and not found["left"]:
        raise CaseError(case, f"no lung ROI found; ROI names found: {listed}")
    for side, other in (("right", "left"), ("left", "right")):
        if not found[side]:
            raise CaseError(
                case,
                f"only the {other} lung ROI found ({found[other][0]!r}), no {side} lung; "
                f"ROI names found: {listed}",
            )
        if len(found[side]) > 1:
            raise CaseError(case, f"several ROIs match the {side} lung: {', '.join(map(repr, found[side]))}")
    if found["right"][0] == found["left"][0]:
        raise CaseError(case, f"ROI {found['right'][0]!r} matches both the right and the left lung aliases")
    return {"right": found["right"][0], "left": found["left"][0]}


def _scan_polygon(x: np.ndarray, y: np.ndarray, toggles: np.ndarray) -> None:
    """XOR the even-odd crossings of one closed polygon into ``toggles`` ``[i + 1, j]``.

    For every voxel row ``j`` crossed by an edge (half-open in ``j``), the
    crossing at ``x = xc`` flips every voxel ``i < xc``: it toggles index 0 and
    index ``ceil(xc)``; a cumulative XOR along ``i`` then yields the mask.
    """
    n_i, n_j = toggles.shape[0] - 1, toggles.shape[1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    j_start = np.clip(np.ceil(np.minimum(y, y1)), 0, n_j).astype(np.int64)
    j_stop = np.clip(np.ceil(np.maximum(y, y1)), 0, n_j).astype(np.int64)
    counts = j_stop - j_start
    total = int(counts.sum())
    if total == 0:
        return
    edge = np.repeat(np.arange(len(x)), counts)
    j = j_start[edge] + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    t = (j - y[edge]) / (y1[edge] - y[edge])
    xc = x[edge] + t * (x1[edge] - x[edge])
    m = np.clip(np.ceil(xc), 0, n_i).astype(np.int64)
    np.bitwise_xor.at(toggles, (np.zeros_like(j), j), 1)
    np.bitwise_xor.at(toggles, (m, j), 1)


def rasterize_contours(contours: Sequence[np.ndarray], geometry: Geometry) -> np.ndarray:
    """Fill planar contours of one ROI into a boolean mask on a CT grid.

    Each contour goes to the slice ``k`` whose plane it lies in (every vertex
    within half a slice spacing). All polygons on one slice are combined with
    the even-odd rule (a contour inside another is a hole; separate contours
    are islands), sampling at voxel centres.

    Args:
        contours: Closed polygons, each an ``(N, 3)`` array of LPS mm vertices
            (last vertex need not repeat the first).
        geometry: The CT grid.

    Returns:
        Boolean mask ``[i, j, k]`` with shape ``geometry.shape``.

    Raises:
        ValueError: a contour is malformed, holds NaN/inf, or lies off the slice planes.
    """
    n_i, n_j, n_k = geometry.shape
    toggles = np.zeros((n_i + 1, n_j, n_k), dtype=np.uint8)
    z_first, z_last = (geometry.voxel_to_lps(np.array([0.0, 0.0, k]))[2] for k in (0, n_k - 1))
    for pts in contours:
        pts = np.asarray(pts, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"contour must be an (N, 3) array of LPS points, got shape {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("contour holds NaN or infinite coordinates")
        if len(pts) < 3:
            logger.debug("skipping degenerate contour with %d points", len(pts))
            continue
        vox = geometry.lps_to_voxel(pts)
        k = int(np.rint(vox[:, 2].mean()))
        if not 0 <= k < n_k or np.abs(vox[:, 2] - k).max() > 0.5:
            raise ValueError(
                f"contour at z={pts[:, 2].mean():.2f} mm does not lie on a CT slice "
                f"(slices from z={z_first:.2f} to z={z_last:.2f} mm, tolerance half the slice spacing)"
            )
        _scan_polygon(vox[:, 0], vox[:, 1], toggles[:, :, k])
    return np.bitwise_xor.accumulate(toggles, axis=0)[:n_i].astype(bool)


# --------------------------------------------------------------------------- CT series


def _floats(ds: Dataset, keyword: str, n: int, case: str, rel: str) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CaseError(case, f"{rel}: missing or invalid {keyword} {value!r}") from e
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise CaseError(case, f"{rel}: invalid {keyword} {value!r}")
    return arr


def _image_type(ds: Dataset) -> list[str]:
    """ImageType values, upper-cased (a single value comes back as a one-item list)."""
    value = ds.get("ImageType", [])
    return [str(v).upper() for v in ([value] if isinstance(value, str) else value)]


def _series_problem(files: list[DicomFile]) -> str | None:
    """Why a CT series cannot be the axial image series, or None if it can."""
    first = files[0].header
    if any("LOCALIZER" in _image_type(f.header) for f in files):
        return "localizer"
    needed = ("ImagePositionPatient", "ImageOrientationPatient")
    missing = [f.rel for f in files if any(n not in f.header for n in needed)]
    if missing:
        return f"missing ImagePositionPatient/ImageOrientationPatient in {missing[0]} (truncated?)"
    try:
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient], dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        normal /= np.linalg.norm(normal)
    except (TypeError, ValueError, ZeroDivisionError):
        return f"invalid ImageOrientationPatient {first.get('ImageOrientationPatient')!r}"
    if not np.isfinite(normal).all() or abs(normal[2]) < _MAX_AXIAL_TILT_COS:
        return f"not axial (slice normal {np.round(normal, 3).tolist()})"
    if len(files) < 2:
        return "single-slice series"
    return None


def _position(f: DicomFile, normal: np.ndarray) -> float:
    return float(np.dot([float(v) for v in f.header.ImagePositionPatient], normal))


def _dedupe(files: list[DicomFile]) -> list[DicomFile]:
    """Drop repeated SOPInstanceUIDs and repeated slice positions; sort by position."""
    seen: set[str] = set()
    unique = []
    for f in files:
        uid = _sop_instance(f.header)
        if uid and uid in seen:
            logger.debug("dropping duplicate instance %s", f.rel)
            continue
        seen.add(uid)
        unique.append(f)
    try:
        iop = np.asarray([float(v) for v in unique[0].header.ImageOrientationPatient], dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        pos = [_position(f, normal) for f in unique]
    except (AttributeError, TypeError, ValueError):
        return unique  # _series_problem reports it
    ordered = [f for _, f in sorted(zip(pos, unique), key=lambda t: (t[0], t[1].rel))]
    out = [ordered[0]]
    last = _position(ordered[0], normal)
    for f in ordered[1:]:
        p = _position(f, normal)
        if abs(p - last) < _SAME_POSITION_MM:
            logger.debug("dropping %s: same slice position as %s", f.rel, out[-1].rel)
            continue
        out.append(f)
        last = p
    return out


def find_ct_series(patient: PatientFiles) -> tuple[dict[str, list[DicomFile]], dict[str, str]]:
    """Split a patient's CT files into usable axial series and ignored ones.

    Returns:
        ``(usable, ignored)``: usable maps SeriesInstanceUID -> files (duplicates
        dropped, sorted by position along the slice normal); ignored maps
        SeriesInstanceUID -> the reason (localizer, single slice, not axial, ...).
    """
    by_series: dict[str, list[DicomFile]] = {}
    for f in patient.ct:
        by_series.setdefault(str(f.header.get("SeriesInstanceUID", "")), []).append(f)
    usable, ignored = {}, {}
    for uid, files in sorted(by_series.items()):
        problem = _series_problem(files)
        files = _dedupe(files) if problem is None else files
        if problem is None and len(files) < 2:
            problem = "single-slice series"
        if problem is None:
            usable[uid] = files
        else:
            ignored[uid] = problem
            logger.debug("ignoring CT series %s: %s", uid, problem)
    return usable, ignored


def best_series(usable: dict[str, list[DicomFile]]) -> str:
    """ORIGINAL/PRIMARY series first, then the one with the most slices, then by UID."""

    def key(uid: str) -> tuple[int, int, str]:
        primary = _image_type(usable[uid][0].header)[:2] == ["ORIGINAL", "PRIMARY"]
        return (0 if primary else 1, -len(usable[uid]), uid)

    return min(usable, key=key)


def load_ct_series(
    files: list[DicomFile], case: str, max_gap_tolerance: float
) -> tuple[np.ndarray, Geometry]:
    """Read the pixels of one axial CT series into a volume.

    Args:
        files: The slices of one series as returned by :func:`find_ct_series`
            (sorted by position along the slice normal, duplicates dropped).
        case: Case ID for error messages.
        max_gap_tolerance: Largest allowed relative deviation of a slice gap
            from the median gap.

    Returns:
        ``(hu, geometry)``: float32 Hounsfield units ``[i, j, k]`` (RescaleSlope and
        RescaleIntercept applied per slice) and the grid: direction columns are
        the row direction, the column direction and the slice normal (pointing
        towards increasing ``k``); origin is ImagePositionPatient of slice 0.

    Raises:
        CaseError: unreadable pixels, inconsistent rows/columns/spacing/orientation,
            non-uniform slice spacing, or NaN/inf values.
    """
    first = files[0].header
    iop = _floats(first, "ImageOrientationPatient", 6, case, files[0].rel)
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    if abs(np.dot(row_dir, col_dir)) > 1e-3:
        raise CaseError(case, f"{files[0].rel}: ImageOrientationPatient {iop.tolist()} is not orthogonal")
    normal = np.cross(row_dir, col_dir)
    ps = _floats(first, "PixelSpacing", 2, case, files[0].rel)
    rows, cols = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    if rows < 1 or cols < 1 or np.any(ps <= 0):
        raise CaseError(
            case, f"{files[0].rel}: invalid Rows/Columns/PixelSpacing ({rows}, {cols}, {ps.tolist()})"
        )

    ipps = []
    for f in files:
        h = f.header
        if (int(h.get("Rows", 0)), int(h.get("Columns", 0))) != (rows, cols):
            raise CaseError(
                case,
                f"inconsistent image size: {f.rel} is {h.get('Rows')}x{h.get('Columns')}, "
                f"expected {rows}x{cols}",
            )
        other_ps = _floats(h, "PixelSpacing", 2, case, f.rel)
        if np.any(np.abs(other_ps - ps) > 1e-4 * ps):
            raise CaseError(
                case, f"inconsistent pixel spacing: {f.rel} has {other_ps.tolist()}, expected {ps.tolist()}"
            )
        other_iop = _floats(h, "ImageOrientationPatient", 6, case, f.rel)
        if np.any(np.abs(other_iop - iop) > 1e-4):
            raise CaseError(
                case, f"inconsistent orientation: {f.rel} has {other_iop.tolist()}, expected {iop.tolist()}"
            )
        ipps.append(_floats(h, "ImagePositionPatient", 3, case, f.rel))
    ipps_arr = np.asarray(ipps)
    pos = ipps_arr @ normal
    gaps = np.diff(pos)
    expected = float(np.median(gaps))
    for n, gap in enumerate(gaps):
        if abs(gap - expected) > max_gap_tolerance * expected:
            raise CaseError(
                case,
                f"inconsistent slice spacing: gap of {gap:.3g} mm between slices at z={pos[n]:.2f} and "
                f"z={pos[n + 1]:.2f}, expected {expected:.3g} mm",
            )
    in_plane = ipps_arr - ipps_arr[0] - np.outer(pos - pos[0], normal)
    offset = np.linalg.norm(in_plane, axis=1)
    if offset.max() > 0.5 * ps.min():
        n = int(offset.argmax())
        raise CaseError(
            case,
            f"slices are not stacked along the slice normal (gantry tilt?): slice at z={pos[n]:.2f} "
            f"is shifted {offset[n]:.2f} mm in plane",
        )

    hu = np.empty((cols, rows, len(files)), dtype=np.float32)
    for k, f in enumerate(files):
        try:
            ds = pydicom.dcmread(f.path)
            pixels = ds.pixel_array
        except Exception as e:  # noqa: BLE001 - pydicom/numpy raise many types for bad pixel data
            raise CaseError(case, f"cannot read pixel data of {f.rel} ({type(e).__name__}: {e})") from e
        if pixels.shape != (rows, cols):
            raise CaseError(case, f"{f.rel}: pixel data has shape {pixels.shape}, expected ({rows}, {cols})")
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            raise CaseError(case, f"{f.rel}: non-finite RescaleSlope/RescaleIntercept ({slope}, {intercept})")
        hu[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T
    if not np.all(np.isfinite(hu)):
        k = int(np.flatnonzero(~np.isfinite(hu).all(axis=(0, 1)))[0])
        raise CaseError(case, f"NaN or infinite HU values in slice at z={pos[k]:.2f} ({files[k].rel})")

    spacing = (float(ps[1]), float(ps[0]), float((pos[-1] - pos[0]) / (len(files) - 1)))
    geometry = Geometry(
        shape=(cols, rows, len(files)),
        spacing_mm=spacing,
        origin_lps_mm=tuple(float(v) for v in ipps_arr[0]),  # type: ignore[arg-type]
        direction=tuple(tuple(float(v) for v in r) for r in np.column_stack([row_dir, col_dir, normal])),
    )
    return hu, geometry


# --------------------------------------------------------------------------- RTSTRUCT


def rtstruct_references(ds: Dataset) -> tuple[set[str], set[str], set[str]]:
    """Frame-of-reference, series and image UIDs an RTSTRUCT points at.

    Returns:
        ``(frame_of_reference_uids, series_uids, sop_instance_uids)`` from
        ReferencedFrameOfReferenceSequence (series and contour images) and the
        ContourImageSequence of every contour.
    """
    fors, series, sops = set(), set(), set()
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in fr:
            fors.add(str(fr.FrameOfReferenceUID))
        for st in fr.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in se:
                    series.add(str(se.SeriesInstanceUID))
                for img in se.get("ContourImageSequence", []):
                    sops.add(str(img.get("ReferencedSOPInstanceUID", "")))
    for roi in ds.get("StructureSetROISequence", []):
        if "ReferencedFrameOfReferenceUID" in roi:
            fors.add(str(roi.ReferencedFrameOfReferenceUID))
    for rc in ds.get("ROIContourSequence", []):
        for c in rc.get("ContourSequence", []):
            for img in c.get("ContourImageSequence", []):
                sops.add(str(img.get("ReferencedSOPInstanceUID", "")))
    sops.discard("")
    return fors, series, sops


def roi_names(ds: Dataset) -> list[str]:
    """ROI names of an RTSTRUCT in StructureSetROISequence order."""
    return [str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])]


def _contour_points(item: Dataset) -> np.ndarray:
    """ContourData of one contour item as an ``(N, 3)`` float array (fast path for raw values)."""
    elem = item.get_item(_CONTOUR_DATA) if _CONTOUR_DATA in item else None
    if elem is None:
        return np.zeros((0, 3))
    if elem.is_raw and isinstance(elem.value, bytes):
        flat = np.array(elem.value.split(b"\\"), dtype=np.float64) if elem.value.strip() else np.zeros(0)
    else:
        value = item.ContourData
        values = value if isinstance(value, Sequence) else [value]
        flat = np.asarray([float(v) for v in values], dtype=np.float64)
    if flat.size % 3:
        raise ValueError(f"ContourData holds {flat.size} numbers, not a multiple of 3")
    return flat.reshape(-1, 3)


def roi_contours(ds: Dataset, name: str) -> list[np.ndarray]:
    """CLOSED_PLANAR contours of the ROI called ``name``, each an ``(N, 3)`` LPS mm array.

    Contours of other geometric types (POINT, OPEN_PLANAR) are skipped.

    Raises:
        ValueError: the ROI does not exist or its ContourData is malformed.
    """
    rois = ds.get("StructureSetROISequence", [])
    numbers = [int(r.ROINumber) for r in rois if str(r.get("ROIName")) == name]
    if not numbers:
        raise ValueError(f"no ROI named {name!r}")
    contours = []
    for rc in ds.get("ROIContourSequence", []):
        if int(rc.get("ReferencedROINumber", -1)) != numbers[0]:
            continue
        for c in rc.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            if kind != "CLOSED_PLANAR":
                logger.debug("skipping %s contour of ROI %r", kind, name)
                continue
            try:
                contours.append(_contour_points(c))
            except ValueError as e:
                raise ValueError(f"invalid ContourData ({e})") from e
    return contours


def _series_dir(files: list[DicomFile]) -> Path:
    return Path(os.path.commonpath([str(f.path.parent) for f in files]))


def _referenced_series(rs: DicomFile, usable: dict[str, list[DicomFile]], ignored: dict[str, str]) -> str:
    """The usable CT series an RTSTRUCT belongs to.

    Uses the referenced series (else the series of the referenced contour
    images); with no series reference at all, the best series in the
    referenced frame of reference. The CT frame of reference must be one the
    RTSTRUCT references.

    Raises:
        ValueError: the RTSTRUCT points at another series or frame of reference
            (message starts with "references ...").
    """
    fors, series, sops = rtstruct_references(rs.header)
    if not series:
        sop_to_series = {_sop_instance(f.header): u for u, files in usable.items() for f in files}
        series = {sop_to_series[s] for s in sops if s in sop_to_series}
    if series:
        found = sorted(series & usable.keys())
        if not found:
            bad = sorted(series & ignored.keys())
            if bad:
                raise ValueError(
                    f"references series {bad[0]}, which is not a usable CT series ({ignored[bad[0]]})"
                )
            raise ValueError(
                f"references series {', '.join(sorted(series))}, not the CT series {best_series(usable)}"
            )
        uid = found[0]
    else:
        in_for = {u: f for u, f in usable.items() if str(f[0].header.get("FrameOfReferenceUID")) in fors}
        if not in_for:
            raise ValueError(
                f"references frame of reference {', '.join(sorted(fors)) or 'none'}, "
                f"not the CT series {best_series(usable)}"
            )
        uid = best_series(in_for)
    ct_for = str(usable[uid][0].header.get("FrameOfReferenceUID", ""))
    if fors and ct_for not in fors:
        raise ValueError(
            f"references frame of reference {', '.join(sorted(fors))}, not the CT frame of reference {ct_for}"
        )
    return uid


def read_dicom_case(patient: PatientFiles, case: str, cfg: PrepareConfig) -> DicomCase:
    """Read one patient's axial CT series and lung masks.

    The CT series is the usable axial series referenced by the (first, by
    path) RTSTRUCT holding both lungs; an RTSTRUCT that references no series
    is matched by frame of reference, taking the ORIGINAL/PRIMARY series
    with the most slices.

    Args:
        patient: Files found by :func:`scan_dicom_tree` for one PatientID.
        case: Case ID used in error messages.
        cfg: Slice-gap tolerance and ROI aliases.

    Raises:
        CaseError: any problem with this patient's files; the message names the
            case, the file or series and the offending value.
    """
    if patient.errors:
        raise CaseError(case, "; ".join(patient.errors))
    usable, ignored = find_ct_series(patient)
    if not usable:
        notes = [f"series {uid}: {why}" for uid, why in ignored.items()]
        notes += [f"{n} {why} file(s)" for why, n in sorted(patient.ignored.items())]
        detail = f" (ignored: {'; '.join(notes)})" if notes else ""
        raise CaseError(case, f"no axial CT series found{detail}")
    if not patient.rtstructs:
        raise CaseError(case, "no RTSTRUCT found")

    lung_structs: list[tuple[DicomFile, dict[Side, str]]] = []
    first_error: CaseError | None = None
    for rs in patient.rtstructs:
        try:
            lung_structs.append((rs, match_lung_rois(roi_names(rs.header), cfg.roi_aliases, case=case)))
        except CaseError as e:
            first_error = first_error or CaseError(case, f"RTSTRUCT {rs.rel}: {e.problem}")
    if not lung_structs:
        assert first_error is not None
        raise first_error

    problems = []
    for rs, lungs in lung_structs:
        try:
            uid = _referenced_series(rs, usable, ignored)
            break
        except ValueError as e:
            problems.append(f"RTSTRUCT {rs.rel} {e}")
    else:
        raise CaseError(case, problems[0])

    files = usable[uid]
    hu, geometry = load_ct_series(files, case, cfg.max_slice_gap_tolerance)
    masks = {}
    for side in ("right", "left"):
        try:
            masks[side] = rasterize_contours(roi_contours(rs.header, lungs[side]), geometry)
        except ValueError as e:
            raise CaseError(case, f"RTSTRUCT {rs.rel}: ROI {lungs[side]!r}: {e}") from e
    logger.debug("%s: CT series with %d slices, RTSTRUCT %s", case, len(files), rs.rel)
    return DicomCase(
        hu=hu,
        geometry=geometry,
        series_uid=uid,
        series_dir=_series_dir(files),
        rtstruct=rs,
        roi_names=roi_names(rs.header),
        lung_rois=lungs,
        right=masks["right"],
        left=masks["left"],
    )
