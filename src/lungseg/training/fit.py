"""Fit the 3D U-Net: Dice+BCE, Adam, ReduceLROnPlateau, EarlyStopping, best checkpoint, resume.

Resume: after every epoch the full model (weights and optimizer state) and a small JSON
state (epoch, callback counters, history) are written atomically to ``train.state_dir``.
A run that is killed and started again with the same fingerprint (params + data)
continues from the last completed epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lungseg.config import AugmentConfig, ModelConfig, PreprocessConfig, TrainConfig
from lungseg.fileio import atomic_write, atomic_write_text
from lungseg.nn.keras_metrics import SoftDice, VolumeDice, VolumeIoU
from lungseg.nn.losses import DiceBCELoss
from lungseg.nn.model import build_unet3d
from lungseg.nn.runtime import configure_threads
from lungseg.training.dataset import SplitArrays, eval_dataset, train_dataset

log = logging.getLogger(__name__)

STATE_JSON = "state.json"
LAST_MODEL = "last.keras"


def compile_model(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """Compile with Dice+BCE, Adam and the per-volume metrics."""
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2),
        loss=DiceBCELoss(),
        metrics=[VolumeDice(), VolumeIoU(), SoftDice()],
    )
    return model


@dataclass
class FitResult:
    """What one training produced."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    resumed_from: int = 0
    stopped_early: bool = False
    stopped_by_budget: bool = False
    seconds: float = 0.0


class _Resumable:
    """Mixin for a Keras callback whose counters (``RESUMED`` attributes) survive a restart."""

    RESUMED: tuple[str, ...] = ()

    def __init__(self, state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self._resume = state

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)  # type: ignore[misc]
        for name in self.RESUMED if self._resume else ():
            setattr(self, name, self._resume[name])

    def snapshot(self) -> dict[str, Any]:
        """The counters to save with the resume state."""
        return {name: float(getattr(self, name)) if name == "best" else getattr(self, name) for name in self.RESUMED}


class _ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    RESUMED = ("wait", "best", "best_epoch")


class _ResumableReduceLR(_Resumable, keras.callbacks.ReduceLROnPlateau):
    RESUMED = ("wait", "best", "cooldown_counter")


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the end of the first epoch that ends after ``minutes`` of wall time.

    The clock starts when training (or its resumption) starts in this process. Since an epoch
    is not cut short, a run overshoots by at most one epoch.
    """

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds, self.start, self.stopped = 60.0 * minutes, time.perf_counter(), False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if time.perf_counter() - self.start >= self.seconds:
            log.warning("train.max_minutes (%.1f) reached after epoch %d: training stops here", self.seconds / 60, epoch + 1)
            self.stopped = True
            self.model.stop_training = True


class _StateSaver(keras.callbacks.Callback):
    """Writes the resume state after each epoch and forwards the epoch's logs to a hook."""

    def __init__(
        self, state_dir: Path | None, fingerprint: str, history: list[dict[str, float]],
        stopper: _ResumableEarlyStopping, reducer: _ResumableReduceLR,
        on_epoch: Callable[[int, dict[str, float]], None] | None, extra: dict[str, Any],
    ) -> None:
        super().__init__()
        self.state_dir, self.fingerprint, self.history = state_dir, fingerprint, history
        self.stopper, self.reducer, self.on_epoch, self.extra = stopper, reducer, on_epoch, extra

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.history.append(row)
        if self.on_epoch:
            self.on_epoch(epoch + 1, row)
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.state_dir / LAST_MODEL, suffix=".keras") as tmp:
            self.model.save(tmp)
        state = {
            **self.extra,
            "fingerprint": self.fingerprint,
            "epoch": epoch + 1,
            "history": self.history,
            "early_stopping": self.stopper.snapshot(),
            "reduce_lr": self.reducer.snapshot(),
        }
        atomic_write_text(self.state_dir / STATE_JSON, json.dumps(state))


def fingerprint(*parts: Any, data: SplitArrays | None = None) -> str:
    """Hash of the configs and the training data: a resume state is used only if it matches."""
    h = hashlib.sha256(json.dumps([repr(p) for p in parts]).encode())
    if data is not None:
        h.update(np.ascontiguousarray(data.images).tobytes())
        h.update(np.ascontiguousarray(data.masks).tobytes())
    return h.hexdigest()


def run_fingerprint(
    aug: AugmentConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, preprocess_cfg: PreprocessConfig,
    epochs: int, train: SplitArrays, val: SplitArrays, init: InitWeights | None = None,
) -> str:
    """The fingerprint :func:`fit` uses for its resume state: configs, training and validation data, starting
    weights (a changed time budget still resumes; other validation cases or starting weights do not)."""
    parts = (aug, model_cfg, dataclasses.replace(train_cfg, max_minutes=0.0), preprocess_cfg, epochs)
    return fingerprint(*parts, *((init.sha256,) if init else ()), fingerprint(data=val), data=train)


def steps_per_epoch(train_cfg: TrainConfig, n_cases: int) -> int:
    """Optimiser steps per epoch: ``train.steps_per_epoch``, or one pass over ``n_cases`` where it is 0."""
    return train_cfg.steps_per_epoch or int(np.ceil(n_cases / train_cfg.batch_size))


@dataclass(frozen=True)
class InitWeights:
    """Where fine-tuning starts (:func:`lungseg.training.finetune.resolve_init`)."""

    path: Path  # the .keras file
    sha256: str
    source: str  # train.init_from as given
    resolved: str  # the file, or models:/<name>/<version> (run <run id>) for a registry URI
    weights: list[np.ndarray]
    preprocess: PreprocessConfig | None = None  # what the weights were trained with (None: no config beside them)


def set_init_weights(model: keras.Model, init: InitWeights) -> None:
    """Copy ``init``'s weights into ``model`` (fine-tuning).

    Raises:
        LungsegError: the architectures differ (the file and the first differing weight shapes named).
    """
    from lungseg.errors import LungsegError

    mine = model.get_weights()
    pairs = [(a.shape, b.shape) for a, b in zip(mine, init.weights)]
    if len(mine) != len(init.weights) or any(a != b for a, b in pairs):
        here, there = next(((a, b) for a, b in pairs if a != b), (len(mine), len(init.weights)))
        raise LungsegError(f"params key 'train.init_from': {init.path} has another architecture than model.* and "
                           f"preprocess.shape (first difference: {there} there, {here} here)")
    model.set_weights(init.weights)
    log.info("starting from the weights of %s", init.resolved)


def load_resume_state(state_dir: Path | None, expected: str) -> dict[str, Any] | None:
    """The saved state if it exists, is complete and matches ``expected``; otherwise None."""
    if state_dir is None:
        return None
    try:
        state = json.loads((Path(state_dir) / STATE_JSON).read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != expected or not (Path(state_dir) / LAST_MODEL).is_file():
        log.info("ignoring resume state in %s (different params or data)", state_dir)
        return None
    return state


def fit(
    train: SplitArrays,
    val: SplitArrays,
    aug: AugmentConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    preprocess_cfg: PreprocessConfig,
    model_path: Path,
    state_dir: Path | None = None,
    max_epochs: int | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    extra_state: dict[str, Any] | None = None,
    verbose: int = 2,
    init: InitWeights | None = None,
) -> FitResult:
    """Train, keeping the best validation-loss checkpoint at ``model_path``.

    Args:
        train, val: Processed arrays (network grid); training data is augmented with ``aug``.
        max_epochs: Overrides ``train_cfg.max_epochs`` (e.g. short tuning trials).
        state_dir: Where to keep resume state (None = no resume).
        on_epoch: Called with (epoch number from 1, logs incl. learning_rate) after each epoch.
        extra_state: JSON-able values saved with the resume state (e.g. the MLflow run id).
        init: Starting weights (fine-tuning; :func:`lungseg.training.finetune.resolve_init`), trained with Adam at
            ``train.finetune_learning_rate``; None = random weights (``train.seed``) at ``train.learning_rate``.
    """
    configure_threads()
    keras.utils.set_random_seed(train_cfg.seed)
    epochs = max_epochs or train_cfg.max_epochs
    fp = run_fingerprint(aug, model_cfg, train_cfg, preprocess_cfg, epochs, train, val, init)
    state = load_resume_state(state_dir, fp)
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    if state:
        model = keras.models.load_model(Path(state_dir) / LAST_MODEL)  # type: ignore[arg-type]
        history, initial_epoch = list(state["history"]), int(state["epoch"])
        log.info("resuming from epoch %d (state in %s)", initial_epoch, state_dir)
    else:
        model = compile_model(
            build_unet3d(preprocess_cfg.shape, model_cfg.base_filters, model_cfg.depth, model_cfg.dropout, model_cfg.l2,
                         model_cfg.bn_momentum),
            dataclasses.replace(train_cfg, learning_rate=train_cfg.finetune_learning_rate)
            if init is not None and train_cfg.finetune_learning_rate > 0 else train_cfg,
        )
        if init is not None:
            set_init_weights(model, init)
        history, initial_epoch = [], 0
    best_so_far = min((r["val_loss"] for r in history), default=None)
    stopper = _ResumableEarlyStopping(
        (state or {}).get("early_stopping", {}), monitor="val_loss", patience=train_cfg.early_stopping_patience,
        restore_best_weights=True,
    )
    reducer = _ResumableReduceLR(
        (state or {}).get("reduce_lr", {}), monitor="val_loss", factor=train_cfg.lr_factor,
        patience=train_cfg.lr_patience, min_lr=train_cfg.min_lr,
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        model_path, monitor="val_loss", save_best_only=True, initial_value_threshold=best_so_far
    )
    saver = _StateSaver(state_dir, fp, history, stopper, reducer, on_epoch, extra_state or {})
    budget = [TimeBudget(train_cfg.max_minutes)] if train_cfg.max_minutes > 0 else []
    steps = steps_per_epoch(train_cfg, len(train.cases))
    start = time.perf_counter()
    result = FitResult(resumed_from=initial_epoch)
    if initial_epoch < epochs and not (state and stopper.wait >= stopper.patience):
        model.fit(
            train_dataset(train, aug, train_cfg.batch_size, train_cfg.seed, start_step=initial_epoch * steps * train_cfg.batch_size),
            steps_per_epoch=steps,
            validation_data=eval_dataset(val, train_cfg.batch_size),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[checkpoint, reducer, stopper, saver, *budget, *(extra_callbacks or [])],
            verbose=verbose,
        )
        result.stopped_early = stopper.stopped_epoch > 0
        result.stopped_by_budget = bool(budget) and budget[0].stopped
    result.seconds = time.perf_counter() - start
    result.history = history
    result.epochs_run = len(history)
    best = min(history, key=lambda r: r["val_loss"])
    result.best_epoch, result.best = int(best["epoch"]), best
    return result


def write_history_csv(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch rows for ``dvc plots`` (columns: epoch, loss, val_loss, dice, val_dice, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
