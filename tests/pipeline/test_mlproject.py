"""MLproject entry points through the real `mlflow run` (README: `mlflow run . -e prepare --env-manager local`,
with .venv/bin on PATH), on a copy of the reproduced tiny project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers.digests import file_digests

from .conftest import BIN, run

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def copy(reproduced: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("mlproject") / "lungseg"
    shutil.copytree(reproduced, dst, symlinks=True)
    return dst


def _project_runs(root: Path, entry_point: str) -> list:
    """The MLflow runs `mlflow run` recorded for ``entry_point`` in the project's own store (MLflow's default
    tracking URI, sqlite:///mlflow.db in the working directory, is the project's)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`mlflow.project.entryPoint` = '{entry_point}'")


def test_mlflow_run_prepare_as_the_readme_shows(copy: Path) -> None:
    before = file_digests(copy / "data/interim")
    proc = run([str(BIN / "mlflow"), "run", ".", "-e", "prepare", "--env-manager", "local"], copy)
    assert "lungseg --params params.yaml prepare" in proc.stdout + proc.stderr
    assert file_digests(copy / "data/interim") == before  # the same stage, the same bytes
    (project_run,) = _project_runs(copy, "prepare")
    assert project_run.info.status == "FINISHED" and project_run.data.params == {"params": "params.yaml"}
    assert project_run.data.tags["mlflow.source.type"] == "PROJECT"


def test_mlflow_run_passes_its_parameters(copy: Path) -> None:
    """`-P params=...` reaches the stage (a two-case cohort written elsewhere), and a stage that fails makes
    `mlflow run` fail with the stage's one-line error and a FAILED run."""
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["synthesize"].update(out_dir="data/raw/via-mlproject", cases=2)
    (copy / "other.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([str(BIN / "mlflow"), "run", ".", "-e", "synthesize", "-P", "params=other.yaml", "--env-manager", "local"], copy)
    patients = sorted(p.name for p in (copy / "data/raw/via-mlproject").iterdir() if p.is_dir())
    assert len(patients) == 2
    (project_run,) = _project_runs(copy, "synthesize")
    assert project_run.info.status == "FINISHED" and project_run.data.params["params"] == "other.yaml"

    failed = run([str(BIN / "mlflow"), "run", ".", "-e", "cv_fold", "-P", "fold=9", "--env-manager", "local"], copy,
                 check=False)
    assert failed.returncode != 0
    assert "lungseg cv-fold: error: --fold 9:" in failed.stderr + failed.stdout
    (fold_run,) = _project_runs(copy, "cv_fold")
    assert fold_run.info.status == "FAILED" and fold_run.data.params["fold"] == "9"
