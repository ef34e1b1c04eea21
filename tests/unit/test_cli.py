from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from lungseg.cli import main

REPO = Path(__file__).resolve().parents[2]


def _stage_commands() -> dict[str, str]:
    """``{stage name: cmd}`` of dvc.yaml and the two pipelines beside it (a foreach stage as ``name`` with ``${item}``)."""
    out = {}
    for path in (REPO / "dvc.yaml", *sorted((REPO / "pipelines").glob("*/dvc.yaml"))):
        for name, stage in yaml.safe_load(path.read_text())["stages"].items():
            out[name] = stage["do"]["cmd"] if "foreach" in stage else stage["cmd"]
    return out


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lungseg.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = {shlex.split(cmd)[1] for cmd in _stage_commands().values()}
    assert {"synthesize", "prepare", "preprocess", "tune", "train", "train_refine", "evaluate", "cv-fold",
            "cv-report"} == commands
    for command in (*commands, "predict", "register"):
        assert re.search(rf"^\s+{re.escape(command)}\s", out, re.MULTILINE), command


def test_mlproject_entry_points_run_the_dvc_stage_commands(tmp_path: Path) -> None:
    """README: each stage is also an MLflow Project entry point. MLflow's own MLproject reader: every dvc stage
    of dvc.yaml and pipelines/synthetic (and the cv_fold stages) has an entry point running its command with
    ``--params``; every command an entry point runs parses with lungseg's parser or is a `dvc repro` of a file
    that exists. (pipelines/cv's cv_report has no entry point of its own: the `cv` entry point runs it.)"""
    from mlflow.projects import _project_spec

    from lungseg.cli import build_parser

    project = _project_spec.load_project(str(REPO))
    names = set(yaml.safe_load((REPO / "MLproject").read_text())["entry_points"])
    stages = _stage_commands()
    for name, cmd in stages.items():
        if name == "cv_report":
            continue
        entry = project.get_entry_point(name)
        params = {"params": "other.yaml", **({"fold": 3} if name == "cv_fold" else {})}
        expected = cmd.replace("lungseg ", "lungseg --params other.yaml ", 1).replace("${item}", "3")
        assert entry.compute_command(params, str(tmp_path)) == expected, name
    parser = build_parser()
    for name in names:
        for part in project.get_entry_point(name).compute_command({}, str(tmp_path)).split("&&"):
            argv = shlex.split(part)
            if argv[0] == "lungseg":
                args = parser.parse_args(argv[1:])
                assert args.params == Path("params.yaml") and args.command in {name, name.replace("_", "-"), "register"}
            else:
                assert argv[:2] == ["dvc", "repro"] and all((REPO / a).is_file() for a in argv[2:]), (name, argv)
    assert names == {*stages, "main", "cv"} - {"cv_report"}


def test_bad_params_key_is_one_line_error(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  on_eror: skip\n")
    code = main(["--params", str(params), "prepare", "--raw", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "prepare.on_eror" in err[0] and "Traceback" not in err[0]


# --------------------------------------------------------------------------- predict's options

import csv  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lungseg.io.nifti import write_nifti  # noqa: E402
from lungseg.synthetic import make_phantom  # noqa: E402
from tests.helpers.real_ct import real_ct  # noqa: E402

PARAMS = "preprocess:\n  shape: [16, 16, 16]\n"


def _constant_model(path: Path, logit: float) -> Path:
    """A network whose output is sigmoid(logit) everywhere (e.g. a model that finds no lung)."""
    import keras

    inp = keras.Input((16, 16, 16, 1))
    out = keras.layers.Conv3D(1, 1, activation="sigmoid", kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(logit))(inp)
    keras.Model(inp, out).save(path)
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    ph = make_phantom(np.random.default_rng([5, 1]), False, max_matrix=64)
    write_nifti(ph.hu, ph.geometry, tmp / "case.nii.gz", np.int16)
    (tmp / "params.yaml").write_text(PARAMS)
    return tmp / "case.nii.gz", _constant_model(tmp / "none.keras", -12.0), tmp / "params.yaml"


def test_version(capsys) -> None:
    """The installed distribution's version (a missing install is an error here, not "lungseg (not installed)"),
    which is pyproject's and the package's."""
    import tomllib
    from importlib.metadata import version

    import lungseg

    installed = version("lungseg")
    assert installed == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == lungseg.__version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"lungseg {installed}\n"


def test_dicom_output_for_a_nifti_input_is_one_line_and_writes_nothing(case, tmp_path: Path, capsys) -> None:
    ct, model, params = case
    out = tmp_path / "out"
    code = main(["--params", str(params), "predict", str(ct), "--out", str(out), "--model", str(model),
                 "--output-type", "nifti", "rtstruct"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "case.nii.gz" in err[0] and "needs a DICOM series folder" in err[0]
    assert not out.exists()


def test_quiet_statistics_threshold_and_no_postprocess(case, tmp_path: Path, capsys) -> None:
    ct, _, params = case
    half = _constant_model(tmp_path / "half.keras", 0.0)  # probability 0.5 everywhere in the crop box
    out = tmp_path / "out"
    base = ["--params", str(params), "predict", str(ct), "--out", str(out), "--model", str(half), "--statistics"]
    assert main([*base, "-q", "--threshold", "0.4", "--no-postprocess"]) == 0
    assert "predict:" not in capsys.readouterr().err  # no progress bar
    report = json.loads((out / "case.json").read_text())
    stats = json.loads((out / "case_statistics.json").read_text())
    assert report["volumes_ml"]["total"] > 0 and stats["total"]["volume_l"] == pytest.approx(report["volumes_ml"]["total"] / 1000, abs=1e-4)
    assert stats["right"]["hu_mean"] is not None and 0.0 <= stats["total"]["laa950_pct"] <= 100.0
    rows = list(csv.DictReader((out / "statistics.csv").open()))  # one row per case, the same figures
    assert [r["case"] for r in rows] == ["case"] and float(rows[0]["left_lower_hu_mean"]) == stats["left_lower"]["hu_mean"]
    assert any(w.startswith("low confidence") for w in report["warnings"])  # all of it at p = 0.5
    assert main([*base, "--threshold", "0.6"]) == 0  # above 0.5: nothing is lung
    assert json.loads((out / "case.json").read_text())["volumes_ml"]["total"] == 0.0
    with pytest.raises(SystemExit):
        main([*base, "--threshold", "1.5"])


def test_no_lung_series_warns_and_exits_zero(case, tmp_path: Path, caplog) -> None:
    _, none, params = case
    series = real_ct("abdomen-lung-bases", "no-lung-dicom")
    assert main(["--params", str(params), "predict", str(series), "--out", str(tmp_path), "--model", str(none)]) == 0
    report = json.loads((tmp_path / "no-lung-dicom.json").read_text())
    assert [w.split(":")[0] for w in report["warnings"]] == ["no lung"]
    assert any("no lung" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def _dicom_case(which: str, tmp: Path) -> Path:
    """The phantom written as a DICOM CT series, or the shared real COPDGene series (skipped visibly if absent)."""
    from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series

    if which == "copdgene":
        return real_ct("copdgene-10002k", "dicom")
    ph = make_phantom(np.random.default_rng([5, 2]), False, max_matrix=64)
    study = StudyInfo(patient_id="CLI1", study_uid=make_uid("CLI1", "study"), frame_of_reference_uid=make_uid("CLI1", "for"))
    write_ct_series(np.rint(ph.hu), ph.geometry, tmp / "phantom", study, make_uid("CLI1", "ct"))
    return tmp / "phantom"


@pytest.mark.parametrize("which", ["phantom", "copdgene"])
def test_dicom_seg_and_rtstruct_match_the_nifti_output(case, tmp_path: Path, which: str) -> None:
    from lungseg.io.dicom import read_ct_folder
    from lungseg.io.nifti import read_nifti
    from tests.helpers.dicom_checks import check_rtstruct, check_seg

    _, _, params = case
    half = _constant_model(tmp_path / "half.keras", 0.0)
    inputs = [_dicom_case(which, tmp_path)]
    out = tmp_path / "out"
    assert main(["--params", str(params), "predict", *map(str, inputs), "--out", str(out), "--model", str(half),
                 "--threshold", "0.4", "--output-type", "nifti", "dicom-seg", "rtstruct", "-q"]) == 0
    for folder in inputs:
        name = folder.name
        labels, _ = read_nifti(out / f"{name}_lungs.nii.gz")
        assert (labels == 1).sum() > 100 and (labels == 2).sum() > 100
        ct = read_ct_folder(folder)
        check_seg(out / f"{name}_seg.dcm", ct, labels)  # references, geometry, Dice >= 0.99 per lung
        check_rtstruct(out / f"{name}_rtstruct.dcm", ct, labels)
        report = json.loads((out / f"{name}.json").read_text())
        assert report["outputs"] == {"nifti": f"{name}_lungs.nii.gz", "dicom-seg": f"{name}_seg.dcm",
                                     "rtstruct": f"{name}_rtstruct.dcm"}


def test_output_type_takes_a_list_or_the_flag_repeated() -> None:
    from lungseg.cli import build_parser

    parser = build_parser()
    listed = parser.parse_args(["predict", "ct.nii.gz", "--out", "o", "--output-type", "dicom-seg", "rtstruct"])
    repeated = parser.parse_args(["predict", "ct.nii.gz", "--out", "o", "--output-type", "dicom-seg",
                                  "--output-type", "rtstruct"])
    assert listed.output_type == repeated.output_type == ["dicom-seg", "rtstruct"]  # not only the last one
    assert parser.parse_args(["predict", "ct.nii.gz", "--out", "o"]).output_type is None  # the default: nifti


def test_cv_fold_out_of_range_or_without_folds_is_one_line(tmp_path: Path, capsys) -> None:
    import json

    assert main(["cv-fold", "--fold", "0", "--interim", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "folds.json: cannot read the cross-validation folds" in err[0] and "lungseg prepare" in err[0]
    (tmp_path / "folds.json").write_text(json.dumps({"k": 2, "seed": 42, "folds": [{"train": [], "val": [], "test": []}] * 2}))
    assert main(["cv-fold", "--fold", "5", "--interim", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lungseg cv-fold: error: --fold 5: {tmp_path}/folds.json has folds 0 to 1"]
