"""Seeded patient-level split."""

from __future__ import annotations

import random

import pytest

from lungseg.config import SplitConfig
from lungseg.io.split import split_cases

CASES = [f"LCTSC-{n:03d}" for n in range(60)]


def test_same_seed_same_split_regardless_of_order() -> None:
    cfg = SplitConfig()
    shuffled = CASES[:]
    random.Random(1).shuffle(shuffled)
    assert split_cases(CASES, cfg) == split_cases(shuffled, cfg) == split_cases(tuple(reversed(CASES)), cfg)


def test_different_seed_different_split() -> None:
    assert split_cases(CASES, SplitConfig(seed=1)) != split_cases(CASES, SplitConfig(seed=2))


def test_fractions_respected_and_no_overlap() -> None:
    split = split_cases(CASES, SplitConfig(train=0.7, val=0.15, test=0.15))
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (42, 9, 9)
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(CASES)
    assert not set(split["train"]) & set(split["val"]) and not set(split["val"]) & set(split["test"])
    assert all(v == sorted(v) for v in split.values())
    assert list(split) == ["train", "val", "test"]


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_small_cohorts_get_one_val_and_one_test(n: int) -> None:
    split = split_cases(CASES[:n], SplitConfig())
    assert len(split["val"]) >= 1 and len(split["test"]) >= 1 and len(split["train"]) >= 1
    assert sum(len(v) for v in split.values()) == n


def test_tiny_cohorts_and_duplicates() -> None:
    assert split_cases([], SplitConfig()) == {"train": [], "val": [], "test": []}
    assert split_cases(["a"], SplitConfig()) == {"train": ["a"], "val": [], "test": []}
    with pytest.raises(ValueError, match="duplicate case IDs: a"):
        split_cases(["a", "b", "a"], SplitConfig())


def test_adding_a_case_moves_only_boundary_cases() -> None:
    cfg = SplitConfig(train=0.5, val=0.25, test=0.25)
    before, after = split_cases(CASES[:40], cfg), split_cases(CASES[:41], cfg)
    moved = [c for c in CASES[:40] if not any(c in before[k] and c in after[k] for k in before)]
    assert len(moved) <= 3


# ---------------------------------------------------------------- split file and cross-validation folds


def _lctsc_ids() -> list[str]:
    """LCTSC's patient IDs: 36 training (3 sites x 12) and 24 test cases."""
    train = [f"LCTSC-Train-S{s}-{100 * s + n}" for s in (1, 2, 3) for n in range(1, 13)]
    test = [f"LCTSC-Test-S{s}-{n}" for s in (1, 2, 3) for n in (101, 102, 103, 104, 201, 202, 203, 204)]
    return train + test


def test_split_file_gives_lctsc_its_official_split(tmp_path) -> None:
    from pathlib import Path

    repo_file = Path(__file__).resolve().parents[3] / "docs/splits/lctsc.csv"
    ids = _lctsc_ids()
    split = split_cases(ids, SplitConfig(file=str(repo_file)))
    assert split["test"] == sorted(i for i in ids if "-Test-" in i) and len(split["test"]) == 24
    assert len(split["val"]) == 6 and len(split["train"]) == 30  # val carved from the 36: 0.15 / 0.85 of them
    assert all("-Train-" in c for c in split["train"] + split["val"])
    assert split == split_cases(list(reversed(ids)), SplitConfig(file=str(repo_file)))


def test_split_file_errors_name_the_file_and_the_problem(tmp_path) -> None:
    from lungseg.errors import LungsegError

    bad = tmp_path / "split.csv"
    bad.write_text("pattern,subset\nA-*,train\n")
    with pytest.raises(LungsegError, match=r"split.csv: no row matches 1 case\(s\): B-1"):
        split_cases(["A-1", "A-2", "B-1"], SplitConfig(file=str(bad)))
    bad.write_text("pattern,subset\nA-*,training\n")
    with pytest.raises(LungsegError, match=r"row 2 'A-\*,training'"):
        split_cases(["A-1"], SplitConfig(file=str(bad)))
    bad.write_text("case,set\n")
    with pytest.raises(LungsegError, match="header 'pattern,subset'"):
        split_cases(["A-1"], SplitConfig(file=str(bad)))
    with pytest.raises(LungsegError, match="missing.csv: cannot read the split file"):
        split_cases(["A-1"], SplitConfig(file=str(tmp_path / "missing.csv")))


@pytest.mark.parametrize(("n", "k"), [(51, 5), (4, 3), (10, 2)])
def test_cv_folds_test_every_non_test_case_exactly_once(n: int, k: int) -> None:
    from lungseg.io.split import cv_folds

    cfg = SplitConfig(folds=k)
    split = split_cases([f"P{i:03d}" for i in range(n)], cfg)
    folds = cv_folds(split, cfg)
    pool = sorted(split["train"] + split["val"])
    assert len(folds) == k and sorted(c for f in folds for c in f["test"]) == pool
    sizes = [len(f["test"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for f in folds:
        assert sorted(f["train"] + f["val"] + f["test"]) == pool and f["val"] and f["train"]
        assert not set(f["test"]) & set(f["val"])
    assert folds == cv_folds(split, cfg)  # deterministic


def test_cv_folds_off_below_two_or_with_too_few_cases() -> None:
    from lungseg.io.split import cv_folds

    split = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert cv_folds(split, SplitConfig(folds=1)) == [] and cv_folds(split, SplitConfig(folds=4)) == []
    assert len(cv_folds(split, SplitConfig(folds=3))) == 3
