"""Stage ``train``: fit the augmented 3D U-Net, tracked as one MLflow run.

Writes ``train.model_path`` (best validation loss), ``reports/train_metrics.json``,
``reports/train_history.csv`` and the loss/Dice curves to ``data.figures_dir``. The augment
values of ``reports/tune/best_params.json`` (stage ``tune``), if present, replace those of
``params.yaml``; MLflow param ``augment.source`` says which were used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

import keras

from lungseg.config import Params, flatten_params
from lungseg.figures import plot_training_curves
from lungseg.training import tracking
from lungseg.training.dataset import load_split
from lungseg.training.finetune import init_weights
from lungseg.training.fit import (
    InitWeights,
    fit,
    load_resume_state,
    run_fingerprint,
    steps_per_epoch,
    write_history_csv,
)
from lungseg.training.tuning import BEST_PARAMS_JSON, overlay_best_params

log = logging.getLogger(__name__)

METRICS_JSON = Path("reports/train_metrics.json")
HISTORY_CSV = Path("reports/train_history.csv")


def run(params: Params, processed_dir: Path | None = None) -> dict:
    """Train with ``params`` and log everything to MLflow; returns the train metrics."""
    with tempfile.TemporaryDirectory() as tmp:  # a downloaded registry model lives here while it is read
        return _run(params, processed_dir, init_weights(params, Path(tmp)) if params.train.init_from else None)


def _run(params: Params, processed_dir: Path | None, init: InitWeights | None) -> dict:
    processed = Path(processed_dir or params.data.processed_dir)
    aug, tuned = overlay_best_params(params.augment, BEST_PARAMS_JSON)
    if tuned:
        log.info("augment values from %s: %s", BEST_PARAMS_JSON, tuned)
    params = dataclasses.replace(params, augment=aug)
    train = load_split(processed, "train", params.train.train_subset)
    val = load_split(processed, "val")
    state_dir = Path(params.train.state_dir)
    state = load_resume_state(
        state_dir, run_fingerprint(aug, params.model, params.train, params.preprocess, params.train.max_epochs, train, val, init)
    )
    tracking.configure(params.tracking)
    tags = {
        "git_commit": tracking.git_commit(),
        "dvc_processed_md5": tracking.dvc_out_hash(params.data.processed_dir),
        "stage": "train",
        "lungseg.init_from": init.resolved if init else "random",  # lineage: the weights fine-tuning started from
    }
    with tracking.run("train", run_id=(state or {}).get("mlflow_run_id"), tags=tags) as run_id:
        if not state:
            tracking.log_params({**flatten_params(params), "data.train_cases": len(train.cases),
                                 "data.val_cases": len(val.cases), "augment.source": "tune" if tuned else "params",
                                 "augment.tuned": ",".join(sorted(tuned)) or "none"})
        result = fit(
            train, val, aug, params.model, params.train, params.preprocess, Path(params.train.model_path),
            state_dir=state_dir, on_epoch=lambda epoch, row: tracking.log_metrics(row, step=epoch),
            extra_state={"mlflow_run_id": run_id}, init=init,
        )
        best = result.best
        metrics = {
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "resumed_from_epoch": result.resumed_from,
            "stopped_early": result.stopped_early,
            "stopped_by_budget": result.stopped_by_budget,
            "steps_per_epoch": steps_per_epoch(params.train, len(train.cases)),
            "steps_run": result.epochs_run * steps_per_epoch(params.train, len(train.cases)),
            "init_from": init.resolved if init else "random",
            "val_loss": best["val_loss"],
            "val_dice": best["val_dice"],
            "val_iou": best["val_iou"],
            "val_soft_dice": best.get("val_soft_dice", float("nan")),
            "train_seconds": round(result.seconds, 1),
        }
        METRICS_JSON.parent.mkdir(parents=True, exist_ok=True)
        METRICS_JSON.write_text(json.dumps(metrics, indent=2) + "\n")
        write_history_csv(result.history, HISTORY_CSV)
        figures = plot_training_curves(result.history, Path(params.data.figures_dir))
        tracking.log_metrics({f"best_{k}": v for k, v in metrics.items() if k.startswith("val_")})
        for path in (METRICS_JSON, HISTORY_CSV, *figures):
            tracking.log_artifact(path, "reports")
        best_model = keras.models.load_model(params.train.model_path, compile=False)
        uri = tracking.log_keras_model(best_model, val.images[:1, ..., None])
        log.info("best epoch %d: val Dice %.4f, IoU %.4f; model %s", result.best_epoch, best["val_dice"],
                 best["val_iou"], uri)
    shutil.rmtree(state_dir, ignore_errors=True)  # finished: nothing to resume
    return metrics
