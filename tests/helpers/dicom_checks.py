"""Reading back a written DICOM SEG / RTSTRUCT with pydicom and checking it against the labels and the CT series
(tests/unit/io/test_dicom_export.py, tests/unit/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RTStructureSetStorage, SegmentationStorage

from lungseg.evaluation.metrics import dice
from lungseg.io.dicom import CtSeries
from lungseg.io.dicom_rtstruct import rasterize_contours, roi_contours

#: copied from the CT into SEG and RTSTRUCT alike
PATIENT_AND_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip


def seg_labels(seg: pydicom.Dataset, ct: CtSeries) -> np.ndarray:
    """Labels ``[i, j, k]`` from a SEG's frames, placed by each frame's referenced CT SOP Instance UID."""
    k_of = {uid: k for k, uid in enumerate(ct.sop_instance_uids)}
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    out = np.zeros(ct.geometry.shape, np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        out[:, :, k_of[source]][frame.T.astype(bool)] = number
    return out


def seg_world_centroid(seg: pydicom.Dataset, number: int) -> np.ndarray:
    """LPS centroid of a segment from the SEG's own plane positions, orientation and spacing."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    points = []
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        if int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != number:
            continue
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        r, c = np.nonzero(frame)
        points.append(ipp + np.outer(c * col_spacing, iop[:3]) + np.outer(r * row_spacing, iop[3:]))
    return np.concatenate(points).mean(axis=0)


def rtstruct_labels(rs: pydicom.Dataset, ct: CtSeries) -> np.ndarray:
    out = np.zeros(ct.geometry.shape, np.uint8)
    for value, name in ((1, "Lung_R"), (2, "Lung_L")):
        out[rasterize_contours(roi_contours(rs, name), ct.geometry)] = value
    return out


def check_references(ds: pydicom.Dataset, ct: CtSeries) -> None:
    first = ct.files[0].header
    for keyword in PATIENT_AND_STUDY:
        assert ds.get(keyword) == first.get(keyword), keyword
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID  # both outputs carry the CT's frame of reference
    assert ds.SeriesInstanceUID != ct.series_uid and ds.SOPInstanceUID not in ct.sop_instance_uids
    # no patient identifier that the CT does not hold
    for elem in ds.group_dataset(0x0010):
        if elem.value not in (None, "", []):
            assert elem.tag in first and first[elem.tag].value == elem.value, elem.keyword


def check_seg(path: Path, ct: CtSeries, labels: np.ndarray) -> pydicom.Dataset:
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == SegmentationStorage and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    check_references(seg, ct)
    assert seg.FrameOfReferenceUID == ct.files[0].header.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_uid
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    for number, code, meaning in ((1, "3341006", "Right lung"), (2, "44029006", "Left lung")):
        prop = segments[number].SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodeValue, prop.CodingSchemeDesignator, prop.CodeMeaning) == (code, "SCT", meaning)
        category = segments[number].SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx(
        [float(v) for v in ct.files[0].header.PixelSpacing]
    )
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    assert iop == pytest.approx([float(v) for v in ct.files[0].header.ImageOrientationPatient])
    position_of = {uid: [float(v) for v in f.header.ImagePositionPatient]
                   for uid, f in zip(ct.sop_instance_uids, ct.files, strict=True)}  # fmt: skip
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert ipp == pytest.approx(position_of[source], abs=1e-3)
    got = seg_labels(seg, ct)
    for value in (1, 2):
        assert dice(got == value, labels == value) >= 0.99
        voxels = np.argwhere(labels == value).astype(float)
        expected = ct.geometry.voxel_to_lps(voxels).mean(axis=0)
        assert seg_world_centroid(seg, value) == pytest.approx(expected, abs=1e-3)
    return seg


def check_rtstruct(path: Path, ct: CtSeries, labels: np.ndarray) -> pydicom.Dataset:
    rs = pydicom.dcmread(path)
    assert rs.SOPClassUID == RTStructureSetStorage and rs.Modality == "RTSTRUCT"
    check_references(rs, ct)
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["Lung_R", "Lung_L"]
    for_item = rs.ReferencedFrameOfReferenceSequence[0]
    assert for_item.FrameOfReferenceUID == ct.files[0].header.FrameOfReferenceUID
    study_item = for_item.RTReferencedStudySequence[0]
    assert study_item.ReferencedSOPInstanceUID == ct.files[0].header.StudyInstanceUID
    series_item = study_item.RTReferencedSeriesSequence[0]
    assert series_item.SeriesInstanceUID == ct.series_uid
    assert [c.ReferencedSOPInstanceUID for c in series_item.ContourImageSequence] == ct.sop_instance_uids
    z_of = {uid: float(f.header.ImagePositionPatient[2]) for uid, f in zip(ct.sop_instance_uids, ct.files)}
    for rc in rs.ROIContourSequence:
        for contour in rc.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert np.allclose(points[:, 2], z_of[contour.ContourImageSequence[0].ReferencedSOPInstanceUID])
    got = rtstruct_labels(rs, ct)
    for value in (1, 2):
        assert dice(got == value, labels == value) >= 0.99
    return rs
