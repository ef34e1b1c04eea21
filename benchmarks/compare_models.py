"""Score several trained networks on the same held-out cases: a processed test split and the real CTs.

Used for the fine-tuning measurement (README "Your own data"): a small cohort trained from random
weights vs fine-tuned from the synthetic champion, at the same budget, scored on the cases neither
saw (a test split of another cohort, e.g. the synthetic cohort's) and on ``evaluate.real_ct``
(a check only: never trained or tuned on). Each model runs through the same Segmenter (the
project's preprocess/postprocess params), so only the weights differ.

    PYTHONPATH=src .venv/bin/python benchmarks/compare_models.py scratch=a.keras finetuned=b.keras \\
        --processed ../other/data/processed --interim ../other/data/interim [--real]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from lungseg.config import load_params
from lungseg.evaluation.metrics import dice
from lungseg.evaluation.real_ct import available, load_scan
from lungseg.inference.segmenter import Segmenter
from lungseg.nn.model import load_keras_model
from lungseg.training.crossval import score_cases
from lungseg.training.dataset import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=PATH", help="a .keras file per name")
    parser.add_argument("--processed", type=Path, required=True, help="processed data with the test split")
    parser.add_argument("--interim", type=Path, required=True, help="the prepared NIfTI pairs of those cases")
    parser.add_argument("--real", action="store_true", help="also the real CTs of evaluate.real_ct that are present")
    args = parser.parse_args()
    params = load_params()
    test = load_split(args.processed, "test")
    real = {n: c for n, c in available(params.evaluate.real_ct).items() if c.truth} if args.real else {}
    scans = {name: load_scan(name, case) for name, case in real.items()}
    print(f"host: {platform.processor() or platform.machine()}; {len(test.cases)} test cases of {args.processed}")
    header = ["model", "test Dice", "test 64^3 Dice", "test HD95 mm", "worst case", *scans]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for spec in args.models:
        name, path = spec.split("=", 1)
        seg = Segmenter(load_keras_model(path), params.preprocess, params.postprocess)
        rows = score_cases(seg, test, args.interim)
        d = [r["dice"] for r in rows]
        worst = min(rows, key=lambda r: r["dice"])
        cells = [name, f"{np.mean(d):.4f} +- {np.std(d, ddof=1):.4f}", f"{np.mean([r['net_dice'] for r in rows]):.4f}",
                 f"{np.mean([r['hd95_mm'] for r in rows]):.2f}", f"{worst['case']} {worst['dice']:.4f}"]
        for scan in scans.values():
            cells.append(f"{dice(seg.segment(scan.hu, scan.geometry).labels > 0, scan.truth > 0):.4f}")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
