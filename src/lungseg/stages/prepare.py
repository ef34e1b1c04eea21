"""Stage ``prepare``: raw DICOM (CT + RTSTRUCT) or NIfTI pairs -> canonical NIfTI pairs.

Writes ``<case>_ct.nii.gz`` / ``<case>_lungs.nii.gz``, ``manifest.csv``, ``split.json`` and
``skipped.csv`` to ``data.interim_dir``, a three-plane figure of a few cases to
``data.figures_dir/prepare_cases.png`` and a summary to ``reports/prepare.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lungseg.config import Params

log = logging.getLogger(__name__)

SUMMARY_JSON = Path("reports/prepare.json")


def run(params: Params, raw_dir: Path | None = None, out_dir: Path | None = None, fmt: str | None = None) -> None:
    """Prepare the cohort; CLI arguments override ``params.data`` / ``params.prepare.format``."""
    from lungseg.figures import CaseView, plot_cases_three_planes
    from lungseg.io.ingest import prepare_cohort
    from lungseg.io.nifti import read_nifti

    raw = Path(raw_dir or params.data.raw_dir)
    out = Path(out_dir or params.data.interim_dir)
    result = prepare_cohort(raw, out, params.prepare, fmt)
    log.info("prepared %d cases, skipped %d (see %s)", len(result.prepared), len(result.skipped), out / "skipped.csv")

    shown = sorted(result.prepared)[: params.prepare.n_figure_cases]
    views = []
    for case in shown:
        ct, geometry = read_nifti(out / f"{case}_ct.nii.gz")
        labels, _ = read_nifti(out / f"{case}_lungs.nii.gz")
        views.append(CaseView(case, ct, labels, geometry))
    if views:
        png = plot_cases_three_planes(
            views, Path(params.data.figures_dir) / "prepare_cases.png", "prepared cases: right lung red, left cyan"
        )
        log.info("figure: %s", png)

    SUMMARY_JSON.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "cases": len(result.prepared),
        "skipped": len(result.skipped),
        "split": {name: len(ids) for name, ids in result.split.items()},
    }
    SUMMARY_JSON.write_text(json.dumps(summary, indent=2) + "\n")
