"""The MLflow pyfunc around the Segmenter: contract, bad inputs, saving and loading."""

from __future__ import annotations

import base64
import gzip

import nibabel as nib
import numpy as np
import pytest

from lungseg.config import PostprocessConfig, PreprocessConfig, TrackingConfig
from lungseg.errors import LungsegError
from lungseg.inference.densitometry import REGIONS, densitometry
from lungseg.inference.serving import (
    RequestError,
    SegmenterModel,
    decode_input,
    download_model,
    save_segmenter_model,
)
from lungseg.io.geometry import Geometry
from lungseg.io.nifti import nifti_bytes, read_nifti_bytes

PRE = PreprocessConfig(shape=(16, 16, 16))


@pytest.fixture(scope="module")
def pyfunc(tiny_keras, tmp_path_factory):
    import mlflow

    path = tmp_path_factory.mktemp("pyfunc") / "segmenter"
    save_segmenter_model(path, tiny_keras, PRE, PostprocessConfig())
    return path, mlflow.pyfunc.load_model(str(path))


def _ct() -> tuple[np.ndarray, Geometry, str]:
    """A small CT stored in an oblique-free but non-standard orientation: a dark box in a body."""
    hu = np.full((24, 20, 12), -1000, np.int16)
    hu[3:21, 3:17, :] = 40
    hu[5:10, 6:14, 2:10] = -850
    hu[14:19, 6:14, 2:10] = -850
    g = Geometry((24, 20, 12), (1.5, 1.2, 3.0), (10.0, -5.0, 7.0), ((0, -1, 0), (-1, 0, 0), (0, 0, -1)))
    return hu, g, base64.b64encode(nifti_bytes(hu, g, np.int16)).decode()


def test_contract_mask_has_the_inputs_shape_and_affine(pyfunc) -> None:
    _, model = pyfunc
    hu, g, b64 = _ct()
    out = model.predict([b64, b64])
    assert len(out) == 2 and set(out[0]) == {"mask", "volume_ml", "warnings", "statistics"}
    raw = base64.b64decode(out[0]["mask"])
    assert raw[:2] == b"\x1f\x8b"  # .nii.gz
    labels, mg = read_nifti_bytes(raw, "mask")
    assert labels.shape == hu.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(mg.affine_ras(), g.affine_ras(), atol=1e-5)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    vol = out[0]["volume_ml"]
    assert set(vol) == {"right", "left", "total"}
    assert vol["right"] == pytest.approx((labels == 1).sum() * g.voxel_volume_ml, abs=0.01)
    assert vol["total"] == pytest.approx(vol["right"] + vol["left"], abs=0.02)
    stats = out[0]["statistics"]  # the densitometry of the returned mask on the sent CT
    assert set(stats) == set(REGIONS) and stats == densitometry(labels, hu, g)
    assert stats["right"]["volume_l"] == pytest.approx(vol["right"] / 1000, abs=1e-4)
    codes = [w.split(":")[0] for w in out[0]["warnings"]]
    assert ("no lung" in codes) == (vol["total"] < 50)  # a 24x20x12 toy scan holds well under 50 mL
    assert out[1] == out[0]
    # an uncompressed .nii and URL-safe base64 work too
    plain = base64.urlsafe_b64encode(gzip.decompress(base64.b64decode(b64))).decode()
    assert model.predict([plain])[0]["volume_ml"] == vol


def test_signature_is_a_list_of_strings(pyfunc) -> None:
    _, model = pyfunc
    inputs = model.metadata.signature.inputs
    assert "string" in str(inputs)


@pytest.mark.parametrize(
    "payload, words",
    [
        (["%%% not base64"], "inputs[0]: not valid base64"),
        ([base64.b64encode(b"hello, world").decode()], "inputs[0]: not a readable NIfTI"),
        ([base64.b64encode(nib.Nifti1Image(np.zeros((9, 9), np.int16), np.eye(4)).to_bytes()).decode()],
         "inputs[0]: expected a 3D"),
        ([], "'inputs' is empty"),
        ([""], "inputs[0]: empty string"),
    ],
)
def test_bad_inputs_are_request_errors_with_a_clear_message(pyfunc, payload, words) -> None:
    _, model = pyfunc
    with pytest.raises(Exception) as e:
        model.predict(payload)
    assert words in str(e.value)
    assert getattr(e.value, "error_code", None) == "INVALID_PARAMETER_VALUE"


def test_request_error_keeps_its_message_when_the_scoring_server_rewrites_it() -> None:
    e = RequestError("inputs[0]: not valid base64")
    e.message = "Failed to predict data '<40 MB>'. Error: inputs[0]: not valid base64"
    assert e.message == "inputs[0]: not valid base64" and e.get_http_status_code() == 400
    assert "40 MB" not in e.serialize_as_json()


def test_wrong_types_are_rejected(pyfunc) -> None:
    _, model = pyfunc
    for payload in ([1, 2], "abc"):
        with pytest.raises(Exception) as e:
            model.predict(payload)
        assert getattr(e.value, "error_code", None) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(RequestError, match="expected a base64 string"):
        decode_input(3, 0)
    with pytest.raises(Exception, match="Expected type str, but got bytes"):
        SegmenterModel().predict(None, [b"bytes"])  # type: ignore[list-item]


def test_saved_model_is_self_contained(pyfunc) -> None:
    path, _ = pyfunc
    assert (path / "code" / "lungseg" / "inference" / "segmenter.py").is_file()
    assert (path / "artifacts" / "segmenter" / "model.keras").is_file()
    assert (path / "artifacts" / "segmenter" / "lungseg_config.json").is_file()
    from lungseg.inference.segmenter import Segmenter

    assert Segmenter.load(path).preprocess == PRE  # a saved pyfunc folder is also a --model


def test_missing_champion_is_a_one_line_hint(tmp_path) -> None:
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", registered_model="nothing-here")
    with pytest.raises(LungsegError) as e:
        download_model("models:/nothing-here@champion", tmp_path / "dl", tracking)
    assert "run `make run` first" in str(e.value) and "\n" not in str(e.value)
