"""tune through dvc on tiny params: best_params.json, figures, MLflow parent and child runs, a resumable study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run

pytestmark = pytest.mark.pipeline


def test_tune_wrote_best_params_and_figures(reproduced: Path) -> None:
    best = json.loads((reproduced / "reports/tune/best_params.json").read_text())
    assert best["source"] == "tune" and best["trials"]["complete"] + best["trials"]["pruned"] == 2
    assert set(best["augment"]) == set(_search_space(reproduced))
    assert 0.0 <= best["best_value"] <= 1.0
    assert best["epochs_run_total"] <= best["epochs_without_pruning"] == 2
    for png in ("optimization_history.png", "param_importances.png"):
        assert (reproduced / "reports/tune" / png).stat().st_size > 1_000
    assert (reproduced / "optuna/tune.journal").is_file()  # the study, outside dvc and git
    ignored = run(["git", "check-ignore", "optuna/tune.journal"], reproduced, check=False)
    assert ignored.returncode == 0


def test_tune_mlflow_parent_with_one_child_per_trial(reproduced: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{reproduced / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'tune'")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2 and {c.data.tags["state"] for c in children} <= {"COMPLETE", "PRUNED"}
    assert "best_value" in parent.data.metrics


def _search_space(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())["tune"]["search_space"]
