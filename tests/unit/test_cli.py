from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lungseg.cli import main


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lungseg.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("synthesize", "prepare"):
        assert command in out


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

from lungseg.data.nifti import write_nifti  # noqa: E402
from lungseg.data.synthetic import make_phantom  # noqa: E402

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-ct"
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
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("lungseg ")


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


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not present (shared real CTs beside the clone)")
def test_no_lung_series_warns_and_exits_zero(case, tmp_path: Path, caplog) -> None:
    _, none, params = case
    series = REAL / "abdomen-lung-bases" / "no-lung-dicom"
    assert main(["--params", str(params), "predict", str(series), "--out", str(tmp_path), "--model", str(none)]) == 0
    report = json.loads((tmp_path / "no-lung-dicom.json").read_text())
    assert [w.split(":")[0] for w in report["warnings"]] == ["no lung"]
    assert any("no lung" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def _dicom_cases(tmp: Path) -> list[Path]:
    from lungseg.data.dicom_write import StudyInfo, make_uid, write_ct_series

    ph = make_phantom(np.random.default_rng([5, 2]), False, max_matrix=64)
    study = StudyInfo(patient_id="CLI1", study_uid=make_uid("CLI1", "study"), frame_of_reference_uid=make_uid("CLI1", "for"))
    write_ct_series(np.rint(ph.hu), ph.geometry, tmp / "phantom", study, make_uid("CLI1", "ct"))
    real = REAL / "copdgene-10002k" / "dicom"
    return [tmp / "phantom"] + ([real] if real.is_dir() else [])


def test_dicom_seg_and_rtstruct_match_the_nifti_output(case, tmp_path: Path) -> None:
    from lungseg.data.dicom import read_ct_folder
    from lungseg.data.nifti import read_nifti
    from tests.unit.data.test_dicom_export import _check_rtstruct, _check_seg

    _, _, params = case
    half = _constant_model(tmp_path / "half.keras", 0.0)
    inputs = _dicom_cases(tmp_path)
    out = tmp_path / "out"
    assert main(["--params", str(params), "predict", *map(str, inputs), "--out", str(out), "--model", str(half),
                 "--threshold", "0.4", "--output-type", "nifti", "dicom-seg", "rtstruct", "-q"]) == 0
    for folder in inputs:
        name = folder.name
        labels, _ = read_nifti(out / f"{name}_lungs.nii.gz")
        assert (labels == 1).sum() > 100 and (labels == 2).sum() > 100
        ct = read_ct_folder(folder)
        _check_seg(out / f"{name}_seg.dcm", ct, labels)  # references, geometry, Dice >= 0.99 per lung
        _check_rtstruct(out / f"{name}_rtstruct.dcm", ct, labels)
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
