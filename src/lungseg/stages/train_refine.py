"""Stage ``train_refine``: fit the cascade's stage-2 network (:mod:`lungseg.training.refine`), tracked in MLflow.

Builds each training and validation case's fine grid from the prepared CT and lung mask
(``data.interim_dir``) and its crop box and preprocessed mask (``data.processed_dir``),
then trains on random patches. Writes ``refine.model_path`` (best validation loss),
``reports/refine_metrics.json`` and ``reports/refine_history.csv``. With
``refine.enabled: false`` nothing is trained: the model folder is emptied and the metrics say so.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lungseg.config import Params, flatten_params
from lungseg.errors import LungsegError
from lungseg.training import tracking

log = logging.getLogger(__name__)

METRICS_JSON = Path("reports/refine_metrics.json")
HISTORY_CSV = Path("reports/refine_history.csv")


def load_cases(params: Params, split: str, processed: Path, interim: Path) -> list:
    """The fine-grid :class:`lungseg.training.refine.RefineCase` of every case of ``split``."""
    from lungseg.inference.preprocessing import GridMap, to_canonical
    from lungseg.io.nifti import read_nifti
    from lungseg.training.dataset import load_split
    from lungseg.training.refine import build_case

    data = load_split(processed, split)
    out = []
    for n, case in enumerate(tqdm(data.cases, desc=f"refine {split}", unit="case")):
        try:
            hu, geometry = read_nifti(interim / f"{case}_ct.nii.gz")
            labels, _ = read_nifti(interim / f"{case}_lungs.nii.gz")
            grid = GridMap.from_json(json.loads((processed / "grids" / f"{case}.json").read_text()))
        except (OSError, ValueError) as e:
            raise LungsegError(f"{case}: cannot read its prepared CT, labels or grid ({e})") from e
        ornt = np.asarray(grid.ornt)
        spacing = tuple(float(geometry.spacing_mm[int(a)]) for a in np.argsort(ornt[:, 0]))
        built = build_case(case, to_canonical(hu, ornt), to_canonical(labels, ornt), spacing, grid, data.masks[n],
                           params.preprocess, params.refine)
        if built is None:
            log.warning("%s: no lung in its preprocessed mask; left out of refine training", case)
        else:
            out.append(built)
    return out


def run(params: Params, processed_dir: Path | None = None, interim_dir: Path | None = None) -> dict:
    """Train the stage-2 network (or, when disabled, record that there is none)."""
    from lungseg.training.fit import write_history_csv
    from lungseg.training.refine import fit_refiner

    cfg = params.refine
    model_dir = Path(cfg.model_path).parent
    METRICS_JSON.parent.mkdir(parents=True, exist_ok=True)
    if not cfg.enabled:
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True)
        metrics = {"enabled": False}
        METRICS_JSON.write_text(json.dumps(metrics, indent=2) + "\n")
        write_history_csv([{"epoch": 0}], HISTORY_CSV)
        log.info("refine.enabled is false: the cascade's stage 2 is not trained (stage 1 alone segments)")
        return metrics
    processed = Path(processed_dir or params.data.processed_dir)
    interim = Path(interim_dir or params.data.interim_dir)
    train, val = load_cases(params, "train", processed, interim), load_cases(params, "val", processed, interim)
    if not train or not val:
        raise LungsegError(f"{processed}: refine training needs training and validation cases with lungs")
    shutil.rmtree(model_dir, ignore_errors=True)
    tracking.configure(params.tracking)
    tags = {"git_commit": tracking.git_commit(), "dvc_processed_md5": tracking.dvc_out_hash(params.data.processed_dir),
            "stage": "train_refine"}
    with tracking.run("train_refine", tags=tags):
        tracking.log_params({**{k: v for k, v in flatten_params(params).items() if k.startswith(("refine.", "preprocess."))},
                             "data.train_cases": len(train), "data.val_cases": len(val)})
        result = fit_refiner(train, val, cfg, Path(cfg.model_path),
                             on_epoch=lambda epoch, row: tracking.log_metrics(row, step=epoch))
        best = result["best"]
        metrics = {
            "enabled": True, "best_epoch": result["best_epoch"], "epochs_run": len(result["history"]),
            "stopped_early": result["stopped_early"], "stopped_by_budget": result["stopped_by_budget"],
            "val_loss": best["val_loss"], "val_patch_dice": best.get("val_dice", float("nan")),
            "train_seconds": round(result["seconds"], 1),
        }
        METRICS_JSON.write_text(json.dumps(metrics, indent=2) + "\n")
        write_history_csv(result["history"], HISTORY_CSV)
        for path in (METRICS_JSON, HISTORY_CSV, Path(cfg.model_path)):
            tracking.log_artifact(path, "refine")
    log.info("refine: best epoch %d, validation patch Dice %.4f (%d epochs, %.0f s)", metrics["best_epoch"],
             metrics["val_patch_dice"], metrics["epochs_run"], metrics["train_seconds"])
    return metrics
