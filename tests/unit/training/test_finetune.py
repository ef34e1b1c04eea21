"""The training budget in optimiser steps, and fine-tuning from given weights (train.init_from)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from lungseg.config import ModelConfig, PreprocessConfig, TrainConfig
from lungseg.errors import LungsegError
from lungseg.training.dataset import SplitArrays
from lungseg.training.finetune import resolve_init
from lungseg.training.fit import fit, steps_per_epoch
from tests.helpers.training import ZERO_AUG, blob_split

PRE = PreprocessConfig(shape=(16, 16, 16))
SMALL = ModelConfig(base_filters=2, depth=1)


class _Counter(keras.callbacks.Callback):
    """Counts optimiser steps and keeps the weights training started from."""

    def __init__(self) -> None:
        super().__init__()
        self.steps, self.start, self.learning_rate = 0, None, None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = [w.copy() for w in self.model.get_weights()]
        self.learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1


def _data(n: int, seed: int = 3) -> SplitArrays:
    return blob_split(n, seed)


@pytest.mark.slow  # two trainings
@pytest.mark.parametrize("cases", [2, 6])
def test_steps_per_epoch_makes_the_budget_the_same_for_any_cohort(cases: int, tmp_path: Path) -> None:
    counter = _Counter()
    cfg = TrainConfig(batch_size=2, max_epochs=2, steps_per_epoch=3, max_minutes=0.0)
    result = fit(_data(cases), _data(2, 9), ZERO_AUG, SMALL, cfg, PRE, tmp_path / "m.keras", verbose=0,
                 extra_callbacks=[counter])
    assert result.epochs_run == 2 and counter.steps == 6  # 2 epochs x 3 steps, for 2 cases as for 6


def test_steps_per_epoch_zero_is_one_pass_over_the_cases() -> None:
    assert steps_per_epoch(TrainConfig(batch_size=4, steps_per_epoch=0), 42) == 11
    assert steps_per_epoch(TrainConfig(batch_size=4, steps_per_epoch=0), 7) == 2
    assert steps_per_epoch(TrainConfig(batch_size=4, steps_per_epoch=11), 7) == 11


@pytest.mark.slow  # three trainings
def test_fine_tuning_starts_from_the_given_weights(tmp_path: Path) -> None:
    cfg = TrainConfig(batch_size=2, max_epochs=1, steps_per_epoch=2, max_minutes=0.0)
    data, val = _data(4), _data(2, 9)
    fit(data, val, ZERO_AUG, SMALL, cfg, PRE, tmp_path / "a.keras", verbose=0)
    source = keras.models.load_model(tmp_path / "a.keras", compile=False).get_weights()

    init = resolve_init(str(tmp_path / "a.keras"), "sqlite:///unused.db", tmp_path, PRE)
    assert init.resolved == str(tmp_path / "a.keras") and len(init.sha256) == 64
    tuned, scratch = _Counter(), _Counter()
    fit(data, val, ZERO_AUG, SMALL, cfg, PRE, tmp_path / "b.keras", verbose=0, extra_callbacks=[tuned], init=init)
    fit(data, val, ZERO_AUG, SMALL, cfg, PRE, tmp_path / "c.keras", verbose=0, extra_callbacks=[scratch])
    assert all(np.array_equal(a, b) for a, b in zip(tuned.start, source))
    assert not all(np.array_equal(a, b) for a, b in zip(scratch.start, source))  # random start: not those weights
    # fine-tuning starts at train.finetune_learning_rate, training from scratch at train.learning_rate
    assert tuned.learning_rate == pytest.approx(cfg.finetune_learning_rate) and cfg.finetune_learning_rate == 1e-4
    assert scratch.learning_rate == pytest.approx(cfg.learning_rate) and cfg.learning_rate == 1e-3


@pytest.mark.slow  # trains
def test_fine_tuning_refuses_another_architecture_and_a_missing_model(tmp_path: Path) -> None:
    cfg = TrainConfig(batch_size=2, max_epochs=1, steps_per_epoch=1, max_minutes=0.0)
    data = _data(2)
    fit(data, data, ZERO_AUG, ModelConfig(base_filters=4, depth=1), cfg, PRE, tmp_path / "wide.keras", verbose=0)
    init = resolve_init(str(tmp_path / "wide.keras"), "sqlite:///unused.db", tmp_path, PRE)
    with pytest.raises(LungsegError, match=r"train\.init_from.*another architecture"):
        fit(data, data, ZERO_AUG, SMALL, cfg, PRE, tmp_path / "x.keras", verbose=0, init=init)
    with pytest.raises(LungsegError, match=r"^params key 'train\.init_from': .*missing\.keras: model not found"):
        resolve_init(str(tmp_path / "missing.keras"), "sqlite:///unused.db", tmp_path, PRE)


def test_auto_fine_tunes_the_newest_synthetic_model_on_other_data_only(tmp_path: Path) -> None:
    import mlflow

    from lungseg.training.finetune import auto_source

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("lungs")
    for raw_dir in ("data/raw/synthetic", "data/raw/synthetic/", "data/raw/lctsc"):  # versions 1, 2, 3
        client.create_model_version("lungs", str(tmp_path), tags={"param.data.raw_dir": raw_dir})
    assert auto_source("lungs", "data/raw/synthetic", "data/raw/lctsc", uri) == "models:/lungs/2"
    assert auto_source("lungs", "data/raw/synthetic", "data/raw/synthetic", uri) is None  # the cohort itself
    assert auto_source("nothing-registered", "data/raw/synthetic", "data/raw/lctsc", uri) is None
