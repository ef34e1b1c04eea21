"""Experiment tracking of the training side (runs, params, metrics, logged models) through MLflow.

The tracking URI is ``MLFLOW_TRACKING_URI`` if set (e.g. ``http://host:5000``, an ``mlflow
server`` shared by a team), else ``params.tracking.tracking_uri`` (default a SQLite database
at the project root). A relative local store is anchored at the project root
(:func:`lungseg.fileio.project_root`: ``$DVC_ROOT``), so ``dvc exp run --temp`` and queued
experiments, which run in a throw-away copy, still log to the project's own database.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from lungseg.config import TrackingConfig
from lungseg.fileio import project_root
from lungseg.inference.registry import tracking_uri

log = logging.getLogger(__name__)

_LOCAL_SCHEMES = ("sqlite:", "file:", "/")


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the tracking store and experiment; returns the tracking URI in use.

    With a local store (SQLite, files) a new experiment keeps its artifacts in
    ``mlruns/<experiment>`` at the project root, wherever the process runs (MLflow's own default,
    ``./mlruns``, would follow the working directory into ``dvc exp run --temp``'s copy); a
    tracking server decides for itself. The experiment is created here, not by
    ``mlflow.set_experiment``: when two workers create it together, MLflow 3.17's
    ``set_experiment`` returns the loser the experiment without making it active, and that
    worker's new runs land in the Default experiment.
    """
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        folder = project_root() / "mlruns" / re.sub(r"[^A-Za-z0-9._-]", "_", cfg.experiment)
        try:
            mlflow.create_experiment(cfg.experiment,
                                     artifact_location=folder.as_uri() if uri.startswith(_LOCAL_SCHEMES) else None)
        except mlflow.exceptions.MlflowException:  # another process created it first
            pass
    mlflow.set_experiment(cfg.experiment)  # it exists now: this makes it the active experiment
    return uri


@contextmanager
def run(name: str, run_id: str | None = None, nested: bool = False, tags: dict[str, str] | None = None) -> Iterator[str]:
    """Start (or resume, with ``run_id``) an MLflow run; yields its id."""
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=nested) as active:
        if tags:
            mlflow.set_tags(tags)
        yield active.info.run_id


def run_exists(run_id: str) -> bool:
    """Whether the tracking store holds a (not deleted) run with this id."""
    try:
        return mlflow.get_run(run_id).info.lifecycle_stage == "active"
    except mlflow.exceptions.MlflowException:
        return False


def set_tags(tags: dict[str, Any]) -> None:
    """Set (or overwrite) tags on the active run; values are stringified."""
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_params(params: dict[str, Any]) -> None:
    """Log a flat dict of parameters (values stringified by MLflow)."""
    items = list(params.items())
    for start in range(0, len(items), 90):  # MLflow accepts at most 100 params per batch
        mlflow.log_params(dict(items[start : start + 90]))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics at ``step``."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Attach a file to the active run."""
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_keras_model(model: Any, input_example: np.ndarray, name: str = "model") -> str:
    """Log an (uncompiled) Keras model with a tensor signature and an input example; returns its URI."""
    shape = (-1, *input_example.shape[1:])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), shape, "ct")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), shape, "lung_prob")]),
    )
    # mlflow.keras.log_model(..., input_example=...) fails in MLflow 3.17 (it writes the example
    # before creating the model folder), so save into an existing folder and log that folder.
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        local.mkdir()
        mlflow.keras.save_model(model, str(local), signature=signature, input_example=input_example)
        mlflow.log_artifacts(str(local), artifact_path=name)
    return f"runs:/{active_run_id()}/{name}"


def active_run_id() -> str | None:
    """Id of the active run, if any."""
    active = mlflow.active_run()
    return active.info.run_id if active else None


def git_commit() -> str:
    """Current git commit (``unknown`` outside a repository), with ``-dirty`` if the tree has changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_out_hash(path: str, lock_file: str | Path = "dvc.lock") -> str:
    """The md5 that ``dvc.lock`` records for output ``path`` (``unknown`` if not recorded yet)."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except OSError:
        return "unknown"
    target = os.path.normpath(path)
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if os.path.normpath(out.get("path", "")) == target:
                return str(out.get("md5") or out.get("hash") or "unknown")
    return "unknown"


# --------------------------------------------------------------------------- model registry


def find_model_version(name: str, tag: str, value: str) -> str | None:
    """The version of registered model ``name`` whose tag ``tag`` equals ``value`` (None if none)."""
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    matches = [v.version for v in versions if v.tags.get(tag) == value]
    return str(min(matches, key=int)) if matches else None


def register_model(model_uri: str, name: str, tags: dict[str, str], description: str) -> str:
    """Register ``model_uri`` as a new version of ``name`` with tags and a description; returns the version."""
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client.update_model_version(name, version.version, description=description)
    return str(version.version)


def alias_version(name: str, alias: str) -> tuple[str, dict[str, str]] | None:
    """``(version, tags)`` of the version holding ``alias`` (None if no version holds it)."""
    try:
        v = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return str(v.version), dict(v.tags)


def set_alias(name: str, alias: str, version: str) -> None:
    """Point ``alias`` of registered model ``name`` at ``version``."""
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)


def tag_model_versions(name: str, tag: str, value: str, tags: dict[str, str]) -> list[str]:
    """Set ``tags`` on every version of ``name`` whose tag ``tag`` equals ``value``; returns those versions."""
    client = mlflow.MlflowClient()
    try:
        versions = [v.version for v in client.search_model_versions(f"name='{name}'") if v.tags.get(tag) == value]
    except mlflow.exceptions.MlflowException:
        return []
    for version in versions:
        for k, v in tags.items():
            client.set_model_version_tag(name, str(version), k, str(v))
    return sorted((str(v) for v in versions), key=int)
