"""Own data without the phantom, and k-fold cross-validation, through dvc on a copy of the tiny project."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import run

pytestmark = pytest.mark.pipeline


def _copy(src: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    dst = tmp_path_factory.mktemp(name) / "lungseg"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _set_params(root: Path, **sections: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in sections.items():
        params[section] = {**params[section], **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_on_own_data_runs_no_synthesize(reproduced: Path, tmp_path_factory) -> None:
    root = _copy(reproduced, tmp_path_factory, "own")
    shutil.copytree(root / "data/raw/synthetic", root / "data/raw/own")  # a cohort of one's own (DICOM + RTSTRUCT)
    _set_params(root, data={"raw_dir": "data/raw/own"}, synthesize={"cases": 7})  # and the phantom's params changed
    dry = run(["dvc", "repro", "--dry"], root).stdout
    assert "Running stage 'prepare'" in dry and "synthesize" not in dry, dry
    assert "synthesize" not in run(["dvc", "status", "dvc.yaml", "--with-deps"], root).stdout
    # the control: on the synthetic cohort the same change makes plain `dvc repro` synthesize it again
    _set_params(root, data={"raw_dir": "data/raw/synthetic"})
    assert "Running stage 'pipelines/synthetic/dvc.yaml:synthesize'" in run(["dvc", "repro", "--dry"], root).stdout


@pytest.fixture(scope="module")
def cross_validated(reproduced: Path, tmp_path_factory) -> tuple[Path, str]:
    root = _copy(reproduced, tmp_path_factory, "cv")
    out = run(["dvc", "repro", "pipelines/cv/dvc.yaml"], root, timeout=1800).stdout
    return root, out


def test_folds_hold_out_every_non_test_case_once(cross_validated: tuple[Path, str]) -> None:
    root, _ = cross_validated
    split = json.loads((root / "data/interim/split.json").read_text())
    folds = json.loads((root / "data/interim/folds.json").read_text())
    assert folds["k"] == 3 and len(folds["folds"]) == 3
    assert sorted(c for f in folds["folds"] for c in f["test"]) == sorted(split["train"] + split["val"])
    for f in folds["folds"]:
        assert f["train"] and f["val"] and f["test"]
        assert not set(f["test"]) & set(f["train"] + f["val"]) and not set(f["train"]) & set(f["val"])
        assert not set(split["test"]) & set(f["train"] + f["val"] + f["test"])  # the test split stays out


def test_cv_reports_per_fold_and_pooled_metrics_in_dvc_and_mlflow(cross_validated: tuple[Path, str]) -> None:
    import mlflow

    root, out = cross_validated
    assert all(f"cv_fold@{i}" in out for i in range(3)) and "cv_report" in out
    cv = json.loads((root / "reports/cv.json").read_text())
    assert cv["k"] == 3 and cv["folds_run"] == [0, 1, 2] and cv["cases"] == 4
    per_case = []
    for i in range(3):
        fold = json.loads((root / f"reports/cv/fold_{i}.json").read_text())
        assert (root / f"models/cv/fold_{i}.keras").is_file()
        dices = [c["dice"] for c in fold["per_case"]]
        assert all(0.0 <= d <= 1.0 for d in dices) and cv[f"fold_{i}"]["dice"] == pytest.approx(np.mean(dices), abs=1e-5)
        per_case += dices
    assert cv["dice"]["cases"]["mean"] == pytest.approx(np.mean(per_case), abs=1e-5)
    fold_means = [cv[f"fold_{i}"]["dice"] for i in range(3)]
    assert cv["dice"]["folds"]["mean"] == pytest.approx(np.mean(fold_means), abs=1e-5)
    assert cv["dice"]["folds"]["sd"] == pytest.approx(np.std(fold_means, ddof=1), abs=1e-5)
    assert (root / "reports/figures/cv.png").stat().st_size > 5_000
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], root).stdout)
    files = {f for rev in shown.values() for f in rev.get("data", {})}
    assert {"reports/cv.json", "reports/cv/fold_0.json"} <= files, files

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    fold_runs = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'cv_fold'")
    assert sorted(r.data.tags["cv_fold"] for r in fold_runs) == ["0", "1", "2"]
    assert all("test_dice" in r.data.metrics and r.data.params["train.max_epochs"] == "2" for r in fold_runs)
    (report,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'cv'")
    assert report.data.metrics["cv_dice_mean_folds"] == pytest.approx(cv["dice"]["folds"]["mean"], abs=1e-5)
    # the registered model (the root pipeline's, trained on the same processed data) carries the estimate
    version = client.get_model_version_by_alias("lung-segmentation", "champion")
    assert version.tags["cv_dice_mean"] == f"{cv['dice']['folds']['mean']:.5f}" and version.tags["cv_k"] == "3"
    again = run(["dvc", "repro", "pipelines/cv/dvc.yaml"], root).stdout
    assert "Running stage" not in again, again


def test_fine_tuning_from_the_registered_champion_is_recorded(reproduced: Path, tmp_path_factory) -> None:
    import mlflow

    root = _copy(reproduced, tmp_path_factory, "finetune")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("lung-segmentation", "champion")
    _set_params(root, train={"init_from": "models:/lung-segmentation@champion"})
    run(["lungseg", "train"], root)
    metrics = json.loads((root / "reports/train_metrics.json").read_text())
    lineage = f"models:/lung-segmentation/{champion.version} (run {champion.run_id})"
    assert metrics["init_from"] == lineage and metrics["steps_run"] == 2 * 2  # 2 epochs x train.steps_per_epoch 2
    exp = client.get_experiment_by_name("lung-segmentation")
    (latest, *_) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'train'",
                                      order_by=["attributes.start_time DESC"])
    assert latest.data.tags["lungseg.init_from"] == lineage
    assert latest.data.params["train.init_from"] == "models:/lung-segmentation@champion"
    _set_params(root, train={"init_from": "models:/lung-segmentation@nobody"})
    failed = run(["lungseg", "train"], root, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "lungseg train: error: params key 'train.init_from' 'models:/lung-segmentation@nobody': cannot load the model")
