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


def _cmd_train(args: argparse.Namespace) -> None:
    from lungseg.stages import train

    train.run(load_params(args.params), processed_dir=args.processed)


def build_parser() -> argparse.ArgumentParser:
    """The ``lungseg`` argument parser with one subcommand per pipeline stage."""
    parser = argparse.ArgumentParser(
        prog="lungseg",
        description="Experiment-tracked 3D lung segmentation of chest CT (one subcommand per dvc stage).",
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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

    p = sub.add_parser("train", help="fit the augmented 3D U-Net, tracked in MLflow")
    p.add_argument("--processed", type=Path, help="processed arrays folder (default: data.processed_dir)")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lungseg`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
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
