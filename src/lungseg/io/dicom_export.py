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

Both are built with pydicom alone: highdicom, which built them before, loads its tables of the standard
(0.3 s, once per process) and took 0.6 s for the first SEG of a 512x512x134 series. The headers of the last
series read are kept while its folder's files are unchanged, so the SEG and the RTSTRUCT of one case read
them once. Files are written atomically (temporary file, then rename): a failed
export never leaves a half-written file or replaces an earlier one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, SegmentationStorage
from pydicom.valuerep import DA, TM, format_number_as_ds

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
from lungseg.io.dicom_scan import folder_state, sop_class_uid, sop_instance_uid
from lungseg.io.dicom_write import make_uid
from lungseg.io.geometry import Geometry
from lungseg.io.rtstruct_write import add_rtstruct_content
from lungseg.morphology import bounding_box

logger = logging.getLogger(__name__)

RIGHT, LEFT = 1, 2
#: SNOMED CT codes (value, scheme, meaning) of the segments (pydicom's code dictionary has no lateralised lungs).
RIGHT_LUNG = ("3341006", "SCT", "Right lung")
LEFT_LUNG = ("44029006", "SCT", "Left lung")
ROI_NAMES = {RIGHT: "Lung_R", LEFT: "Lung_L"}
#: Recommended Display CIELab Value of each segment: :func:`lungseg.io.rtstruct_write.roi_color` of its ROI name
#: converted as highdicom's ``CIELabColor.from_rgb`` does (checked by a test).
SEGMENT_CIELAB = {RIGHT: (48368, 39717, 53000), LEFT: (41707, 32764, 18350)}
SEG_SERIES_NUMBER, RTSTRUCT_SERIES_NUMBER = 901, 902
MANUFACTURER = "lungseg"
#: Root attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and Clinical Trial Study
#: modules of the CT Image IOD: what highdicom's ``copy_patient_and_study_information`` copies from a CT, which
#: loads its tables of the standard first (0.3 s, once per process). Copied only when the CT has them.
PATIENT_AND_STUDY = tuple(tag_for_keyword(k) for k in """
    PatientName PatientID IssuerOfPatientID TypeOfPatientID IssuerOfPatientIDQualifiersSequence
    SourcePatientGroupIdentificationSequence GroupOfPatientsIdentificationSequence PatientBirthDate
    PatientBirthTime PatientBirthDateInAlternativeCalendar PatientDeathDateInAlternativeCalendar
    PatientAlternativeCalendar PatientSex QualityControlSubject StrainDescription StrainNomenclature
    StrainStockSequence StrainAdditionalInformation StrainCodeSequence GeneticModificationsSequence
    OtherPatientNames OtherPatientIDsSequence ReferencedPatientPhotoSequence EthnicGroupCodeSequence
    PatientSpeciesDescription PatientSpeciesCodeSequence PatientBreedDescription PatientBreedCodeSequence
    BreedRegistrationSequence ResponsiblePerson ResponsiblePersonRole ResponsibleOrganization
    PatientComments PatientIdentityRemoved DeidentificationMethod DeidentificationMethodCodeSequence
    ReferencedPatientSequence ClinicalTrialSponsorName ClinicalTrialProtocolID ClinicalTrialProtocolName
    IssuerOfClinicalTrialProtocolID OtherClinicalTrialProtocolIDsSequence ClinicalTrialSiteID
    ClinicalTrialSiteName IssuerOfClinicalTrialSiteID ClinicalTrialSubjectID
    IssuerOfClinicalTrialSubjectID ClinicalTrialSubjectReadingID IssuerOfClinicalTrialSubjectReadingID
    StudyInstanceUID StudyDate StudyTime ReferringPhysicianName ReferringPhysicianIdentificationSequence
    ConsultingPhysicianName ConsultingPhysicianIdentificationSequence StudyID AccessionNumber
    IssuerOfAccessionNumberSequence StudyDescription PhysiciansOfRecord
    PhysiciansOfRecordIdentificationSequence NameOfPhysiciansReadingStudy
    PhysiciansReadingStudyIdentificationSequence RequestingServiceCodeSequence ReferencedStudySequence
    ProcedureCodeSequence ReasonForPerformedProcedureCodeSequence AdmittingDiagnosesDescription
    AdmittingDiagnosesCodeSequence PatientAge PatientSize PatientSizeCodeSequence PatientBodyMassIndex
    MeasuredAPDimension MeasuredLateralDimension PatientWeight MedicalAlerts Allergies Occupation
    SmokingStatus AdditionalPatientHistory PregnancyStatus LastMenstrualDate PatientSexNeutered
    ReasonForVisit ReasonForVisitCodeSequence AdmissionID IssuerOfAdmissionIDSequence ServiceEpisodeID
    ServiceEpisodeDescription IssuerOfServiceEpisodeIDSequence PatientState
    ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolEthicsCommitteeApprovalNumber
    ClinicalTrialTimePointID ClinicalTrialTimePointDescription LongitudinalTemporalOffsetFromEvent
    LongitudinalTemporalEventType ClinicalTrialTimePointTypeCodeSequence IssuerOfClinicalTrialTimePointID
    ConsentForClinicalTrialUseSequence RequestingService
""".split())
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
class _Reference(_Series):
    """The CT series a segmentation is written for, and the checked labels."""

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


def _item(**attributes: object) -> Dataset:
    """A dataset (sequence item) with the given attributes, by keyword."""
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> list[Dataset]:
    """A code sequence of one item."""
    return [_item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)]


def _instance(ref: _Reference, sop_class: str, modality: str, series: str, number: int) -> Dataset:
    """A new instance of the CT's study, in its frame of reference: SOP Common, Patient and Study (the attributes
    the CT has: :data:`PATIENT_AND_STUDY`), General Series, Frame of Reference and General Equipment modules.

    Built with pydicom: highdicom's base class loads its tables of the standard (0.3 s, once per process) to decide
    which attributes an IOD has. ``series`` names the kind of output in its derived UIDs.
    """
    first, now = ref.first, datetime.now()
    sop_uid = make_uid(ref.series_uid, f"lungseg-{series}", ref.digest)
    ds = _item(SOPClassUID=sop_class, SOPInstanceUID=sop_uid, InstanceCreationDate=DA(now.date()),
               InstanceCreationTime=TM(now.time()))
    ds.file_meta = FileMetaDataset()  # dcmwrite (enforce_file_format) adds the SOP UIDs and its implementation
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SpecificCharacterSet" in first:  # the copied names keep their encoding
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    for tag in PATIENT_AND_STUDY:
        if tag in first:
            ds.add(first[tag])
    ds.Modality = modality
    ds.SeriesInstanceUID = make_uid(ref.series_uid, f"lungseg-{series}-series", ref.digest)
    ds.SeriesNumber = number
    ds.SeriesDescription = "lungseg lungs"
    ds.InstanceNumber = 1
    # Frame of Reference module (Type 1 UID, Type 2 indicator): planning systems refuse a structure set without it
    ds.FrameOfReferenceUID = str(first.FrameOfReferenceUID)
    ds.PositionReferenceIndicator = str(first.get("PositionReferenceIndicator", "") or "")
    ds.Manufacturer = ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = __version__
    return ds


def _distances(ref: _Reference) -> np.ndarray:
    """Position of each CT slice along column x row cosines (the normal highdicom sorts a SEG's planes by)."""
    iop = np.array([float(v) for v in ref.first.ImageOrientationPatient])
    positions = np.array([[float(v) for v in f.header.ImagePositionPatient] for f in ref.files])
    return positions @ np.cross(iop[3:], iop[:3])


def _slice_spacing(distances: np.ndarray) -> float | None:
    """The slice spacing when regular (every gap within 1% of the mean, highdicom's test), else None."""
    d = np.sort(distances)
    spacing = (d[-1] - d[0]) / (len(d) - 1)
    return float(spacing) if spacing > 0 and np.all(np.abs(np.diff(d) - spacing) <= 0.01 * spacing) else None


def _seg_frames(ref: _Reference, distances: np.ndarray) -> list[tuple[int, int, int]]:
    """``(segment, slice k, position index)`` of each frame of the SEG, in highdicom's order: each segment's
    non-empty slices by distance, indexed among the slices holding any label (no label at all: every slice)."""
    n_k = len(ref.files)
    present = {v: np.ones(n_k, bool) if ref.box is None else np.zeros(n_k, bool) for v in (RIGHT, LEFT)}
    if ref.box is not None:
        sub = ref.labels[ref.box]
        for v in present:
            present[v][ref.box[2]] = (sub == v).any(axis=(0, 1))
    planes = [int(k) for k in np.argsort(distances, kind="stable") if present[RIGHT][k] or present[LEFT][k]]
    return [(v, k, index) for v in (RIGHT, LEFT) for index, k in enumerate(planes, 1) if present[v][k]]


def _pack_frames(ref: _Reference, frames: list[tuple[int, int, int]]) -> bytes:
    """The frames (rows j, columns i) of segment == label, one bit a pixel, as BINARY SEG pixel data (eight
    frames at a time: a whole number of bytes; the whole padded with NUL to an even length). Only the labelled
    box is read, once, slice by slice (either memory order of the labels)."""
    cols, rows, _ = ref.labels.shape
    box = ref.box or (slice(0, 0),) * 3
    sub = np.ascontiguousarray(ref.labels[box].transpose(2, 1, 0))  # (k, j, i)
    packed = []
    for start in range(0, len(frames), 8):
        bits = np.zeros((len(frames[start : start + 8]), rows, cols), bool)
        for n, (v, k, _) in enumerate(frames[start : start + 8]):
            if box[2].start <= k < box[2].stop:
                bits[n, box[1], box[0]] = sub[k - box[2].start] == v
        packed.append(np.packbits(bits, bitorder="little").tobytes())
    data = b"".join(packed)
    return data + b"\0" if len(data) % 2 else data


def _segment(ref: _Reference, number: int, code: tuple[str, str, str]) -> Dataset:
    """An item of the SegmentSequence."""
    algorithm = _item(AlgorithmFamilyCodeSequence=_code("123110", "DCM", "Artificial Intelligence"),
                      AlgorithmName="lungseg", AlgorithmVersion=__version__)  # fmt: skip
    return _item(
        SegmentNumber=number, SegmentLabel=ROI_NAMES[number], SegmentAlgorithmType="AUTOMATIC",
        SegmentAlgorithmName="lungseg", SegmentationAlgorithmIdentificationSequence=[algorithm],
        SegmentedPropertyCategoryCodeSequence=_code("91723000", "SCT", "Anatomical Structure"),
        SegmentedPropertyTypeCodeSequence=_code(*code), RecommendedDisplayCIELabValue=list(SEGMENT_CIELAB[number]),
        TrackingID=ROI_NAMES[number],
        TrackingUID=make_uid(ref.series_uid, "lungseg-seg-segment", str(number), ref.digest),
    )  # fmt: skip


def _frame(source: tuple[str, str], position: object, number: int, index: int) -> Dataset:
    """An item of the PerFrameFunctionalGroupsSequence: derived from the CT slice ``source`` (SOP class and
    instance UIDs) at ``position``, segment ``number``, dimension index values ``[number, index]``."""
    purpose = _code("121322", "DCM", "Source image for image processing operation")
    image = _item(ReferencedSOPClassUID=source[0], ReferencedSOPInstanceUID=source[1],
                  SpatialLocationsPreserved="YES", PurposeOfReferenceCodeSequence=purpose)
    return _item(
        DerivationImageSequence=[_item(SourceImageSequence=[image],
                                       DerivationCodeSequence=_code("113076", "DCM", "Segmentation"))],
        FrameContentSequence=[_item(DimensionIndexValues=[number, index])],
        PlanePositionSequence=[_item(ImagePositionPatient=position)],
        SegmentIdentificationSequence=[_item(ReferencedSegmentNumber=number)],
    )  # fmt: skip


def write_dicom_seg(labels: np.ndarray, series_dir: str | Path, out_path: str | Path) -> Path:
    """Write ``labels`` as a DICOM Segmentation (BINARY) referencing the CT series in ``series_dir``.

    Two segments: 1 "Right lung" (SCT 3341006) and 2 "Left lung" (SCT 44029006), category
    Anatomical Structure (SCT 91723000), algorithm type AUTOMATIC (lungseg). One frame
    per non-empty (slice, segment), each referencing its CT slice's SOP Instance UID and
    carrying that slice's position; orientation and pixel spacing shared. Frames and attributes
    are those highdicom's Segmentation class wrote for these arguments (it built this file before:
    checked by a test), built with pydicom.

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
    first = ref.first
    ds = _instance(ref, SegmentationStorage, "SEG", "seg", SEG_SERIES_NUMBER)
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.DeviceSerialNumber = "1"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    sources = [(sop_class_uid(f.header), sop_instance_uid(f.header)) for f in ref.files]
    ds.SourceImageSequence = [_item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=u) for c, u in sources]
    ds.ReferencedSeriesSequence = [_item(SeriesInstanceUID=ref.series_uid, ReferencedInstanceSequence=[
        _item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=u) for c, u in sources])]  # fmt: skip
    if first.get("Manufacturer"):  # the scanner, as highdicom records it
        scanner = _item(ContributionDescription="Acquisition equipment of the source image(s)",
                        PurposeOfReferenceCodeSequence=_code("109101", "DCM", "Acquisition Equipment"))
        for keyword in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions"):
            if keyword in first:
                scanner.add(first[keyword])
        ds.ContributingEquipmentSequence = [scanner]
    # Segmentation Image module
    ds.SegmentationType = "BINARY"
    ds.SegmentsOverlap = "NO"
    ds.ContentLabel = "LUNGS"
    ds.ContentDescription = "Right and left lung, automatic (lungseg)"
    ds.SegmentSequence = [_segment(ref, RIGHT, RIGHT_LUNG), _segment(ref, LEFT, LEFT_LUNG)]
    # Multi-frame Dimension and Functional Groups modules
    dimensions = make_uid(ref.series_uid, "lungseg-seg-dimensions", ref.digest)
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dimensions)]
    ds.DimensionIndexSequence = [
        _item(DimensionOrganizationUID=dimensions, DimensionIndexPointer=index, FunctionalGroupPointer=group,
              DimensionDescriptionLabel=label)
        for index, group, label in ((0x0062000B, 0x0062000A, "Referenced Segment Number"),
                                    (0x00200032, 0x00209113, "Image Position Patient"))
    ]  # fmt: skip
    measures = _item(PixelSpacing=first.PixelSpacing)
    if "SliceThickness" in first:
        measures.SliceThickness = first.SliceThickness
    distances = _distances(ref)
    spacing = _slice_spacing(distances)
    if spacing is not None:
        measures.SpacingBetweenSlices = format_number_as_ds(spacing)
    orientation = _item(ImageOrientationPatient=first.ImageOrientationPatient)
    ds.SharedFunctionalGroupsSequence = [
        _item(PixelMeasuresSequence=[measures], PlaneOrientationSequence=[orientation])
    ]
    frames = _seg_frames(ref, distances)
    ds.PerFrameFunctionalGroupsSequence = [
        _frame(sources[k], ref.files[k].header.ImagePositionPatient, number, index) for number, k, index in frames
    ]
    # Image Pixel module: one bit a pixel, the frames one after the other
    cols, rows, _ = ref.geometry.shape
    ds.update(_item(SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", Rows=rows, Columns=cols,
                    BitsAllocated=1, BitsStored=1, HighBit=0, PixelRepresentation=0,
                    NumberOfFrames=len(frames), PresentationLUTShape="IDENTITY"))  # fmt: skip
    ds.LossyImageCompression = first.get("LossyImageCompression", "00")
    if ds.LossyImageCompression == "01":
        for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
            if keyword in first:
                ds.add(first[keyword])
    ds.PixelData = _pack_frames(ref, frames)
    ds["PixelData"].VR = "OB"
    path = _write(ds, out_path)
    logger.info("wrote DICOM SEG (%d frames) to %s", len(frames), path)
    return path


def write_rtstruct(labels: np.ndarray, series_dir: str | Path, out_path: str | Path) -> Path:
    """Write ``labels`` as an RT Structure Set referencing the CT series in ``series_dir``.

    ROIs ``Lung_R`` (label 1) and ``Lung_L`` (label 2), ORGAN, AUTOMATIC; on every slice
    the mask is traced into CLOSED_PLANAR polygons (holes as inner polygons, read with
    the even-odd rule) placed in that slice's plane and referencing its SOP Instance UID
    (:func:`lungseg.io.rtstruct_write.add_rtstruct_content`, the writer of the synthetic
    cohort). An empty lung gives an ROI without contours.

    Arguments, return value and errors as for :func:`write_dicom_seg`.
    """
    ref = _reference(labels, series_dir)
    ds = _instance(ref, RTStructureSetStorage, "RTSTRUCT", "rtstruct", RTSTRUCT_SERIES_NUMBER)
    ds.OperatorsName = ""  # RT Series, Type 2: dciodvfy names it when absent
    ds.StructureSetLabel = "lungseg"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    positions = np.asarray([[float(v) for v in f.header.ImagePositionPatient] for f in ref.files])
    masks = {}
    for label in (RIGHT, LEFT):
        mask = np.zeros(ref.labels.shape, bool, order="F")  # zero pages until written (not zeros_like: it writes)
        if ref.box is not None:
            mask[ref.box] = ref.labels[ref.box] == label
        masks[ROI_NAMES[label]] = mask
    add_rtstruct_content(
        ds,
        masks,
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
