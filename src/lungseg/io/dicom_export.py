"""Writing a lung segmentation back to DICOM: a DICOM SEG and an RT Structure Set.

Both objects reference the CT series they were computed from (the series
:func:`lungseg.io.dicom.select_ct_series` picks in ``series_dir``, i.e. the one
``lungseg predict`` reads), so a PACS or viewer shows them on top of it:

* Study Instance UID, Frame of Reference UID and the Patient and Study module
  attributes are copied from the CT, and only those the CT already has (nothing
  new is added: an attribute the CT lacks stays empty or absent);
* every frame of the SEG and every RTSTRUCT contour references the SOP Instance UID of
  its CT slice;
* new Series and SOP Instance UIDs are derived (:func:`lungseg.io.dicom_write.make_uid`)
  from the CT series UID and a digest of the labels: the same labels for the same CT
  give the same UIDs, different labels different ones.

``labels`` is a uint8 array ``[i, j, k]`` = ``[column, row, slice]`` on the CT's own grid,
exactly as :func:`lungseg.io.dicom.read_ct_folder` returns the HU array: ``labels[i, j, k]``
belongs to pixel (row ``j``, column ``i``) of the ``k``-th slice of the series sorted by
position along the slice normal. Values: 0 background, 1 right lung, 2 left lung.

The RTSTRUCT contours are traced at level :data:`CONTOUR_LEVEL` (0.75), a quarter voxel outside
the labelled voxels' centres: lungseg's reader (even-odd rule at voxel centres) and rt-utils (vertices
rounded to whole pixels, then OpenCV's boundary-inclusive fill) both read back exactly the labels written.

The headers of the last series read are kept while its folder's files are unchanged, so the SEG and the
RTSTRUCT of one case read them once. Files are written atomically (temporary file, then rename): a failed
export never leaves a half-written file or replaces an earlier one.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from io import BytesIO
from pathlib import Path

import highdicom as hd  # 0.2 s to import: lungseg predict imports this module before its first case
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage
from pydicom.valuerep import DA, TM

from lungseg import __version__
from lungseg.errors import CaseError, LungsegError
from lungseg.fileio import atomic_write_bytes
from lungseg.io.dicom import (
    DEFAULT_MAX_GAP_TOLERANCE,
    DicomFile,
    ct_series_geometry,
    forget_selection,
    select_ct_series,
)
from lungseg.io.dicom_scan import folder_state, sop_instance_uid
from lungseg.io.dicom_write import add_rtstruct_content, make_uid, roi_color
from lungseg.io.geometry import Geometry
from lungseg.morphology import bounding_box

logger = logging.getLogger(__name__)

RIGHT, LEFT = 1, 2
#: SNOMED CT codes of the two segments (pydicom's code dictionary has no lateralised lungs).
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
ROI_NAMES = {RIGHT: "Lung_R", LEFT: "Lung_L"}
SEG_SERIES_NUMBER, RTSTRUCT_SERIES_NUMBER = 901, 902
MANUFACTURER = "lungseg"
#: Iso-level of the RTSTRUCT contours: vertices a quarter voxel outside the boundary voxel centres. Readers
#: that round vertices to whole voxels before a boundary-inclusive fill (rt-utils: np.around, then OpenCV's
#: fillPoly) and readers that sample voxel centres with the even-odd rule (lungseg) both get the mask back
#: exactly; at 0.5 the vertices fall on the rounding ties (rt-utils read back Dice 0.95-0.99 per lung on the
#: COPDGene and NSCLC series, 1.0 at 0.75).
CONTOUR_LEVEL = 0.75


@dataclass(frozen=True)
class _Series:
    """The CT series a segmentation is written for: its headers, checked for referencing."""

    name: str  # the series folder, for messages
    series_uid: str
    files: list[DicomFile]  # in k order
    geometry: Geometry


@dataclass(frozen=True)
class _Reference:
    """The CT series a segmentation is written for, and the checked labels."""

    name: str
    series_uid: str
    files: list[DicomFile]
    geometry: Geometry
    labels: np.ndarray  # uint8 [i, j, k]
    box: tuple[slice, ...] | None  # of the labelled voxels (None: no lung)
    digest: str  # of the labels, for the new UIDs

    @property
    def first(self) -> pydicom.Dataset:
        return self.files[0].header


#: The last series read, with the state of its folder's files (see :func:`_ct_series`).
_last_series: tuple[tuple, _Series] | None = None


def forget_series() -> None:
    """Drop the remembered CT series (here and :func:`lungseg.io.dicom.select_ct_series`'s): the next
    writer reads the headers again (benchmarks, tests)."""
    global _last_series
    _last_series = None
    forget_selection()


def _ct_series(series_dir: str | Path) -> _Series:
    """Read the CT series headers of ``series_dir`` (:func:`select_ct_series`) and check them for referencing.

    The last series read is kept while no file of its folder has changed (same paths, sizes,
    modification times and inodes): the SEG and the RTSTRUCT of one case then read the
    headers once (about 0.15 s for 130 slices).
    """
    global _last_series
    name = str(series_dir)
    folder = Path(series_dir)
    state = folder_state(folder)
    if state is not None and _last_series is not None and _last_series[0] == state:
        return _last_series[1] if _last_series[1].name == name else replace(_last_series[1], name=name)
    series_uid, files = select_ct_series(folder)
    geometry = ct_series_geometry(files, name, DEFAULT_MAX_GAP_TOLERANCE)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        values = {str(f.header.get(keyword, "") or "") for f in files}
        if "" in values or len(values) != 1:
            found = "missing in some slices" if "" in values else f"{len(values)} different values"
            raise CaseError(name, f"CT series {series_uid} cannot be referenced: {keyword} {found}")
    if any(not sop_instance_uid(f.header) for f in files):
        raise CaseError(name, f"CT series {series_uid} cannot be referenced: a slice has no SOPInstanceUID")
    series = _Series(name, series_uid, files, geometry)
    if state is not None:
        _last_series = (state, series)
    return series


def _reference(labels: np.ndarray, series_dir: str | Path) -> _Reference:
    """Read the CT series headers of ``series_dir`` and check ``labels`` against its grid."""
    series = _ct_series(series_dir)
    name, geometry = series.name, series.geometry
    arr = np.asarray(labels)
    if arr.shape != tuple(geometry.shape):
        raise CaseError(
            name,
            f"labels have shape {arr.shape}, but the CT series grid is {tuple(geometry.shape)} "
            "(columns, rows, slices)",
        )
    if arr.dtype.kind not in "biuf":
        raise CaseError(name, f"labels must be an integer array, got dtype {arr.dtype}")
    if arr.dtype not in (np.uint8, np.bool_) or arr.max(initial=0) > LEFT:  # uint8: no np.unique (0.14 s)
        bad = np.setdiff1d(np.unique(arr), [0, RIGHT, LEFT])
        if bad.size:
            raise CaseError(
                name, f"labels hold values {bad[:5].tolist()}; expected 0 background, 1 right lung, 2 left lung"
            )
    arr = np.asarray(arr, dtype=np.uint8)
    box = bounding_box(arr)
    h = hashlib.sha256(repr((arr.shape, box)).encode())
    if box is not None:
        h.update(arr[box].tobytes())  # every labelled voxel is in the box
    return _Reference(name, series.series_uid, series.files, geometry, arr, box, h.hexdigest())


def _write(ds: pydicom.Dataset, out_path: str | Path) -> Path:
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    try:
        return atomic_write_bytes(out_path, buf.getvalue())
    except OSError as e:
        raise LungsegError(f"{out_path}: cannot write ({e})") from e


def _one_line(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


@contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """Keep highdicom's warnings out of the output: some quote header values (PatientName)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("highdicom %s suppressed (it may quote patient attributes)", w.category.__name__)


def _frames(ref: _Reference) -> np.ndarray:
    """The labels as frames ``(k, row j, column i)``: only the labelled box is transposed (a full
    512x512x130 transpose took 0.15 s)."""
    frames = np.zeros(ref.labels.shape[::-1], np.uint8)
    if ref.box is not None:
        frames[ref.box[::-1]] = ref.labels[ref.box].transpose(2, 1, 0)
    return frames


def write_dicom_seg(labels: np.ndarray, series_dir: str | Path, out_path: str | Path) -> Path:
    """Write ``labels`` as a DICOM Segmentation (BINARY) referencing the CT series in ``series_dir``.

    Two segments: 1 "Right lung" (SCT 3341006) and 2 "Left lung" (SCT 44029006), category
    Anatomical Structure (SCT 91723000), algorithm type AUTOMATIC (lungseg). One frame
    per non-empty (slice, segment), each referencing its CT slice's SOP Instance UID and
    carrying that slice's position and orientation; built with highdicom.

    Args:
        labels: uint8 ``[i, j, k]`` on the CT's own grid (see the module docstring):
            0 background, 1 right lung, 2 left lung.
        series_dir: The DICOM folder the CT was read from.
        out_path: The ``.dcm`` file to write (parent created if missing).

    Returns:
        ``out_path``.

    Raises:
        CaseError: (naming ``series_dir``) no usable CT series, labels off its grid or
            with other values, UIDs missing.
        LungsegError: ``out_path`` cannot be written.
    """
    ref = _reference(labels, series_dir)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="lungseg", family=codes.DCM.ArtificialIntelligence, version=__version__
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=ROI_NAMES[number],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=make_uid(ref.series_uid, "lungseg-seg-segment", str(number), ref.digest),
            tracking_id=ROI_NAMES[number],
            display_color=hd.color.CIELabColor.from_rgb(*roi_color(ROI_NAMES[number])),
        )
        for number, code in ((RIGHT, RIGHT_LUNG), (LEFT, LEFT_LUNG))
    ]
    try:
        with _quiet_highdicom():
            seg = hd.seg.Segmentation(
                source_images=[f.header for f in ref.files],
                pixel_array=_frames(ref),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segments,
                series_instance_uid=make_uid(ref.series_uid, "lungseg-seg-series", ref.digest),
                series_number=SEG_SERIES_NUMBER,
                sop_instance_uid=make_uid(ref.series_uid, "lungseg-seg", ref.digest),
                instance_number=1,
                manufacturer=MANUFACTURER,
                manufacturer_model_name=MANUFACTURER,
                software_versions=__version__,
                device_serial_number="1",
                series_description="lungseg lungs",
                content_label="LUNGS",
                content_description="Right and left lung, automatic (lungseg)",
                omit_empty_frames=True,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        problem = f"cannot build a DICOM SEG for series {ref.series_uid} ({_one_line(e)})"
        raise CaseError(ref.name, problem) from e
    path = _write(seg, out_path)
    logger.info("wrote DICOM SEG (%d frames) to %s", int(seg.NumberOfFrames), path)
    return path


def write_rtstruct(labels: np.ndarray, series_dir: str | Path, out_path: str | Path) -> Path:
    """Write ``labels`` as an RT Structure Set referencing the CT series in ``series_dir``.

    ROIs ``Lung_R`` (label 1) and ``Lung_L`` (label 2), ORGAN, AUTOMATIC; on every slice
    the mask is traced into CLOSED_PLANAR polygons (holes as inner polygons, read with
    the even-odd rule) placed in that slice's plane and referencing its SOP Instance UID
    (:func:`lungseg.io.dicom_write.add_rtstruct_content`, the writer of the synthetic
    cohort). An empty lung gives an ROI without contours.

    Arguments, return value and errors as for :func:`write_dicom_seg`.
    """
    ref = _reference(labels, series_dir)
    now = datetime.now()
    with _quiet_highdicom():
        ds = hd.SOPClass(
            study_instance_uid=str(ref.first.StudyInstanceUID),
            series_instance_uid=make_uid(ref.series_uid, "lungseg-rtstruct-series", ref.digest),
            series_number=RTSTRUCT_SERIES_NUMBER,
            sop_instance_uid=make_uid(ref.series_uid, "lungseg-rtstruct", ref.digest),
            sop_class_uid=RTStructureSetStorage,
            instance_number=1,
            modality="RTSTRUCT",
            manufacturer=MANUFACTURER,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            manufacturer_model_name=MANUFACTURER,
            software_versions=__version__,
            series_description="lungseg lungs",
        )
        ds.copy_patient_and_study_information(ref.first)  # only what the CT has
    # Frame of Reference module (Type 1 UID, Type 2 indicator) and RT Series' Type 2 OperatorsName: planning systems
    # refuse a structure set without its frame of reference (dciodvfy names all three when they are absent)
    ds.FrameOfReferenceUID = str(ref.first.FrameOfReferenceUID)
    ds.PositionReferenceIndicator = str(ref.first.get("PositionReferenceIndicator", "") or "")
    ds.OperatorsName = ""
    ds.StructureSetLabel = "lungseg"
    ds.StructureSetDate = DA(now.date())
    ds.StructureSetTime = TM(now.time())
    positions = np.asarray([[float(v) for v in f.header.ImagePositionPatient] for f in ref.files])
    add_rtstruct_content(
        ds,
        {ROI_NAMES[label]: ref.labels == label for label in (RIGHT, LEFT)},
        ref.geometry,
        study_uid=str(ref.first.StudyInstanceUID),
        frame_of_reference_uid=str(ref.first.FrameOfReferenceUID),
        ct_series_uid=ref.series_uid,
        ct_sop_uids=[sop_instance_uid(f.header) for f in ref.files],
        slice_positions_lps=positions,
        contour_level=CONTOUR_LEVEL,
    )
    path = _write(ds, out_path)
    n_contours = sum(len(rc.ContourSequence) for rc in ds.ROIContourSequence)
    logger.info("wrote RTSTRUCT (%d contours) to %s", n_contours, path)
    return path
