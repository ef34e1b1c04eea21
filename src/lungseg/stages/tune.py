"""Stage ``tune``: Optuna search over the augmentation values, each trial a nested MLflow run.

Writes ``reports/tune/best_params.json`` (read by ``train``), ``optimization_history.png``
and ``param_importances.png``; the study itself lives in ``tune.storage``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lungseg.config import Params
from lungseg.training.dataset import load_split
from lungseg.training.tuning import TUNE_DIR, tune

log = logging.getLogger(__name__)


def run(
    params: Params, n_trials: int | None = None, storage: str | None = None, processed_dir: Path | None = None,
    out_dir: Path = TUNE_DIR,
) -> dict:
    """Tune with ``params``; ``n_trials`` K runs K more trials (extra worker), None tops the study up to ``tune.n_trials``.

    Returns the content of ``best_params.json``.
    """
    if params.tune.n_trials == 0 and n_trials is None:
        return tune(params, None, None, out_dir=out_dir)  # nothing tuned: no data needed
    processed = Path(processed_dir or params.data.processed_dir)
    train = load_split(processed, "train", params.tune.train_subset)
    val = load_split(processed, "val")
    log.info("tuning on %d training and %d validation cases", len(train.cases), len(val.cases))
    return tune(params, train, val, n_trials=n_trials, storage=storage, out_dir=out_dir)
