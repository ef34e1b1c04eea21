"""Seeded, patient-level train/val/test split, an explicit split file, and k cross-validation folds."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

from lungseg.config import SplitConfig
from lungseg.errors import LungsegError

SUBSETS = ("train", "val", "test")


def _rank(case: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{case}".encode()).hexdigest()


def _check_unique(ids: list[str]) -> None:
    if len(set(ids)) != len(ids):
        dupes = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"duplicate case IDs: {', '.join(dupes)}")


def split_cases(case_ids: Sequence[str], cfg: SplitConfig) -> dict[str, list[str]]:
    """Split case IDs (one per patient) into train, val and test.

    With ``cfg.file`` the subsets come from that file (:func:`split_from_file`). Otherwise the
    order is a sha256 hash of ``"<seed>:<case>"``, so the result depends only on the set of IDs
    and the seed (not on input order, platform or numpy version); the relative order of cases
    never changes, so adding a case moves at most the few cases at the set boundaries.

    Sizes: ``n_test = floor(test * n + 0.5)`` and ``n_val = floor(val * n + 0.5)``
    (round half up); with 3 or more cases each of val and test gets at least
    one and train keeps at least one (taken back from the larger of val/test);
    train gets the rest. With fewer than 3 cases the rounded sizes are used
    as they are (e.g. 1 or 2 cases with the default 0.7/0.15/0.15 all go to train).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.

    Raises:
        ValueError: a case ID appears more than once.
        LungsegError: the split file cannot be read or leaves a case unassigned.
    """
    ids = sorted(case_ids)
    _check_unique(ids)
    if cfg.file:
        return split_from_file(ids, Path(cfg.file), cfg)
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


def _carve_val(cases: Sequence[str], cfg: SplitConfig) -> tuple[list[str], list[str]]:
    """``(train, val)``: the ``val / (train + val)`` share of ``cases`` (at least one where there
    are two or more) goes to val, chosen by the seeded hash order."""
    share = cfg.val / (cfg.train + cfg.val) if cfg.train + cfg.val > 0 else 0.0
    n_val = math.floor(share * len(cases) + 0.5)
    if len(cases) >= 2:
        n_val = min(max(1, n_val), len(cases) - 1)
    order = sorted(cases, key=lambda c: _rank(c, cfg.seed))
    return sorted(order[n_val:]), sorted(order[:n_val])


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """Rows ``(pattern, subset)`` of a split file: CSV with a ``pattern,subset`` header (``#`` lines
    are comments); a pattern is a case ID or an fnmatch pattern (``LCTSC-Test-*``).

    Raises:
        LungsegError: one line naming the file and the row that is wrong.
    """
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as e:
        raise LungsegError(f"{path}: cannot read the split file (prepare.split.file): {e.strerror or e}") from e
    rows = list(csv.reader(lines))
    if not rows or [c.strip() for c in rows[0]] != ["pattern", "subset"]:
        raise LungsegError(f"{path}: a split file starts with the header 'pattern,subset'")
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1].strip() not in SUBSETS or not row[0].strip():
            raise LungsegError(f"{path}: row {n} {','.join(row)!r}: expected '<case ID or pattern>,train|val|test'")
        out.append((row[0].strip(), row[1].strip()))
    return out


def split_from_file(case_ids: Sequence[str], path: Path, cfg: SplitConfig) -> dict[str, list[str]]:
    """Subsets from a split file: each case takes the subset of the first row whose pattern
    matches its ID. Where the file names no val cases, val is carved from train by the
    configured fractions (:func:`_carve_val`), as early stopping needs one.

    Raises:
        LungsegError: a case matches no row (the first few named), or a subset ends up empty.
    """
    rules = read_split_file(path)
    out: dict[str, list[str]] = {s: [] for s in SUBSETS}
    unmatched = []
    for case in sorted(case_ids):
        subset = next((s for pattern, s in rules if fnmatch.fnmatchcase(case, pattern)), None)
        if subset is None:
            unmatched.append(case)
        else:
            out[subset].append(case)
    if unmatched:
        raise LungsegError(f"{path}: no row matches {len(unmatched)} case(s): {', '.join(unmatched[:5])}"
                           + (" ..." if len(unmatched) > 5 else ""))
    if not out["val"]:
        out["train"], out["val"] = _carve_val(out["train"], cfg)
    if not out["train"]:
        raise LungsegError(f"{path}: no case is in the train subset")
    return out


def cv_folds(split: dict[str, list[str]], cfg: SplitConfig) -> list[dict[str, list[str]]]:
    """``cfg.folds`` cross-validation folds over the non-test cases (train + val) of ``split``.

    Fold ``i`` tests on every ``k``-th case of the seeded hash order, starting at ``i`` (fold
    sizes differ by at most one; every case is tested exactly once); the rest is its train and
    val (:func:`_carve_val`: val chooses the checkpoint and stops training, so it is never a
    test case). The test split stays out of every fold: it scores the model trained on all.
    Fewer than 2 folds, or fewer cases than folds: no folds.
    """
    k = cfg.folds
    pool = sorted(split.get("train", []) + split.get("val", []))
    if k < 2 or len(pool) < k:
        return []
    order = sorted(pool, key=lambda c: _rank(c, cfg.seed + 1))
    folds = []
    for i in range(k):
        test = sorted(order[i::k])
        train, val = _carve_val([c for c in pool if c not in set(test)], cfg)
        folds.append({"train": train, "val": val, "test": test})
    return folds
