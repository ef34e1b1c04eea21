"""Fine-tuning: the weights ``train.init_from`` names (a registry URI, a bundle folder or a ``.keras`` file).

A user with 10-60 labelled scans starts from the synthetic champion instead of random weights,
as lungmask and nnU-Net users start from pretrained ones. The starting point is recorded in
MLflow (param ``train.init_from``, tag ``lungseg.init_from``: the file, or the registered model
version and its run) and its digest enters the resume fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

from lungseg.config import Params, PreprocessConfig
from lungseg.errors import LungsegError
from lungseg.training.fit import InitWeights

log = logging.getLogger(__name__)


def init_weights(params: Params, download_dir: Path) -> InitWeights | None:
    """The starting weights ``params.train.init_from`` names (None: random): ``auto`` is resolved
    with :func:`auto_source` against the project's registry, anything else with :func:`resolve_init`."""
    from lungseg.inference.registry import tracking_uri

    source, uri = params.train.init_from, tracking_uri(params.tracking)
    if source == "auto":
        source = auto_source(params.tracking.registered_model, params.synthesize.out_dir, params.data.raw_dir, uri) or ""
        log.info("train.init_from auto: %s", f"fine-tuning {source}" if source else
                 "random weights (synthetic cohort, or no model trained on it is registered)")
    return resolve_init(source, uri, download_dir, params.preprocess) if source else None


def resolve_init(init_from: str, tracking_uri: str, download_dir: Path, preprocess: PreprocessConfig) -> InitWeights:
    """Load the weights ``init_from`` names: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``
    (the registry at ``tracking_uri``; downloaded into ``download_dir`` unless it is a local SQLite
    registry), a bundle folder, a saved MLflow model folder or a ``.keras`` file. Warns where the
    weights were trained with other ``preprocess`` values than ``preprocess``.

    Raises:
        LungsegError: one line naming ``train.init_from`` and what is wrong.
    """
    from lungseg.inference.bundle import find_bundle, is_model_uri, read_config_json
    from lungseg.nn.model import load_keras_model

    try:
        if is_model_uri(init_from):
            local, resolved = _from_registry(init_from, tracking_uri, download_dir)
            model_file, cfg_file = find_bundle(local)
        else:
            model_file, cfg_file = find_bundle(init_from)
            resolved = str(model_file)
        pre = read_config_json(cfg_file)[0] if cfg_file is not None else None
        weights = load_keras_model(model_file).get_weights()
    except LungsegError as e:
        msg = str(e)
        raise LungsegError(msg if "train.init_from" in msg else f"params key 'train.init_from': {msg}") from e
    if pre is not None:
        diff = sorted(k for k, v in dataclasses.asdict(pre).items()
                      if k != "n_figure_cases" and v != getattr(preprocess, k))
        if diff:
            log.warning("train.init_from: %s was trained with other preprocess values (%s); fine-tuning adapts it",
                        model_file, ", ".join(diff))
    digest = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()
    return InitWeights(Path(model_file), digest, init_from, resolved, weights, pre)


def auto_source(registered_model: str, synthetic_dir: str, raw_dir: str, tracking_uri: str) -> str | None:
    """What ``train.init_from: auto`` starts from: on data other than the synthetic cohort, the newest
    registered version trained on that cohort (``models:/<name>/<version>``); None (random weights)
    on the synthetic cohort itself or when no such version is registered."""
    import os

    if os.path.normpath(raw_dir) == os.path.normpath(synthetic_dir):
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow.MlflowClient(tracking_uri).search_model_versions(f"name='{registered_model}'")
    except MlflowException:
        return None
    synthetic = [int(v.version) for v in versions
                 if os.path.normpath(v.tags.get("param.data.raw_dir", "")) == os.path.normpath(synthetic_dir)]
    return f"models:/{registered_model}/{max(synthetic)}" if synthetic else None


def _from_registry(uri: str, tracking_uri: str, download_dir: Path) -> tuple[Path, str]:
    """The local folder of a registered model and its lineage ``models:/<name>/<version> (run <id>)``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from lungseg.inference.registry import MODELS_URI, local_model_dir

    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = local_model_dir(uri, tracking_uri)
        if local is None:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(download_dir)))
        match = MODELS_URI.match(uri)
        if match is None:  # runs:/... : the URI is its own lineage
            return local, uri
        client = mlflow.MlflowClient()
        name, alias, version = match.group("name"), match.group("alias"), match.group("version")
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        return local, f"models:/{name}/{mv.version} (run {mv.run_id})"
    except MlflowException as e:
        first = (str(e.message).strip().splitlines() or [type(e).__name__])[0]
        raise LungsegError(f"params key 'train.init_from' {uri!r}: cannot load the model: {first}") from e
