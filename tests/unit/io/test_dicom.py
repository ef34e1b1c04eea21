"""DICOM reading: scanning, series choice, slice order, geometry, RTSTRUCT, rasterisation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from lungseg.config import PrepareConfig, RoiAliasConfig
from lungseg.errors import CaseError
from lungseg.io.dicom import read_ct_folder, scan_dicom_tree
from lungseg.io.dicom_case import read_dicom_case
from lungseg.io.dicom_rtstruct import match_lung_rois, rasterize_contours
from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series
from lungseg.io.geometry import Geometry
from lungseg.io.rtstruct_write import write_dicom_study, write_rtstruct
from tests.helpers.dicom import compress_series, set_dicom_attrs

CFG = PrepareConfig()
GEOM = Geometry(shape=(32, 28, 10), spacing_mm=(0.8, 0.9, 2.5), origin_lps_mm=(-12.4, -10.8, -100.0))


def _study(pid: str = "P1") -> StudyInfo:
    return StudyInfo(
        patient_id=pid, patient_name="Zzyzx^Quuxley", study_uid=make_uid(pid, "study"),
        frame_of_reference_uid=make_uid(pid, "for"),
    )  # fmt: skip


def _volume(geom: Geometry, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=geom.shape).astype(np.int16)


def _lungs(geom: Geometry) -> dict[str, np.ndarray]:
    i, j, k = np.meshgrid(*[np.arange(s) for s in geom.shape], indexing="ij")
    right = ((i - 8) ** 2 + (j - 14) ** 2 < 30) & (k >= 1) & (k <= 8)
    left = ((i - 23) ** 2 + (j - 14) ** 2 < 20) & (k >= 2)
    return {"Lung_R": right, "Lung_L": left}


def _read(root: Path, pid: str = "P1"):
    return read_dicom_case(scan_dicom_tree(root)[pid], pid, CFG)


def test_slices_sorted_by_position_not_name_or_instance_number(tmp_path) -> None:
    hu = _volume(GEOM)
    write_dicom_study(tmp_path / "tmp", _study(), hu, GEOM, _lungs(GEOM))
    rng = np.random.default_rng(7)
    files = sorted((tmp_path / "tmp" / "CT").iterdir())
    dest = tmp_path / "raw"
    for n, f in enumerate(rng.permutation(files)):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(rng.integers(1, 1000))  # misleading
        sub = dest / ("a" if n % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        ds.save_as(sub / f"{rng.integers(1e9):x}")  # random name, no .dcm
    shutil.copy(tmp_path / "tmp" / "RTSTRUCT.dcm", dest / "zz")
    (dest / "README").write_text("not dicom\n")
    (dest / "cohort.csv").write_text("case,label\nP1,1\n")
    case = _read(dest)
    np.testing.assert_array_equal(case.hu, hu)
    assert case.geometry.origin_lps_mm == pytest.approx(GEOM.origin_lps_mm)
    np.testing.assert_array_equal(case.right, _lungs(GEOM)["Lung_R"])
    np.testing.assert_array_equal(case.left, _lungs(GEOM)["Lung_L"])


def test_slices_written_top_down_come_out_in_position_order(tmp_path) -> None:
    """A grid whose k axis runs towards -z is read back with k along +z (the slice normal)."""
    flipped = Geometry(GEOM.shape, GEOM.spacing_mm, (-12.4, -10.8, -77.5), ((1, 0, 0), (0, 1, 0), (0, 0, -1)))
    hu = _volume(flipped)
    sop_uids = write_ct_series(hu, flipped, tmp_path / "ct", _study(), make_uid("ct"))
    write_rtstruct(_lungs(flipped), flipped, tmp_path / "rs", _study(), make_uid("ct"), sop_uids, "1.2.3", "1.2.3.4")
    case = _read(tmp_path)
    np.testing.assert_array_equal(case.hu, hu[:, :, ::-1])
    np.testing.assert_array_equal(case.right, _lungs(flipped)["Lung_R"][:, :, ::-1])
    assert case.geometry.origin_lps_mm[2] == pytest.approx(-100.0)


def test_rescale_slope_and_intercept_applied(tmp_path) -> None:
    hu = (_volume(GEOM) // 2) * 2
    write_dicom_study(tmp_path, _study(), hu, GEOM, _lungs(GEOM), rescale_slope=2.0, rescale_intercept=-1000.0)
    case = _read(tmp_path)
    assert case.hu.dtype == np.float32
    np.testing.assert_array_equal(case.hu, hu)


def test_geometry_and_ras_affine_against_known_points(tmp_path) -> None:
    # rows run along +y (posterior), columns along +x: slice normal is -z
    geom = Geometry((20, 16, 6), (0.7, 1.3, 3.0), (30.0, -40.0, 12.0), ((0, 1, 0), (1, 0, 0), (0, 0, -1)))
    write_dicom_study(tmp_path, _study(), _volume(geom), geom, _lungs(geom))
    case = _read(tmp_path)
    g = case.geometry
    first = pydicom.dcmread(tmp_path / "CT" / "1-001.dcm")  # highest z: first along the normal (-z)
    ipp0 = np.array([float(v) for v in first.ImagePositionPatient])
    assert g.origin_lps_mm == pytest.approx(ipp0)
    row_dir = np.array([float(v) for v in first.ImageOrientationPatient[:3]])
    col_dir = np.array([float(v) for v in first.ImageOrientationPatient[3:]])
    col_spacing, row_spacing = float(first.PixelSpacing[1]), float(first.PixelSpacing[0])
    i, j, k = 5, 3, 4
    normal = np.cross(row_dir, col_dir)
    assert normal == pytest.approx([0, 0, -1])
    ipp_k = ipp0 + 3.0 * k * normal  # slices sorted along the normal
    expected_lps = ipp_k + i * col_spacing * row_dir + j * row_spacing * col_dir
    assert g.voxel_to_lps(np.array([i, j, k])) == pytest.approx(expected_lps)
    ras = g.affine_ras() @ np.array([i, j, k, 1.0])
    assert ras[:3] == pytest.approx(expected_lps * np.array([-1, -1, 1]))
    assert g.spacing_mm == pytest.approx((0.7, 1.3, 3.0))


_set = set_dicom_attrs


def test_localizer_other_modality_and_duplicates_ignored(tmp_path) -> None:
    hu = _volume(GEOM)
    write_dicom_study(tmp_path / "study", _study(), hu, GEOM, _lungs(GEOM))
    study = _study()
    scout = Geometry((32, 28, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    write_ct_series(np.zeros(scout.shape), scout, tmp_path / "scout", study, make_uid("scout"),
                    image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))  # fmt: skip
    big = Geometry((32, 28, 12), GEOM.spacing_mm, GEOM.origin_lps_mm)  # more slices, but another modality
    write_ct_series(np.zeros(big.shape), big, tmp_path / "pet", study, make_uid("pet"))
    for f in (tmp_path / "pet").iterdir():
        _set(f, Modality="PT", SOPClassUID="1.2.840.10008.5.1.4.1.1.128")
    ct = sorted((tmp_path / "study" / "CT").iterdir())
    shutil.copy(ct[3], tmp_path / "study" / "copy-of-slice-4")  # same SOPInstanceUID
    shutil.copy(ct[5], tmp_path / "study" / "same-position")
    _set(tmp_path / "study" / "same-position", SOPInstanceUID=make_uid("dup"))
    patients = scan_dicom_tree(tmp_path)
    assert patients["P1"].ignored  # the PET files
    case = read_dicom_case(patients["P1"], "P1", CFG)
    assert case.hu.shape == GEOM.shape
    np.testing.assert_array_equal(case.hu, hu)


def test_non_axial_series_ignored(tmp_path) -> None:
    write_dicom_study(tmp_path / "axial", _study(), _volume(GEOM), GEOM, _lungs(GEOM))
    sag = Geometry((32, 28, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((0, 0, 1), (0, 1, 0), (-1, 0, 0)))
    write_ct_series(np.zeros(sag.shape), sag, tmp_path / "sag", _study(), make_uid("sag"))
    assert _read(tmp_path).hu.shape == GEOM.shape


def test_series_referenced_by_rtstruct_is_preferred(tmp_path) -> None:
    """Two CT studies for one patient: the RTSTRUCT's series wins over the larger one."""
    other = StudyInfo(patient_id="P1", study_uid=make_uid("other"), frame_of_reference_uid=make_uid("other-for"))
    big = Geometry((32, 28, 20), GEOM.spacing_mm, GEOM.origin_lps_mm)
    write_ct_series(np.zeros(big.shape), big, tmp_path / "other", other, make_uid("other-ct"))
    hu = _volume(GEOM)
    write_dicom_study(tmp_path / "planning", _study(), hu, GEOM, _lungs(GEOM))
    case = _read(tmp_path)
    assert case.series_uid == make_uid(_study().study_uid, "ct-series")
    np.testing.assert_array_equal(case.hu, hu)
    assert case.series_dir == tmp_path / "planning" / "CT"


def test_missing_slice_is_an_inconsistent_spacing_error(tmp_path) -> None:
    write_dicom_study(tmp_path, _study(), _volume(GEOM), GEOM, _lungs(GEOM))
    (tmp_path / "CT" / "1-005.dcm").unlink()
    with pytest.raises(CaseError, match=r"P1: inconsistent slice spacing: gap of 5 mm between slices at "
                                        r"z=-92\.50 and z=-87\.50, expected 2\.5 mm"):  # fmt: skip
        _read(tmp_path)


def test_truncated_slice_is_an_error_naming_the_file(tmp_path) -> None:
    write_dicom_study(tmp_path, _study(), _volume(GEOM), GEOM, _lungs(GEOM))
    f = tmp_path / "CT" / "1-004.dcm"
    f.write_bytes(f.read_bytes()[:-200])
    with pytest.raises(CaseError, match="P1: cannot read pixel data of CT/1-004.dcm"):
        _read(tmp_path)
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(CaseError, match="P1: .*CT/1-004.dcm"):
        _read(tmp_path)


def test_nan_rescale_is_an_error(tmp_path) -> None:
    write_dicom_study(tmp_path, _study(), _volume(GEOM), GEOM, _lungs(GEOM))
    _set(tmp_path / "CT" / "1-002.dcm", RescaleSlope="NaN")
    with pytest.raises(CaseError, match="P1: CT/1-002.dcm: non-finite RescaleSlope"):
        _read(tmp_path)


def test_rtstruct_for_another_series_is_an_error(tmp_path) -> None:
    study = _study()
    sop_uids = write_ct_series(_volume(GEOM), GEOM, tmp_path / "CT", study, make_uid("ct"))
    write_rtstruct(_lungs(GEOM), GEOM, tmp_path / "rs.dcm", study, make_uid("elsewhere"), sop_uids, "1.2.3", "1.2.3.4")
    with pytest.raises(CaseError, match=f"RTSTRUCT rs.dcm references series {make_uid('elsewhere')}, "
                                        f"not the CT series {make_uid('ct')}"):  # fmt: skip
        _read(tmp_path)


def test_missing_rtstruct_or_ct_is_an_error(tmp_path) -> None:
    write_dicom_study(tmp_path, _study(), _volume(GEOM), GEOM, _lungs(GEOM))
    keep = tmp_path.parent / f"{tmp_path.name}-rs.keep"
    (tmp_path / "RTSTRUCT.dcm").rename(keep)
    with pytest.raises(CaseError, match="P1: no RTSTRUCT found"):
        _read(tmp_path)
    keep.rename(tmp_path / "RTSTRUCT.dcm")
    shutil.rmtree(tmp_path / "CT")
    with pytest.raises(CaseError, match="P1: no axial CT series found"):
        _read(tmp_path)


def test_non_dicom_files_are_ignored(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 4)
    assert scan_dicom_tree(tmp_path) == {}


@pytest.mark.parametrize("right", ["Lung_R", "LUNG_R", "Lung R", "Lung Right", "R Lung", "lung-r", "right_lung"])
@pytest.mark.parametrize("left", ["Lung_L", "LUNG_L", "Lung L", "Lung Left", "L Lung", "LUNG.l", "Left Lung"])
def test_roi_aliases(right: str, left: str) -> None:
    assert match_lung_rois(["Heart", left, "SpinalCord", right], RoiAliasConfig()) == {"right": right, "left": left}


def test_unknown_roi_names_error_lists_the_names() -> None:
    with pytest.raises(CaseError, match=r"C9: no lung ROI found; ROI names found: 'Heart', 'Lungs'"):
        match_lung_rois(["Heart", "Lungs"], RoiAliasConfig(), case="C9")
    with pytest.raises(CaseError, match=r"C9: only the left lung ROI found \('Lung_L'\), no right lung"):
        match_lung_rois(["Lung_L", "Heart"], RoiAliasConfig(), case="C9")
    with pytest.raises(CaseError, match="several ROIs match the right lung"):
        match_lung_rois(["Lung_R", "LUNG R", "Lung_L"], RoiAliasConfig(), case="C9")


# --------------------------------------------------------------------------- rasterisation

RGEOM = Geometry((40, 30, 6), (0.8, 1.2, 2.0), (10.0, -20.0, 5.0), ((0, 1, 0), (1, 0, 0), (0, 0, -1)))


def _poly(ij: list[tuple[float, float]], k: float, geom: Geometry = RGEOM) -> np.ndarray:
    ij_arr = np.asarray(ij, float)
    return geom.voxel_to_lps(np.column_stack([ij_arr, np.full(len(ij_arr), k)]))


def test_rasterize_polygon_with_hole_and_two_islands() -> None:
    outer = [(2.3, 3.2), (20.7, 3.2), (20.7, 18.6), (2.3, 18.6)]
    hole = [(8.4, 7.5), (12.6, 7.5), (12.6, 11.5), (8.4, 11.5)][::-1]
    island = [(25.2, 4.4), (30.8, 4.4), (30.8, 9.6), (25.2, 9.6)]
    cx, cy, r = 30.3, 20.1, 4.05
    diamond = [(cx + r, cy), (cx, cy + r), (cx - r, cy), (cx, cy - r)]
    contours = [_poly(p, 3) for p in (outer, hole, island, diamond)]
    contours[1] = contours[1] + np.array([0, 0, 0.4 * 2.0 * 0.99])  # slightly off-plane: still slice 3
    got = rasterize_contours(contours, RGEOM)
    i, j = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    box = lambda i0, i1, j0, j1: (i > i0) & (i < i1) & (j > j0) & (j < j1)  # noqa: E731
    expected2d = (box(2.3, 20.7, 3.2, 18.6) & ~box(8.4, 12.6, 7.5, 11.5)) | box(25.2, 30.8, 4.4, 9.6)
    expected2d |= np.abs(i - cx) + np.abs(j - cy) < r
    expected = np.zeros(RGEOM.shape, bool)
    expected[:, :, 3] = expected2d
    np.testing.assert_array_equal(got, expected)


def test_rasterize_boundary_adds_the_voxels_the_contour_lines_pass_through() -> None:
    """``boundary``: the centre-sampled fill plus the voxels nearest the drawn edge lines (OpenCV's polygon
    fill, as rt-utils rasterises): a square from 2.3 to 20.7 gains its outer ring at 2 and 21 (nearest the
    edge lines), nothing further out, and nothing inside is lost."""
    square = [(2.3, 3.2), (20.7, 3.2), (20.7, 18.6), (2.3, 18.6)]
    centre = rasterize_contours([_poly(square, 3)], RGEOM)[:, :, 3]
    boundary = rasterize_contours([_poly(square, 3)], RGEOM, boundary=True)[:, :, 3]
    i, j = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    expected = (i >= 2) & (i <= 21) & (j >= 3) & (j <= 19)  # rint(2.3)=2, rint(20.7)=21, rint(3.2)=3, rint(18.6)=19
    np.testing.assert_array_equal(boundary, expected)
    assert (centre & ~boundary).sum() == 0 and (boundary & ~centre).sum() == 2 * (20 + 17) - 4


def test_rasterize_overlapping_contours_use_even_odd() -> None:
    a = [(2.5, 2.5), (10.5, 2.5), (10.5, 10.5), (2.5, 10.5)]
    b = [(6.5, 6.5), (14.5, 6.5), (14.5, 14.5), (6.5, 14.5)]
    got = rasterize_contours([_poly(a, 0), _poly(b, 0)], RGEOM)[:, :, 0]
    assert got[4, 4] and got[12, 12] and not got[8, 8]


def test_rasterize_contour_off_the_grid_is_an_error() -> None:
    square = [(2.5, 2.5), (10.5, 2.5), (10.5, 10.5)]
    with pytest.raises(ValueError, match=r"contour at z=-9\.00 mm does not lie on a CT slice"):
        rasterize_contours([_poly(square, 7)], RGEOM)
    with pytest.raises(ValueError, match="does not lie on a CT slice"):
        rasterize_contours([_poly(square, 2) + np.array([[0, 0, 0], [0, 0, 0], [0, 0, -1.5]])], RGEOM)  # tilted


def _lungseg_lines(fn, *args, **kwargs):  # noqa: ANN001, ANN202
    """``(fn(...), number of lines of lungseg's own Python code executed)``: an operation count that no host
    speed or load changes (numpy's compiled loops do not count; a Python loop over rows, pixels or vertices would)."""
    count = 0

    def local(frame, event, arg):  # noqa: ANN001, ANN202
        nonlocal count
        count += event == "line"
        return local

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202
        return local if "/lungseg/" in frame.f_code.co_filename.replace("\\", "/") else None

    sys.settrace(tracer)
    try:
        out = fn(*args, **kwargs)
    finally:
        sys.settrace(None)
    return out, count


def test_rasterize_is_vectorised_on_full_size_slices() -> None:
    """Full-size slices (512 x 512, 120 contours): the Python work per contour is a fixed few dozen lines of lungseg code, the
    same for 1000 and for 4000 vertices, so the speed is numpy's whatever the host (was: a 3 s CPU-time limit)."""
    geom = Geometry((512, 512, 120), (0.9765625, 0.9765625, 3.0), (-250.0, -250.0, -300.0))
    masks, lines = [], []
    for n in (1000, 4000):
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        ring = np.column_stack([250 + 150 * np.cos(th) + 10 * np.sin(7 * th), 250 + 200 * np.sin(th)])
        mask, count = _lungseg_lines(rasterize_contours, [_poly(ring.tolist(), k, geom) for k in range(120)], geom)
        masks.append(mask)
        lines.append(count)
    assert lines[0] == lines[1] and lines[0] <= 100 * 120, lines  # about 50 a contour; a Python loop over vertices: 1000+
    assert masks[0][250, 250].all() and not masks[0][5, 5].any()
    assert (masks[0] != masks[1]).sum() < 0.001 * masks[0].sum()  # the same ring, sampled finer


# --------------------------------------------------------------------------- one CT folder (predict)

CGEOM = Geometry((64, 64, 6), (0.8, 0.9, 2.5), (-25.0, -28.0, -100.0))  # J2K needs >= 32 px per side


def _signed_volume(geom: Geometry) -> np.ndarray:
    """HU below -1024 too, so the stored pixels are signed 16-bit (the harder case for codecs)."""
    hu = np.random.default_rng(3).integers(-2000, 3000, size=geom.shape).astype(np.int16)
    hu[0, 0, 0], hu[1, 0, 0] = -2000, 2999
    return hu


def test_read_ct_folder_matches_the_prepare_reader_and_orders_slices(tmp_path) -> None:
    flipped = Geometry(GEOM.shape, GEOM.spacing_mm, (-12.4, -10.8, -77.5), ((1, 0, 0), (0, 1, 0), (0, 0, -1)))
    hu = _volume(flipped)
    sop_uids = write_ct_series(hu, flipped, tmp_path / "ct", _study(), make_uid("ct"))
    study, ct_uid = _study(), make_uid("ct")
    write_rtstruct(_lungs(flipped), flipped, tmp_path / "rs", study, ct_uid, sop_uids, "1.2", "1.3")
    ct = read_ct_folder(tmp_path)
    np.testing.assert_array_equal(ct.hu, hu[:, :, ::-1])  # k runs along the slice normal (+z)
    np.testing.assert_array_equal(ct.hu, _read(tmp_path).hu)
    assert ct.geometry == _read(tmp_path).geometry
    assert ct.series_uid == make_uid("ct")
    assert ct.sop_instance_uids == sop_uids[::-1]
    z = [float(f.header.ImagePositionPatient[2]) for f in ct.files]
    assert z == sorted(z) and ct.geometry.origin_lps_mm[2] == pytest.approx(z[0])


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless, JPEGLosslessSV1])
def test_compressed_series_read_back_identical(tmp_path, syntax) -> None:
    hu = _signed_volume(CGEOM)
    write_ct_series(hu, CGEOM, tmp_path / "ct", _study(), make_uid("ct"))
    compress_series(tmp_path / "ct", syntax)
    first = pydicom.dcmread(tmp_path / "ct" / "1-001.dcm")
    assert first.file_meta.TransferSyntaxUID == syntax and first.PixelRepresentation == 1
    np.testing.assert_array_equal(read_ct_folder(tmp_path / "ct").hu, hu)


def test_compressed_unsigned_series_through_prepare_reader(tmp_path) -> None:
    hu = np.random.default_rng(4).integers(-1024, 3000, size=CGEOM.shape).astype(np.int16)
    write_dicom_study(tmp_path, _study(), hu, CGEOM, _lungs(CGEOM))
    compress_series(tmp_path / "CT", JPEGLosslessSV1)
    assert pydicom.dcmread(tmp_path / "CT" / "1-003.dcm").BitsStored == 12
    np.testing.assert_array_equal(_read(tmp_path).hu, hu)


def test_missing_decoder_is_one_line_naming_file_and_syntax(tmp_path) -> None:
    """Run the reader where pylibjpeg cannot be imported (as on a machine without it)."""
    write_ct_series(_signed_volume(CGEOM), CGEOM, tmp_path / "ct", _study(), make_uid("ct"))
    compress_series(tmp_path / "ct", JPEGLosslessSV1)
    script = (
        "import sys\n"
        "for m in ('pylibjpeg', 'libjpeg', 'openjpeg', 'rle', 'gdcm'): sys.modules[m] = None\n"
        "from lungseg.io.dicom import read_ct_folder\n"
        "from lungseg.errors import CaseError\n"
        "try:\n    read_ct_folder(sys.argv[1])\nexcept CaseError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ct")], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert out.count("\n") == 1, out
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path / 'ct'))}: cannot read pixel data of 1-001\.dcm: no decoder installed for "
        r"transfer syntax JPEG Lossless, Non-Hierarchical, First-Order Prediction .*"
        r"\(1\.2\.840\.10008\.1\.2\.4\.70\); needs one of: .*pylibjpeg.*\n",
        out,
    ), out


def test_unsupported_transfer_syntax_is_named(tmp_path) -> None:
    write_ct_series(_volume(GEOM), GEOM, tmp_path, _study(), make_uid("ct"))
    ds = pydicom.dcmread(tmp_path / "1-002.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4 AVC/H.264: pydicom has no decoder
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x00\x01" * 8])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "1-002.dcm", enforce_file_format=True)
    expected = r"cannot read pixel data of 1-002\.dcm: transfer syntax MPEG-4 AVC/H\.264 .*"
    with pytest.raises(CaseError, match=expected + r"\(1\.2\.840\.10008\.1\.2\.4\.102\) is not supported"):
        read_ct_folder(tmp_path)


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"])
def test_multiframe_ct_is_a_clear_error(tmp_path, sop_class) -> None:
    import highdicom as hd

    write_ct_series(_volume(CGEOM), CGEOM, tmp_path / "ct", _study(), make_uid("ct"))
    slices = [pydicom.dcmread(p) for p in sorted((tmp_path / "ct").iterdir())]
    multi = hd.legacy.LegacyConvertedEnhancedCTImage(slices, make_uid("mf-series"), 3, make_uid("mf"), 1)
    multi.SOPClassUID = multi.file_meta.MediaStorageSOPClassUID = sop_class
    shutil.rmtree(tmp_path / "ct")
    multi.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    kind = "Enhanced CT" if sop_class.endswith(".2.1") else "Legacy Converted Enhanced CT"
    with pytest.raises(CaseError) as err:
        read_ct_folder(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: no DICOM CT image files found (found: 1 {kind} (multi-frame, SOP class {sop_class}; "
        "not supported: export the series as single-frame CT Image Storage) file(s))"
    )


def test_folder_that_is_not_one_ct_series(tmp_path) -> None:
    with pytest.raises(CaseError, match=f"^{re.escape(str(tmp_path / 'nope'))}: not a folder$"):
        read_ct_folder(tmp_path / "nope")
    with pytest.raises(CaseError, match=r": no DICOM CT image files found$"):
        read_ct_folder(tmp_path)
    write_dicom_study(tmp_path / "a", _study(), _volume(GEOM), GEOM, _lungs(GEOM))
    (tmp_path / "rs-only").mkdir()
    shutil.copy(tmp_path / "a" / "RTSTRUCT.dcm", tmp_path / "rs-only")
    with pytest.raises(CaseError, match=r"rs-only: no DICOM CT image files found \(found: 1 RTSTRUCT file"):
        read_ct_folder(tmp_path / "rs-only")
    write_dicom_study(tmp_path / "b", _study("P2"), _volume(GEOM), GEOM, _lungs(GEOM))
    with pytest.raises(CaseError, match="holds CT files of 2 patients; give one patient's folder"):
        read_ct_folder(tmp_path)
    for f in (tmp_path / "b" / "CT").iterdir():
        _set(f, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    with pytest.raises(CaseError, match=r"CT: no axial CT series found \(ignored: series [0-9.]+: localizer"):
        read_ct_folder(tmp_path / "b" / "CT")
