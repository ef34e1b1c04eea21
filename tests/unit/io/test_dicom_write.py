"""Deterministic DICOM writing: CT series, RTSTRUCT, mask tracing."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage
from scipy import ndimage

from lungseg.io.dicom_rtstruct import rasterize_contours
from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series
from lungseg.io.geometry import Geometry
from lungseg.io.rtstruct_write import (
    add_rtstruct_content,
    ds_text,
    mask_to_contours,
    write_dicom_study,
    write_rtstruct,
)

GEOM = Geometry(shape=(12, 10, 5), spacing_mm=(0.7, 0.9, 2.5), origin_lps_mm=(-20.0, 15.5, -40.0))
STUDY = StudyInfo(
    patient_id="W1", patient_name="Zzyzx^Quuxley", study_uid=make_uid("w", "study"),
    frame_of_reference_uid=make_uid("w", "for"),
)  # fmt: skip


def _hu(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1500, size=shape).astype(np.int16)


def test_make_uid_is_deterministic_and_valid() -> None:
    a = make_uid("case", "ct")
    assert a == make_uid("case", "ct")
    assert a != make_uid("case", "rt")
    assert UID(a).is_valid
    with pytest.raises(ValueError):
        make_uid()


def test_ct_series_headers_and_pixels(tmp_path) -> None:
    hu = _hu(GEOM.shape)
    uids = write_ct_series(hu, GEOM, tmp_path, STUDY, make_uid("w", "ct"))
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"1-{k + 1:03d}.dcm" for k in range(5)]
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == uids[k]
        assert ds.Modality == "CT" and ds.PatientPosition == "HFS" and ds.RescaleType == "HU"
        assert ds.FrameOfReferenceUID == STUDY.frame_of_reference_uid
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-20.0, 15.5, -40.0 + 2.5 * k])
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.7]  # [row spacing, column spacing]
        assert (ds.Rows, ds.Columns) == (10, 12)
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 2.5
        assert ds.InstanceNumber == k + 1
        got = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(got.T, hu[:, :, k])


def test_pixel_representation_fits_and_clips(tmp_path) -> None:
    hu = np.full(GEOM.shape, -3024.0)
    hu[0, 0, 0] = 100000.0  # beyond int16 after rescale: clipped
    write_ct_series(hu, GEOM, tmp_path / "signed", STUDY, make_uid("w", "s"))
    ds = pydicom.dcmread(tmp_path / "signed" / "1-001.dcm")
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16
    assert ds.pixel_array[0, 0] == 32767 and ds.pixel_array[1, 1] == -2000

    write_ct_series(np.full(GEOM.shape, 40.0), GEOM, tmp_path / "u12", STUDY, make_uid("w", "u"))
    ds = pydicom.dcmread(tmp_path / "u12" / "1-001.dcm")
    assert (ds.PixelRepresentation, ds.BitsStored, ds.HighBit) == (0, 12, 11)
    assert ds.pixel_array[0, 0] == 1064


def test_rescale_slope_and_intercept(tmp_path) -> None:
    hu = (_hu(GEOM.shape) // 2) * 2
    write_ct_series(hu, GEOM, tmp_path, STUDY, make_uid("w", "r"), rescale_slope=2.0, rescale_intercept=-1000.0)
    ds = pydicom.dcmread(tmp_path / "1-003.dcm")
    assert float(ds.RescaleSlope) == 2.0 and float(ds.RescaleIntercept) == -1000.0
    np.testing.assert_array_equal(ds.pixel_array.T * 2.0 - 1000.0, hu[:, :, 2])


def test_writing_is_byte_identical(tmp_path) -> None:
    masks = {"Lung_R": _hu(GEOM.shape, 1) > 800, "Lung_L": _hu(GEOM.shape, 2) > 900}
    for run in ("a", "b"):
        write_dicom_study(tmp_path / run, STUDY, _hu(GEOM.shape), GEOM, masks)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(a) == 6
    for rel in a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_mask_to_contours_square_hole_and_islands() -> None:
    m = np.zeros((12, 12), bool)
    m[2:8, 2:8] = True
    m[4:6, 4:6] = False  # hole
    m[10, 10] = True  # island
    polys = mask_to_contours(m)
    assert len(polys) == 3
    for p in polys:
        assert p.ndim == 2 and p.shape[1] == 2
        assert not np.array_equal(p[0], p[-1])
    outer = max(polys, key=len)
    assert outer[:, 0].min() == pytest.approx(1.5) and outer[:, 0].max() == pytest.approx(7.5)
    assert mask_to_contours(np.zeros((4, 4), bool)) == []


def test_mask_to_contours_rasterize_round_trip_on_random_blobs() -> None:
    geom = Geometry((40, 30, 8), (0.8, 1.1, 3.0), (5.0, -7.0, 12.0), ((0, 1, 0), (1, 0, 0), (0, 0, -1)))
    rng = np.random.default_rng(3)
    for _ in range(5):
        mask = ndimage.gaussian_filter(rng.random(geom.shape), 1.2) > 0.52
        contours = [
            geom.voxel_to_lps(np.column_stack([p, np.full(len(p), k)]))
            for k in range(geom.shape[2])
            for p in mask_to_contours(mask[:, :, k])
        ]
        np.testing.assert_array_equal(rasterize_contours(contours, geom), mask)


def _awkward_masks(rng: np.random.Generator) -> list[np.ndarray]:
    """Slices ``[i, j]`` that trip contour writers: single voxels, one-voxel lines and rings, diagonal touches,
    holes with islands in them, the slice border, salt and pepper; then random blobs."""
    masks = []
    m = np.zeros((14, 12), bool)
    m[3, 3] = m[5:11, 2] = m[2:9, 6] = m[10, 10] = m[11, 11] = m[12, 10] = True  # voxel, lines, a diagonal "V"
    masks.append(m)
    m = np.zeros((13, 13), bool)
    m[1:12, 1:12] = True
    m[3:10, 3:10] = False  # a hole...
    m[6, 6] = True  # ...with an island
    m[4, 4] = m[5, 5] = True  # touching each other diagonally, and the island not
    masks.append(m)
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    m[3:6, 3:6] = False  # a one-voxel ring
    masks.append(m)
    m = np.ones((8, 8), bool)
    m[2, 2] = m[3, 3] = m[5, 6] = False  # holes touching diagonally; the mask fills the slice to its border
    masks.append(m)
    masks.append(np.eye(9, dtype=bool) | np.eye(9, dtype=bool)[::-1])  # an X
    for n in range(150):
        shape = tuple(int(v) for v in rng.integers(4, 40, size=2))
        if n % 3 == 0:
            masks.append(rng.random(shape) < rng.uniform(0.2, 0.8))  # salt and pepper
        else:
            masks.append(ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.6, 3.0)) > rng.uniform(0.45, 0.55))
    return masks


def test_contours_at_level_075_fill_back_exactly_in_lungseg_and_rt_utils() -> None:
    """The RTSTRUCT export's contours (level 0.75): lungseg's reader (even-odd at voxel centres) and rt-utils' (vertices
    rounded with np.around, then OpenCV's boundary-inclusive fillPoly of all polygons of a slice) both give back the
    mask. At level 0.5 the vertices sit on x.5 rounding ties and rt-utils' fill grows the mask."""
    from rt_utils.image_helper import get_slice_mask_from_slice_contour_data

    geom2d = Geometry((40, 40, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    header = Dataset()
    grown = 0
    for mask in _awkward_masks(np.random.default_rng(5)):
        # rt-utils allocates a slice as (Columns, Rows) but fills it [row, column] (right for square images only):
        # sized so, the (rows, columns) = (j, i) array it fills is the mask's
        header.Columns, header.Rows = mask.shape[1], mask.shape[0]
        for level in (0.75, 0.5):
            polys = mask_to_contours(mask, level=level)
            ours = rasterize_contours([np.column_stack([p, np.zeros(len(p))]) for p in polys], geom2d)[:, :, 0]
            np.testing.assert_array_equal(ours[: mask.shape[0], : mask.shape[1]], mask)
            flat = [np.column_stack([p, np.zeros(len(p))]).ravel() for p in polys]  # (i, j, 0): pixel = patient
            rt = get_slice_mask_from_slice_contour_data(header, flat, np.eye(4)).T.astype(bool)  # [row, column] -> [i, j]
            if level == 0.75:
                np.testing.assert_array_equal(rt, mask)
            else:
                grown += int((rt & ~mask).sum())
    assert grown > 1000


def test_mask_to_contours_level() -> None:
    m = np.zeros((6, 6), bool)
    m[2:4, 1:5] = True
    (poly,) = mask_to_contours(m, level=0.75)
    assert poly[:, 0].min() == 1.75 and poly[:, 0].max() == 3.25 and poly[:, 1].min() == 0.75
    for level in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="level must lie between 0 and 1"):
            mask_to_contours(m, level=level)


def test_ds_text_is_the_fixed_point_format() -> None:
    rng = np.random.default_rng(2)
    values = [np.array([0.0, -0.0, -4e-5, 5e-5, -5e-5, 1.5e-4, 9.99995, -9.99995, 123456.78905, -1e6, 5e8, 0.5, -0.5])]
    values += [rng.normal(0, 10 ** rng.uniform(-5, 8), int(rng.integers(1, 40))) for _ in range(200)]
    for v in values:
        assert ds_text(v) == "\\".join(f"{x:.4f}" for x in np.round(v, 4) + 0.0).encode()
    assert ds_text(np.array([[1.0, -2.25, 0.0]])) == b"1.0000\\-2.2500\\0.0000"


def test_rtstruct_structure(tmp_path) -> None:
    hu = _hu(GEOM.shape)
    ct_uid = make_uid("w", "ct")
    sop_uids = write_ct_series(hu, GEOM, tmp_path / "ct", STUDY, ct_uid)
    lung = np.zeros(GEOM.shape, bool)
    lung[2:6, 3:7, 1:4] = True
    write_rtstruct(
        {"Lung_R": lung, "Heart": np.zeros(GEOM.shape, bool)}, GEOM, tmp_path / "rs.dcm", STUDY,
        ct_uid, sop_uids, make_uid("w", "rs"), make_uid("w", "rsi"),
    )  # fmt: skip
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    assert ds.SOPClassUID == RTStructureSetStorage and ds.Modality == "RTSTRUCT"
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Lung_R", "Heart"]
    fr = ds.ReferencedFrameOfReferenceSequence[0]
    assert fr.FrameOfReferenceUID == STUDY.frame_of_reference_uid
    se = fr.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert se.SeriesInstanceUID == ct_uid
    assert [c.ReferencedSOPInstanceUID for c in se.ContourImageSequence] == sop_uids
    contours = ds.ROIContourSequence[0].ContourSequence
    assert len(contours) == 3
    for c in contours:
        assert c.ContourGeometricType == "CLOSED_PLANAR"
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        assert len(pts) == c.NumberOfContourPoints
        k = sop_uids.index(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
        assert np.allclose(pts[:, 2], -40.0 + 2.5 * k)
        assert pts[:, 0].min() == pytest.approx(-20.0 + 1.5 * 0.7)  # half a voxel outside i = 2
    assert "ContourSequence" not in ds.ROIContourSequence[1] or len(ds.ROIContourSequence[1].ContourSequence) == 0
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["ORGAN", "ORGAN"]


def test_rtstruct_content_on_unevenly_spaced_slices() -> None:
    """With slice positions given, each slice's contours lie in that slice's own plane."""
    lung = np.zeros(GEOM.shape, bool)
    lung[2:6, 3:7, :] = True
    positions = GEOM.voxel_to_lps(np.column_stack([np.zeros((5, 2)), np.arange(5)]))
    positions[3, 2] += 0.4  # slice 3 sits 0.4 mm higher than the even grid says
    ds = Dataset()
    add_rtstruct_content(
        ds, {"Lung_L": lung}, GEOM, study_uid="1.2", frame_of_reference_uid="1.3", ct_series_uid="1.4",
        ct_sop_uids=[f"1.5.{k}" for k in range(5)], slice_positions_lps=positions,
    )  # fmt: skip
    rc = ds.ROIContourSequence[0]
    assert rc.ROIDisplayColor == [0, 160, 255]
    for c in rc.ContourSequence:
        k = int(c.ContourImageSequence[0].ReferencedSOPInstanceUID.rsplit(".", 1)[1])
        pts = np.asarray(c.ContourData, float).reshape(-1, 3)
        assert np.allclose(pts[:, 2], positions[k, 2])
    np.testing.assert_array_equal(
        rasterize_contours([np.asarray(c.ContourData, float).reshape(-1, 3) for c in rc.ContourSequence], GEOM), lung
    )
    with pytest.raises(ValueError, match=r"4 CT SOP UIDs given for 5 slices"):
        add_rtstruct_content(Dataset(), {"x": lung}, GEOM, study_uid="1", frame_of_reference_uid="1",
                             ct_series_uid="1", ct_sop_uids=["1"] * 4)  # fmt: skip
