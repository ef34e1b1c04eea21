"""Stage ``cv_report`` (pipelines/cv/dvc.yaml): pool the folds into ``reports/cv.json`` (a DVC metric),
draw ``reports/figures/cv.png``, log one MLflow run (tag ``stage: cv``) and tag the registered model
versions trained on the same processed data with the cross-validation estimate (``cv_dice_mean``, ...).

What is registered is the root pipeline's model (stage ``train``: every non-test case, its val part
choosing the checkpoint), not the fold models or their ensemble: CV estimates how well that recipe does
on patients it has not seen, and one network keeps CPU inference at one forward pass (README "Your own data").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lungseg.config import Params
from lungseg.errors import LungsegError
from lungseg.figures import plot_cv
from lungseg.training import tracking
from lungseg.training.crossval import CV_JSON, fold_report_path, pool, read_folds

log = logging.getLogger(__name__)


def run(params: Params, interim_dir: Path | None = None) -> dict:
    """Pool the fold reports of ``cv.folds``; returns ``reports/cv.json``'s content."""
    folds = read_folds(Path(interim_dir or params.data.interim_dir))
    reports = []
    for fold in params.cv.folds:
        path = fold_report_path(fold)
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise LungsegError(f"{path}: fold {fold} has no report ({e}); run `lungseg cv-fold --fold {fold}`") from e
    if not reports:
        raise LungsegError("params key 'cv.folds' is empty: no fold to report")
    cv = pool(reports, folds["k"])
    CV_JSON.parent.mkdir(parents=True, exist_ok=True)
    CV_JSON.write_text(json.dumps(cv, indent=1) + "\n")
    png = plot_cv({r["fold"]: [c["dice"] for c in r["per_case"]] for r in reports},
                  Path(params.data.figures_dir) / "cv.png")
    tracking.configure(params.tracking)
    md5 = tracking.dvc_out_hash(params.data.processed_dir)
    with tracking.run("cv", tags={"stage": "cv", "cv_k": str(folds["k"]), "dvc_processed_md5": md5,
                                  "git_commit": tracking.git_commit()}):
        tracking.log_params({"cv.k": folds["k"], "cv.folds": ",".join(map(str, cv["folds_run"])),
                             "cv.cases": cv["cases"]})
        for key in ("dice", "iou", "net_dice", "hd95_mm", "msd_mm"):
            for over in ("folds", "cases"):
                for stat in ("mean", "sd"):
                    if stat in cv[key][over]:
                        tracking.log_metrics({f"cv_{key}_{stat}_{over}": cv[key][over][stat]})
        for r in reports:  # one point per fold: the fold curve in `mlflow ui`
            tracking.log_metrics({"cv_fold_dice": r["test"]["dice"]["mean"]}, step=r["fold"])
        for path in (CV_JSON, png):
            tracking.log_artifact(path, "reports")
    d = cv["dice"]["folds"]
    tags = {"cv_k": str(folds["k"]), "cv_folds_run": str(len(reports)), "cv_dice_mean": f"{d['mean']:.5f}",
            "cv_dice_sd": f"{d['sd']:.5f}", "cv_hd95_mm_mean": f"{cv['hd95_mm']['folds']['mean']:.3f}"}
    versions = tracking.tag_model_versions(params.tracking.registered_model, "dvc_processed_md5", md5, tags)
    log.info("%d-fold CV over %d cases: Dice %.4f +- %.4f (fold means), HD95 %.2f mm%s", folds["k"], cv["cases"],
             d["mean"], d["sd"], cv["hd95_mm"]["folds"]["mean"],
             f"; tagged {params.tracking.registered_model} version(s) {', '.join(versions)}" if versions else
             "; no registered model version was trained on these processed data (run `make run`)")
    return cv
