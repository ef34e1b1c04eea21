"""prepare_cohort: DICOM and NIfTI ingestion, bad inputs, determinism, privacy."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from lungseg.config import NiftiConfig, PrepareConfig
from lungseg.errors import CaseError
from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series
from lungseg.io.geometry import Geometry
from lungseg.io.ingest import MANIFEST_COLUMNS, lung_labels, prepare_cohort, split_binary_mask
from lungseg.io.nifti import read_nifti, write_nifti
from lungseg.io.rtstruct_write import write_dicom_study, write_rtstruct
from tests.helpers.dicom import set_dicom_attrs
from tests.helpers.digests import file_digests

NAME = "Zzyzx^Quuxley"
GEOM = Geometry(shape=(32, 28, 10), spacing_mm=(0.8, 0.9, 2.5), origin_lps_mm=(-12.4, -10.8, -100.0))
CFG = PrepareConfig()


def _masks(geom: Geometry = GEOM) -> dict[str, np.ndarray]:
    """Right lung at low i (low LPS x = patient right), left lung at high i."""
    i, j, k = np.meshgrid(*[np.arange(s) for s in geom.shape], indexing="ij")
    right = ((i - 8) ** 2 + (j - 14) ** 2 < 30) & (k >= 1) & (k <= 8)
    left = ((i - 23) ** 2 + (j - 14) ** 2 < 20) & (k >= 2)
    heart = ((i - 16) ** 2 + (j - 20) ** 2 < 6) & (k >= 3)
    return {"Lung_R": right, "Lung_L": left, "Heart": heart}


def _hu(geom: Geometry = GEOM) -> np.ndarray:
    m = _masks(geom)
    return np.where(m["Lung_R"] | m["Lung_L"], -800, 40).astype(np.int16)


def _study(pid: str) -> StudyInfo:
    return StudyInfo(
        patient_id=pid, patient_name=NAME, patient_birth_date="19450101",
        study_uid=make_uid(pid, "study"), frame_of_reference_uid=make_uid(pid, "for"),
    )  # fmt: skip


def _write(raw: Path, pid: str, folder: str | None = None, masks: dict | None = None, **kw) -> Path:
    out = raw / (folder or pid)
    write_dicom_study(out, _study(pid), _hu(), GEOM, _masks() if masks is None else masks, **kw)
    return out


_set = set_dicom_attrs


def _truncate(path: Path, n: int) -> None:
    """Keep the first ``n`` bytes (negative: drop the last ``-n``)."""
    path.write_bytes(path.read_bytes()[:n])


# Each builder writes one bad DICOM case under raw and returns (case ID, expected problem regex).
def _bad_truncated(raw: Path) -> tuple[str, str]:
    d = _write(raw, "BAD_TRUNC")
    _truncate(d / "CT" / "1-004.dcm", -200)
    return "BAD_TRUNC", r"cannot read pixel data of BAD_TRUNC/CT/1-004\.dcm"


def _bad_header(raw: Path) -> tuple[str, str]:
    d = _write(raw, "BAD_HEADER")
    _truncate(d / "CT" / "1-006.dcm", 300)
    return "BAD_HEADER", r"BAD_HEADER/CT/1-006\.dcm \(.*truncated"


def _bad_no_ct(raw: Path) -> tuple[str, str]:
    shutil.rmtree(_write(raw, "BAD_NOCT") / "CT")
    return "BAD_NOCT", "no axial CT series found"


def _bad_no_rtstruct(raw: Path) -> tuple[str, str]:
    (_write(raw, "BAD_NORS") / "RTSTRUCT.dcm").unlink()
    return "BAD_NORS", "no RTSTRUCT found"


def _bad_no_lung(raw: Path) -> tuple[str, str]:
    m = _masks()
    _write(raw, "BAD_NOLUNG", masks={"Heart": m["Heart"], "Lungs": m["Lung_R"]})
    return "BAD_NOLUNG", r"RTSTRUCT BAD_NOLUNG/RTSTRUCT\.dcm: no lung ROI found; ROI names found: 'Heart', 'Lungs'"


def _bad_one_lung(raw: Path) -> tuple[str, str]:
    _write(raw, "BAD_ONELUNG", masks={"Lung L": _masks()["Lung_L"]})
    return "BAD_ONELUNG", r"only the left lung ROI found \('Lung L'\), no right lung"


def _bad_other_series(raw: Path) -> tuple[str, str]:
    study = _study("BAD_REF")
    uids = write_ct_series(_hu(), GEOM, raw / "BAD_REF" / "CT", study, make_uid("BAD_REF", "ct"))
    write_rtstruct(_masks(), GEOM, raw / "BAD_REF" / "rs.dcm", study, make_uid("BAD_REF", "old-ct"), uids,
                   make_uid("BAD_REF", "rs"), make_uid("BAD_REF", "rsi"))  # fmt: skip
    return "BAD_REF", (
        f"RTSTRUCT BAD_REF/rs.dcm references series {make_uid('BAD_REF', 'old-ct')}, "
        f"not the CT series {make_uid('BAD_REF', 'ct')}"
    )


def _bad_spacing(raw: Path) -> tuple[str, str]:
    (_write(raw, "BAD_GAP") / "CT" / "1-005.dcm").unlink()
    return "BAD_GAP", r"inconsistent slice spacing: gap of 5 mm between slices at z=-92\.50 and z=-87\.50, expected 2\.5 mm"


def _bad_nan(raw: Path) -> tuple[str, str]:
    _set(_write(raw, "BAD_NAN") / "CT" / "1-003.dcm", RescaleSlope="NaN")
    return "BAD_NAN", r"BAD_NAN/CT/1-003\.dcm: non-finite RescaleSlope"


def _bad_empty_lung(raw: Path) -> tuple[str, str]:
    m = _masks()
    _write(raw, "BAD_EMPTY", masks={"Lung_R": np.zeros(GEOM.shape, bool), "Lung_L": m["Lung_L"]})
    return "BAD_EMPTY", r"empty right lung mask \(ROI 'Lung_R'\)"


DICOM_BAD: list[Callable[[Path], tuple[str, str]]] = [
    _bad_truncated, _bad_header, _bad_no_ct, _bad_no_rtstruct, _bad_no_lung, _bad_one_lung,
    _bad_other_series, _bad_spacing, _bad_nan, _bad_empty_lung,
]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _digest(folder: Path) -> dict[str, str]:
    return file_digests(folder, recursive=False)


# --------------------------------------------------------------------------- good DICOM cases


def test_prepare_dicom_writes_nifti_manifest_split(tmp_path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    for pid in ("LCTSC-001", "LCTSC-002", "LCTSC-003"):
        _write(raw, pid)
    (raw / "README.txt").write_text("synthetic cohort\n")
    result = prepare_cohort(raw, out, CFG)
    assert result.prepared == ["LCTSC-001", "LCTSC-002", "LCTSC-003"] and result.skipped == []
    rows = _rows(out / "manifest.csv")
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    row = rows[0]
    assert row["source"] == "LCTSC-001/CT"
    assert (row["shape"], row["spacing_mm"]) == ("32x28x10", "0.8x0.9x2.5")
    assert row["rois"] == "Lung_R;Lung_L;Heart"
    voxel_ml = 0.8 * 0.9 * 2.5 / 1000
    m = _masks()
    assert float(row["right_volume_ml"]) == pytest.approx(m["Lung_R"].sum() * voxel_ml, abs=1e-3)
    assert float(row["left_volume_ml"]) == pytest.approx(m["Lung_L"].sum() * voxel_ml, abs=1e-3)
    assert float(row["lung_volume_ml"]) == pytest.approx((m["Lung_R"].sum() + m["Lung_L"].sum()) * voxel_ml, abs=1e-3)
    assert row["checksum"] == hashlib.sha256((out / "LCTSC-001_ct.nii.gz").read_bytes()).hexdigest()

    ct, g = read_nifti(out / "LCTSC-001_ct.nii.gz")
    labels, g2 = read_nifti(out / "LCTSC-001_lungs.nii.gz")
    assert ct.dtype == np.int16 and labels.dtype == np.uint8
    np.testing.assert_array_equal(ct, _hu())
    np.testing.assert_array_equal(labels == 1, m["Lung_R"])
    np.testing.assert_array_equal(labels == 2, m["Lung_L"])
    assert np.allclose(nib.load(out / "LCTSC-001_ct.nii.gz").affine, GEOM.affine_ras())
    assert np.allclose(g2.affine_lps(), g.affine_lps())

    split = json.loads((out / "split.json").read_text())
    assert split == result.split and sorted(sum(split.values(), [])) == result.prepared
    assert _rows(out / "skipped.csv") == []


def test_prepare_is_byte_identical_and_removes_stale_outputs(tmp_path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    for pid in ("P1", "P2"):
        _write(raw, pid)
    out.mkdir()
    (out / "OLD_ct.nii.gz").write_bytes(b"stale")
    (out / "OLD_lungs.nii.gz").write_bytes(b"stale")
    prepare_cohort(raw, out, CFG)
    first = _digest(out)
    assert "OLD_ct.nii.gz" not in first
    prepare_cohort(raw, out, CFG)
    assert _digest(out) == first
    prepare_cohort(raw, tmp_path / "again", CFG)
    assert _digest(tmp_path / "again") == first
    shutil.rmtree(raw / "P2")
    prepare_cohort(raw, out, CFG)
    assert sorted(_digest(out)) == ["P1_ct.nii.gz", "P1_lungs.nii.gz", "folds.json", "manifest.csv", "skipped.csv",
                                 "split.json"]


def test_patient_name_never_written_or_logged(tmp_path, caplog, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write(raw, "P1")
    _bad_no_lung(raw)
    with caplog.at_level(logging.DEBUG):
        prepare_cohort(raw, out, CFG)
    for p in out.iterdir():
        data = p.read_bytes()
        if p.name.endswith(".gz"):
            data = gzip.decompress(data)
        assert b"Zzyzx" not in data and b"Quuxley" not in data and b"19450101" not in data
    assert "Zzyzx" not in caplog.text and "Quuxley" not in caplog.text
    assert "Zzyzx" not in capsys.readouterr().err


def test_sanitised_case_id_stays_inside_out_dir(tmp_path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "work" / "out"
    _write(raw, "../x", folder="evil")
    _write(raw, "a/b", folder="slash")
    _write(raw, "a_b", folder="plain")
    result = prepare_cohort(raw, out, CFG)
    assert result.prepared == ["_x", "a_b", "a_b_2"]
    assert not list((tmp_path / "work").glob("*.nii.gz")) and not list(tmp_path.glob("*.nii.gz"))
    assert (out / "_x_ct.nii.gz").is_file()


def test_hashed_case_ids(tmp_path) -> None:
    raw = tmp_path / "raw"
    _write(raw, "LCTSC-007")
    result = prepare_cohort(raw, tmp_path / "out", dataclasses.replace(CFG, case_id="hashed"))
    assert result.prepared == [hashlib.sha256(b"LCTSC-007").hexdigest()[:12]]
    body = (tmp_path / "out" / "manifest.csv").read_text().split("\n", 1)[1]
    assert "LCTSC-007" not in body  # neither as case ID nor inside the source folder path
    assert body.split(",")[1].startswith("sha256:")


# --------------------------------------------------------------------------- bad DICOM cases


def test_skip_mode_records_every_bad_case_and_prepares_the_rest(tmp_path, caplog) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write(raw, "GOOD_1")
    _write(raw, "GOOD_2")
    expected = dict(build(raw) for build in DICOM_BAD)
    with caplog.at_level(logging.WARNING):
        result = prepare_cohort(raw, out, CFG)
    assert result.prepared == ["GOOD_1", "GOOD_2"]
    skipped = {r["case"]: r["problem"] for r in _rows(out / "skipped.csv")}
    assert sorted(skipped) == sorted(expected)
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for case, pattern in expected.items():
        assert re.search(pattern, skipped[case]), (case, skipped[case])
        assert f"{case}: {skipped[case]}" in warnings_
        assert not (out / f"{case}_ct.nii.gz").exists()
    assert dict(result.skipped) == skipped


@pytest.mark.parametrize("build", DICOM_BAD, ids=lambda b: b.__name__)
def test_fail_mode_raises_case_error_and_keeps_earlier_outputs(tmp_path, build) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write(raw, "A_GOOD")
    case, pattern = build(raw)
    with pytest.raises(CaseError, match=f"^{case}: .*{pattern}") as err:
        prepare_cohort(raw, out, dataclasses.replace(CFG, on_error="fail"))
    assert err.value.case == case
    assert (out / "A_GOOD_ct.nii.gz").is_file()


def test_unattributable_corrupt_file_is_its_own_skipped_entry(tmp_path) -> None:
    raw = tmp_path / "raw"
    _write(raw, "P1")
    (raw / "lost").mkdir()
    (raw / "lost" / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    result = prepare_cohort(raw, tmp_path / "out", CFG)
    assert result.prepared == ["P1"]
    assert result.skipped[0][0] == "lost_x.dcm" and "lost/x.dcm" in result.skipped[0][1]


# --------------------------------------------------------------------------- NIfTI input


def _nifti_case(raw: Path, case: str, labels: np.ndarray | None = None, hu: np.ndarray | None = None) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    m = _masks()
    if labels is None:
        labels = m["Lung_R"].astype(np.uint8) + 2 * m["Lung_L"].astype(np.uint8)
    write_nifti(_hu() if hu is None else hu, GEOM, raw / f"{case}_ct.nii.gz", np.int16)
    write_nifti(labels, GEOM, raw / f"{case}_lungs.nii.gz", np.uint8)


def test_prepare_nifti_pairs_labelled_and_binary(tmp_path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    m = _masks()
    _nifti_case(raw / "sub", "N1")
    _nifti_case(raw, "N2", labels=(m["Lung_R"] | m["Lung_L"]).astype(np.uint8))
    result = prepare_cohort(raw, out, CFG, fmt="nifti")
    assert result.prepared == ["N1", "N2"] and result.skipped == []
    for case in ("N1", "N2"):
        labels, _ = read_nifti(out / f"{case}_lungs.nii.gz")
        np.testing.assert_array_equal(labels == 1, m["Lung_R"])
        np.testing.assert_array_equal(labels == 2, m["Lung_L"])
    rows = {r["case"]: r for r in _rows(out / "manifest.csv")}
    assert rows["N1"]["source"] == "sub/N1_ct.nii.gz" and rows["N1"]["rois"] == "label_1;label_2"


def test_prepare_nifti_custom_patterns(tmp_path) -> None:
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    m = _masks()
    write_nifti(_hu(), GEOM, raw / "images" / "C7.nii.gz", np.int16)
    write_nifti(m["Lung_R"] * 3 + m["Lung_L"] * 4, GEOM, raw / "masks" / "C7.nii.gz", np.uint8)
    ncfg = NiftiConfig(image_pattern="images/{case}.nii.gz", mask_pattern="masks/{case}.nii.gz", right_label=3,
                       left_label=4)  # fmt: skip
    result = prepare_cohort(raw, tmp_path / "out", dataclasses.replace(CFG, format="nifti", nifti=ncfg))
    assert result.prepared == ["C7"]


def _nifti_2d(raw: Path) -> tuple[str, str]:
    _nifti_case(raw, "BAD_2D")
    nib.save(nib.Nifti1Image(np.zeros((32, 28), np.int16), np.eye(4)), raw / "BAD_2D_ct.nii.gz")
    return "BAD_2D", r"BAD_2D_ct\.nii\.gz: expected a 3D image, got shape \(32, 28\)"


def _nifti_shape(raw: Path) -> tuple[str, str]:
    _nifti_case(raw, "BAD_SHAPE")
    nib.save(nib.Nifti1Image(np.ones((32, 28, 9), np.uint8), GEOM.affine_ras()), raw / "BAD_SHAPE_lungs.nii.gz")
    return "BAD_SHAPE", r"image BAD_SHAPE_ct\.nii\.gz has shape \(32, 28, 10\) but mask BAD_SHAPE_lungs\.nii\.gz has"


def _nifti_nan(raw: Path) -> tuple[str, str]:
    _nifti_case(raw, "BAD_NANI")
    data = _hu().astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, GEOM.affine_ras()), raw / "BAD_NANI_ct.nii.gz")
    return "BAD_NANI", r"BAD_NANI_ct\.nii\.gz: 1 NaN or infinite voxels"


def _nifti_empty(raw: Path) -> tuple[str, str]:
    _nifti_case(raw, "BAD_EMPTYN", labels=np.zeros(GEOM.shape, np.uint8))
    return "BAD_EMPTYN", "empty right lung mask"


def _nifti_garbage(raw: Path) -> tuple[str, str]:
    _nifti_case(raw, "BAD_JUNK")
    (raw / "BAD_JUNK_lungs.nii.gz").write_bytes(b"not a nifti")
    return "BAD_JUNK", r"BAD_JUNK_lungs\.nii\.gz: not a readable NIfTI file"


def _nifti_no_mask(raw: Path) -> tuple[str, str]:
    _nifti_case(raw, "BAD_NOMASK")
    (raw / "BAD_NOMASK_lungs.nii.gz").unlink()
    return "BAD_NOMASK", "no mask matching '{case}_lungs.nii.gz' for image BAD_NOMASK_ct.nii.gz"


NIFTI_BAD = [_nifti_2d, _nifti_shape, _nifti_nan, _nifti_empty, _nifti_garbage, _nifti_no_mask]


def test_nifti_bad_inputs_skip_and_fail(tmp_path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    _nifti_case(raw, "A_GOOD")
    expected = dict(build(raw) for build in NIFTI_BAD)
    result = prepare_cohort(raw, out, CFG, fmt="nifti")
    assert result.prepared == ["A_GOOD"]
    skipped = dict(result.skipped)
    assert sorted(skipped) == sorted(expected)
    for case, pattern in expected.items():
        assert re.search(pattern, skipped[case]), (case, skipped[case])
        with pytest.raises(CaseError, match=f"^{case}: "):
            single = tmp_path / f"single-{case}"
            single.mkdir()
            for p in raw.glob(f"{case}_*"):
                shutil.copy(p, single / p.name)
            prepare_cohort(single, tmp_path / f"out-{case}", dataclasses.replace(CFG, on_error="fail"), fmt="nifti")


# --------------------------------------------------------------------------- label rules


def test_binary_split_uses_ras_left_right() -> None:
    m = _masks()
    right, left = split_binary_mask(m["Lung_R"] | m["Lung_L"], GEOM)
    np.testing.assert_array_equal(right, m["Lung_R"])
    np.testing.assert_array_equal(left, m["Lung_L"])


def test_overlap_goes_to_the_nearer_lung() -> None:
    m = _masks()
    right, left = m["Lung_R"].copy(), m["Lung_L"].copy()
    left[8, 14, 5] = True  # inside the right lung: nearer the right centroid
    right[23, 14, 5] = True  # inside the left lung
    labels = lung_labels(right, left, GEOM)
    assert labels[8, 14, 5] == 1 and labels[23, 14, 5] == 2
    assert set(np.unique(labels)) == {0, 1, 2}


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_cli_prepare_exit_code_follows_on_error(tmp_path, on_error: str) -> None:
    """`lungseg prepare` as a process (README: with `fail` the stage exits non-zero): `prepare.on_error: fail`
    stops at the bad case with exit code 1 and one error line naming it, keeping what was written before;
    `skip` exits 0 with the case in skipped.csv and the good ones prepared."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write(raw, "A_GOOD")
    case, pattern = _bad_no_rtstruct(raw)
    _write(raw, "Z_GOOD")
    params = {"prepare": {"on_error": on_error, "n_figure_cases": 1}, "data": {"figures_dir": str(tmp_path / "figs")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "lungseg.cli", "--params", "params.yaml", "prepare", "--raw", str(raw),
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if on_error == "fail":
        assert proc.returncode == 1, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert re.fullmatch(f"lungseg prepare: error: {case}: .*{pattern}.*", last), last
        assert (out / "A_GOOD_ct.nii.gz").is_file() and not (out / "Z_GOOD_ct.nii.gz").exists()
        assert not (out / "manifest.csv").exists() and not (tmp_path / "reports/prepare.json").exists()
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [r["case"] for r in _rows(out / "skipped.csv")] == [case]
        assert [r["case"] for r in _rows(out / "manifest.csv")] == ["A_GOOD", "Z_GOOD"]
        assert json.loads((tmp_path / "reports/prepare.json").read_text())["skipped"] == 1
