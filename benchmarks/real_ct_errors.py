"""Where does the model miss real lung? Error analysis on the real cases of ``evaluate.real_ct``.

For every real case with a mask (never trained or tuned on), segments it with a model and the
classical baseline and prints, per case:

* Dice of the U-Net, of the same network thresholded alone (``stage1``: no full-resolution
  surface), and of the baseline; volumes; false negatives (FN) and positives (FP) in mL;
* the FN by the network's probability (mapped onto the CT grid): < 0.01, 0.01-0.05 (below
  ``surface.p_air``: the network said "not lung"), 0.05-0.5, >= 0.5; the FN's HU percentiles
  (a shell of partial-volume voxels reads -400..0 HU, missed aerated lung below -700) and the
  share of FN the baseline finds;
* the lung by depth inside the reference mask (0-3, 3-10, 10-20, 20-40, > 40 mm): its volume,
  the median probability, and the share missed;
* for the NSCLC-Radiomics cases, the tumour (RTSTRUCT ROI ``GTV-1``, rasterised by
  :func:`lungseg.io.dicom_rtstruct.rasterize_contours`): its volume, how much of it the
  reference lung mask holds (radiotherapy convention: none, but for contour overlap) and how
  much each method calls lung.

    PYTHONPATH=src .venv/bin/python benchmarks/real_ct_errors.py                 # models/model.keras
    PYTHONPATH=src .venv/bin/python benchmarks/real_ct_errors.py --model path/to/bundle --cases nsclc_001
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from lungseg.config import load_params
from lungseg.evaluation.baseline import segment_lungs
from lungseg.evaluation.metrics import dice
from lungseg.evaluation.real_ct import available, load_scan
from lungseg.inference.segmenter import Segmenter

DEPTHS_MM = ((0, 3), (3, 10), (10, 20), (20, 40), (40, 1000))


def gtv_mask(dicom_dir: Path, geometry) -> np.ndarray | None:  # noqa: ANN001 - a Geometry
    """The RTSTRUCT's ``GTV-1`` on the CT grid, or None when the folder holds none."""
    import pydicom

    from lungseg.io.dicom_rtstruct import rasterize_contours, roi_contours

    for f in sorted(dicom_dir.glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if ds.Modality == "RTSTRUCT":
            try:
                return rasterize_contours(roi_contours(pydicom.dcmread(f), "GTV-1"), geometry)
            except ValueError:
                return None
    return None


def analyse(name: str, scan, ct: Path, segmenter: Segmenter, stage1: Segmenter) -> list[str]:  # noqa: ANN001
    """The report lines of one case (see the module docstring)."""
    v = scan.geometry.voxel_volume_ml
    truth = scan.truth > 0
    seg = segmenter.segment(scan.hu, scan.geometry)
    unet, prob = seg.labels > 0, seg.probability
    thr = stage1.segment(scan.hu, scan.geometry).labels > 0
    base = segment_lungs(scan.hu, scan.geometry) > 0
    fn, fp = truth & ~unet, unet & ~truth
    lines = [f"{name}: U-Net Dice {dice(unet, truth):.4f} (stage1 {dice(thr, truth):.4f}), baseline "
             f"{dice(base, truth):.4f}; volume {unet.sum() * v:.0f} / baseline {base.sum() * v:.0f} / reference "
             f"{truth.sum() * v:.0f} mL; warnings {seg.warnings or 'none'}",
             f"  U-Net FN {fn.sum() * v:.0f} mL, FP {fp.sum() * v:.0f} mL; baseline FN {(truth & ~base).sum() * v:.0f}, "
             f"FP {(base & ~truth).sum() * v:.0f} mL"]
    if fn.any():
        p = prob[fn]
        bins = [(p < 0.01).sum(), ((p >= 0.01) & (p < 0.05)).sum(), ((p >= 0.05) & (p < 0.5)).sum(), (p >= 0.5).sum()]
        lines.append("  FN by probability: <0.01 {:.0f}, 0.01-0.05 {:.0f}, 0.05-0.5 {:.0f}, >=0.5 {:.0f} mL".format(
            *(b * v for b in bins)))
        pct = np.percentile(scan.hu[fn], [5, 25, 50, 75, 95])
        lines.append(f"  FN HU p5/25/50/75/95 {' / '.join(f'{x:.0f}' for x in pct)}; found by the baseline "
                     f"{100 * (fn & base).sum() / fn.sum():.0f}%")
    depth = ndimage.distance_transform_edt(truth, sampling=scan.geometry.spacing_mm)
    for lo, hi in DEPTHS_MM:
        m = truth & (depth > lo) & (depth <= hi)
        if m.any():
            lines.append(f"  depth {lo}-{hi if hi < 1000 else '...'} mm: {m.sum() * v:.0f} mL, median p "
                         f"{np.median(prob[m]):.3f}, missed {100 * (m & ~unet).sum() / m.sum():.1f}%")
    gtv = gtv_mask(ct, scan.geometry) if ct.is_dir() else None
    if gtv is not None and gtv.any():
        lines.append(f"  tumour (GTV-1) {gtv.sum() * v:.0f} mL, median {np.median(scan.hu[gtv]):.0f} HU: in the reference "
                     f"{(gtv & truth).sum() * v:.0f} mL, U-Net {(gtv & unet).sum() * v:.0f} mL, baseline "
                     f"{(gtv & base).sum() * v:.0f} mL")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/model.keras", help="a .keras file or bundle folder")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cases", nargs="*", help="evaluate.real_ct names (default: every case with a mask)")
    args = ap.parse_args()
    params = load_params(args.params)
    segmenter = Segmenter.load(args.model, params_path=args.params)
    stage1 = Segmenter(segmenter.model, segmenter.preprocess, segmenter.postprocess.thresholded())
    cases = {k: c for k, c in available(params.evaluate.real_ct).items()
             if c.truth and (not args.cases or k in args.cases)}
    print(f"model {args.model}: preprocess {dataclasses.asdict(segmenter.preprocess)}")
    for name, case in cases.items():
        for line in analyse(name, load_scan(name, case), Path(case.ct), segmenter, stage1):
            print(line, flush=True)


if __name__ == "__main__":
    main()
