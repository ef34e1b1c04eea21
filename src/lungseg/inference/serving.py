"""The served model: an MLflow pyfunc wrapping :class:`lungseg.inference.segmenter.Segmenter`.

Contract of ``POST /invocations`` (``mlflow models serve``)::

    request   {"inputs": ["<base64 of a .nii or .nii.gz CT>", ...]}
    response  {"predictions": [{"mask": "<base64 .nii.gz>",
                                "volume_ml": {"right": ..., "left": ..., "total": ...},
                                "warnings": [...],
                                "statistics": {"total": {...}, "right": ..., "left_lower": ...}}, ...]}

``statistics`` is the lung densitometry (:mod:`lungseg.inference.densitometry`: per lung, per third
and in total), what ``lungseg predict --statistics`` writes.

The mask has the input's shape and affine (uint8, 0 background, 1 right lung, 2 left
lung). Inputs may have any size, orientation and spacing. ``predict`` is type-hinted
(``list[str]``), so MLflow hands it the ``inputs`` list as it is and rejects anything that
is not a list of strings with HTTP 400. A string that is not base64, not NIfTI, or not a 3D
volume is also answered with HTTP 400 and a one-line message naming the input
(``inputs[i]``); the server keeps serving.

Besides :mod:`lungseg.training.tracking`, this is the only module that imports MLflow: the pyfunc
class has to subclass ``mlflow.pyfunc.PythonModel``.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

import lungseg
from lungseg.config import PostprocessConfig, PreprocessConfig, RefineConfig, TrackingConfig
from lungseg.errors import LungsegError
from lungseg.inference.bundle import is_model_uri
from lungseg.inference.registry import champion_uri, tracking_uri
from lungseg.inference.segmenter import Segmenter, write_bundle

log = logging.getLogger(__name__)

ARTIFACT = "segmenter"
_REQUIREMENTS = ("tensorflow", "keras", "onnxruntime", "numpy", "scipy", "nibabel", "pydicom", "pyyaml", "tqdm",
                 "matplotlib")


class RequestError(MlflowException):
    """A bad request: HTTP 400 with exactly this message.

    MLflow's scoring server prefixes the message of an exception raised by ``predict``
    with the whole request data (``Failed to predict data '<data>'``), which for a CT is
    tens of megabytes; this class keeps its own message instead.
    """

    def __init__(self, message: str) -> None:
        self._fixed = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:  # type: ignore[override]
        return self._fixed

    @message.setter
    def message(self, value: str) -> None:  # the scoring server's rewrite is ignored
        pass


def decode_input(item: Any, index: int) -> bytes:
    """Base64 text (standard or URL-safe alphabet, whitespace allowed) -> file bytes."""
    name = f"inputs[{index}]"
    if not isinstance(item, str):
        raise RequestError(f"{name}: expected a base64 string of a .nii or .nii.gz file, got {type(item).__name__}")
    text = "".join(item.split())
    if not text:
        raise RequestError(f"{name}: empty string, expected a base64 .nii or .nii.gz file")
    try:
        alt = b"-_" if ("-" in text or "_" in text) else None
        return base64.b64decode(text, altchars=alt, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{name}: not valid base64 ({e})") from e


def segment_nifti_bytes(segmenter: Segmenter, data: bytes, name: str) -> dict[str, Any]:
    """One CT (NIfTI file contents) -> ``{"mask": base64 .nii.gz, "volume_ml": {...}, "warnings": [...],
    "statistics": {...}}`` (the quality warnings of :mod:`lungseg.inference.quality`, also logged; the lung
    densitometry per lung, per third and in total of :mod:`lungseg.inference.densitometry`).

    Raises:
        CaseError: (naming ``name``) not NIfTI, not 3D, NaN voxels, ...
    """
    from lungseg.inference.densitometry import densitometry
    from lungseg.inference.segmenter import check_volume
    from lungseg.io.nifti import nifti_bytes, read_nifti_bytes

    array, geometry = read_nifti_bytes(data, name)
    check_volume(array, name)
    seg = segmenter.segment(np.asarray(array, dtype=np.float32), geometry)
    mask = nifti_bytes(seg.labels, geometry, np.uint8)
    for w in seg.warnings:
        log.warning("%s: %s", name, w)
    return {
        "mask": base64.b64encode(mask).decode("ascii"),
        "volume_ml": {k: round(float(v), 2) for k, v in seg.volumes_ml.items()},
        "warnings": seg.warnings,
        "statistics": densitometry(seg.labels, array, geometry),
    }


class SegmenterModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: base64 NIfTI CTs in, base64 NIfTI label maps and lung volumes out."""

    def load_context(self, context: Any) -> None:
        """Load the Segmenter from the ``segmenter`` artifact (model.keras + lungseg_config.json)."""
        self.segmenter = Segmenter.load(context.artifacts[ARTIFACT], params_path=None)

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None):  # noqa: ANN201
        """Segment each base64 NIfTI CT of ``model_input`` (see the module docstring for the contract).

        Returns a list of ``{"mask": str, "volume_ml": {"right", "left", "total"}}`` (no return
        annotation: MLflow cannot validate nested dicts and only warns about them).
        """
        if isinstance(model_input, (str, bytes)) or not hasattr(model_input, "__len__"):
            raise RequestError("'inputs' must be a list of base64 strings of .nii or .nii.gz files")
        if len(model_input) == 0:
            raise RequestError("'inputs' is empty: send at least one base64 .nii or .nii.gz file")
        decoded = [decode_input(item, i) for i, item in enumerate(model_input)]
        out = []
        for i, data in enumerate(decoded):
            try:
                out.append(segment_nifti_bytes(self.segmenter, data, f"inputs[{i}]"))
            except LungsegError as e:
                raise RequestError(str(e)) from e
        return out


def _pip_requirements() -> list[str]:
    reqs = [f"mlflow=={mlflow.__version__}"]
    for name in _REQUIREMENTS:
        try:
            reqs.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


def _model_kwargs(bundle: Path) -> dict[str, Any]:
    return {
        "python_model": SegmenterModel(),
        "artifacts": {ARTIFACT: str(bundle)},
        "code_paths": [str(Path(lungseg.__file__).parent)],
        "pip_requirements": _pip_requirements(),  # explicit: no slow requirement inference
    }


def save_segmenter_model(
    path: str | Path, model_path: str | Path, preprocess: PreprocessConfig, postprocess: PostprocessConfig,
    refine: tuple[Path, RefineConfig] | None = None,
) -> Path:
    """Save the Segmenter as an MLflow pyfunc folder at ``path`` (must not exist yet).

    The folder holds the Keras model and its configs (``artifacts/segmenter/``) and a copy
    of the ``lungseg`` package (``code/``), so ``mlflow models serve -m <path>`` works
    without the repository.
    """
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_bundle(Path(tmp) / ARTIFACT, Path(model_path), preprocess, postprocess, refine)
        mlflow.pyfunc.save_model(str(path), **_model_kwargs(bundle))
    return Path(path)


def log_segmenter_model(
    model_path: str | Path, preprocess: PreprocessConfig, postprocess: PostprocessConfig, name: str = "segmenter",
    refine: tuple[Path, RefineConfig] | None = None,
) -> str:
    """Log the Segmenter pyfunc to the active MLflow run; returns its model URI (for
    ``mlflow.register_model``)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_bundle(Path(tmp) / ARTIFACT, Path(model_path), preprocess, postprocess, refine)
        info = mlflow.pyfunc.log_model(name=name, **_model_kwargs(bundle))
    return info.model_uri


def download_model(uri: str, dst: str | Path, tracking: TrackingConfig | None = None) -> Path:
    """Download an MLflow model (``models:/...``, ``runs:/...``) into ``dst``; returns the local folder.

    The tracking URI is ``MLFLOW_TRACKING_URI`` or ``tracking.tracking_uri``.

    Raises:
        LungsegError: the model does not exist (for the champion: "run `make run` first").
    """

    if tracking is not None:
        mlflow.set_tracking_uri(tracking_uri(tracking))  # a relative SQLite path resolves at the project root
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as e:
        hint = " (no champion registered yet: run `make run` first)" if uri.endswith("@champion") else ""
        first = str(e.message).strip().splitlines()[0] if str(e.message).strip() else type(e).__name__
        raise LungsegError(f"{uri}: cannot load the model{hint}: {first}") from e


def load_segmenter(
    model: str | None, tracking: TrackingConfig, params_path: str | Path | None = None, device: str = "auto",
) -> Segmenter:
    """The Segmenter for ``lungseg predict --model``.

    Args:
        model: A ``.keras`` file, a bundle or saved-pyfunc folder, an MLflow model URI
            (``models:/name@alias``, ``models:/name/version``, ``runs:/id/path``), or None for
            the champion of the project's registry (``tracking.registered_model``).
        tracking: Where the registry is.
        params_path: ``params.yaml`` to take configs from when a bare ``.keras`` has none beside it.
    """
    if model is not None and not is_model_uri(model):
        return Segmenter.load(model, params_path=params_path, device=device)
    uri = model or champion_uri(tracking)
    with tempfile.TemporaryDirectory() as tmp:
        local = download_model(uri, tmp, tracking)
        return Segmenter.load(local, params_path=None, device=device)
