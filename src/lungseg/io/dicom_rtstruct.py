"""Reading RT structure sets: ROI names, references, contours, rasterising onto a CT grid.

Functions here work on one RTSTRUCT :class:`~pydicom.dataset.Dataset`; choosing the
structure set and CT series of a patient is :func:`lungseg.io.dicom_case.read_dicom_case`.
Masks follow the lungseg convention (see :mod:`lungseg.io.geometry`): arrays indexed
``[i, j, k]`` = ``[column, row, slice]``, world coordinates LPS mm.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from lungseg.config import RoiAliasConfig
from lungseg.errors import CaseError
from lungseg.io.geometry import Geometry

logger = logging.getLogger(__name__)

Side = Literal["right", "left"]

_CONTOUR_DATA = Tag(0x3006, 0x0050)


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


def _boundary_voxels(x: np.ndarray, y: np.ndarray, plane: np.ndarray) -> None:
    """Set the voxels of ``plane`` ``[i, j]`` that a closed polygon's edges are drawn through: one voxel
    per step along each edge's major axis, the nearest centre (a DDA line, as OpenCV draws it)."""
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    n = np.maximum(1, np.ceil(np.maximum(np.abs(x1 - x), np.abs(y1 - y))).astype(np.int64))
    edge = np.repeat(np.arange(len(x)), n)
    t = (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
    i = np.rint(x[edge] + t * (x1[edge] - x[edge])).astype(np.int64)
    j = np.rint(y[edge] + t * (y1[edge] - y[edge])).astype(np.int64)
    ok = (i >= 0) & (i < plane.shape[0]) & (j >= 0) & (j < plane.shape[1])
    plane[i[ok], j[ok]] = True


def rasterize_contours(contours: Sequence[np.ndarray], geometry: Geometry, boundary: bool = False) -> np.ndarray:
    """Fill planar contours of one ROI into a boolean mask on a CT grid.

    Each contour goes to the slice ``k`` whose plane it lies in (every vertex
    within half a slice spacing). All polygons on one slice are combined with
    the even-odd rule (a contour inside another is a hole; separate contours
    are islands), sampling at voxel centres. With ``boundary`` the voxels the
    contour lines pass through are added too, as OpenCV's polygon fill (used by
    rt-utils and many RTSTRUCT tools) rasterises them: about half a voxel more
    all around.

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
    edges = np.zeros((n_i, n_j, n_k), dtype=bool) if boundary else None
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
        if edges is not None:
            _boundary_voxels(vox[:, 0], vox[:, 1], edges[:, :, k])
    mask = np.bitwise_xor.accumulate(toggles, axis=0)[:n_i].astype(bool)
    return mask | edges if edges is not None else mask


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


def contour_points(item: Dataset) -> np.ndarray:
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
                contours.append(contour_points(c))
            except ValueError as e:
                raise ValueError(f"invalid ContourData ({e})") from e
    return contours
