"""Reading DICOM CT series into lungseg volumes (the RT structure set side of `prepare`: :mod:`lungseg.io.dicom_case`).

Files are found by :func:`lungseg.io.dicom_scan.scan_dicom_tree` (headers only);
pixels are read for the one CT series chosen per patient. Volumes follow the lungseg
convention (see :mod:`lungseg.io.geometry`): arrays indexed ``[i, j, k]`` =
``[column, row, slice]``, where ``hu[i, j, k]`` is ``pixel_array[j, i]`` (row ``j``,
column ``i``) of the ``k``-th file of the series sorted by position along the slice
normal (row direction x column direction of ImageOrientationPatient); world
coordinates LPS mm. PatientName and other identifiers are never logged or returned.

Compressed transfer syntaxes decode through pydicom's pixel-data plugins (RLE natively;
JPEG, JPEG-LS and JPEG 2000 with pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg or
pyjpegls). A syntax with no installed decoder is a one-line :class:`CaseError` naming the
file and the syntax. Multi-frame (Enhanced, Legacy Converted Enhanced) CT is not read: the
"no CT" errors name it (:func:`lungseg.io.dicom_scan.multiframe_ct_reason`).

The scanning and RTSTRUCT names are re-exported here, so ``from lungseg.io.dicom
import scan_dicom_tree, rasterize_contours`` keeps working.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataset import Dataset
from pydicom.uid import UID

from lungseg.errors import CaseError
from lungseg.io import exact
from lungseg.io.dicom_rtstruct import (
    Side,
    match_lung_rois,
    normalize_roi_name,
    rasterize_contours,
    roi_contours,
    roi_names,
    rtstruct_references,
)
from lungseg.io.dicom_scan import DicomFile, PatientFiles, folder_state, scan_dicom_tree, sop_instance_uid
from lungseg.io.geometry import Geometry

__all__ = [
    "CtSeries", "DicomFile", "PatientFiles", "Side", "best_series", "ct_series_geometry",
    "find_ct_series", "load_ct_series", "match_lung_rois", "normalize_roi_name", "rasterize_contours",
    "read_ct_folder", "require_ct_series", "roi_contours",
    "roi_names", "rtstruct_references", "scan_dicom_tree", "select_ct_series",
]  # fmt: skip

logger = logging.getLogger(__name__)

_MAX_AXIAL_TILT_COS = np.cos(np.deg2rad(30.0))  # slice normal within 30 degrees of the z axis
_SAME_POSITION_MM = 0.01  # slices closer than this along the normal are duplicates
DEFAULT_MAX_GAP_TOLERANCE = 0.05  # as ``lungseg predict`` reads a CT


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
        normal /= exact.norm(normal)
    except (TypeError, ValueError, ZeroDivisionError):
        return f"invalid ImageOrientationPatient {first.get('ImageOrientationPatient')!r}"
    if not np.isfinite(normal).all() or abs(normal[2]) < _MAX_AXIAL_TILT_COS:
        return f"not axial (slice normal {np.round(normal, 3).tolist()})"
    if len(files) < 2:
        return "single-slice series"
    return None


def _position(f: DicomFile, normal: np.ndarray) -> float:
    return exact.dot([float(v) for v in f.header.ImagePositionPatient], normal)


def _dedupe(files: list[DicomFile]) -> list[DicomFile]:
    """Drop repeated SOPInstanceUIDs and repeated slice positions; sort by position."""
    seen: set[str] = set()
    unique = []
    for f in files:
        uid = sop_instance_uid(f.header)
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


def require_ct_series(patient: PatientFiles, case: str) -> tuple[dict[str, list[DicomFile]], dict[str, str]]:
    """:func:`find_ct_series`, raising when the patient has no usable axial CT series.

    Raises:
        CaseError: no usable series; the message lists every ignored series and
            file kind with the reason (localizer, not axial, Enhanced CT, ...) and any
            unreadable file.
    """
    usable, ignored = find_ct_series(patient)
    if not usable:
        notes = [f"series {uid}: {why}" for uid, why in ignored.items()]
        notes += [f"{n} {why} file(s)" for why, n in sorted(patient.ignored.items())]
        notes += patient.errors
        detail = f" (ignored: {'; '.join(notes)})" if notes else ""
        raise CaseError(case, f"no axial CT series found{detail}")
    return usable, ignored


def ct_series_geometry(files: list[DicomFile], case: str, max_gap_tolerance: float) -> Geometry:
    """Check the headers of one axial CT series and return its voxel grid (no pixels read).

    Args:
        files: The slices of one series as returned by :func:`find_ct_series`
            (sorted by position along the slice normal, duplicates dropped).
        case: Case ID (or folder) for error messages.
        max_gap_tolerance: Largest allowed relative deviation of a slice gap
            from the median gap.

    Returns:
        The grid of the volume :func:`load_ct_series` reads: shape ``(Columns, Rows,
        len(files))``; direction columns are the row direction, the column direction and
        the slice normal (pointing towards increasing ``k``, i.e. ``files[k]``); origin
        is ImagePositionPatient of ``files[0]``.

    Raises:
        CaseError: inconsistent rows/columns/spacing/orientation, non-uniform slice
            spacing, or slices not stacked along the normal.
    """
    first = files[0].header
    iop = _floats(first, "ImageOrientationPatient", 6, case, files[0].rel)
    row_dir, col_dir = iop[:3] / exact.norm(iop[:3]), iop[3:] / exact.norm(iop[3:])
    if abs(exact.dot(row_dir, col_dir)) > 1e-3:
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
    pos = exact.matmul(ipps_arr, normal)
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
    return Geometry(
        shape=(cols, rows, len(files)),
        spacing_mm=(float(ps[1]), float(ps[0]), float((pos[-1] - pos[0]) / (len(files) - 1))),
        origin_lps_mm=tuple(float(v) for v in ipps_arr[0]),  # type: ignore[arg-type]
        direction=tuple(tuple(float(v) for v in r) for r in np.column_stack([row_dir, col_dir, normal])),
    )


def _decoder_problem(f: DicomFile) -> str | None:
    """Why the pixel data of ``f`` cannot be decoded here (its transfer syntax), or None."""
    meta = getattr(f.header, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if not uid:
        return None  # pydicom guesses implicit/explicit little endian
    uid = UID(str(uid))
    if not uid.is_transfer_syntax:
        return f"unknown transfer syntax {uid}"
    if not uid.is_compressed:
        return None
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        return f"transfer syntax {uid.name} ({uid}) is not supported (no pixel data decoder exists for it)"
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"no decoder installed for transfer syntax {uid.name} ({uid}); needs one of: {needs}"
    return None


def _one_line(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


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
        RescaleIntercept applied per slice; ``hu[:, :, k]`` is ``files[k]``'s
        ``pixel_array`` transposed; the array is a Fortran-ordered view) and the grid of
        :func:`ct_series_geometry`.

    Raises:
        CaseError: unreadable pixels, a transfer syntax with no installed decoder,
            inconsistent rows/columns/spacing/orientation, non-uniform slice spacing,
            or NaN/inf values.
    """
    geometry = ct_series_geometry(files, case, max_gap_tolerance)
    cols, rows, _ = geometry.shape
    # slices are filled contiguously and the [i, j, k] array is a transposed view of them: writing
    # each slice transposed into a C-ordered [i, j, k] array took 0.8 s of a 512x512x130 read
    slices = np.empty((len(files), rows, cols), dtype=np.float32)
    for k, f in enumerate(files):
        problem = _decoder_problem(f)
        if problem is not None:
            raise CaseError(case, f"cannot read pixel data of {f.rel}: {problem}")
        try:
            ds = pydicom.dcmread(f.path)
            pixels = ds.pixel_array
        except Exception as e:  # noqa: BLE001 - pydicom/numpy raise many types for bad pixel data
            raise CaseError(case, f"cannot read pixel data of {f.rel} ({_one_line(e)})") from e
        if pixels.shape != (rows, cols):
            raise CaseError(case, f"{f.rel}: pixel data has shape {pixels.shape}, expected ({rows}, {cols})")
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        if not (np.isfinite(slope) and np.isfinite(intercept)):
            raise CaseError(case, f"{f.rel}: non-finite RescaleSlope/RescaleIntercept ({slope}, {intercept})")
        slices[k] = pixels.astype(np.float64) * slope + intercept
    if not np.all(np.isfinite(slices)):
        k = int(np.flatnonzero(~np.isfinite(slices).all(axis=(1, 2)))[0])
        ipp = _floats(files[k].header, "ImagePositionPatient", 3, case, files[k].rel)
        z = exact.dot(ipp, geometry.direction_matrix[:, 2])
        raise CaseError(case, f"NaN or infinite HU values in slice at z={z:.2f} ({files[k].rel})")
    return slices.transpose(2, 1, 0), geometry


@dataclass
class CtSeries:
    """The axial CT series of a DICOM folder, as :func:`read_ct_folder` reads it.

    Attributes:
        hu: Hounsfield units, float32 ``[i, j, k]`` = ``[column, row, slice]``
            (``hu[:, :, k]`` is ``files[k]``'s ``pixel_array`` transposed).
        geometry: Grid of ``hu`` (LPS mm).
        series_uid: SeriesInstanceUID of the series.
        files: The series' files in ``k`` order (by position along the slice normal).
    """

    hu: np.ndarray
    geometry: Geometry
    series_uid: str
    files: list[DicomFile]

    @property
    def sop_instance_uids(self) -> list[str]:
        """SOPInstanceUID of each slice, in ``k`` order."""
        return [sop_instance_uid(f.header) for f in self.files]


#: The last selection made, with the state of its folder's files (see :func:`select_ct_series`).
_last_selection: tuple[tuple, str, list[DicomFile]] | None = None


def forget_selection() -> None:
    """Drop the remembered series selection: the next :func:`select_ct_series` reads the headers again."""
    global _last_selection
    _last_selection = None


def select_ct_series(folder: str | Path) -> tuple[str, list[DicomFile]]:
    """Choose the CT series of a one-patient DICOM folder, reading headers only.

    The last selection is remembered while no file of its folder changes (:func:`folder_state`):
    ``lungseg predict`` reads a series and then writes its DICOM SEG and RTSTRUCT, which
    reference the same headers, without reading them again (about 0.15 s for 130 slices).

    The series selection of ``lungseg predict``: axial CT Image Storage series only
    (localizers, other modalities, duplicate instances dropped), ORIGINAL/PRIMARY first,
    then the most slices, then by UID (:func:`best_series`).

    Args:
        folder: A folder tree holding one patient's DICOM files (any layout).

    Returns:
        ``(series_uid, files)`` with the files sorted by position along the slice normal.

    Raises:
        CaseError: (naming ``folder``) not a folder, no DICOM CT files (the message says
            what was found instead), CT files of several patients, no axial series.
    """
    global _last_selection
    folder = Path(folder)
    name = str(folder)
    if not folder.is_dir():
        raise CaseError(name, "not a folder")
    state = folder_state(folder)
    if state is not None and _last_selection is not None and _last_selection[0] == state:
        return _last_selection[1], list(_last_selection[2])
    patients = scan_dicom_tree(folder)
    with_ct = {pid: p for pid, p in patients.items() if p.ct or p.errors}
    if not with_ct:
        found: Counter[str] = Counter()
        for p in patients.values():
            found.update(p.ignored)
            found["RTSTRUCT"] += len(p.rtstructs)
        notes = [f"{n} {why} file(s)" for why, n in sorted(found.items()) if n]
        detail = f" (found: {'; '.join(notes)})" if notes else ""
        raise CaseError(name, f"no DICOM CT image files found{detail}")
    if len(with_ct) > 1:
        raise CaseError(name, f"holds CT files of {len(with_ct)} patients; give one patient's folder")
    usable, _ = require_ct_series(next(iter(with_ct.values())), name)
    uid = best_series(usable)
    if len(usable) > 1:
        logger.info("%s: %d axial CT series, using %s (%d slices)", name, len(usable), uid, len(usable[uid]))
    if state is not None:
        _last_selection = (state, uid, list(usable[uid]))
    return uid, usable[uid]


def read_ct_folder(folder: str | Path, max_gap_tolerance: float = DEFAULT_MAX_GAP_TOLERANCE) -> CtSeries:
    """Read the CT series of a one-patient DICOM folder (chosen by :func:`select_ct_series`).

    Args:
        folder: A folder tree holding one patient's DICOM files (any layout).
        max_gap_tolerance: Largest allowed relative deviation of a slice gap from the median.

    Returns:
        The volume in HU ``[i, j, k]``, its grid, the series UID and its files in ``k`` order.

    Raises:
        CaseError: (naming ``folder``) see :func:`select_ct_series` and :func:`load_ct_series`.
    """
    uid, files = select_ct_series(folder)
    hu, geometry = load_ct_series(files, str(folder), max_gap_tolerance)
    return CtSeries(hu=hu, geometry=geometry, series_uid=uid, files=files)
