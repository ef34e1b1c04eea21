"""The ONNX twin of a bundle's networks: same masks as Keras, no TensorFlow import, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import PostprocessConfig, PreprocessConfig, RefineConfig
from lungseg.errors import LungsegError
from lungseg.inference.segmenter import Segmenter, load_network, write_bundle
from tests.helpers.phantoms import small_patient

PRE = PreprocessConfig(shape=(32, 32, 32))
POST = PostprocessConfig()
REFINE = RefineConfig(enabled=True, spacing_mm=4.0, base_filters=2, depth=1)
TIE = 1e-5  # float32 results of two runtimes may differ by ~1e-7: only voxels this close to the threshold may flip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import keras

    from lungseg.nn.model import build_unet3d
    from lungseg.training.refine import build_refine_model

    keras.utils.set_random_seed(3)
    tmp = tmp_path_factory.mktemp("onnx")
    build_unet3d(PRE.shape, base_filters=4, depth=2, dropout=0.0).save(tmp / "stage1.keras")
    build_refine_model(REFINE).save(tmp / "refine.keras")
    return write_bundle(tmp / "bundle", tmp / "stage1.keras", PRE, POST, refine=(tmp / "refine.keras", REFINE))


@pytest.fixture(scope="module")
def phantom():
    return small_patient()[:2]


def test_bundle_holds_both_networks_as_onnx(bundle: Path) -> None:
    assert (bundle / "model.onnx").stat().st_size > 0 and (bundle / "refine.onnx").stat().st_size > 0


def test_onnx_and_keras_give_the_same_mask(bundle: Path, phantom) -> None:
    hu, geometry = phantom
    fast, slow = Segmenter.load(bundle), Segmenter.load(bundle, onnx=False)
    assert (fast.runtime, slow.runtime) == ("onnxruntime", "keras")
    assert fast.refiner is not None and type(fast.refiner.model).__name__ == "OnnxModel"
    a, b = fast.segment(hu, geometry), slow.segment(hu, geometry)
    np.testing.assert_allclose(a.network_probability, b.network_probability, atol=1e-5)
    differ = a.labels != b.labels
    pa, pb = a.probability, b.probability
    ties = (np.abs(pa - POST.threshold) < TIE) | (np.abs(pb - POST.threshold) < TIE)
    assert not (differ & ~ties).any(), f"{int(differ.sum())} voxels differ, {int((differ & ~ties).sum())} not at a tie"
    assert a.volumes_ml["total"] == pytest.approx(b.volumes_ml["total"], abs=ties.sum() * geometry.voxel_volume_ml + 1e-9)


def test_onnx_inference_does_not_import_tensorflow(bundle: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from lungseg.inference.segmenter import Segmenter\n"
        "from lungseg.synthetic import make_phantom\n"
        "ph = make_phantom(np.random.default_rng([5, 1]), False, max_matrix=96)\n"
        f"s = Segmenter.load({str(bundle)!r})\n"
        "seg = s.segment(ph.hu, ph.geometry)\n"
        "print(s.runtime, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["onnxruntime", "False", "False"]


def test_bad_onnx_file_and_unknown_device_are_one_line_errors(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_bytes((bundle / "model.keras").read_bytes())
    (tmp_path / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(LungsegError, match=r"model\.onnx: cannot load the ONNX model"):
        load_network(bad)
    with pytest.raises(LungsegError, match="device 'tpu'"):
        load_network(bad, device="tpu")
