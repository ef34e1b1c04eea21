"""Reading one patient for ``prepare``: the CT series an RT structure set belongs to, and its two lung masks.

The CT side is :mod:`lungseg.io.dicom` (series selection and reading), the RTSTRUCT side
:mod:`lungseg.io.dicom_rtstruct` (ROI matching, contour rasterisation). Arrays follow the
lungseg convention (:mod:`lungseg.io.geometry`): ``[i, j, k]`` = ``[column, row, slice]``, LPS mm.
PatientName and other identifiers are never logged or returned.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungseg.config import PrepareConfig
from lungseg.errors import CaseError
from lungseg.io.dicom import best_series, load_ct_series, require_ct_series
from lungseg.io.dicom_rtstruct import (
    Side,
    match_lung_rois,
    rasterize_contours,
    roi_contours,
    roi_names,
    rtstruct_references,
)
from lungseg.io.dicom_scan import DicomFile, PatientFiles, sop_instance_uid
from lungseg.io.geometry import Geometry

logger = logging.getLogger(__name__)


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
        sop_to_series = {sop_instance_uid(f.header): u for u, files in usable.items() for f in files}
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
    usable, ignored = require_ct_series(patient, case)
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
            masks[side] = rasterize_contours(roi_contours(rs.header, lungs[side]), geometry,
                                             boundary=cfg.contour_fill == "boundary")
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
