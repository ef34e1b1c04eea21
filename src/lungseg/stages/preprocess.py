"""Stage ``preprocess``: canonical NIfTI pairs -> fixed-shape arrays per split.

Writes to ``data.processed_dir``: ``<split>/images.npy`` (float32, ``(N, *shape)``),
``<split>/masks.npy`` (uint8 0/1), ``<split>/cases.json`` (row order), ``grids/<case>.json``
(crop box, orientation and shape to map predictions back), ``reports/preprocess.json``
(the share of each case's lung inside its crop box, worst case named), the paper's Fig. 1 to
``data.figures_dir/preprocess_example.png`` and its Fig. 2 (one training case before and
after the configured augmentation) to ``data.figures_dir/augmentation_example.png``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lungseg.config import Params

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REPORT = Path("reports/preprocess.json")


def run(params: Params, interim_dir: Path | None = None, out_dir: Path | None = None) -> None:
    """Preprocess every prepared case of every split."""
    from lungseg.errors import LungsegError
    from lungseg.figures import plot_augmentation, plot_volume_planes
    from lungseg.inference.preprocessing import crop_coverage, preprocess_image, preprocess_mask
    from lungseg.io.nifti import read_nifti
    from lungseg.training.augmentation import augment

    interim = Path(interim_dir or params.data.interim_dir)
    out = Path(out_dir or params.data.processed_dir)
    try:
        split = json.loads((interim / "split.json").read_text())
    except (OSError, ValueError) as e:
        raise LungsegError(f"{interim / 'split.json'}: cannot read the split ({e}); run `lungseg prepare` first") from e
    (out / "grids").mkdir(parents=True, exist_ok=True)
    example = None
    coverage: dict[str, float] = {}
    lung_fraction: list[float] = []
    for name in SPLITS:
        cases = sorted(split.get(name, []))
        images = np.zeros((len(cases), *params.preprocess.shape), np.float32)
        masks = np.zeros((len(cases), *params.preprocess.shape), np.uint8)
        for n, case in enumerate(tqdm(cases, desc=f"preprocess {name}", unit="case")):
            ct, geometry = read_nifti(interim / f"{case}_ct.nii.gz")
            labels, _ = read_nifti(interim / f"{case}_lungs.nii.gz")
            images[n], grid = preprocess_image(ct, geometry, params.preprocess)
            masks[n] = preprocess_mask(labels, grid)
            coverage[case] = crop_coverage(labels, grid)
            lung_fraction.append(float(masks[n].mean()))
            if coverage[case] < 0.999:
                log.warning("%s: only %.2f%% of the lung lies inside the crop box", case, 100 * coverage[case])
            (out / "grids" / f"{case}.json").write_text(json.dumps(grid.to_json()) + "\n")
            if example is None:
                example = (case, images[n], masks[n])
        (out / name).mkdir(parents=True, exist_ok=True)
        np.save(out / name / "images.npy", images)
        np.save(out / name / "masks.npy", masks)
        (out / name / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
        log.info("%s: %d cases -> %s", name, len(cases), out / name)
    worst = min(coverage, key=coverage.get) if coverage else None
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({
        "cases": len(coverage),
        "crop": params.preprocess.crop,
        "lung_in_crop_min": round(coverage[worst], 6) if worst else None,
        "lung_in_crop_worst_case": worst,
        "lung_fraction_of_grid_mean": round(float(np.mean(lung_fraction)), 4) if lung_fraction else None,
    }, indent=1) + "\n")
    if example is not None:
        case, image, mask = example
        plot_volume_planes(
            image, mask, Path(params.data.figures_dir) / "preprocess_example.png",
            title=f"{case} after preprocessing (network grid {'x'.join(map(str, params.preprocess.shape))})",
        )
        aug_image, aug_mask = augment(image, mask, params.augment, seed=params.train.seed)
        plot_augmentation(
            image, mask, aug_image, aug_mask, Path(params.data.figures_dir) / "augmentation_example.png",
            title=f"{case}: original (top) and augmented (bottom), augment.* from params.yaml",
        )
