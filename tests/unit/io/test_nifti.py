"""NIfTI writing (deterministic, RAS affine) and checked reading."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from lungseg.errors import CaseError
from lungseg.io.geometry import Geometry
from lungseg.io.nifti import read_nifti, write_nifti

GEOM = Geometry((8, 6, 4), (0.8, 0.9, 2.5), (-12.0, 30.0, -50.0), ((0, 1, 0), (1, 0, 0), (0, 0, -1)))


def _vol() -> np.ndarray:
    return np.arange(np.prod(GEOM.shape), dtype=np.int16).reshape(GEOM.shape) - 100


def test_round_trip_affine_and_header(tmp_path) -> None:
    path = tmp_path / "x_ct.nii.gz"
    write_nifti(_vol(), GEOM, path, np.int16)
    img = nib.load(path)
    assert np.allclose(img.affine, GEOM.affine_ras())
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert np.allclose(img.get_qform(), GEOM.affine_ras(), atol=1e-5)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert img.get_data_dtype() == np.int16
    data, geom = read_nifti(path)
    assert data.dtype == np.int16
    np.testing.assert_array_equal(data, _vol())
    assert geom.shape == GEOM.shape
    assert np.allclose(geom.affine_lps(), GEOM.affine_lps())
    # voxel (1, 2, 3) in RAS: LPS position with x and y negated
    lps = GEOM.voxel_to_lps(np.array([1, 2, 3]))
    assert (img.affine @ [1, 2, 3, 1])[:3] == pytest.approx(lps * [-1, -1, 1])


def test_bytes_are_deterministic_and_no_partial_left(tmp_path) -> None:
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    write_nifti(_vol(), GEOM, a, np.int16)
    write_nifti(_vol(), GEOM, b, np.int16)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[4:8] == b"\x00\x00\x00\x00"  # gzip mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    write_nifti(_vol() > 0, GEOM, tmp_path / "m.nii", np.uint8)
    assert not (tmp_path / "m.nii").read_bytes().startswith(b"\x1f\x8b")


def test_not_a_nifti_is_an_error_naming_the_file(tmp_path) -> None:
    bad = tmp_path / "junk.nii.gz"
    bad.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(CaseError, match=r"junk\.nii\.gz: not a readable NIfTI file"):
        read_nifti(bad)
    with pytest.raises(CaseError, match="missing.nii.gz: not a readable NIfTI"):
        read_nifti(tmp_path / "missing.nii.gz")


def test_2d_image_is_an_error(tmp_path) -> None:
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.int16), np.eye(4)), path)
    with pytest.raises(CaseError, match=r"flat\.nii\.gz: expected a 3D image, got shape \(5, 6\)"):
        read_nifti(path)


def test_4d_single_volume_is_squeezed(tmp_path) -> None:
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7, 1), np.int16), np.eye(4)), path)
    assert read_nifti(path)[0].shape == (5, 6, 7)


def test_nan_is_an_error(tmp_path) -> None:
    path = tmp_path / "nan.nii.gz"
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(CaseError, match=r"nan\.nii\.gz: 1 NaN or infinite voxels"):
        read_nifti(path)
