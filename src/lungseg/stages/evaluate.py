"""Stage ``evaluate``: score the best checkpoint on the test split, register it, move the alias.

Writes ``reports/metrics.json`` (means and standard deviations, U-Net and baseline; the
real scans of ``evaluate.real_ct`` under ``real_<case>`` keys), ``reports/per_case.csv``,
``<figures_dir>/test/<case>.png`` (the paper's Fig. 6), ``<figures_dir>/real/<case>.png`` and
``reports/real_densitometry.json`` (each real case's lung densitometry from the reference mask and
from each method: :mod:`lungseg.inference.densitometry`), then calls :func:`register`.

Registration is keyed by a hash of the model file and its preprocessing/post-processing
config (tag ``lungseg_key``): running it again for the same model registers nothing new.
``lungseg register`` (run by ``make run`` after ``dvc repro``) does the registration alone
from ``reports/metrics.json``, so a registry that DVC's run-cache skipped over (a fresh
clone, a new ``mlflow.db``) still ends with its champion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from tqdm import tqdm

from lungseg.config import Params, flatten_params
from lungseg.errors import LungsegError
from lungseg.training import tracking

log = logging.getLogger(__name__)

METRICS_JSON = Path("reports/metrics.json")
PER_CASE_CSV = Path("reports/per_case.csv")
REAL_DENSITOMETRY_JSON = Path("reports/real_densitometry.json")


def run(params: Params, processed_dir: Path | None = None, interim_dir: Path | None = None) -> dict:
    """Evaluate ``train.model_path`` on the test split, write the reports and register the model."""
    from lungseg.evaluation.scoring import CaseInputs, evaluate_case, summarize, write_per_case_csv
    from lungseg.figures import plot_prediction
    from lungseg.inference.segmenter import Segmenter
    from lungseg.io.nifti import read_nifti
    from lungseg.nn.model import load_keras_model
    from lungseg.training.dataset import load_split

    processed = Path(processed_dir or params.data.processed_dir)
    interim = Path(interim_dir or params.data.interim_dir)
    test = load_split(processed, "test")
    if not test.cases:
        raise LungsegError(f"{processed / 'test'}: the test split is empty; nothing to evaluate")
    model = load_keras_model(params.train.model_path, hint="; run `lungseg train` first")
    refine = refine_model(params)
    segmenter = Segmenter(model, params.preprocess, params.postprocess, refine)
    # the 64^3 network alone with one threshold (no cascade, no full-resolution surface), for comparison
    compare = refine is not None or params.postprocess.surface.enabled
    stage1 = Segmenter(model, params.preprocess, params.postprocess.thresholded()) if compare else None
    unet_rows, base_rows, stage1_rows = [], [], []
    figures = Path(params.data.figures_dir) / "test"
    for n, case in enumerate(tqdm(test.cases, desc="evaluate", unit="case")):
        try:
            hu, geometry = read_nifti(interim / f"{case}_ct.nii.gz")
            truth, _ = read_nifti(interim / f"{case}_lungs.nii.gz")
        except (OSError, ValueError) as e:
            raise LungsegError(f"{case}: cannot read its prepared CT/labels in {interim} ({e})") from e
        inputs = CaseInputs(case, hu, truth, geometry, test.images[n], test.masks[n])
        unet, base, seg = evaluate_case(segmenter, inputs, with_baseline=params.evaluate.baseline)
        unet_rows.append(unet)
        if base is not None:
            base_rows.append(base)
        if stage1 is not None:
            stage1_rows.append(evaluate_case(stage1, inputs, with_baseline=False)[0])
        if params.evaluate.figures:
            plot_prediction(seg.network_image, test.masks[n], seg.network_probability, figures / f"{case}.png",
                            title=f"{case}: Dice {unet['net_dice']:.4f} (network grid), {unet['dice']:.4f} (CT grid)")
    metrics = {"test_cases": len(unet_rows), "unet": summarize(unet_rows)}
    if base_rows:
        metrics["baseline"] = summarize(base_rows)
    if stage1_rows:
        metrics["stage1"] = summarize(stage1_rows)
    metrics["cascade"] = refine is not None
    metrics["surface"] = params.postprocess.surface.enabled
    metrics["warnings"] = {r["case"]: r["warnings"].split("; ") for r in unet_rows if r["warnings"]}
    tables: dict = {}
    real = evaluate_real_ct(params, segmenter, tables)
    metrics.update({f"real_{name}": rows for name, rows in real.items()})
    METRICS_JSON.parent.mkdir(parents=True, exist_ok=True)
    REAL_DENSITOMETRY_JSON.write_text(json.dumps(tables, indent=1) + "\n")
    METRICS_JSON.write_text(json.dumps(metrics, indent=1) + "\n")
    write_per_case_csv(PER_CASE_CSV, unet_rows, base_rows)
    u = metrics["unet"]
    log.info("test (%d cases): Dice %.4f network grid, %.4f CT grid; HD95 %.2f mm%s", len(unet_rows),
             u["net_dice"]["mean"], u["dice"]["mean"], u["hd95_mm"]["mean"],
             f"; baseline Dice {metrics['baseline']['dice']['mean']:.4f}" if base_rows else "")
    register(params)
    return metrics


def refine_model(params: Params):  # noqa: ANN201 - a Refiner or None
    """The cascade's stage 2 when ``refine.enabled`` (its model must exist then)."""
    if not params.refine.enabled:
        return None
    from lungseg.inference.refine import Refiner
    from lungseg.nn.model import load_keras_model

    return Refiner(load_keras_model(params.refine.model_path, hint="; run `lungseg train_refine` first"), params.refine)


def evaluate_real_ct(params: Params, segmenter, tables: dict | None = None) -> dict:  # noqa: ANN001 - a Segmenter
    """Score ``evaluate.real_ct`` (cases found on disk) with the U-Net and, if on, the baseline;
    ``tables`` receives each case's densitometry (reference mask and each method).

    Draws ``<figures_dir>/real/<case>.png`` (three planes: U-Net, baseline, reference mask).
    """
    from lungseg.evaluation.baseline import segment_lungs
    from lungseg.evaluation.real_ct import evaluate_real, split_sides
    from lungseg.figures import CaseView, plot_cases_three_planes

    methods = {"unet": segmenter.segment}  # a Segmentation: its quality warnings go into the report
    if params.evaluate.baseline:
        methods["baseline"] = segment_lungs
    out_dir = Path(params.data.figures_dir) / "real"
    out_dir.mkdir(parents=True, exist_ok=True)  # a dvc output, even when no real case is found

    def draw(scan, labels: dict) -> None:  # noqa: ANN001 - a RealScan
        views = [CaseView(f"{scan.name} {m}", scan.hu, lab, scan.geometry) for m, lab in labels.items()]
        if scan.truth is not None:
            views.append(CaseView(f"{scan.name} reference", scan.hu, split_sides(scan.truth, scan.geometry), scan.geometry))
        plot_cases_three_planes(views, out_dir / f"{scan.name}.png")

    return evaluate_real(params.evaluate.real_ct, methods, on_labels=draw if params.evaluate.figures else None,
                         densitometry_tables=tables)


def model_key(params: Params) -> str:
    """Hash of the model file and the configs that define its predictions (registration key)."""
    from lungseg.inference.segmenter import config_json

    h = hashlib.sha256(Path(params.train.model_path).read_bytes())
    refine = params.refine if params.refine.enabled else None
    if refine is not None:
        h.update(Path(refine.model_path).read_bytes())
    h.update(json.dumps(config_json(params.preprocess, params.postprocess, refine), sort_keys=True).encode())
    return h.hexdigest()[:32]


def _model_card(params: Params, metrics: dict, tags: dict[str, str]) -> str:
    u, b = metrics["unet"], metrics.get("baseline", {})
    lines = [
        "lungseg 3D U-Net: CT in (any orientation, size, spacing), lung mask out in the scan's own geometry "
        "(1 right, 2 left) with volumes in mL. "
        + (f"Cascade: the 64^3 network finds the lungs, a second U-Net refines them at {params.refine.spacing_mm} mm."
           if params.refine.enabled else "One 64^3 network (the paper's), mapped back onto the CT grid."),
        f"Test split ({metrics['test_cases']} cases): Dice {u['net_dice']['mean']:.4f} at the network grid "
        f"{'x'.join(map(str, params.preprocess.shape))}, {u['dice']['mean']:.4f} on the CT grid "
        f"(right {u['dice_right']['mean']:.4f}, left {u['dice_left']['mean']:.4f}), IoU {u['iou']['mean']:.4f}, "
        f"HD95 {u['hd95_mm']['mean']:.2f} mm, MSD {u['msd_mm']['mean']:.2f} mm.",
    ]
    if b:
        lines.append(f"Classical threshold baseline on the same cases: Dice {b['dice']['mean']:.4f}, "
                     f"HD95 {b['hd95_mm']['mean']:.2f} mm.")
    real = {k[len("real_"):]: v for k, v in metrics.items() if k.startswith("real_")}
    if real:
        parts = []
        for case, rows in real.items():
            unet, base = rows.get("unet", {}), rows.get("baseline", {})
            codes = [w.split(":")[0] for w in unet.get("warnings", [])]
            flag = f" [warned: {', '.join(codes)}]" if codes else ""
            if "dice" in unet:
                parts.append(f"{case} Dice {unet['dice']:.4f}" + (f" (baseline {base['dice']:.4f})" if "dice" in base else "")
                             + flag)
            else:
                parts.append(f"{case} {unet.get('volume_ml', float('nan')):.1f} mL of lung found (none expected){flag}")
        lines.append("Real CT, never trained or tuned on (evaluate.real_ct): " + "; ".join(parts) + ".")
    lines += [
        "Trained on: " + _training_data(params)
        + f" (data {params.data.raw_dir}, processed data md5 {tags['dvc_processed_md5']}); git {tags['git_commit']}.",
        "Input: a CT in HU (base64 .nii/.nii.gz when served; NIfTI or DICOM with `lungseg predict`). Every "
        "prediction carries quality warnings (no lung, partial coverage, ...). Not validated for clinical use.",
    ]
    return "\n\n".join(lines)


def _training_data(params: Params) -> str:
    """What the model was trained on, said plainly (the embedded cohort is synthetic)."""
    if Path(params.data.raw_dir) == Path(params.synthesize.out_dir):
        realism = {k[: -len("_p")]: v for k, v in dataclasses.asdict(params.synthesize.realism).items() if v}
        effects = ", ".join(f"{k} {v:g}" for k, v in realism.items()) or "none"
        return (f"the embedded SYNTHETIC cohort only ({params.synthesize.cases} simulated patients, seed "
                f"{params.synthesize.seed}, real-CT effects: {effects}), no real patient")
    return f"the DICOM/NIfTI cohort in {params.data.raw_dir}"


def register(params: Params) -> dict:
    """Register ``train.model_path`` (once per :func:`model_key`) with the test metrics of
    ``reports/metrics.json``, and move ``evaluate.alias`` to it if its test Dice (CT grid) is
    at least ``evaluate.min_dice`` and at least the current holder's. Returns what happened."""
    from lungseg.inference.serving import log_segmenter_model

    try:
        metrics = json.loads(METRICS_JSON.read_text())
    except (OSError, ValueError) as e:
        raise LungsegError(f"{METRICS_JSON}: cannot read the test metrics ({e}); run `lungseg evaluate` first") from e
    if not Path(params.train.model_path).is_file():
        raise LungsegError(f"{params.train.model_path}: no trained model; run `lungseg train` first")
    name, alias = params.tracking.registered_model, params.evaluate.alias
    key = model_key(params)
    tracking.configure(params.tracking)
    version = tracking.find_model_version(name, "lungseg_key", key)
    u = metrics["unet"]
    dice = float(u["dice"]["mean"])
    if version is None:
        tags = {
            "lungseg_key": key,
            "git_commit": tracking.git_commit(),
            "dvc_processed_md5": tracking.dvc_out_hash(params.data.processed_dir),
            "test_dice": f"{dice:.5f}",
            "test_iou": f"{u['iou']['mean']:.5f}",
            "test_net_dice": f"{u['net_dice']['mean']:.5f}",
            "test_net_iou": f"{u['net_iou']['mean']:.5f}",
            "test_hd95_mm": f"{u['hd95_mm']['mean']:.3f}",
            "test_msd_mm": f"{u['msd_mm']['mean']:.3f}",
            "test_cases": str(metrics["test_cases"]),
            **{f"{k}_{m}": f"{v[m]:.5f}" for k, rows in metrics.items() if k.startswith("real_")
               for m, v in [("dice", rows.get("unet", {})), ("volume_ml", rows.get("unet", {}))] if m in v},
        }
        flat = flatten_params(params)
        with tracking.run("evaluate", tags={**tags, "stage": "evaluate"}):
            tracking.log_params(flat)
            tracking.log_metrics({f"test_{k}": v["mean"] for k, v in u.items() if "mean" in v})
            for path in (METRICS_JSON, PER_CASE_CSV):
                if path.is_file():
                    tracking.log_artifact(path, "reports")
            refine = (Path(params.refine.model_path), params.refine) if params.refine.enabled else None
            uri = log_segmenter_model(params.train.model_path, params.preprocess, params.postprocess, refine=refine)
        param_tags = {f"param.{k}": str(v)[:250] for k, v in flat.items()}
        version = tracking.register_model(uri, name, {**tags, **param_tags}, _model_card(params, metrics, tags))
        log.info("registered %s version %s (test Dice %.4f)", name, version, dice)
    else:
        log.info("%s version %s is this model already: not registered again", name, version)
    current = tracking.alias_version(name, alias)
    current_dice = float(current[1].get("test_dice", "-inf")) if current else float("-inf")
    moved = False
    if current and current[0] == version:
        log.info("alias %s already on version %s", alias, version)
    elif dice >= params.evaluate.min_dice and dice >= current_dice:
        tracking.set_alias(name, alias, version)
        moved = True
        log.info("alias %s -> version %s (test Dice %.4f >= %.4f and >= current %s)", alias, version, dice,
                 params.evaluate.min_dice, f"{current_dice:.4f}" if current else "none")
    else:
        log.warning("alias %s stays on %s: test Dice %.4f is below evaluate.min_dice %.4f or the current %.4f",
                    alias, current[0] if current else "no version", dice, params.evaluate.min_dice, current_dice)
    return {"version": version, "alias_moved": moved, "test_dice": dice, "key": key,
            "champion": version if (moved or (current and current[0] == version)) else (current or [None])[0]}


def main_register(params: Params) -> None:
    """``lungseg register``: registration alone (idempotent)."""
    result = register(params)
    log.info("registered model %s: version %s, %s -> %s", params.tracking.registered_model, result["version"],
             params.evaluate.alias, result["champion"])

