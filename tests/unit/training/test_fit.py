"""Training: data pipeline contents, resume after SIGKILL through the real CLI, resume only with the same
params and data, EarlyStopping and ReduceLROnPlateau, the time budget."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lungseg.config import AugmentConfig, ModelConfig, PreprocessConfig, TrainConfig
from lungseg.training.dataset import SplitArrays, eval_dataset, train_dataset
from lungseg.training.fit import fit
from tests.helpers.training import ZERO_AUG, blob_split, blobs


def test_training_pipeline_feeds_the_preprocessed_arrays() -> None:
    images, masks = blobs(3, 16, 0)
    data = SplitArrays(images, masks, ["a", "b", "c"])
    seen = []
    for x, y in train_dataset(data, ZERO_AUG, batch_size=1, seed=1).take(3):
        seen.append((x.numpy()[0, ..., 0], y.numpy()[0, ..., 0]))
    for x, y in seen:  # with zero augmentation each batch is exactly one of the processed volumes
        assert any(np.array_equal(x, images[i]) and np.array_equal(y, masks[i]) for i in range(3))
    x, y = next(iter(eval_dataset(data, batch_size=2)))
    assert x.shape == (2, 16, 16, 16, 1) and np.array_equal(x.numpy()[..., 0], images[:2])


def test_augmented_batches_differ_between_epochs_but_are_reproducible() -> None:
    images, masks = blobs(2, 16, 1)
    data = SplitArrays(images, masks, ["a", "b"])
    aug = AugmentConfig(elastic_p=1.0, rotate_p=1.0)
    first = [x.numpy() for x, _ in train_dataset(data, aug, 2, seed=3).take(2)]
    again = [x.numpy() for x, _ in train_dataset(data, aug, 2, seed=3).take(2)]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.allclose(np.sort(first[0].ravel()), np.sort(first[1].ravel()))


def _tiny_project(root: Path, epochs: int) -> None:
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        images, masks = blobs(n, 16, seed)
        (root / "processed" / split).mkdir(parents=True)
        np.save(root / "processed" / split / "images.npy", images)
        np.save(root / "processed" / split / "masks.npy", masks)
        (root / "processed" / split / "cases.json").write_text(json.dumps([f"{split}{i}" for i in range(n)]))
    params = {
        "data": {"processed_dir": "processed", "figures_dir": "figs"},
        "preprocess": {"shape": [16, 16, 16]},
        "model": {"base_filters": 4, "depth": 1, "dropout": 0.0},
        "train": {"max_epochs": epochs, "batch_size": 2, "early_stopping_patience": 100,
                  "model_path": "models/model.keras", "state_dir": "models/state"},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


#: Runs the real CLI's `train`; the process SIGKILLs itself at the first batch of the epoch after the one
#: named in argv[1], so the kill lands mid-epoch with that epoch's resume state on disk, on any host (a test
#: that polls state.json and kills from outside races the training: a fast host finishes first).
KILLED_TRAIN = """
import os, signal, sys
from lungseg.training import fit as training
from lungseg.cli import main

after = int(sys.argv[1])

def kill_mid_epoch(self, batch, logs=None):
    if len(self.history) == after:  # epoch `after` ended and its state was written; now inside the next one
        os.kill(os.getpid(), signal.SIGKILL)

training._StateSaver.on_train_batch_end = kill_mid_epoch
sys.exit(main(["train"]))
"""


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_last_epoch(tmp_path: Path) -> None:
    epochs, killed_after = 5, 2
    _tiny_project(tmp_path, epochs)
    killed = subprocess.run([sys.executable, "-c", KILLED_TRAIN, str(killed_after)], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, f"training was not killed: {killed.stderr[-2000:]}"
    state = json.loads((tmp_path / "models/state/state.json").read_text())
    assert state["epoch"] == killed_after and len(state["history"]) == killed_after
    resumed = subprocess.run([sys.executable, "-m", "lungseg.cli", "train"], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports/train_metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == killed_after
    assert metrics["epochs_run"] == epochs  # history kept: epochs 1..5, not restarted
    assert f"Epoch {killed_after + 1}/{epochs}" in resumed.stdout + resumed.stderr
    assert "Epoch 1/" not in resumed.stdout + resumed.stderr
    with open(tmp_path / "reports/train_history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    for row, saved in zip(rows, state["history"]):  # the killed run's epochs, as they were logged
        assert float(row["val_loss"]) == pytest.approx(saved["val_loss"], rel=1e-6)
    assert not (tmp_path / "models/state").exists()  # finished: resume state cleared
    # one MLflow run holds every epoch
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == state["mlflow_run_id"] and runs[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss"))
    assert steps == list(range(1, epochs + 1))


# ----------------------------------------------------------------- resume only with the same params and data

SMALL = ModelConfig(base_filters=2, depth=1)
PRE = PreprocessConfig(shape=(16, 16, 16))
TWO_EPOCHS = TrainConfig(batch_size=2, max_epochs=2, steps_per_epoch=2, early_stopping_patience=100, max_minutes=0.0)


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, float]]]:
    """The resume state a finished two-epoch fit leaves (train.state_dir), and that fit's history."""
    root = tmp_path_factory.mktemp("state")
    result = fit(blob_split(4, 0), blob_split(2, 1), ZERO_AUG, SMALL, TWO_EPOCHS, PRE, root / "m.keras",
                 state_dir=root / "state", verbose=0)
    assert result.resumed_from == 0 and json.loads((root / "state" / "state.json").read_text())["epoch"] == 2
    return root / "state", result.history


def _fit_from(saved: Path, tmp_path: Path, train: SplitArrays, val: SplitArrays, aug: AugmentConfig = ZERO_AUG,
              cfg: TrainConfig = TWO_EPOCHS, model: ModelConfig = SMALL, pre: PreprocessConfig = PRE):
    state = tmp_path / "state"
    shutil.copytree(saved, state)
    return fit(train, val, aug, model, cfg, pre, tmp_path / "m.keras", state_dir=state, verbose=0)


@pytest.mark.slow  # trains (the saved_state fixture)
def test_the_same_params_and_data_resume(saved_state, tmp_path: Path) -> None:
    """The control: nothing changed, so the state is used (both epochs done: nothing left to train)."""
    saved, history = saved_state
    again = _fit_from(saved, tmp_path, blob_split(4, 0), blob_split(2, 1))
    assert again.resumed_from == 2 and again.history == history


@pytest.mark.slow  # five trainings
@pytest.mark.parametrize("change", ["learning_rate", "augment", "model", "max_epochs", "train_data"])
def test_changed_params_or_data_start_afresh(saved_state, tmp_path: Path, change: str) -> None:
    """A resume state written with other params or other training data is not resumed: training starts
    again at epoch 1 (and its own state replaces the old one)."""
    saved, history = saved_state
    train, kw = blob_split(4, 0), {}
    if change == "learning_rate":
        kw["cfg"] = dataclasses.replace(TWO_EPOCHS, learning_rate=2e-3)
    elif change == "augment":
        kw["aug"] = dataclasses.replace(ZERO_AUG, noise_p=0.5)
    elif change == "model":
        kw["model"] = dataclasses.replace(SMALL, dropout=0.2)
    elif change == "max_epochs":
        kw["cfg"] = dataclasses.replace(TWO_EPOCHS, max_epochs=3)
    else:
        images = train.images.copy()
        images[0, 8, 8, 8] += 0.5  # one voxel of one training case
        train = SplitArrays(images, train.masks, train.cases)
    result = _fit_from(saved, tmp_path, train, blob_split(2, 1), **kw)
    assert result.resumed_from == 0 and result.epochs_run == (3 if change == "max_epochs" else 2)
    assert json.loads((tmp_path / "state" / "state.json").read_text())["fingerprint"] != \
        json.loads((saved / "state.json").read_text())["fingerprint"]


@pytest.mark.slow  # trains
def test_changed_validation_data_starts_afresh(saved_state, tmp_path: Path) -> None:
    saved, _ = saved_state
    result = _fit_from(saved, tmp_path, blob_split(4, 0), blob_split(2, 7))  # other validation cases
    assert result.resumed_from == 0


# ----------------------------------------------------------------- EarlyStopping and ReduceLROnPlateau


def _expected_learning_rates(val_losses: list[float], cfg: TrainConfig) -> list[float]:
    """The learning rate after each epoch as README promises it: ReduceLROnPlateau on val_loss (Keras'
    min_delta 1e-4, no cooldown) multiplies it by train.lr_factor after train.lr_patience epochs without
    improvement, never below train.min_lr."""
    best, wait, lr, out = None, 0, cfg.learning_rate, []
    for v in val_losses:
        if best is None or v + 1e-4 < best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= cfg.lr_patience and lr > np.float32(cfg.min_lr):
                lr, wait = max(lr * cfg.lr_factor, cfg.min_lr), 0
        out.append(lr)
    return out


@pytest.mark.slow  # trains
def test_early_stopping_and_reduce_lr_on_plateau_follow_val_loss(tmp_path: Path) -> None:
    """Validation masks inverted: the better the network fits the training data, the worse its validation
    loss, so after epoch 1 it never improves. The learning rate halves after each train.lr_patience (1)
    epochs without improvement, training stops train.early_stopping_patience (3) epochs after the best one,
    and models/model.keras holds the best epoch's weights."""
    import keras

    from lungseg.training.fit import compile_model

    v = blob_split(2, 1)
    val = SplitArrays(v.images, (1 - v.masks).astype(np.uint8), v.cases)
    cfg = TrainConfig(batch_size=2, max_epochs=12, steps_per_epoch=2, learning_rate=0.01, lr_patience=1, lr_factor=0.5,
                      min_lr=1e-4, early_stopping_patience=3, max_minutes=0.0)
    result = fit(blob_split(4, 0), val, ZERO_AUG, SMALL, cfg, PRE, tmp_path / "model.keras", verbose=0)
    losses = [row["val_loss"] for row in result.history]
    assert result.stopped_early and result.epochs_run < cfg.max_epochs
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert result.epochs_run == result.best_epoch + cfg.early_stopping_patience  # patience epochs after the best
    assert [row["learning_rate"] for row in result.history] == pytest.approx(_expected_learning_rates(losses, cfg),
                                                                             rel=1e-6)
    assert result.history[-1]["learning_rate"] < cfg.learning_rate  # it was reduced
    best = compile_model(keras.models.load_model(tmp_path / "model.keras", compile=False), cfg)
    evaluated = best.evaluate(eval_dataset(val, cfg.batch_size), verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(min(losses), rel=1e-4)  # the best epoch's weights, not the last


@pytest.mark.slow  # three trainings
def test_time_budget_stops_training_after_the_epoch_that_spends_it(tmp_path: Path) -> None:
    images, masks = blobs(4, 16, 2)
    data = SplitArrays(images, masks, ["a", "b", "c", "d"])
    model_cfg = ModelConfig(base_filters=2, depth=1)
    pre = PreprocessConfig(shape=(16, 16, 16))
    budget = fit(data, data, ZERO_AUG, model_cfg, TrainConfig(batch_size=2, max_epochs=4, max_minutes=1e-6), pre,
                 tmp_path / "a.keras", verbose=0)
    assert budget.stopped_by_budget and budget.epochs_run == 1 and not budget.stopped_early
    free = fit(data, data, ZERO_AUG, model_cfg, TrainConfig(batch_size=2, max_epochs=2), pre, tmp_path / "b.keras",
               verbose=0)
    assert not free.stopped_by_budget and free.epochs_run == 2
