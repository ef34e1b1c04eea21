"""Stage ``cv_fold@<i>`` (pipelines/cv/dvc.yaml): train fold ``i`` of the cross-validation and score its
held-out cases, as one MLflow run (tags ``stage: cv_fold``, ``cv_fold``, ``cv_k``).

Same recipe as stage ``train`` (params ``train.*``, the tuned augment values, ``train.init_from``);
writes ``models/cv/fold_<i>.keras`` and ``reports/cv/fold_<i>.json``. Resumable like ``train``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from pathlib import Path

from lungseg.config import Params, flatten_params
from lungseg.errors import LungsegError
from lungseg.training import tracking
from lungseg.training.crossval import fold_report, fold_report_path, read_folds, score_cases
from lungseg.training.dataset import load_case_groups
from lungseg.training.fit import fit, load_resume_state, run_fingerprint
from lungseg.training.tuning import BEST_PARAMS_JSON, overlay_best_params

log = logging.getLogger(__name__)


def run(params: Params, fold: int, processed_dir: Path | None = None, interim_dir: Path | None = None) -> dict:
    """Train and score fold ``fold``; returns its report."""
    from lungseg.inference.segmenter import Segmenter
    from lungseg.nn.model import load_keras_model
    from lungseg.training.finetune import init_weights

    processed = Path(processed_dir or params.data.processed_dir)
    interim = Path(interim_dir or params.data.interim_dir)
    folds = read_folds(interim)
    if not 0 <= fold < len(folds["folds"]):
        raise LungsegError(f"--fold {fold}: {interim}/folds.json has folds 0 to {len(folds['folds']) - 1}")
    cases = folds["folds"][fold]
    train, val, test = load_case_groups(processed, [cases[s] for s in ("train", "val", "test")])
    aug, tuned = overlay_best_params(params.augment, BEST_PARAMS_JSON)
    params = dataclasses.replace(params, augment=aug)
    model_path, state_dir = Path(f"models/cv/fold_{fold}.keras"), Path(f"models/cv/fold_{fold}_state")
    with tempfile.TemporaryDirectory() as tmp:
        init = init_weights(params, Path(tmp)) if params.train.init_from else None
    state = load_resume_state(
        state_dir, run_fingerprint(aug, params.model, params.train, params.preprocess, params.train.max_epochs, train, val, init)
    )
    tracking.configure(params.tracking)
    tags = {"stage": "cv_fold", "cv_fold": str(fold), "cv_k": str(folds["k"]), "git_commit": tracking.git_commit(),
            "dvc_processed_md5": tracking.dvc_out_hash(params.data.processed_dir),
            "lungseg.init_from": init.resolved if init else "random"}
    with tracking.run(f"cv-fold-{fold}", run_id=(state or {}).get("mlflow_run_id"), tags=tags) as run_id:
        if not state:
            tracking.log_params({**flatten_params(params), "cv.fold": fold, "data.train_cases": len(train.cases),
                                 "data.val_cases": len(val.cases), "data.test_cases": len(test.cases),
                                 "augment.source": "tune" if tuned else "params"})
        result = fit(train, val, aug, params.model, params.train, params.preprocess, model_path, state_dir=state_dir,
                     on_epoch=lambda epoch, row: tracking.log_metrics(row, step=epoch),
                     extra_state={"mlflow_run_id": run_id}, init=init)
        segmenter = Segmenter(load_keras_model(model_path), params.preprocess, params.postprocess)
        rows = score_cases(segmenter, test, interim)
        summary = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                   "stopped_by_budget": result.stopped_by_budget, "val_dice": round(result.best["val_dice"], 5),
                   "train_seconds": round(result.seconds, 1)}
        report = fold_report(fold, folds["k"], cases, summary, rows)
        path = fold_report_path(fold)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        tracking.log_metrics({f"test_{k}": v["mean"] for k, v in report["test"].items() if v})
        tracking.log_artifact(path, "reports")
    shutil.rmtree(state_dir, ignore_errors=True)
    t = report["test"]
    log.info("fold %d of %d: %d held-out cases, Dice %.4f (CT grid), HD95 %.2f mm", fold, folds["k"], len(rows),
             t["dice"]["mean"], t["hd95_mm"]["mean"])
    return report
