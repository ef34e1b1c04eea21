"""Training: data pipeline contents, and resume after SIGKILL through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from lungseg.config import AugmentConfig
from lungseg.dataset import SplitArrays, eval_dataset, train_dataset

ZERO_AUG = AugmentConfig(**{k: 0.0 for k in AugmentConfig.__dataclass_fields__ if k.endswith("_p")})


def _blobs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised noisy images of dark ellipsoids ('lungs') and their masks, (N, S, S, S)."""
    rng = np.random.default_rng(seed)
    g = np.mgrid[:size, :size, :size].astype(np.float32) / size - 0.5
    images, masks = [], []
    for _ in range(n):
        c = rng.uniform(-0.1, 0.1, 3)
        r = rng.uniform(0.2, 0.3, 3)
        m = (((g - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
        img = np.where(m, -1.0, 1.0) + rng.normal(0, 0.3, m.shape)
        images.append(img.astype(np.float32))
        masks.append(m.astype(np.uint8))
    return np.stack(images), np.stack(masks)


def test_training_pipeline_feeds_the_preprocessed_arrays() -> None:
    images, masks = _blobs(3, 16, 0)
    data = SplitArrays(images, masks, ["a", "b", "c"])
    seen = []
    for x, y in train_dataset(data, ZERO_AUG, batch_size=1, seed=1).take(3):
        seen.append((x.numpy()[0, ..., 0], y.numpy()[0, ..., 0]))
    for x, y in seen:  # with zero augmentation each batch is exactly one of the processed volumes
        assert any(np.array_equal(x, images[i]) and np.array_equal(y, masks[i]) for i in range(3))
    x, y = next(iter(eval_dataset(data, batch_size=2)))
    assert x.shape == (2, 16, 16, 16, 1) and np.array_equal(x.numpy()[..., 0], images[:2])


def test_augmented_batches_differ_between_epochs_but_are_reproducible() -> None:
    images, masks = _blobs(2, 16, 1)
    data = SplitArrays(images, masks, ["a", "b"])
    aug = AugmentConfig(elastic_p=1.0, rotate_p=1.0)
    first = [x.numpy() for x, _ in train_dataset(data, aug, 2, seed=3).take(2)]
    again = [x.numpy() for x, _ in train_dataset(data, aug, 2, seed=3).take(2)]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.allclose(np.sort(first[0].ravel()), np.sort(first[1].ravel()))


def _tiny_project(root: Path, epochs: int) -> None:
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        images, masks = _blobs(n, 16, seed)
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


def test_resume_after_sigkill_continues_from_last_epoch(tmp_path: Path) -> None:
    epochs = 8
    _tiny_project(tmp_path, epochs)
    cmd = [sys.executable, "-m", "lungseg.cli", "train"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = tmp_path / "models/state/state.json"
    deadline = time.time() + 240
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        try:
            killed_after = json.loads(state_file.read_text())["epoch"]
        except (OSError, ValueError):
            killed_after = None
        if killed_after is not None and killed_after >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"training ended before it could be killed: {proc.stderr.read()[-2000:]}"
    assert killed_after is not None and killed_after < epochs
    state = json.loads(state_file.read_text())
    resumed = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports/train_metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == state["epoch"] >= 3
    assert metrics["epochs_run"] == epochs  # history kept: epochs 1..8, not restarted
    assert f"Epoch {state['epoch'] + 1}/{epochs}" in resumed.stdout + resumed.stderr
    assert "Epoch 1/" not in resumed.stdout + resumed.stderr
    assert not (tmp_path / "models/state").exists()  # finished: resume state cleared
    # one MLflow run holds every epoch
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == state["mlflow_run_id"]
    steps = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss"))
    assert steps == list(range(1, epochs + 1))


def test_time_budget_stops_training_after_the_epoch_that_spends_it(tmp_path: Path) -> None:
    from lungseg.config import ModelConfig, PreprocessConfig, TrainConfig
    from lungseg.training import fit

    images, masks = _blobs(4, 16, 2)
    data = SplitArrays(images, masks, ["a", "b", "c", "d"])
    model_cfg = ModelConfig(base_filters=2, depth=1)
    pre = PreprocessConfig(shape=(16, 16, 16))
    budget = fit(data, data, ZERO_AUG, model_cfg, TrainConfig(batch_size=2, max_epochs=4, max_minutes=1e-6), pre,
                 tmp_path / "a.keras", verbose=0)
    assert budget.stopped_by_budget and budget.epochs_run == 1 and not budget.stopped_early
    free = fit(data, data, ZERO_AUG, model_cfg, TrainConfig(batch_size=2, max_epochs=2), pre, tmp_path / "b.keras",
               verbose=0)
    assert not free.stopped_by_budget and free.epochs_run == 2
