"""Optuna search over the augmentation strengths and probabilities (stage ``tune``).

Every trial trains the U-Net for ``tune.epochs`` epochs with augmentation values drawn
from ``tune.search_space`` (TPE, seeded) and scores the best validation Dice; the
validation Dice of every epoch goes to the pruner, which can stop a poor trial early.

Studies live in ``tune.storage``: a journal file (several processes on one machine) or a
database URL (several machines). The study name is ``tune.study_name`` plus a hash of
what defines the objective (search space, epochs, subset, seed, base augmentation,
model, optimiser, data), so a rerun continues the same study and keeps its finished
trials, while a changed objective starts a new one.

MLflow: one parent run per study (its id is a study user attribute, so every worker and
every rerun attaches its trials to the same parent) and one nested child run per trial.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import random
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from lungseg.config import AugmentConfig, Params, SearchRange, TuneConfig
from lungseg.config_checks import check_augment
from lungseg.errors import ConfigError, LungsegError
from lungseg.fileio import atomic_write_text, resolve_store
from lungseg.training import tracking
from lungseg.training.dataset import SplitArrays
from lungseg.training.fit import fingerprint, fit

log = logging.getLogger(__name__)

TUNE_DIR = Path("reports/tune")
BEST_PARAMS_JSON = TUNE_DIR / "best_params.json"
HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SCHEMA_RETRIES = 5  # opening a database storage while another worker creates its tables
_NUMERIC_AUGMENT = tuple(f.name for f in dataclasses.fields(AugmentConfig) if f.type in (float, "float"))


# ---------------------------------------------------------------- search space and objective


def sample_augment(trial: optuna.Trial, base: AugmentConfig, space: dict[str, SearchRange]) -> AugmentConfig:
    """``base`` with every value named in ``space`` drawn by ``trial`` (log-uniform where ``log``)."""
    values = {name: trial.suggest_float(name, r.low, r.high, log=r.log) for name, r in sorted(space.items())}
    return dataclasses.replace(base, **values)


def trial_train_config(params: Params) -> Any:
    """The ``train`` config a trial trains with: ``tune.epochs`` x ``tune.steps_per_epoch`` and ``tune.seed``
    (the same for every trial), from random weights (a trial never fine-tunes)."""
    t = params.tune
    return dataclasses.replace(params.train, max_epochs=t.epochs, steps_per_epoch=t.steps_per_epoch, seed=t.seed,
                               max_minutes=0.0, init_from="")


class Objective:
    """Train one trial and return its best validation Dice, as a nested MLflow run.

    The validation Dice of each epoch is reported to the trial; when the pruner says so
    the training stops (:class:`optuna.TrialPruned`) and the run is tagged ``PRUNED``.
    """

    def __init__(self, params: Params, train: SplitArrays, val: SplitArrays, study_name: str) -> None:
        self.params, self.train, self.val, self.study_name = params, train, val, study_name

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        cfg = self.params.tune
        aug = sample_augment(trial, self.params.augment, cfg.search_space)
        rows: list[dict[str, float]] = []

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            rows.append(row)
            tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            trial.report(row["val_dice"], epoch)
            log.info("trial %d epoch %d/%d: val Dice %.4f", trial.number, epoch, cfg.epochs, row["val_dice"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch}")

        tags = {"stage": "tune-trial", "optuna_study": self.study_name, "optuna_trial": str(trial.number)}
        state, pruned, start = "FAIL", None, time.perf_counter()
        keras.backend.clear_session()
        with tracking.run(f"trial-{trial.number}", nested=True, tags=tags) as run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
            tracking.log_params({
                "trial": trial.number,
                **{f"augment.{k}": v for k, v in dataclasses.asdict(aug).items()},
                "searched": ",".join(sorted(cfg.search_space)),
                "tune.epochs": cfg.epochs,
                "data.train_cases": len(self.train.cases),
            })
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    fit(self.train, self.val, aug, self.params.model, trial_train_config(self.params),
                        self.params.preprocess, Path(tmp) / "trial.keras", on_epoch=on_epoch, verbose=0)
                state = "COMPLETE" if all(math.isfinite(r["val_dice"]) for r in rows) else "FAIL"
            except optuna.TrialPruned as e:
                state, pruned = "PRUNED", e
            finally:
                finite = [r["val_dice"] for r in rows if math.isfinite(r["val_dice"])]
                value = max(finite, default=float("nan"))
                tracking.set_tags({"state": state})
                tracking.log_metrics({"duration_s": time.perf_counter() - start, "epochs_run": len(rows),
                                      "best_val_dice": value})
        if pruned is not None:
            raise pruned
        if state != "COMPLETE":  # a NaN validation Dice (diverged): Optuna records the trial as failed and goes on
            log.warning("trial %d: validation Dice is not finite; the trial fails", trial.number)
            return float("nan")
        return value


# ---------------------------------------------------------------- storage and study


def redact(storage: str) -> str:
    """The storage URL without its password (for logs and MLflow tags)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", storage)


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """A journal file (``*.journal`` / ``*.log``) or a database URL (``postgresql://``, ``mysql://``, ``sqlite:///``).

    A journal file serves several processes on one machine; a database server serves
    several machines. With a database, a trial whose worker died is marked failed after
    a missed heartbeat (2 minutes) and not counted. Workers started together on an empty
    database race to create Optuna's tables; the loser retries (creation is idempotent).
    """
    if "://" in spec:
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        for attempt in range(SCHEMA_RETRIES):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat arguments
                    return optuna.storages.RDBStorage(spec, heartbeat_interval=30, grace_period=120)
            except (IntegrityError, ProgrammingError) as e:  # another worker is creating the same tables
                if attempt + 1 == SCHEMA_RETRIES:
                    raise LungsegError(f"cannot open Optuna storage {redact(spec)}: {e}") from e
                log.info("Optuna storage %s: tables being created by another worker, retrying", redact(spec))
                time.sleep(0.5 + random.random())
            except Exception as e:  # driver missing, server unreachable, bad URL
                raise LungsegError(f"cannot open Optuna storage {redact(spec)}: {e}") from e
    if not spec.endswith((".journal", ".log")):
        raise ConfigError(f"Optuna storage {spec!r} must be a file ending in .journal or .log, or a database URL")
    path = Path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


@contextmanager
def _setup_lock(spec: str) -> Iterator[bool]:
    """Serialise study and parent-run creation between processes sharing one journal file.

    Yields True when a file lock is held (journal storage), False for a database URL.
    """
    if "://" in spec:
        yield False
        return
    lock_path = Path(f"{spec}.setup-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def study_name(params: Params, train: SplitArrays, val: SplitArrays) -> str:
    """``tune.study_name`` plus a hash of everything that defines the objective (not n_trials or the pruner)."""
    t, tr = params.tune, params.train
    fixed_augment = {k: v for k, v in dataclasses.asdict(params.augment).items() if k not in t.search_space}
    fp = fingerprint(
        sorted(t.search_space.items()), t.epochs, t.steps_per_epoch, t.train_subset, t.seed, sorted(fixed_augment.items()), params.model,
        (tr.batch_size, tr.learning_rate, tr.beta_1, tr.beta_2, tr.lr_factor, tr.lr_patience, tr.min_lr,
         tr.early_stopping_patience),
        params.preprocess.shape, fingerprint(data=val), data=train,
    )
    return f"{t.study_name}-{fp[:10]}"


def make_sampler(cfg: TuneConfig, n_existing: int, worker_salt: int = 0) -> optuna.samplers.BaseSampler:
    """TPE seeded from ``tune.seed`` and the trials already in the study (and a per-worker salt).

    A rerun of the stage therefore does not repeat the first trials' draws, and extra
    workers started together do not draw the same values.
    """
    seed = int(np.random.SeedSequence([cfg.seed, n_existing, worker_salt]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.sampler_startup_trials)


def make_pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    """Median (default), Hyperband over ``1..tune.epochs`` epochs, or none."""
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner_startup_trials,
                                           n_warmup_steps=cfg.pruner_warmup_steps)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(name: str, storage: optuna.storages.BaseStorage, cfg: TuneConfig) -> tuple[optuna.Study, bool]:
    """Create the study (direction maximise) or load it; returns it and whether this call created it."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=False)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        created = False
    study.pruner = make_pruner(cfg)
    return study, created


def _parent_params(params: Params, name: str, train: SplitArrays, val: SplitArrays) -> dict[str, Any]:
    """What defines the study (fixed for its lifetime, so safe to log once as MLflow params)."""
    t = params.tune
    out: dict[str, Any] = {"tune.study": name, "tune.epochs": t.epochs, "tune.train_subset": t.train_subset,
                           "tune.seed": t.seed, "data.train_cases": len(train.cases), "data.val_cases": len(val.cases)}
    for k, r in sorted(t.search_space.items()):
        out[f"tune.search_space.{k}"] = f"[{r.low}, {r.high}]{' log' if r.log else ''}"
    out.update({f"augment.{k}": v for k, v in dataclasses.asdict(params.augment).items()})
    out.update({f"model.{k}": v for k, v in dataclasses.asdict(params.model).items()})
    return out


def ensure_parent_run(study: optuna.Study, created: bool, locked: bool, params: Params, train: SplitArrays,
                      val: SplitArrays) -> str:
    """The study's MLflow parent run id, creating the run (once per study) if needed.

    With a journal file this runs under a file lock; with a database the process that
    created the study creates the run and the others wait for its id (up to 30 s).
    """
    run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is None and not created and not locked:
        deadline = time.monotonic() + 30
        while run_id is None and time.monotonic() < deadline:
            time.sleep(1)
            run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id is not None and tracking.run_exists(run_id):
        return run_id
    tags = {"stage": "tune", "optuna_study": study.study_name, "git_commit": tracking.git_commit(),
            "dvc_processed_md5": tracking.dvc_out_hash(params.data.processed_dir)}
    with tracking.run(f"tune-{study.study_name}", tags=tags) as run_id:
        tracking.log_params(_parent_params(params, study.study_name, train, val))
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id


# ---------------------------------------------------------------- results


def summarize(study: optuna.Study, cfg: TuneConfig, parent_run_id: str | None, storage: str) -> dict[str, Any]:
    """The content of ``best_params.json``: best trial's augment values, counts and the epochs pruning saved."""
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    complete = by_state[TrialState.COMPLETE]
    if not complete:
        raise LungsegError(f"Optuna study {study.study_name}: no trial has completed (states: "
                           f"{ {s.name: len(v) for s, v in by_state.items() if v} })")
    best = study.best_trial
    finished = [t for t in trials if t.state in FINISHED]
    epochs_run = sum(len(t.intermediate_values) for t in finished)  # one reported Dice per epoch trained
    return {
        "source": "tune",
        "study": study.study_name,
        "storage": redact(storage),
        "mlflow_parent_run_id": parent_run_id,
        "best_trial": best.number,
        "best_value": best.value,  # best validation Dice of the best trial's short training
        "augment": {k: best.params[k] for k in sorted(best.params)},
        "trials": {"complete": len(complete), "pruned": len(by_state[TrialState.PRUNED]),
                   "failed": len(by_state[TrialState.FAIL]), "running": len(by_state[TrialState.RUNNING])},
        "epochs_per_trial": cfg.epochs,
        "epochs_run_total": epochs_run,
        "epochs_without_pruning": len(finished) * cfg.epochs,
        "epochs_saved_by_pruning": len(finished) * cfg.epochs - epochs_run,
    }


def passthrough(aug: AugmentConfig) -> dict[str, Any]:
    """``best_params.json`` when tuning is off: the params.yaml augment values, unchanged."""
    return {"source": "params", "augment": {k: getattr(aug, k) for k in _NUMERIC_AUGMENT}}


def write_json(content: dict[str, Any], path: Path) -> Path:
    """Write ``content`` as indented JSON (atomically: a reader never sees half a file)."""
    return atomic_write_text(path, json.dumps(content, indent=2) + "\n")


def _save_axes(ax: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _message_png(path: Path, title: str, message: str) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return _save_axes(ax, path)


def plot_study(study: optuna.Study | None, out_dir: Path) -> list[Path]:
    """Optimisation history and parameter importances as PNGs (a note instead where there is too little data)."""
    from optuna.visualization import matplotlib as ovm

    import lungseg.figures  # noqa: F401  (selects the Agg backend)

    out_dir.mkdir(parents=True, exist_ok=True)
    history, importances = out_dir / HISTORY_PNG, out_dir / IMPORTANCES_PNG
    if study is None:
        note = "tuning is off (tune.n_trials: 0): the params.yaml augment values are used"
        return [_message_png(history, "Optimization history", note), _message_png(importances, "Importances", note)]
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        _save_axes(ovm.plot_optimization_history(study, target_name="validation Dice"), history)
        if n_complete < 2:
            _message_png(importances, "Hyperparameter importances",
                         f"needs at least 2 completed trials (the study has {n_complete})")
        else:
            try:
                _save_axes(ovm.plot_param_importances(study, target_name="validation Dice"), importances)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. all values equal
                log.warning("parameter importances not computed: %s", e)
                _message_png(importances, "Hyperparameter importances", f"not computed: {e}")
    return [history, importances]


def overlay_best_params(aug: AugmentConfig, path: Path = BEST_PARAMS_JSON) -> tuple[AugmentConfig, dict[str, float]]:
    """``aug`` with the values of ``best_params.json`` laid over it.

    Returns the new config and the values that came from tuning (empty when the file is
    missing or passes the params.yaml values through).

    Raises:
        LungsegError: the file is unreadable; ConfigError: it names an unknown augment key
            or a value out of range.
    """
    path = Path(path)
    if not path.is_file():
        return aug, {}
    try:
        content = json.loads(path.read_text())
        values = dict(content["augment"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LungsegError(f"{path}: not a best-params file ({e})") from e
    for k, v in values.items():
        if k not in _NUMERIC_AUGMENT or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{path}: 'augment.{k}' = {v!r} is not a numeric augment value")
    new = dataclasses.replace(aug, **{k: float(v) for k, v in values.items()})
    try:
        check_augment(new)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    tuned = {k: float(v) for k, v in values.items()} if content.get("source") == "tune" else {}
    return new, tuned


# ---------------------------------------------------------------- the stage


def tune(
    params: Params, train: SplitArrays | None, val: SplitArrays | None, n_trials: int | None = None,
    storage: str | None = None, out_dir: Path = TUNE_DIR,
) -> dict[str, Any]:
    """Run the study and write ``best_params.json`` and the two figures to ``out_dir``.

    Args:
        n_trials: None (the dvc stage): run only the trials still missing for the study to
            hold ``tune.n_trials`` finished (complete or pruned) trials; ``tune.n_trials: 0``
            writes the params.yaml values through without a study. K: run K more trials
            (an extra worker on the same storage).
        storage: Overrides ``tune.storage``.
        train, val: Processed arrays (may be None only when nothing is tuned).

    Returns:
        The content written to ``best_params.json``.
    """
    cfg = params.tune
    out_dir = Path(out_dir)
    if n_trials is None and cfg.n_trials == 0:
        log.info("tune.n_trials is 0: the params.yaml augment values pass through")
        plot_study(None, out_dir)
        return _write_best(passthrough(params.augment), out_dir)
    if train is None or val is None:
        raise LungsegError("tuning needs the training and validation data")
    configured = storage or cfg.storage  # as written (logged, and in best_params.json, which git versions)
    spec = resolve_store(configured)  # a relative journal belongs to the project root (dvc exp run --temp)
    name = study_name(params, train, val)
    with _setup_lock(spec) as locked:  # also keeps workers from creating a new MLflow database together
        tracking.configure(params.tracking)
        study, created = open_study(name, open_storage(spec), cfg)
        parent_id = ensure_parent_run(study, created, locked, params, train, val)
    existing = study.get_trials(deepcopy=False)
    study.sampler = make_sampler(cfg, len(existing), worker_salt=0 if n_trials is None else os.getpid())
    n_finished = sum(t.state in FINISHED for t in existing)
    callbacks: list[Any] = []
    if n_trials is None:
        to_run = max(0, cfg.n_trials - n_finished)
        callbacks.append(optuna.study.MaxTrialsCallback(cfg.n_trials, states=FINISHED))
    else:
        to_run = n_trials
    log.info("study %s in %s: %d finished trials, running %d more", name, redact(configured), n_finished, to_run)
    with tracking.run(f"tune-{name}", run_id=parent_id):
        tracking.set_tags({"tune.n_trials": cfg.n_trials, "tune.pruner": cfg.pruner,
                           "optuna_storage": redact(configured)})
        if to_run > 0:
            study.optimize(Objective(params, train, val, name), n_trials=to_run, callbacks=callbacks,
                           gc_after_trial=True, timeout=cfg.timeout_minutes * 60 or None)
        summary = summarize(study, cfg, parent_id, configured)
        summary["timeout_minutes"] = cfg.timeout_minutes
        summary["stopped_by_timeout"] = bool(
            cfg.timeout_minutes and n_trials is None
            and summary["trials"]["complete"] + summary["trials"]["pruned"] < cfg.n_trials
        )
        if summary["stopped_by_timeout"]:
            log.warning("tune.timeout_minutes (%.1f) reached: the study holds fewer than tune.n_trials (%d) finished "
                        "trials", cfg.timeout_minutes, cfg.n_trials)
        best_trial = study.best_trial
        figures = plot_study(study, out_dir)
        _write_best(summary, out_dir)
        finished = summary["trials"]["complete"] + summary["trials"]["pruned"]
        tracking.log_metrics({
            "best_value": summary["best_value"], "best_trial": summary["best_trial"],
            **{f"best.{k}": v for k, v in summary["augment"].items()},
            "n_complete": summary["trials"]["complete"], "n_pruned": summary["trials"]["pruned"],
            "n_failed": summary["trials"]["failed"], "epochs_run_total": summary["epochs_run_total"],
            "epochs_without_pruning": summary["epochs_without_pruning"],
            "stopped_by_timeout": int(summary["stopped_by_timeout"]),
        }, step=finished)
        tracking.set_tags({"best_trial_run_id": best_trial.user_attrs.get("mlflow_run_id", "unknown")})
        for path in (out_dir / BEST_PARAMS_JSON.name, *figures):
            tracking.log_artifact(path, "tune")
    log.info("best trial %d: validation Dice %.4f; %d epochs run of %d without pruning",
             summary["best_trial"], summary["best_value"], summary["epochs_run_total"], summary["epochs_without_pruning"])
    return summary


def _write_best(content: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    write_json(content, out_dir / BEST_PARAMS_JSON.name)
    return content
