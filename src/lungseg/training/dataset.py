"""tf.data pipelines over the preprocessed arrays.

Arrays are ``(N, D, H, W)`` (network grid, canonical RAS axis order); the pipelines yield
``(image, mask)`` batches of shape ``(B, D, H, W, 1)`` float32. Training data is augmented
on the fly with a per-sample seed; validation and test data never are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from lungseg.config import AugmentConfig
from lungseg.errors import LungsegError
from lungseg.training.augmentation import augment


@dataclass(frozen=True)
class SplitArrays:
    """One split of the processed data."""

    images: np.ndarray  # (N, D, H, W) float32
    masks: np.ndarray  # (N, D, H, W) uint8
    cases: list[str]


def load_split(processed_dir: Path, split: str, limit: int = 0) -> SplitArrays:
    """Load ``<processed_dir>/<split>/{images,masks}.npy`` (first ``limit`` cases if > 0)."""
    folder = Path(processed_dir) / split
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        masks = np.load(folder / "masks.npy", mmap_mode="r")
        cases = json.loads((folder / "cases.json").read_text())
    except (OSError, ValueError) as e:
        raise LungsegError(f"{folder}: cannot read processed {split} data ({e}); run `lungseg preprocess` first") from e
    if limit > 0:
        images, masks, cases = images[:limit], masks[:limit], cases[:limit]
    if len(cases) == 0:
        raise LungsegError(f"{folder}: the {split} split is empty")
    return SplitArrays(np.ascontiguousarray(images, np.float32), np.ascontiguousarray(masks, np.uint8), list(cases))


def train_dataset(
    data: SplitArrays, aug: AugmentConfig, batch_size: int, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """Infinite, shuffled, augmented training batches (use with ``steps_per_epoch``).

    Sample ``s`` (a running counter over all epochs, from ``start_step``) is augmented with
    seed ``(seed, s)``, so a run is reproducible and a resumed run does not repeat draws.
    """
    n = len(data.cases)
    shape = data.images.shape[1:]
    images, masks = data.images, data.masks

    def load_augmented(index: np.int64, step: np.int64) -> tuple[np.ndarray, np.ndarray]:
        sample_seed = int(np.random.SeedSequence([seed, int(step)]).generate_state(1)[0])
        img, msk = augment(images[int(index)], masks[int(index)], aug, sample_seed)
        return img[..., None], msk[..., None]

    def mapper(step: tf.Tensor, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        img, msk = tf.numpy_function(load_augmented, [index, step], [tf.float32, tf.float32])
        img.set_shape((*shape, 1))
        msk.set_shape((*shape, 1))
        return img, msk

    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    counter = tf.data.Dataset.counter(start=start_step)
    return _without_autotune(
        tf.data.Dataset.zip(counter, order)
        .map(mapper, num_parallel_calls=max(1, os.cpu_count() or 1), deterministic=True)
        .batch(batch_size, drop_remainder=False)
        .prefetch(2)
    )


def _without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Fixed parallelism and buffers instead of tf.data's autotuning.

    Why: with autotuning on, deleting an iterator waited for the autotuner's sleeping thread.
    Every ``fit`` (each tune trial, the benchmark) and every validation pass ended with a stall:
    measured on host D, a 20-step ``fit`` of the augmented pipeline took 20.48 s of which 6-8 s
    after its last batch, against 11.2 s and no stall without autotuning, at the same step time.
    The batches are the same either way (the map is deterministic and seeded per sample).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def eval_dataset(data: SplitArrays, batch_size: int) -> tf.data.Dataset:
    """Unaugmented batches in case order (validation and test)."""
    images = data.images[..., None]
    masks = data.masks[..., None].astype(np.float32)
    return _without_autotune(tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).prefetch(2))


def load_cases(processed_dir: Path, cases: list[str], splits: tuple[str, ...] = ("train", "val", "test")) -> SplitArrays:
    """The processed arrays of ``cases`` (in that order), wherever the split put them (cross-validation folds).

    Raises:
        LungsegError: a case is in none of ``splits`` (naming it), or ``cases`` is empty.
    """
    return load_case_groups(processed_dir, [cases], splits)[0]


def load_case_groups(
    processed_dir: Path, groups: list[list[str]], splits: tuple[str, ...] = ("train", "val", "test")
) -> list[SplitArrays]:
    """:func:`load_cases` for several lists (a fold's train, val and test) reading each split once."""
    where: dict[str, tuple[SplitArrays, int]] = {}
    for split in splits:
        folder = Path(processed_dir) / split
        if (folder / "cases.json").is_file() and json.loads((folder / "cases.json").read_text()):
            arrays = load_split(processed_dir, split)
            where.update({c: (arrays, n) for n, c in enumerate(arrays.cases)})
    out = []
    for cases in groups:
        if not cases:
            raise LungsegError(f"{processed_dir}: no cases asked for")
        missing = [c for c in cases if c not in where]
        if missing:
            raise LungsegError(f"{processed_dir}: case(s) not in the processed data: {', '.join(missing[:5])}; "
                               "run `lungseg preprocess` again")
        images = np.stack([where[c][0].images[where[c][1]] for c in cases])
        masks = np.stack([where[c][0].masks[where[c][1]] for c in cases])
        out.append(SplitArrays(images, masks, list(cases)))
    return out
