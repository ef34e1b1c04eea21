"""``lungseg <command>``: argument parsing only, then one library call per command.

Errors the user can act on (:class:`~lungseg.errors.LungsegError`) are printed as one
line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lungseg.config import DEFAULT_PARAMS, load_params
from lungseg.errors import LungsegError

log = logging.getLogger("lungseg")


def _cmd_synthesize(args: argparse.Namespace) -> None:
    from lungseg.stages import synthesize

    synthesize.run(load_params(args.params), out_dir=args.out, cases=args.cases, seed=args.seed)


def _cmd_prepare(args: argparse.Namespace) -> None:
    from lungseg.stages import prepare

    prepare.run(load_params(args.params), raw_dir=args.raw, out_dir=args.out, fmt=args.format)


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from lungseg.stages import preprocess

    preprocess.run(load_params(args.params), interim_dir=args.interim, out_dir=args.out)


def _cmd_tune(args: argparse.Namespace) -> None:
    from lungseg.stages import tune

    if args.n_trials is not None and args.n_trials < 1:
        raise LungsegError(f"--n-trials must be >= 1, got {args.n_trials}")
    tune.run(load_params(args.params), n_trials=args.n_trials, storage=args.storage, processed_dir=args.processed)


def _cmd_train(args: argparse.Namespace) -> None:
    from lungseg.stages import train

    train.run(load_params(args.params), processed_dir=args.processed)


def _cmd_cv_fold(args: argparse.Namespace) -> None:
    from lungseg.stages import cv_fold

    cv_fold.run(load_params(args.params), args.fold, processed_dir=args.processed, interim_dir=args.interim)


def _cmd_cv_report(args: argparse.Namespace) -> None:
    from lungseg.stages import cv_report

    cv_report.run(load_params(args.params), interim_dir=args.interim)


def _cmd_train_refine(args: argparse.Namespace) -> None:
    from lungseg.stages import train_refine

    train_refine.run(load_params(args.params), processed_dir=args.processed, interim_dir=args.interim)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from lungseg.stages import evaluate

    evaluate.run(load_params(args.params), processed_dir=args.processed, interim_dir=args.interim)


def _cmd_register(args: argparse.Namespace) -> None:
    from lungseg.stages import evaluate

    evaluate.main_register(load_params(args.params))


def _cmd_predict(args: argparse.Namespace) -> None:
    from lungseg.config import Params
    from lungseg.stages import predict

    # predict runs anywhere: without a params file (outside the project) the defaults apply
    outside = args.params == DEFAULT_PARAMS and not args.params.exists()
    params = Params() if outside else load_params(args.params)
    if (args.actors is not None and args.actors < 1) or (args.cpus_per_actor is not None and args.cpus_per_actor <= 0):
        raise LungsegError("--actors must be >= 1 and --cpus-per-actor > 0")
    if (args.actors is not None or args.cpus_per_actor is not None) and args.ray is None:
        raise LungsegError("--actors and --cpus-per-actor need --ray")
    predict.run(params, args.inputs, args.out, model=args.model, overlay=args.overlay,
                params_path=None if outside else args.params,
                output_types=list(dict.fromkeys(args.output_type or ["nifti"])),  # --output-type X --output-type Y
                statistics=args.statistics, threshold=args.threshold, postprocess=not args.no_postprocess,
                device=args.device, progress=not args.quiet, manifest=args.manifest, scan=args.scan,
                shard=args.shard, ray=args.ray, actors=args.actors, cpus_per_actor=args.cpus_per_actor)


def _cmd_merge_results(args: argparse.Namespace) -> None:
    from lungseg.inference.cohort import merge_results

    merge_results(args.tables, args.out)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lungseg {version('lungseg')}"
    except PackageNotFoundError:
        return "lungseg (not installed)"


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a probability strictly between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``lungseg`` argument parser with one subcommand per pipeline stage."""
    parser = argparse.ArgumentParser(
        prog="lungseg",
        description="Experiment-tracked 3D lung segmentation of chest CT (one subcommand per dvc stage).",
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synthesize", help="write the synthetic LCTSC-style cohort (DICOM CT + RTSTRUCT)")
    p.add_argument("--out", type=Path, help="output folder (default: synthesize.out_dir)")
    p.add_argument("--cases", type=int, help="number of patients (default: synthesize.cases)")
    p.add_argument("--seed", type=int, help="random seed (default: synthesize.seed)")
    p.set_defaults(func=_cmd_synthesize)

    p = sub.add_parser("prepare", help="DICOM/NIfTI cohort -> canonical NIfTI pairs, manifest, split")
    p.add_argument("--raw", type=Path, help="raw data folder (default: data.raw_dir)")
    p.add_argument("--out", type=Path, help="output folder (default: data.interim_dir)")
    p.add_argument("--format", choices=["dicom", "nifti"], help="input format (default: prepare.format)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("preprocess", help="NIfTI pairs -> fixed-shape network arrays per split")
    p.add_argument("--interim", type=Path, help="prepared cases folder (default: data.interim_dir)")
    p.add_argument("--out", type=Path, help="output folder (default: data.processed_dir)")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("tune", help="Optuna search over the augmentation values (each trial a nested MLflow run)")
    p.add_argument("--n-trials", type=int, metavar="K",
                   help="run K more trials (e.g. one of several workers); default: top the study up to tune.n_trials")
    p.add_argument("--storage", help="Optuna storage: a .journal file or a database URL (default: tune.storage)")
    p.add_argument("--processed", type=Path, help="processed arrays folder (default: data.processed_dir)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("train", help="fit the augmented 3D U-Net, tracked in MLflow")
    p.add_argument("--processed", type=Path, help="processed arrays folder (default: data.processed_dir)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("cv-fold", help="cross-validation: train fold I on its cases and score its held-out ones")
    p.add_argument("--fold", type=int, required=True, metavar="I", help="fold number, 0 to prepare.split.folds - 1")
    p.add_argument("--processed", type=Path, help="processed arrays folder (default: data.processed_dir)")
    p.add_argument("--interim", type=Path, help="prepared cases folder with folds.json (default: data.interim_dir)")
    p.set_defaults(func=_cmd_cv_fold)

    p = sub.add_parser("cv-report", help="cross-validation: pool the folds into reports/cv.json and MLflow")
    p.add_argument("--interim", type=Path, help="prepared cases folder with folds.json (default: data.interim_dir)")
    p.set_defaults(func=_cmd_cv_report)

    p = sub.add_parser("train_refine", help="fit the cascade's stage-2 network at fine resolution (refine.*)")
    p.add_argument("--processed", type=Path, help="processed arrays folder (default: data.processed_dir)")
    p.add_argument("--interim", type=Path, help="prepared cases folder (default: data.interim_dir)")
    p.set_defaults(func=_cmd_train_refine)

    p = sub.add_parser("predict", help="segment CTs (NIfTI files, DICOM folders; a cohort: --manifest/--scan) "
                       "with a trained model")
    p.add_argument("inputs", type=Path, nargs="*", metavar="INPUT", help="a .nii/.nii.gz CT or a DICOM series folder")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder (<name>_lungs.nii.gz, <name>.json; a cohort: <id>/ per case and results.csv)")
    p.add_argument("--model", help="a .keras file, a saved segmenter folder or an MLflow model URI "
                   "(default: models:/<tracking.registered_model>@champion of the project's registry)")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png (three planes: lung contours over the lung thirds, and the LAA-950 voxels)")
    p.add_argument("--output-type", nargs="+", action="extend", choices=["nifti", "dicom-seg", "rtstruct"],
                   metavar="TYPE", help="one or more (a list, or the flag repeated) of nifti (<name>_lungs.nii.gz, the default), dicom-seg (<name>_seg.dcm) and "
                   "rtstruct (<name>_rtstruct.dcm, ROIs Lung_R/Lung_L); the DICOM ones need a DICOM folder input")
    p.add_argument("--statistics", action="store_true",
                   help="also write <name>_statistics.json and one statistics.csv: lung densitometry per lung, per "
                   "third and in total (CIP's measures: volume, mass, mean/SD/median HU, PD15, Perc10, "
                   "LAA-950/-910/-856 %%, HAA -700/-600/-250 %%)")
    p.add_argument("--threshold", type=_threshold,
                   help="one probability threshold everywhere (turns the model's full-resolution surface off)")
    p.add_argument("--no-postprocess", action="store_true",
                   help="threshold only: keep every component, fill no holes, no full-resolution surface "
                        "(lungs still split right/left)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="auto/cpu: the bundle's ONNX network (no TensorFlow) when it has one, else Keras; "
                   "gpu: Keras on TensorFlow's GPU (error if none; with --ray one actor per GPU)")
    p.add_argument("-q", "--quiet", action="store_true", dest="quiet_here", help="warnings and errors only, no progress bar")
    g = p.add_argument_group("cohort mode (any of these: OUT/<id>/ per case, OUT/results.csv, reruns resume)")
    g.add_argument("--manifest", type=Path, metavar="CSV",
                   help="cases: a CSV with columns id,path (NIfTI file or DICOM folder; relative to the CSV's folder)")
    g.add_argument("--scan", type=Path, metavar="DIR",
                   help="cases: every NIfTI file and DICOM folder under DIR, ids from the relative paths")
    g.add_argument("--shard", metavar="I/N", help="only shard I of N (by a hash of the case id; a job array's "
                   "task), table OUT/results-shard-I-of-N.csv; join them with `lungseg merge-results`")
    g.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run the cases on Ray (pip install 'lungseg[ray]'): a cluster's HOST:PORT or ray://HOST:10001; "
                   "alone or 'auto': RAY_ADDRESS, a `ray start` cluster on this machine, else a local Ray; "
                   "'local': always a new local Ray")
    g.add_argument("--actors", type=int, metavar="N", help="--ray: actors, each loading the model once "
                   "(default: the cluster's CPUs / --cpus-per-actor; with --device gpu its GPUs)")
    g.add_argument("--cpus-per-actor", type=float, metavar="C",
                   help="--ray: CPUs per actor, also its ONNX Runtime threads (default 1)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("merge-results", help="join the results tables of predict's shards into one, sorted by id")
    p.add_argument("tables", type=Path, nargs="+", metavar="TABLE",
                   help="a results CSV, or an output folder (its results-shard-*.csv, else its results.csv)")
    p.add_argument("--out", type=Path, required=True, help="the merged table: .csv, or .parquet")
    p.set_defaults(func=_cmd_merge_results)

    p = sub.add_parser("evaluate", help="test-split metrics and figures; registers the model, moves the alias")
    p.add_argument("--processed", type=Path, help="processed arrays folder (default: data.processed_dir)")
    p.add_argument("--interim", type=Path, help="prepared cases folder (default: data.interim_dir)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("register", help="register the trained model from reports/metrics.json (idempotent)")
    p.set_defaults(func=_cmd_register)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lungseg`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.quiet = args.quiet or getattr(args, "quiet_here", False)  # `lungseg -q predict` or `lungseg predict -q`
    if args.quiet:
        import os

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the registry download's bar
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except LungsegError as e:
        print(f"lungseg {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lungseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
