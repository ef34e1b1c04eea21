"""preprocess + train through dvc on tiny params: arrays, MLflow run, model, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import load_params

pytestmark = pytest.mark.pipeline


def test_preprocess_outputs(reproduced: Path) -> None:
    processed = reproduced / "data/processed"
    split = json.loads((reproduced / "data/interim/split.json").read_text())
    pre = load_params(reproduced / "params.yaml").preprocess
    assert pre.normalize == "fixed"
    lo, hi = (0.0 - pre.norm_mean) / pre.norm_sd, (1.0 - pre.norm_mean) / pre.norm_sd
    for name, cases in split.items():
        images = np.load(processed / name / "images.npy")
        masks = np.load(processed / name / "masks.npy")
        assert images.shape == masks.shape == (len(cases), 32, 32, 32)
        assert json.loads((processed / name / "cases.json").read_text()) == sorted(cases)
        for img, msk in zip(images, masks):
            # normalize: fixed: the windowed [0, 1] values standardised by the two constants, not HU
            assert lo - 1e-5 <= img.min() and img.max() <= hi + 1e-5 and img.std() > 0.3
            assert img[msk == 1].mean() < img[msk == 0].mean() - 0.5  # the lungs are the dark part
            assert 0.02 < msk.mean() < 0.6
        for case in cases:
            grid = json.loads((processed / "grids" / f"{case}.json").read_text())
            assert grid["shape"] == [32, 32, 32]
    assert (reproduced / "reports/figures/preprocess_example.png").stat().st_size > 10_000


def test_train_logged_run_model_and_reports(reproduced: Path) -> None:
    import mlflow

    import lungseg.nn.model  # noqa: F401 - registers the U-Net's custom layers (README: before loading it outside lungseg)

    metrics = json.loads((reproduced / "reports/train_metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and 0.0 <= metrics["val_dice"] <= 1.0
    assert (reproduced / "models/model.keras").is_file()
    for png in ("train_loss.png", "train_dice.png"):
        assert (reproduced / "reports/figures" / png).stat().st_size > 5_000
    mlflow.set_tracking_uri(f"sqlite:///{reproduced / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("lung-segmentation")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'train'")
    tuned = json.loads((reproduced / "reports/tune/best_params.json").read_text())["augment"]
    assert run.data.params["augment.source"] == "tune"  # the tune stage's best values, laid over params.yaml
    assert float(run.data.params["augment.rotate_max_deg"]) == tuned["rotate_max_deg"]
    assert run.data.params["augment.elastic_sigma"] == "6.0"  # not searched: the params.yaml value
    assert run.data.params["train.learning_rate"] == "0.001"
    assert run.data.tags["git_commit"] != "unknown"
    for key in ("loss", "val_loss", "dice", "val_dice", "iou", "val_iou", "learning_rate"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/train_loss.png", "reports/train_dice.png", "reports/train_history.csv"} <= artifacts
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    example = np.load(processed_example(reproduced))
    assert model.metadata.signature is not None
    out = model.predict(example)
    assert out.shape == example.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # the logged input example is the preprocessed network input (first validation volume), not raw HU
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model")
    logged = mlflow.models.Model.load(local).load_input_example(local)
    if isinstance(logged, dict):  # a named tensor input ("ct") comes back as {name: array}
        (logged,) = logged.values()
    logged = np.asarray(logged)
    assert np.allclose(logged, np.load(reproduced / "data/processed/val/images.npy")[:1, ..., None], atol=1e-5)


def processed_example(root: Path) -> Path:
    images = np.load(root / "data/processed/val/images.npy")[:1, ..., None]
    path = root / "example.npy"
    np.save(path, images)
    return path
