"""Seeded patient-level split."""

from __future__ import annotations

import random

import pytest

from lungseg.config import SplitConfig
from lungseg.data.split import split_cases

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
