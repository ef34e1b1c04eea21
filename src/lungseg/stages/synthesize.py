"""Stage ``synthesize``: write the embedded synthetic cohort as DICOM CT + RTSTRUCT."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lungseg.config import Params

log = logging.getLogger(__name__)


def run(params: Params, out_dir: Path | None = None, cases: int | None = None, seed: int | None = None) -> None:
    """Synthesize the cohort; CLI arguments override ``params.synthesize``."""
    from lungseg.synthetic import synthesize_cohort

    cfg = params.synthesize
    out = Path(out_dir or cfg.out_dir)
    start = time.perf_counter()
    rows = synthesize_cohort(
        out,
        cases=cases if cases is not None else cfg.cases,
        seed=seed if seed is not None else cfg.seed,
        pathology_fraction=cfg.pathology_fraction,
        workers=cfg.workers,
        max_matrix=cfg.max_matrix,
        realism=cfg.realism,
    )
    log.info("wrote %d synthetic patients to %s in %.1f s", len(rows), out, time.perf_counter() - start)
