"""``lungseg predict``: segment NIfTI files and/or DICOM folders with a trained model.

Not a dvc stage: it runs on any CT. Per case it writes ``<name>_lungs.nii.gz`` (the input's
shape and affine; 1 right lung, 2 left lung) and/or a DICOM SEG / RTSTRUCT, ``<name>.json``
(volumes in mL, quality warnings, timings) and, with ``overlay``, ``<name>_overlay.png``. The model is ``--model`` (a ``.keras`` file, a
saved segmenter folder or an MLflow model URI) or the champion of the project's registry.

Cohort mode (``--manifest``, ``--scan``, ``--shard`` or ``--ray``): one folder per case and one
results table, resumable (:mod:`lungseg.inference.cohort`), on Ray with ``--ray`` (:mod:`lungseg.inference.ray_batch`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lungseg.config import Params
from lungseg.errors import LungsegError

if TYPE_CHECKING:
    from lungseg.inference.cohort import CaseOptions, ModelSpec
    from lungseg.inference.segmenter import Segmenter

log = logging.getLogger(__name__)


def _model_path(
    params: Params, model: str | None, params_path: Path | None, download_dir: Path,
) -> tuple[str, str | None]:
    """``(local model path, params.yaml for a bare .keras)`` of ``--model``: a local file or folder as it
    is, a registry URI through the local SQLite registry's files, else downloaded into ``download_dir``."""
    from lungseg.inference.bundle import is_model_uri

    if model is not None and not is_model_uri(model):
        return model, str(params_path) if params_path else None  # a local file: no MLflow import
    from lungseg.inference.registry import champion_uri, local_model_dir, tracking_uri

    uri = model or champion_uri(params.tracking)
    local = local_model_dir(uri, tracking_uri(params.tracking))
    if local is not None:  # a local SQLite registry and model files on this machine: no MLflow import
        return str(local), None
    from lungseg.inference.serving import download_model

    return str(download_model(uri, download_dir, params.tracking)), None


def run(
    params: Params, inputs: list[Path], out_dir: Path, model: str | None = None, overlay: bool = False,
    params_path: Path | None = None, output_types: Sequence[str] = ("nifti",), statistics: bool = False,
    threshold: float | None = None, postprocess: bool = True, device: str = "auto", progress: bool = True,
    manifest: Path | None = None, scan: Path | None = None, shard: str | None = None, ray: str | None = None,
    actors: int | None = None, cpus_per_actor: float | None = None,
) -> None:
    """Segment ``inputs`` into ``out_dir`` (see :func:`lungseg.inference.batch.predict_paths`), or, in cohort mode
    (any of ``manifest``, ``scan``, ``shard``, ``ray``), the cases of ``inputs``, the manifest and the
    scanned folder into ``out_dir/<id>/`` and ``out_dir/results.csv`` (:mod:`lungseg.inference.cohort`).

    ``threshold`` overrides the model's probability threshold (one threshold everywhere: the
    full-resolution surface is off); ``postprocess=False`` thresholds only: every component
    kept, no holes filled, no surface, no gas check; ``device`` picks the runtime
    (:func:`lungseg.inference.segmenter.load_network`). ``shard`` ``"I/N"``: only the cases of shard I of N
    (:func:`lungseg.inference.cohort.shard_of`); ``ray``: a Ray address or ``auto``/``local``
    (:func:`lungseg.inference.ray_batch.run_ray`, with ``actors`` and ``cpus_per_actor``).

    Raises:
        LungsegError: a DICOM output type for a non-DICOM input (before anything is read; in cohort
            mode a failed row instead), the model cannot be loaded, or at least one case failed (after
            all cases have been tried; each failure is logged as one line).
    """
    from lungseg.inference.batch import check_output_types
    from lungseg.inference.cohort import CaseOptions, ModelSpec

    if manifest is None and scan is None and shard is None and ray is None:
        check_output_types(inputs, output_types)
        if not inputs:
            raise LungsegError("no inputs: give NIfTI files or DICOM folders, --manifest FILE or --scan DIR")
        with tempfile.TemporaryDirectory() as tmp:
            spec = ModelSpec(*_model_path(params, model, params_path, Path(tmp)), device, threshold, postprocess)
            segmenter = spec.load()
        _run_paths(inputs, out_dir, segmenter, overlay, output_types, statistics, progress)
        return
    check_output_types([], output_types)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(*_model_path(params, model, params_path, out_dir / ".model"), device, threshold, postprocess)
    options = CaseOptions(tuple(output_types), statistics, overlay)
    _run_cohort(inputs, out_dir, spec, options, manifest, scan, shard, ray, actors, cpus_per_actor, progress)


def _run_paths(inputs: list[Path], out_dir: Path, segmenter: Segmenter, overlay: bool, output_types: Sequence[str],
               statistics: bool, progress: bool) -> None:
    from lungseg.inference.batch import predict_paths

    results = predict_paths(inputs, out_dir, segmenter, overlay=overlay, progress=progress,
                            output_types=output_types, statistics=statistics)
    failed = [r for r in results if r.error]
    log.info("%d of %d cases segmented into %s", len(results) - len(failed), len(results), out_dir)
    if failed:
        raise LungsegError(f"{len(failed)} of {len(results)} cases failed: {', '.join(r.input for r in failed)}")


def _run_cohort(
    inputs: list[Path], out_dir: Path, spec: ModelSpec, options: CaseOptions, manifest: Path | None, scan: Path | None,
    shard: str | None, ray: str | None, actors: int | None, cpus_per_actor: float | None, progress: bool,
) -> None:
    from lungseg.inference.cohort import (
        ResultsTable,
        collect_cases,
        fingerprint,
        parse_shard,
        plan,
        run_cases,
        shard_of,
        table_path,
    )

    cases = collect_cases(inputs, manifest, scan, out_dir)
    part = parse_shard(shard) if shard is not None else None
    if part is not None:
        cases = [c for c in cases if shard_of(c.id, part[1]) == part[0]]
    fp = fingerprint(spec, options)
    done, todo = plan(cases, out_dir, fp)
    log.info("%d cases%s: %d complete from an earlier run, %d to segment", len(cases),
             f" in shard {part[0]}/{part[1]}" if part else "", len(done), len(todo))
    with ResultsTable(table_path(out_dir, part), options.statistics, done) as table:
        if ray is not None:
            from lungseg.inference.ray_batch import run_ray

            run_ray(todo, out_dir, spec, options, fp, table, address=ray, actors=actors,
                    cpus_per_actor=cpus_per_actor, progress=progress)
        elif todo:
            run_cases(todo, out_dir, spec.load(), options, fp, table, progress=progress)
    failed = sorted(r["id"] for r in table.rows.values() if r["status"] != "ok")
    log.info("%d of %d cases segmented into %s", len(cases) - len(failed), len(cases), out_dir)
    if failed:
        raise LungsegError(f"{len(failed)} of {len(cases)} cases failed ({', '.join(failed[:10])}"
                           f"{', ...' if len(failed) > 10 else ''}): see {table.path}")
