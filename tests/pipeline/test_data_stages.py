"""The data stages end to end through the real CLI and dvc, on tiny params."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers.digests import file_digests

from .conftest import run

pytestmark = pytest.mark.pipeline


def test_repro_writes_dicom_cohort_and_prepared_nifti(reproduced: Path) -> None:
    raw = reproduced / "data/raw/synthetic"
    patients = sorted(p.name for p in raw.iterdir() if p.is_dir())
    assert len(patients) == 5
    interim = reproduced / "data/interim"
    with open(interim / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case"] for r in rows) == patients
    for r in rows:
        assert (interim / f"{r['case']}_ct.nii.gz").is_file()
        assert (interim / f"{r['case']}_lungs.nii.gz").is_file()
        assert float(r["lung_volume_ml"]) > 500
    split = json.loads((interim / "split.json").read_text())
    assert sorted(sum(split.values(), [])) == patients
    assert (reproduced / "reports/figures/prepare_cases.png").stat().st_size > 10_000
    assert json.loads((reproduced / "reports/prepare.json").read_text())["cases"] == 5


def test_second_repro_does_nothing(reproduced: Path) -> None:
    out = run(["dvc", "repro"], reproduced).stdout
    assert "didn't change, skipping" in out or "Data and pipelines are up to date" in out
    status = run(["dvc", "status", "dvc.yaml", "--with-deps"], reproduced).stdout  # pipelines/cv is run apart
    assert "up to date" in status.lower()


def test_data_stages_are_byte_identical_when_rerun(reproduced: Path) -> None:
    before_raw = file_digests(reproduced / "data/raw/synthetic")
    before_interim = file_digests(reproduced / "data/interim")
    run(["dvc", "repro", "--force", "prepare"], reproduced)
    after = file_digests(reproduced / "data/raw/synthetic"), file_digests(reproduced / "data/interim")
    assert after == (before_raw, before_interim)
