"""tf.data pipelines: loading a split, reproducible augmented batches, unaugmented evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import AugmentConfig
from lungseg.errors import LungsegError
from lungseg.training.dataset import eval_dataset, load_split, train_dataset


@pytest.fixture()
def split(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "processed" / "train"
    folder.mkdir(parents=True)
    images = rng.normal(size=(3, 8, 8, 8)).astype(np.float32)
    np.save(folder / "images.npy", images)
    np.save(folder / "masks.npy", (images > 0).astype(np.uint8))
    (folder / "cases.json").write_text(json.dumps(["a", "b", "c"]))
    return tmp_path / "processed"


def test_load_split_and_limit(split: Path) -> None:
    data = load_split(split, "train")
    assert data.images.shape == (3, 8, 8, 8) and data.images.dtype == np.float32 and data.masks.dtype == np.uint8
    assert data.cases == ["a", "b", "c"]
    assert load_split(split, "train", limit=2).cases == ["a", "b"]
    with pytest.raises(LungsegError, match="cannot read processed val data"):
        load_split(split, "val")


def test_training_batches_are_reproducible_by_seed_and_differ_by_step(split: Path) -> None:
    data = load_split(split, "train")
    aug = AugmentConfig()

    def first(seed: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        x, y = next(iter(train_dataset(data, aug, batch_size=2, seed=seed, start_step=start)))
        return x.numpy(), y.numpy()

    a, b = first(1), first(1)
    assert a[0].shape == (2, 8, 8, 8, 1) and a[1].shape == (2, 8, 8, 8, 1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first(1, start=100)[0], a[0])  # a resumed run draws new augmentations


def test_eval_batches_are_the_arrays_in_order(split: Path) -> None:
    data = load_split(split, "train")
    batches = list(eval_dataset(data, batch_size=2))
    assert [int(x.shape[0]) for x, _ in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in batches])[..., 0], data.images)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches])[..., 0], data.masks.astype(np.float32))


def test_pipelines_do_not_autotune(split: Path) -> None:
    """tf.data's autotuner made every iterator's deletion wait for its sleeping thread (a stall at
    the end of each fit and validation pass, see lungseg.training.dataset._without_autotune)."""
    data = load_split(split, "train")
    for ds in (train_dataset(data, AugmentConfig(), batch_size=2, seed=0), eval_dataset(data, batch_size=2)):
        assert ds.options().autotune.enabled is False


def test_load_cases_gathers_a_fold_across_the_splits(tmp_path: Path) -> None:
    import json

    from lungseg.errors import LungsegError
    from lungseg.training.dataset import load_cases

    rng = np.random.default_rng(0)
    arrays = {}
    for split, cases in (("train", ["a", "c"]), ("val", ["b"]), ("test", ["d"])):
        images = rng.normal(size=(len(cases), 4, 4, 4)).astype(np.float32)
        masks = (images > 0).astype(np.uint8)
        (tmp_path / split).mkdir()
        np.save(tmp_path / split / "images.npy", images)
        np.save(tmp_path / split / "masks.npy", masks)
        (tmp_path / split / "cases.json").write_text(json.dumps(cases))
        arrays.update({c: (images[n], masks[n]) for n, c in enumerate(cases)})
    fold = load_cases(tmp_path, ["d", "b", "a"])
    assert fold.cases == ["d", "b", "a"]
    for n, c in enumerate(fold.cases):
        assert np.array_equal(fold.images[n], arrays[c][0]) and np.array_equal(fold.masks[n], arrays[c][1])
    with pytest.raises(LungsegError, match="not in the processed data: z"):
        load_cases(tmp_path, ["a", "z"])
