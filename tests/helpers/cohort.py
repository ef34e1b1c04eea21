"""A cohort to run ``lungseg predict`` over: synthetic NIfTI CTs, four broken inputs, a tiny ONNX bundle
(tests/unit/inference/test_cohort.py, tests/pipeline/test_ray_batch.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lungseg.inference.cohort import RUNTIME_COLUMNS

BROKEN = ("truncated", "not-nifti", "empty-dicom", "missing")


def tiny_bundle(folder: Path) -> Path:
    """A bundle with an ONNX twin (no TensorFlow on the workers): a random 2-filter U-Net at 16^3,
    threshold 0.4 (its probabilities sit near 0.5: some lung, two sides, on the phantoms)."""
    import keras

    from lungseg.config import PostprocessConfig, PreprocessConfig
    from lungseg.inference.segmenter import write_bundle
    from lungseg.nn.model import build_unet3d

    keras.utils.set_random_seed(3)
    folder.mkdir(parents=True, exist_ok=True)
    build_unet3d((16, 16, 16), base_filters=2, depth=1, dropout=0.0).save(folder / "net.keras")
    return write_bundle(folder / "bundle", folder / "net.keras", PreprocessConfig(shape=(16, 16, 16)),
                        PostprocessConfig(threshold=0.4))


def make_cohort(folder: Path, n: int, max_matrix: int = 48) -> Path:
    """``n`` synthetic NIfTI CTs plus the four broken inputs of :data:`BROKEN`; returns the manifest
    (ids ``case-00`` ... and the broken names; relative paths)."""
    from lungseg.io.nifti import write_nifti
    from lungseg.synthetic import make_phantom

    cts = folder / "cts"
    cts.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        ph = make_phantom(np.random.default_rng([7, i]), False, max_matrix=max_matrix)
        write_nifti(ph.hu, ph.geometry, cts / f"ct{i:02d}.nii.gz", np.int16)
        rows.append((f"case-{i:02d}", f"cts/ct{i:02d}.nii.gz"))
    good = (cts / "ct00.nii.gz").read_bytes()
    (cts / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (cts / "not-nifti.nii.gz").write_text("this is a text file\n")
    (folder / "empty-dicom").mkdir(exist_ok=True)
    rows += [("truncated", "cts/truncated.nii.gz"), ("not-nifti", "cts/not-nifti.nii.gz"),
             ("empty-dicom", "empty-dicom"), ("missing", "cts/missing.nii.gz")]
    manifest = folder / "manifest.csv"
    manifest.write_text("id,path\n" + "".join(f"{i},{p}\n" for i, p in rows))
    return manifest


def read_rows(path: Path, runtime: bool = False) -> list[dict[str, str]]:
    """A results table's rows, without the runtime columns unless ``runtime``."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if runtime or k not in RUNTIME_COLUMNS} for r in csv.DictReader(f)]
