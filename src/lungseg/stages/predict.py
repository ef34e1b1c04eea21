"""``lungseg predict``: segment NIfTI files and/or DICOM folders with a trained model.

Not a dvc stage: it runs on any CT. Per case it writes ``<name>_lungs.nii.gz`` (the input's
shape and affine; 1 right lung, 2 left lung), ``<name>.json`` (volumes in mL, timings) and,
with ``overlay``, ``<name>_overlay.png``. The model is ``--model`` (a ``.keras`` file, a
saved segmenter folder or an MLflow model URI) or the champion of the project's registry.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lungseg.config import Params
from lungseg.errors import LungsegError

log = logging.getLogger(__name__)


def run(
    params: Params, inputs: list[Path], out_dir: Path, model: str | None = None, overlay: bool = False,
    params_path: Path | None = None,
) -> None:
    """Segment ``inputs`` into ``out_dir``.

    Raises:
        LungsegError: the model cannot be loaded, or at least one case failed (after all
            cases have been tried; each failure is logged as one line).
    """
    from lungseg.inference import Segmenter, is_model_uri, predict_paths

    if model is not None and not is_model_uri(model):
        segmenter = Segmenter.load(model, params_path=params_path)  # a local file: no MLflow import (~1 s)
    else:
        from lungseg.serving import load_segmenter

        segmenter = load_segmenter(model, params.tracking, params_path)
    results = predict_paths(inputs, out_dir, segmenter, overlay=overlay)
    failed = [r for r in results if r.error]
    log.info("%d of %d cases segmented into %s", len(results) - len(failed), len(results), out_dir)
    if failed:
        raise LungsegError(f"{len(failed)} of {len(results)} cases failed: {', '.join(r.input for r in failed)}")
