"""Real-CT check: world-coordinate mask mapping, the below-the-truth volume, and the shared real scans."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import RealCTCase, load_params
from lungseg.evaluation.real_ct import (
    RealScan,
    available,
    evaluate_real,
    mask_on_grid,
    score,
    split_sides,
    volume_below_ml,
)
from lungseg.io.geometry import Geometry
from tests.helpers.real_ct import NSCLC_CASES, nsclc_series, real_ct

ROOT = Path(__file__).resolve().parents[3]
# the NSCLC planning CTs' DICOM series are extracted by `make real-ct` (a git snapshot the tool library fetches)
NSCLC = [f"nsclc_{n}" for n in NSCLC_CASES]


@pytest.fixture
def shared_real_ct() -> Path:
    """../shared/real-ct: skipped (naming it) when absent, see tests/helpers/real_ct.py."""
    return real_ct()


@pytest.fixture
def nsclc(shared_real_ct: Path) -> Path:
    """The extracted NSCLC-Radiomics series too (their expert masks are in ../shared/real-ct)."""
    for case in NSCLC_CASES:
        real_ct("nsclc-radiomics", f"LUNG1-{case}")
    return nsclc_series()


def _flipped(geometry: Geometry, axis: int) -> Geometry:
    """The same world grid stored with ``axis`` reversed."""
    direction = geometry.direction_matrix.copy()
    origin = np.asarray(geometry.origin_lps_mm) + direction[:, axis] * geometry.spacing_mm[axis] * (geometry.shape[axis] - 1)
    direction[:, axis] *= -1
    return Geometry(geometry.shape, geometry.spacing_mm, tuple(origin), tuple(map(tuple, direction)))


def test_mask_on_grid_follows_world_coordinates() -> None:
    g = Geometry((6, 5, 4), (1.0, 2.0, 3.0), (10.0, -5.0, 7.0))
    mask = np.zeros(g.shape, dtype=np.uint8)
    mask[1:3, 2:4, 1] = 1
    same = mask_on_grid(mask, g, g)
    assert np.array_equal(same, mask)
    flipped = _flipped(g, 2)
    assert np.array_equal(mask_on_grid(mask, g, flipped), mask[:, :, ::-1])


def test_volume_below_truth_counts_only_slices_under_the_lowest_true_voxel() -> None:
    g = Geometry((4, 4, 10), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))  # k increases superiorly (LPS z)
    truth = np.zeros(g.shape, dtype=bool)
    truth[:, :, 5:] = True
    pred = truth.copy()
    pred[0, 0, 4] = True  # one voxel just below: within the one-voxel tolerance
    pred[0, 0, 1] = pred[1, 1, 0] = True  # two voxels well below
    assert volume_below_ml(pred, truth, g) == pytest.approx(2 * g.voxel_volume_ml)
    scan = RealScan("x", np.zeros(g.shape, np.float32), g, truth.astype(np.uint8), "partial")
    row = score(pred.astype(np.uint8), scan)
    assert row["volume_below_truth_ml"] == pytest.approx(2 * g.voxel_volume_ml) and 0.9 < row["dice"] < 1.0


def test_split_sides_puts_label_1_on_the_patients_right() -> None:
    g = Geometry((10, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))  # i grows toward the patient's left (LPS x)
    mask = np.zeros(g.shape, bool)
    mask[1:3] = mask[7:9] = True
    labels = split_sides(mask, g)
    assert set(np.unique(labels[1:3])) == {1} and set(np.unique(labels[7:9])) == {2} and not labels[4].any()


def test_missing_cases_are_skipped_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cases = {"gone": RealCTCase(ct="nowhere/ct.nii.gz")}
    with caplog.at_level(logging.INFO, logger="lungseg.evaluation.real_ct"):
        assert available(cases, tmp_path) == {}
        assert evaluate_real(cases, {"all": lambda hu, g: np.ones(hu.shape, np.uint8)}, tmp_path) == {}
    assert "real CT gone skipped: nowhere/ct.nii.gz not found" in caplog.text


def test_shared_real_cases_with_the_classical_baseline(shared_real_ct: Path) -> None:
    """The params.yaml cases load (NIfTI, DICOM, an anonymised JPEG 2000 series with blank UIDs) and score."""
    from lungseg.evaluation.baseline import segment_lungs

    cases = {k: v for k, v in load_params(ROOT / "params.yaml").evaluate.real_ct.items() if k not in NSCLC}
    assert set(available(cases, ROOT)) == set(cases)
    out = evaluate_real(cases, {"baseline": segment_lungs}, ROOT)
    assert set(out) == set(cases)
    nifti, dicom = out["copdgene_10002k"]["baseline"], out["copdgene_10002k_dicom"]["baseline"]
    assert nifti["dice"] > 0.95 and dicom["dice"] == pytest.approx(nifti["dice"], abs=1e-4)
    assert nifti["true_volume_ml"] == pytest.approx(dicom["true_volume_ml"], rel=1e-3)
    assert 100 < out["abdomen_lung_bases"]["baseline"]["true_volume_ml"] < 130  # README: about 114 mL
    assert out["abdomen_no_lung"]["baseline"]["volume_ml"] < 5.0 and "dice" not in out["abdomen_no_lung"]["baseline"]


TRAINED = ROOT / "models" / "model.keras"


@pytest.mark.skipif(not TRAINED.exists(), reason="needs models/model.keras (after `make run`)")
def test_trained_model_on_the_shared_real_cases(shared_real_ct: Path) -> None:
    """Acceptance (issue 9), with the model `make run` trained on the synthetic cohort: COPDGene Dice >= 0.96 and
    >= the classical baseline; lung bases of an abdominal CT Dice >= 0.80 with nothing below the diaphragm; the
    series without lung < 5 mL."""
    from lungseg.evaluation.baseline import segment_lungs
    from lungseg.inference.segmenter import Segmenter

    params = load_params(ROOT / "params.yaml")
    segmenter = Segmenter.load(TRAINED, params_path=ROOT / "params.yaml")
    methods = {"unet": segmenter.segment, "baseline": segment_lungs}
    out = evaluate_real(params.evaluate.real_ct, methods, ROOT)
    chest = out["copdgene_10002k"]
    assert chest["unet"]["dice"] >= 0.96 and chest["unet"]["dice"] >= chest["baseline"]["dice"], chest
    bases = out["abdomen_lung_bases"]["unet"]
    assert bases["dice"] >= 0.80 and bases["volume_below_truth_ml"] == 0.0, bases
    assert out["abdomen_no_lung"]["unet"]["volume_ml"] < 5.0


@pytest.mark.slow  # three full-resolution 512x512 series
def test_nsclc_planning_cts_load_with_their_expert_masks(nsclc: Path) -> None:
    """The three full-resolution NSCLC-Radiomics cases of params.yaml: 512x512 DICOM series at 0.98 mm, 3 mm
    slices, and their expert masks (3.8-5.3 L) mapped onto them; the classical baseline finds most of the lung."""
    from lungseg.evaluation.baseline import segment_lungs

    cases = {k: v for k, v in load_params(ROOT / "params.yaml").evaluate.real_ct.items() if k in NSCLC}
    assert set(cases) == set(NSCLC)
    out = evaluate_real(cases, {"baseline": segment_lungs}, ROOT)
    assert set(out) == set(NSCLC)
    for row in out.values():
        assert 3500 < row["baseline"]["true_volume_ml"] < 5500 and row["baseline"]["dice"] > 0.9, row


@pytest.mark.slow
@pytest.mark.skipif(not TRAINED.exists(), reason="needs models/model.keras (after `make run`)")
@pytest.mark.xfail(strict=True, reason="issue 18 open: below the baseline on nsclc_001/003 at the lung edge (README "
                   "'Real full-resolution planning CT'); strict: remove this mark when it passes")
def test_trained_model_beats_the_baseline_on_the_nsclc_planning_cts(nsclc: Path) -> None:
    """Acceptance (issue 18), with the model `make run` trained on the synthetic cohort only: on each real
    full-resolution planning CT the U-Net's Dice is at least the classical baseline's, mean >= 0.965, and no
    lung is reported below the expert mask's lowest slice."""
    from lungseg.evaluation.baseline import segment_lungs
    from lungseg.inference.segmenter import Segmenter

    params = load_params(ROOT / "params.yaml")
    cases = {k: v for k, v in params.evaluate.real_ct.items() if k in NSCLC}
    segmenter = Segmenter.load(TRAINED, params_path=ROOT / "params.yaml")
    out = evaluate_real(cases, {"unet": segmenter.segment, "baseline": segment_lungs}, ROOT)
    for name, row in out.items():
        assert row["unet"]["dice"] >= row["baseline"]["dice"], (name, row)
        assert row["unet"]["volume_below_truth_ml"] < 5.0, (name, row)
    assert np.mean([row["unet"]["dice"] for row in out.values()]) >= 0.965, out
