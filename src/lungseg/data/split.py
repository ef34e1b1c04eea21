"""Seeded, patient-level train/val/test split."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from lungseg.config import SplitConfig


def _rank(case: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{case}".encode()).hexdigest()


def split_cases(case_ids: Sequence[str], cfg: SplitConfig) -> dict[str, list[str]]:
    """Split case IDs (one per patient) into train, val and test.

    The order is a sha256 hash of ``"<seed>:<case>"``, so the result depends
    only on the set of IDs and the seed (not on input order, platform or numpy
    version); the relative order of cases never changes, so adding a case
    moves at most the few cases at the set boundaries.

    Sizes: ``n_test = floor(test * n + 0.5)`` and ``n_val = floor(val * n + 0.5)``
    (round half up); with 3 or more cases each of val and test gets at least
    one and train keeps at least one (taken back from the larger of val/test);
    train gets the rest. With fewer than 3 cases the rounded sizes are used
    as they are (e.g. 1 or 2 cases with the default 0.7/0.15/0.15 all go to train).

    Args:
        case_ids: Unique case IDs.
        cfg: Fractions (summing to 1) and seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.

    Raises:
        ValueError: a case ID appears more than once.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        dupes = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"duplicate case IDs: {', '.join(dupes)}")
    n = len(ids)
    n_test = math.floor(cfg.test * n + 0.5)
    n_val = math.floor(cfg.val * n + 0.5)
    if n >= 3:
        n_test, n_val = max(1, n_test), max(1, n_val)
        while n - n_test - n_val < 1:
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
    n_test = min(n_test, n)
    n_val = min(n_val, n - n_test)
    order = sorted(ids, key=lambda c: _rank(c, cfg.seed))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
