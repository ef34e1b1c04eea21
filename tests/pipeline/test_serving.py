"""The real `mlflow models serve` on 127.0.0.1 and `lungseg predict` on the pipeline's own outputs."""

from __future__ import annotations

import base64
import gzip
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .conftest import BIN, free_port, http_process, run

pytestmark = pytest.mark.pipeline


def _post(url: str, body: bytes, timeout: float = 120) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _case(project: Path) -> tuple[str, Path]:
    split = json.loads((project / "data/interim/split.json").read_text())
    case = sorted(split.get("test") or split["train"])[0]
    return case, project / "data/interim" / f"{case}_ct.nii.gz"


@pytest.fixture(scope="module")
def saved_model(reproduced: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline's trained model saved as the segmenter pyfunc (with the project's configs)."""
    from lungseg.config import load_params
    from lungseg.inference.serving import save_segmenter_model

    params = load_params(reproduced / "params.yaml")
    path = tmp_path_factory.mktemp("served") / "segmenter"
    return save_segmenter_model(path, reproduced / "models/model.keras", params.preprocess, params.postprocess)


@pytest.fixture(scope="module")
def server(saved_model: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", str(saved_model), "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    with http_process(cmd, port, "/ping", log, env) as url:
        yield url

def test_server_segments_a_real_case_like_the_in_process_segmenter(
    server: str, saved_model: Path, reproduced: Path
) -> None:
    from lungseg.inference.segmenter import Segmenter
    from lungseg.io.nifti import read_nifti, read_nifti_bytes

    _, ct_path = _case(reproduced)
    img = nib.load(str(ct_path))
    # the same case stored flipped and permuted: its mask must come back in its own frame
    odd = img.as_reoriented(np.array([[2, -1], [0, 1], [1, -1]]))
    odd_b64 = base64.b64encode(odd.to_bytes()).decode()  # uncompressed .nii
    body = json.dumps({"inputs": [base64.b64encode(ct_path.read_bytes()).decode(), odd_b64]}).encode()
    status, reply = _post(f"{server}/invocations", body)
    assert status == 200, reply
    first, second = reply["predictions"]
    hu, geometry = read_nifti(ct_path)
    labels, g = read_nifti_bytes(base64.b64decode(first["mask"]), "mask")
    assert labels.shape == hu.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(g.affine_ras(), img.affine, atol=1e-4)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    vol = first["volume_ml"]
    assert isinstance(first["warnings"], list) and all(isinstance(w, str) for w in first["warnings"])
    assert ("no lung" in [w.split(":")[0] for w in first["warnings"]]) == (vol["total"] < 50)
    assert vol["right"] == pytest.approx((labels == 1).sum() * geometry.voxel_volume_ml, abs=0.01)
    assert vol["left"] == pytest.approx((labels == 2).sum() * geometry.voxel_volume_ml, abs=0.01)
    assert vol["total"] == pytest.approx(vol["right"] + vol["left"], abs=0.02)
    odd_labels, odd_g = read_nifti_bytes(base64.b64decode(second["mask"]), "mask")
    np.testing.assert_allclose(odd_g.affine_ras(), odd.affine, atol=1e-4)
    expected = nib.Nifti1Image(labels, img.affine).as_reoriented(np.array([[2, -1], [0, 1], [1, -1]]))
    np.testing.assert_array_equal(odd_labels, np.asarray(expected.dataobj))
    # served and in-process give the same answer (one Segmenter)
    local = Segmenter.load(saved_model).segment(np.asarray(hu, np.float32), geometry)
    np.testing.assert_array_equal(local.labels, labels)


@pytest.mark.parametrize(
    "body, words",
    [
        (json.dumps({"inputs": ["%%% not base64"]}), "not valid base64"),
        (json.dumps({"inputs": [base64.b64encode(b"not a nifti at all").decode()]}), "not a readable NIfTI"),
        (json.dumps({"inputs": [base64.b64encode(
            nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4)).to_bytes()).decode()]}), "expected a 3D"),
        (json.dumps({"inputs": [123]}), "Expected type str"),
        (json.dumps({"inputs": "abc"}), "Expected list"),
        (json.dumps({"instances": 1}), "'inputs' key"),
        ("{not json", "valid JSON"),
    ],
)
def test_bad_payloads_get_400_and_the_server_keeps_serving(server: str, body: str, words: str) -> None:
    status, reply = _post(f"{server}/invocations", body.encode())
    assert 400 <= status < 500
    assert words in reply.get("message", "") and len(reply["message"]) < 2000
    with urllib.request.urlopen(f"{server}/ping", timeout=10) as r:
        assert r.status == 200


def test_lungseg_predict_on_nifti_and_dicom_inputs(reproduced: Path, saved_model: Path) -> None:
    case, ct_path = _case(reproduced)
    dicom = next(p for p in (reproduced / "data/raw/synthetic").iterdir() if p.is_dir())
    out = reproduced / "predictions"
    run(["lungseg", "predict", str(ct_path), str(dicom), "--out", str(out), "--model", str(saved_model),
         "--overlay"], reproduced)
    for name in (f"{case}_ct", dicom.name):
        labels = nib.load(str(out / f"{name}_lungs.nii.gz"))
        report = json.loads((out / f"{name}.json").read_text())
        assert set(report["volumes_ml"]) == {"right", "left", "total"}
        assert (out / f"{name}_overlay.png").stat().st_size > 5_000
        assert labels.get_data_dtype() == np.uint8
    src = nib.load(str(ct_path))
    mask = nib.load(str(out / f"{case}_ct_lungs.nii.gz"))
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine, atol=1e-4)


def test_lungseg_predict_without_model_uses_the_champion(reproduced: Path) -> None:
    """After `dvc repro` the evaluate stage has registered the champion; without it the error says what to do."""
    _, ct_path = _case(reproduced)
    # evaluate (evaluate.min_dice 0 in the tiny params) always registers a champion here: a failure is a failure
    # (the hint for a registry without one is tests/unit/inference/test_serving.py::test_missing_champion_is_a_one_line_hint)
    run(["lungseg", "predict", str(ct_path), "--out", str(reproduced / "champion_out")], reproduced)
    name = f"{ct_path.name[:-len('.nii.gz')]}_lungs.nii.gz"
    assert (reproduced / "champion_out" / name).is_file()
    # the champion is read where the SQLite registry keeps it, without importing MLflow ...
    fast = ("import sys; from lungseg.cli import main; rc = main(['predict', sys.argv[1], '--out', sys.argv[2]]); "
            "assert 'mlflow' not in sys.modules, 'MLflow was imported'; sys.exit(rc)")
    run([str(BIN / "python"), "-c", fast, str(ct_path), str(reproduced / "champion_fast")], reproduced)
    # ... and gives the mask of the same version downloaded by MLflow
    download = ("import sys; from lungseg.config import load_params; from lungseg.inference.registry import champion_uri; "
                "from lungseg.inference.serving import download_model; t = load_params('params.yaml').tracking; "
                "download_model(champion_uri(t), sys.argv[1], t)")
    run([str(BIN / "python"), "-c", download, str(reproduced / "champion_download")], reproduced)
    run(["lungseg", "predict", str(ct_path), "--out", str(reproduced / "champion_mlflow"),
         "--model", str(reproduced / "champion_download")], reproduced)
    masks = [np.asarray(nib.load(str(reproduced / out / name)).dataobj)
             for out in ("champion_out", "champion_fast", "champion_mlflow")]
    assert masks[0].any() and np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2])


def test_serving_the_registered_champion_as_the_readme_shows(reproduced: Path, tmp_path_factory) -> None:
    """README "Serve": `mlflow models serve -m models:/lung-segmentation@champion --env-manager local -p PORT`,
    run from the project root with no MLFLOW_TRACKING_URI (MLflow's default sqlite:///mlflow.db there is the
    project's registry), answers the documented request with the champion's mask: the one `lungseg predict`
    (champion by default) writes for the same scan."""
    case, ct_path = _case(reproduced)
    port = free_port()
    log = tmp_path_factory.mktemp("champion-server") / "serve.log"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = ["mlflow", "models", "serve", "-m", "models:/lung-segmentation@champion", "--env-manager", "local",
           "-p", str(port)]
    out = reproduced / "champion_predict"
    run(["lungseg", "predict", str(ct_path), "--out", str(out)], reproduced)
    expected = np.asarray(nib.load(str(out / f"{case}_ct_lungs.nii.gz")).dataobj)
    with http_process(cmd, port, "/ping", log, env, cwd=reproduced) as url:
        body = json.dumps({"inputs": [base64.b64encode(ct_path.read_bytes()).decode()]}).encode()
        status, reply = _post(f"{url}/invocations", body)
    assert status == 200, reply
    (prediction,) = reply["predictions"]
    served = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(prediction["mask"]))).dataobj)
    assert expected.any() and np.array_equal(served, expected)
    report = json.loads((out / f"{case}_ct.json").read_text())
    assert prediction["volume_ml"] == pytest.approx(report["volumes_ml"], abs=0.01)
