"""Synthetic phantoms and the DICOM cohort writer (small matrices keep this fast)."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lungseg.config import PrepareConfig
from lungseg.evaluation.metrics import dice
from lungseg.io.dicom import scan_dicom_tree
from lungseg.io.dicom_case import read_dicom_case
from lungseg.synthetic import MASK_NAMES, has_pathology, make_phantom, synthesize_cohort, write_case
from tests.helpers.digests import file_digests

MM = 128
SEED = 7


def _phantom(seed: int, pathology: bool, max_matrix: int = MM):
    return make_phantom(np.random.default_rng([seed, 0]), pathology, max_matrix=max_matrix)


@pytest.fixture(scope="module")
def healthy():
    """A healthy patient on a clinical 256 matrix (partial volume at coarser grids raises lung HU)."""
    return _phantom(3, False, 256)


@pytest.fixture(scope="module")
def sick():
    """First pathology phantom (in seed order) that has both a tumour and dense lung."""
    for seed in range(40):
        ph = _phantom(seed, True)
        lm = ph.info["landmarks_lps_mm"]
        if lm["tumour"] and lm["dense"]:
            return ph
    raise AssertionError("no phantom with tumour and dense lung in 40 seeds")


def _voxel(ph, lps: list[float]) -> tuple[int, int, int]:
    ijk = np.rint(ph.geometry.lps_to_voxel(np.asarray(lps))).astype(int)
    return tuple(int(v) for v in np.clip(ijk, 0, np.asarray(ph.geometry.shape) - 1))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- phantom


def test_same_seed_same_phantom() -> None:
    a, b = _phantom(11, True, 96), _phantom(11, True, 96)
    assert np.array_equal(a.hu, b.hu)
    assert a.geometry == b.geometry
    assert a.info == b.info
    for name in MASK_NAMES:
        assert np.array_equal(a.masks[name], b.masks[name])
    assert not np.array_equal(a.hu.shape, _phantom(12, True, 96).hu.shape) or not np.array_equal(
        a.hu, _phantom(12, True, 96).hu
    )


def test_phantom_arrays_and_geometry(healthy) -> None:
    g = healthy.geometry
    assert healthy.hu.dtype == np.float32 and healthy.hu.shape == tuple(g.shape)
    assert g.shape[0] == g.shape[1] <= 256
    assert healthy.hu.min() >= -1024 and healthy.hu.max() <= 3071
    assert np.array_equal(healthy.hu, np.rint(healthy.hu))
    assert g.direction_matrix.tolist() == np.eye(3).tolist()
    assert 250 <= (g.shape[2] - 1) * g.spacing_mm[2] <= 335
    for name in MASK_NAMES:
        m = healthy.masks[name]
        assert m.dtype == bool and m.shape == tuple(g.shape) and m.any(), name


def test_masks_do_not_overlap_and_lungs_are_separated(healthy, sick) -> None:
    for ph in (healthy, sick):
        names = list(MASK_NAMES)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                assert not (ph.masks[names[a]] & ph.masks[names[b]]).any(), (names[a], names[b])
        # at least one voxel of mediastinum between the lungs (26-neighbourhood)
        grown = ndimage.binary_dilation(ph.masks["Lung_R"], structure=np.ones((3, 3, 3), bool))
        assert not (grown & ph.masks["Lung_L"]).any()


def test_right_lung_is_on_patient_right(healthy) -> None:
    g = healthy.geometry
    xr = g.voxel_to_lps(np.argwhere(healthy.masks["Lung_R"]).mean(axis=0))[0]
    xl = g.voxel_to_lps(np.argwhere(healthy.masks["Lung_L"]).mean(axis=0))[0]
    assert xr < xl  # LPS: +x is patient left
    assert healthy.masks["Lung_R"].sum() > 0.9 * healthy.masks["Lung_L"].sum()  # right lung larger


def test_parenchyma_density_is_realistic(healthy) -> None:
    lungs = healthy.masks["Lung_R"] | healthy.masks["Lung_L"]
    assert -900 <= float(np.median(healthy.hu[lungs])) <= -780
    ml = lungs.sum() * healthy.geometry.voxel_volume_ml
    assert 2000 < ml < 6500
    # soft tissue and air around the body have CT-like values
    assert float(np.median(healthy.hu[healthy.masks["Heart"]])) == pytest.approx(42, abs=25)
    assert float(np.median(healthy.hu[:, :3, :])) < -950  # anterior edge of the field of view is air


def test_trachea_is_air_but_not_lung(healthy, sick) -> None:
    for ph in (healthy, sick):
        lungs = ph.masks["Lung_R"] | ph.masks["Lung_L"]
        for name in ("trachea", "carina"):
            i, j, k = _voxel(ph, ph.info["landmarks_lps_mm"][name][0])
            assert not lungs[i - 1 : i + 2, j - 1 : j + 2, k].any(), name
        i, j, k = _voxel(ph, ph.info["landmarks_lps_mm"]["trachea"][0])
        assert ph.hu[i, j, k] < -850


def test_tumour_excluded_and_dense_lung_included(sick) -> None:
    lungs = sick.masks["Lung_R"] | sick.masks["Lung_L"]
    for p in sick.info["landmarks_lps_mm"]["tumour"]:
        i, j, k = _voxel(sick, p)
        assert not lungs[i, j, k]
        assert sick.hu[i, j, k] > -200
    for p in sick.info["landmarks_lps_mm"]["dense"]:
        i, j, k = _voxel(sick, p)
        assert lungs[i, j, k]
        assert sick.hu[i, j, k] > -350


def test_pathology_flags_are_deterministic_and_balanced() -> None:
    flags = [has_pathology(2017, n, 0.5) for n in range(60)]
    assert sum(flags) == 30
    assert flags == [has_pathology(2017, n, 0.5) for n in range(60)]
    assert sum(has_pathology(1, n, 0.3) for n in range(20)) == 6
    assert not any(has_pathology(1, n, 0.0) for n in range(20))
    assert all(has_pathology(1, n, 1.0) for n in range(20))


# ----------------------------------------------------------------------------- cohort on disk


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("cohort") / "raw"
    rows = synthesize_cohort(out, cases=3, seed=SEED, pathology_fraction=0.5, workers=2, max_matrix=112)
    return out, rows


def test_cohort_layout_and_csv(cohort) -> None:
    out, rows = cohort
    assert [r["patient_id"] for r in rows] == ["LCTSC-SYN-001", "LCTSC-SYN-002", "LCTSC-SYN-003"]
    with open(out / "cohort.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["patient_id"] for r in csv_rows] == [r["patient_id"] for r in rows]
    assert [int(r["pathology"]) for r in csv_rows] == [int(has_pathology(SEED, n, 0.5)) for n in range(3)]
    for row in csv_rows:
        studies = list((out / row["patient_id"]).iterdir())
        assert len(studies) == 1 and re.fullmatch(r"01-01-2017-NA-CT THORAX-\d{5}", studies[0].name)
        series = sorted(studies[0].iterdir())
        assert len(series) == 2 and all(re.fullmatch(r"1\.000000-NA-\d{5}", s.name) for s in series)
        files = sorted(f.name for s in series for f in s.iterdir())
        assert "1-1.dcm" in files and "1-001.dcm" in files
        assert len(files) == int(row["n_slices"]) + 1


@pytest.mark.slow  # three cohorts
def test_cohort_is_byte_identical_for_any_worker_count(cohort, tmp_path: Path) -> None:
    out, _ = cohort
    again = tmp_path / "again"
    synthesize_cohort(again, cases=3, seed=SEED, pathology_fraction=0.5, workers=1, max_matrix=112)
    assert file_digests(again) == file_digests(out)


def test_rerun_with_fewer_cases_removes_stale_patients(cohort, tmp_path: Path) -> None:
    out, _ = cohort
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    synthesize_cohort(copy, cases=2, seed=SEED, pathology_fraction=0.5, workers=1, max_matrix=112)
    assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == ["LCTSC-SYN-001", "LCTSC-SYN-002"]
    before = {k: v for k, v in file_digests(out).items() if not k.startswith("LCTSC-SYN-003") and k != "cohort.csv"}
    after = {k: v for k, v in file_digests(copy).items() if k != "cohort.csv"}
    assert after == before


def _round_trip(root: Path, seed: int, n: int, pathology: bool, max_matrix: int) -> None:
    """Read a written patient back (CT + RTSTRUCT) and compare with the regenerated phantom."""
    ph = make_phantom(np.random.default_rng([seed, n]), pathology, max_matrix=max_matrix)
    pid = f"LCTSC-SYN-{n + 1:03d}"
    patients = scan_dicom_tree(root)
    case = read_dicom_case(patients[pid], pid, PrepareConfig())
    assert case.geometry.shape == ph.geometry.shape
    assert np.allclose(case.geometry.spacing_mm, ph.geometry.spacing_mm, atol=1e-4)
    assert np.allclose(case.geometry.origin_lps_mm, ph.geometry.origin_lps_mm, atol=1e-3)
    assert np.array_equal(case.hu, ph.hu)
    for got, name in ((case.right, "Lung_R"), (case.left, "Lung_L")):
        d = dice(got, ph.masks[name])
        assert d >= 0.98, f"{pid} {name}: RTSTRUCT round-trip Dice {d:.4f}"


@pytest.mark.slow  # five full phantoms through DICOM and back
def test_rtstruct_round_trip_every_case(cohort, tmp_path: Path) -> None:
    out, rows = cohort
    for n, row in enumerate(rows):
        _round_trip(out, SEED, n, bool(row["pathology"]), 112)
    # plus other matrices / slice thicknesses, with and without pathology
    for n, pathology, mm in ((3, True, 96), (4, False, 176)):
        write_case((str(tmp_path), SEED, n, pathology, mm, None))
        _round_trip(tmp_path, SEED, n, pathology, mm)


def test_invalid_cohort_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cases"):
        synthesize_cohort(tmp_path, cases=0, seed=1)
    with pytest.raises(ValueError, match="pathology_fraction"):
        synthesize_cohort(tmp_path, cases=1, seed=1, pathology_fraction=1.5)
    with pytest.raises(ValueError, match="max_matrix"):
        make_phantom(np.random.default_rng(0), False, max_matrix=8)
