"""Evaluation metrics per case and over cases, and the model registration policy (real MLflow)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import params_from_dict
from lungseg.evaluation.scoring import bce, geometry_metrics, summarize, write_per_case_csv
from lungseg.io.geometry import Geometry


def _two_lungs(shape=(40, 30, 20)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[5:15, 5:25, 4:16] = 1
    labels[25:35, 5:25, 4:16] = 2
    return labels


def test_bce_on_known_values() -> None:
    prob = np.array([0.9, 0.2, 0.5, 0.99])
    truth = np.array([1, 0, 1, 0])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.01)) / 4
    assert bce(prob, truth) == pytest.approx(expected, rel=1e-6)
    assert bce(np.array([1.0, 0.0]), np.array([1, 0])) < 1e-6  # clipped, finite


def test_geometry_metrics_perfect_shifted_and_swapped() -> None:
    truth = _two_lungs()
    geometry = Geometry(truth.shape, (1.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    perfect = geometry_metrics(truth, truth, geometry)
    assert perfect["dice"] == perfect["dice_right"] == perfect["dice_left"] == 1.0
    assert perfect["hd95_mm"] == 0.0 and perfect["volume_error_ml"] == 0.0
    assert perfect["true_volume_ml"] == pytest.approx(2 * 10 * 20 * 12 * 6 / 1000)
    shifted = np.roll(truth, 2, axis=0)  # 2 voxels of 1 mm along i
    m = geometry_metrics(shifted, truth, geometry)
    assert m["dice_right"] == pytest.approx(0.8) and m["hd95_right_mm"] == pytest.approx(2.0)
    swapped = np.where(truth == 1, 2, np.where(truth == 2, 1, 0)).astype(np.uint8)
    s = geometry_metrics(swapped, truth, geometry)
    assert s["dice"] == 1.0 and s["dice_right"] == 0.0 and s["dice_left"] == 0.0  # sides matter per lung


def test_summarize_keeps_infinite_distances_out_of_the_mean(tmp_path: Path) -> None:
    rows = [{"case": "a", "dice": 0.9, "hd95_mm": 3.0}, {"case": "b", "dice": 0.7, "hd95_mm": float("inf")}]
    s = summarize(rows, ("dice", "hd95_mm"))
    assert s["dice"]["mean"] == pytest.approx(0.8) and s["dice"]["std"] == pytest.approx(0.1)
    assert s["hd95_mm"]["mean"] == 3.0 and s["hd95_mm"]["n_inf"] == 1
    out = write_per_case_csv(tmp_path / "per_case.csv", rows, [{"case": "a", "dice": 0.5}])
    table = list(csv.DictReader(out.open()))
    assert [r["method"] for r in table] == ["unet", "unet", "baseline"]
    assert table[1]["hd95_mm"] == "inf" and table[2]["hd95_mm"] == ""


def _save_model(path: Path, seed: int) -> None:
    import keras

    from lungseg.nn.model import build_unet3d

    keras.utils.set_random_seed(seed)
    build_unet3d((16, 16, 16), base_filters=2, depth=1, dropout=0.0, l2=0.0, bn_momentum=0.9).save(path)


@pytest.mark.slow  # four models through the MLflow registry
def test_registration_is_idempotent_and_the_alias_goes_to_the_best(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    from lungseg.stages.evaluate import register

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = params_from_dict({
        "preprocess": {"shape": [16, 16, 16]}, "model": {"depth": 1},
        "train": {"model_path": str(tmp_path / "model.keras")}, "evaluate": {"min_dice": 0.9},
    })
    Path("reports").mkdir()

    def candidate(seed: int, dice: float) -> dict:
        _save_model(tmp_path / "model.keras", seed)
        stats = {k: {"mean": v, "std": 0.0} for k, v in
                 {"dice": dice, "iou": dice - 0.05, "net_dice": dice, "net_iou": dice - 0.05, "hd95_mm": 4.0,
                  "msd_mm": 1.0, "dice_right": dice, "dice_left": dice}.items()}
        Path("reports/metrics.json").write_text(json.dumps({"test_cases": 3, "unet": stats}))
        return register(params)

    first = candidate(1, 0.95)
    assert first["version"] == "1" and first["alias_moved"] and first["champion"] == "1"
    again = register(params)  # the same model and configs: nothing new
    assert again["version"] == "1" and not again["alias_moved"]
    worse = candidate(2, 0.93)
    assert worse["version"] == "2" and not worse["alias_moved"] and worse["champion"] == "1"
    below = candidate(3, 0.85)
    assert not below["alias_moved"]
    better = candidate(4, 0.97)
    assert better["alias_moved"] and better["champion"] == better["version"] == "4"

    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='lung-segmentation'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    champion = client.get_model_version_by_alias("lung-segmentation", "champion")
    assert str(champion.version) == "4" and champion.tags["test_dice"] == "0.97000"
    assert champion.tags["param.model.depth"] == "1" and "lungseg_key" in champion.tags
    assert "Dice 0.9700" in champion.description
    model = mlflow.pyfunc.load_model("models:/lung-segmentation@champion")
    assert model.metadata.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.model"


def _one_error_line(capsys) -> str:  # noqa: ANN001
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_evaluate_and_register_bad_inputs_are_one_line_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    from lungseg.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    Path("params.yaml").write_text("preprocess:\n  shape: [16, 16, 16]\nmodel:\n  depth: 1\n")

    assert main(["evaluate"]) == 1  # nothing preprocessed yet
    assert "data/processed/test" in _one_error_line(capsys)

    test = tmp_path / "data/processed/test"
    test.mkdir(parents=True)
    np.save(test / "images.npy", np.zeros((1, 16, 16, 16), np.float32))
    np.save(test / "masks.npy", np.zeros((1, 16, 16, 16), np.uint8))
    (test / "cases.json").write_text('["case-1"]')
    Path("models").mkdir()
    Path("models/model.keras").write_bytes(b"not a keras file")
    assert main(["evaluate"]) == 1  # a corrupt checkpoint
    line = _one_error_line(capsys)
    assert "models/model.keras: cannot load the Keras model" in line and "lungseg train" in line

    assert main(["register"]) == 1  # no test metrics yet
    assert "reports/metrics.json: cannot read the test metrics" in _one_error_line(capsys)
