"""k-fold cross-validation: the folds ``prepare`` wrote, one fold's held-out scores, the pooled report.

Fold ``i`` trains on its train cases (its val cases choose the checkpoint), then the Segmenter
(the full inference path: network, CT-grid surface, post-processing) scores its test cases in
their own geometry. :func:`pool` reports each metric per fold, as mean +- SD over the fold
means (the spread a new cohort of this size would see) and pooled over every held-out case.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lungseg.errors import LungsegError
from lungseg.training.dataset import SplitArrays

FOLDS_JSON = "folds.json"
CV_DIR = Path("reports/cv")
CV_JSON = Path("reports/cv.json")
KEYS = ("dice", "iou", "net_dice", "dice_right", "dice_left", "hd95_mm", "msd_mm", "volume_error_ml")


def fold_report_path(fold: int) -> Path:
    """``reports/cv/fold_<i>.json``."""
    return CV_DIR / f"fold_{fold}.json"


def read_folds(interim: Path) -> dict[str, Any]:
    """``folds.json`` of the prepare stage: ``{"k": k, "seed": s, "folds": [{"train", "val", "test"}, ...]}``.

    Raises:
        LungsegError: missing (run prepare) or without folds (prepare.split.folds < 2 or too few cases).
    """
    path = Path(interim) / FOLDS_JSON
    try:
        folds = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LungsegError(f"{path}: cannot read the cross-validation folds ({e}); run `lungseg prepare` first") from e
    if not folds.get("folds"):
        raise LungsegError(f"{path}: no folds (prepare.split.folds = {folds.get('k')}: it needs >= 2, and at least "
                           "that many non-test cases)")
    return folds


def score_cases(segmenter: Any, test: SplitArrays, interim: Path) -> list[dict[str, Any]]:
    """Per held-out case: the :data:`KEYS` metrics of the Segmenter in the case's own geometry."""
    from lungseg.evaluation.scoring import CaseInputs, evaluate_case
    from lungseg.io.nifti import read_nifti

    rows = []
    for n, case in enumerate(test.cases):
        try:
            hu, geometry = read_nifti(Path(interim) / f"{case}_ct.nii.gz")
            truth, _ = read_nifti(Path(interim) / f"{case}_lungs.nii.gz")
        except (OSError, ValueError) as e:
            raise LungsegError(f"{case}: cannot read its prepared CT/labels in {interim} ({e})") from e
        row = evaluate_case(segmenter, CaseInputs(case, hu, truth, geometry, test.images[n], test.masks[n]),
                            with_baseline=False)[0]
        rows.append({"case": case, **{k: float(row[k]) for k in KEYS}})
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {}
    return {"mean": round(float(v.mean()), 5), "sd": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 5),
            "min": round(float(v.min()), 5), "max": round(float(v.max()), 5)}


def pool(reports: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """``reports/cv.json`` from the fold reports: per metric the mean +- SD of the fold means
    (``folds``) and of all held-out cases pooled (``cases``); each fold's means under ``fold_<i>``."""
    reports = sorted(reports, key=lambda r: r["fold"])
    out: dict[str, Any] = {"k": k, "folds_run": [r["fold"] for r in reports],
                           "cases": sum(len(r["per_case"]) for r in reports)}
    for key in KEYS:
        fold_means = [r["test"][key]["mean"] for r in reports if r["test"].get(key)]
        out[key] = {"folds": _stats(fold_means), "cases": _stats([c[key] for r in reports for c in r["per_case"]])}
    for r in reports:
        out[f"fold_{r['fold']}"] = {"test_cases": len(r["per_case"]), "train_cases": r["train_cases"],
                                    "best_epoch": r["train"]["best_epoch"], "val_dice": r["train"]["val_dice"],
                                    **{key: r["test"][key]["mean"] for key in KEYS if r["test"].get(key)}}
    return out


def fold_report(fold: int, k: int, folds: dict[str, list[str]], train: dict[str, Any], rows: list[dict]) -> dict:
    """One fold's ``reports/cv/fold_<i>.json``: case counts, training summary, test means and per-case rows."""
    return {
        "fold": fold, "k": k, "train_cases": len(folds["train"]), "val_cases": len(folds["val"]),
        "test_cases": len(folds["test"]), "train": train,
        "test": {key: _stats([r[key] for r in rows]) for key in KEYS},
        "per_case": [{k_: (round(v, 5) if isinstance(v, float) else v) for k_, v in r.items()} for r in rows],
    }
