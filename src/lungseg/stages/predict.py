"""``lungseg predict``: segment NIfTI files and/or DICOM folders with a trained model.

Not a dvc stage: it runs on any CT. Per case it writes ``<name>_lungs.nii.gz`` (the input's
shape and affine; 1 right lung, 2 left lung) and/or a DICOM SEG / RTSTRUCT, ``<name>.json``
(volumes in mL, quality warnings, timings) and, with ``overlay``, ``<name>_overlay.png``. The model is ``--model`` (a ``.keras`` file, a
saved segmenter folder or an MLflow model URI) or the champion of the project's registry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from lungseg.config import Params
from lungseg.errors import LungsegError

log = logging.getLogger(__name__)


def run(
    params: Params, inputs: list[Path], out_dir: Path, model: str | None = None, overlay: bool = False,
    params_path: Path | None = None, output_types: Sequence[str] = ("nifti",), statistics: bool = False,
    threshold: float | None = None, postprocess: bool = True, device: str = "auto", progress: bool = True,
) -> None:
    """Segment ``inputs`` into ``out_dir`` (see :func:`lungseg.batch.predict_paths`).

    ``threshold`` overrides the model's probability threshold (one threshold everywhere: the
    full-resolution surface is off); ``postprocess=False`` thresholds only: every component
    kept, no holes filled, no surface, no gas check; ``device`` picks the runtime
    (:func:`lungseg.inference.load_network`).

    Raises:
        LungsegError: a DICOM output type for a non-DICOM input (before anything is read),
            the model cannot be loaded, or at least one case failed (after all cases have
            been tried; each failure is logged as one line).
    """
    from lungseg.batch import check_output_types, predict_paths
    from lungseg.inference import Segmenter, is_model_uri

    check_output_types(inputs, output_types)
    if model is not None and not is_model_uri(model):
        segmenter = Segmenter.load(model, params_path=params_path, device=device)  # a local file: no MLflow import
    else:
        from lungseg.registry import champion_uri, local_model_dir, tracking_uri

        uri = model or champion_uri(params.tracking)
        local = local_model_dir(uri, tracking_uri(params.tracking))
        if local is not None:  # a local SQLite registry and model files on this machine: no MLflow import
            segmenter = Segmenter.load(local, params_path=None, device=device)
        else:
            from lungseg.serving import load_segmenter

            segmenter = load_segmenter(uri, params.tracking, params_path, device=device)
    post = segmenter.postprocess
    if not postprocess:
        post = dataclasses.replace(post.thresholded(), keep_components=0, min_component_ml=0.0, fill_holes=False,
                                   max_gas_fraction=1.0)
    if threshold is not None:
        post = dataclasses.replace(post.thresholded(), threshold=threshold)
    segmenter.postprocess = post
    results = predict_paths(inputs, out_dir, segmenter, overlay=overlay, progress=progress,
                            output_types=output_types, statistics=statistics)
    failed = [r for r in results if r.error]
    log.info("%d of %d cases segmented into %s", len(results) - len(failed), len(results), out_dir)
    if failed:
        raise LungsegError(f"{len(failed)} of {len(results)} cases failed: {', '.join(r.input for r in failed)}")
