"""The Segmenter: geometry round trip, orientation, left/right, volumes, inputs, batches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lungseg.cli import main
from lungseg.config import PostprocessConfig, PreprocessConfig
from lungseg.errors import CaseError
from lungseg.evaluation.metrics import dice
from lungseg.inference.batch import predict_paths
from lungseg.inference.preprocessing import GridMap, preprocess_image, preprocess_mask
from lungseg.inference.segmenter import (
    CONFIG_FILE,
    Segmenter,
    case_name,
    config_json,
    load_ct,
    postprocess_box,
    read_config_json,
    resample_back_box,
    write_bundle,
)
from lungseg.io.geometry import Geometry
from lungseg.io.nifti import read_nifti, write_nifti
from tests.helpers.phantoms import small_patient


def resample_back(grid, lo, hi, full_shape):  # noqa: ANN001, ANN201
    """Reference: the same box-edge linear interpolation as one scipy ``affine_transform``."""
    from scipy import ndimage

    size = tuple(h - a for a, h in zip(lo, hi))
    scale = np.array([s / n for n, s in zip(size, grid.shape)])
    offset = np.array([0.5 * s / n - 0.5 for n, s in zip(size, grid.shape)])
    out = np.zeros(full_shape, dtype=np.float32)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = ndimage.affine_transform(
        np.asarray(grid, np.float32), scale, offset=offset, output_shape=size, order=1, mode="nearest")
    return out


REPO = Path(__file__).resolve().parents[3]
PRE = PreprocessConfig(shape=(32, 32, 32))
POST = PostprocessConfig()
# flip axes 0 and 2, then permute (i, j, k) -> (k', i', j'): a scan stored in a non-standard order
ORNT = np.array([[1, -1], [2, 1], [0, -1]])


class OracleModel:
    """Stands in for a perfect network: returns the true lung mask on the network grid.

    The network grid is canonical RAS, so the same output is right for any storage order of
    the same scan; what is tested is everything around the network.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.output = mask.astype(np.float32)[None, ..., None]
        self.input_shape = (None, *mask.shape, 1)
        self.inputs: list[np.ndarray] = []

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        assert not training and x.shape == self.output.shape
        self.inputs.append(np.array(x))
        return self.output


def reoriented(volume: np.ndarray, geometry: Geometry, ornt: np.ndarray = ORNT) -> tuple[np.ndarray, Geometry]:
    """The same scan stored with its axes flipped/permuted by ``ornt`` (affine updated to match)."""
    img = nib.Nifti1Image(volume, geometry.affine_ras()).as_reoriented(ornt)
    data = np.asarray(img.dataobj)
    return data, Geometry.from_affine_ras(img.affine, data.shape)


@pytest.fixture(scope="module")
def phantom():
    return small_patient()


@pytest.fixture(scope="module")
def oracle_result(phantom):
    hu, geometry, truth = phantom
    _, grid = preprocess_image(hu, geometry, PRE)
    model = OracleModel(preprocess_mask(truth, grid))
    return Segmenter(model, PRE, POST).segment(hu, geometry), model


def test_output_on_the_input_grid_with_labels_and_volumes(phantom, oracle_result) -> None:
    hu, geometry, truth = phantom
    seg, _ = oracle_result
    assert seg.labels.shape == hu.shape and seg.labels.dtype == np.uint8
    assert seg.probability.shape == hu.shape and seg.probability.dtype == np.float32
    assert seg.network_probability.shape == PRE.shape and seg.network_image.shape == PRE.shape
    assert set(np.unique(seg.labels).tolist()) == {0, 1, 2}
    v = geometry.voxel_volume_ml
    assert seg.volumes_ml["right"] == pytest.approx((seg.labels == 1).sum() * v)
    assert seg.volumes_ml["left"] == pytest.approx((seg.labels == 2).sum() * v)
    assert seg.volumes_ml["total"] == pytest.approx(seg.volumes_ml["right"] + seg.volumes_ml["left"])
    assert set(seg.timings_s) == {"preprocess", "infer", "map_back", "postprocess", "quality"}
    # a perfect network at 32^3 maps back onto the 96x96 grid closely, each lung on its own side
    assert dice(seg.labels > 0, truth > 0) >= 0.9
    assert dice(seg.labels == 1, truth == 1) >= 0.88
    assert dice(seg.labels == 2, truth == 2) >= 0.88


def test_full_resolution_surface_beats_one_threshold(phantom, oracle_result) -> None:
    """A perfect 32^3 network: the surface snapped to the CT's edge is closer to the truth than the
    thresholded interpolation (the map-back ceiling of a coarse network)."""
    hu, geometry, truth = phantom
    snapped, model = oracle_result
    plain = dataclasses.replace(POST, surface=dataclasses.replace(POST.surface, enabled=False))
    thresholded = Segmenter(model, PRE, plain).segment(hu, geometry).labels
    d_snapped, d_plain = dice(snapped.labels > 0, truth > 0), dice(thresholded > 0, truth > 0)
    assert d_snapped >= d_plain + 0.01, (d_snapped, d_plain)
    assert d_snapped >= 0.97
    assert dice(snapped.labels == 1, truth == 1) >= 0.96 and dice(snapped.labels == 2, truth == 2) >= 0.96


def test_right_lung_is_label_1_on_the_patients_right(phantom, oracle_result) -> None:
    _, geometry, _ = phantom
    seg, _ = oracle_result
    x = [geometry.voxel_to_lps(np.argwhere(seg.labels == label).mean(axis=0))[0] for label in (1, 2)]
    assert x[0] < x[1]  # patient right = smaller LPS x


def test_flipped_and_permuted_scan_gets_the_same_mask_in_its_own_frame(phantom, oracle_result) -> None:
    hu, geometry, truth = phantom
    seg, model = oracle_result
    hu_f, geometry_f = reoriented(hu, geometry)
    truth_f, _ = reoriented(truth, geometry)
    assert hu_f.shape != hu.shape  # really permuted
    seg_f = Segmenter(model, PRE, POST).segment(hu_f, geometry_f)
    np.testing.assert_array_equal(model.inputs[-1], model.inputs[0])  # identical network input
    expected, _ = reoriented(seg.labels, geometry)
    np.testing.assert_array_equal(seg_f.labels, expected)
    np.testing.assert_allclose(seg_f.probability, reoriented(seg.probability, geometry)[0], atol=1e-6)
    assert dice(seg_f.labels == 1, truth_f == 1) == pytest.approx(dice(seg.labels == 1, truth == 1))
    assert seg_f.volumes_ml == pytest.approx(seg.volumes_ml)


def test_separable_map_back_equals_preprocessing_resample_back() -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((8, 6, 4)).astype(np.float32)
    grid = GridMap((40, 30, 9), ((0.0, 1.0), (1.0, 1.0), (2.0, 1.0)), (40, 30, 9), (3, 2, 1), (38, 25, 8), (8, 6, 4))
    full = resample_back(prob, grid.crop_lo, grid.crop_hi, grid.canonical_shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(grid.crop_lo, grid.crop_hi))
    np.testing.assert_allclose(resample_back_box(prob, grid), full[box], atol=1e-6)


def _blob(shape, centre, radius) -> np.ndarray:
    idx = np.indices(shape)
    return sum((idx[a] - centre[a]) ** 2 for a in range(3)) <= radius**2


def test_postprocess_keeps_two_lungs_fills_holes_and_splits_merged() -> None:
    shape = (60, 30, 20)
    right, left = _blob(shape, (42, 15, 10), 8), _blob(shape, (16, 15, 10), 8)
    mask = right | left | _blob(shape, (30, 3, 3), 1)  # a speck
    mask[42, 15, 10] = False  # a hole inside the right lung
    labels = postprocess_box(mask, True, 1.0 / 1000, PostprocessConfig(min_component_ml=0.05))
    assert labels[42, 15, 10] == 1 and labels[30, 3, 3] == 0  # hole filled, speck dropped
    assert (labels == 1).sum() == right.sum() and (labels == 2).sum() == left.sum()
    # axis 0 towards the patient's left instead: sides swap
    swapped = postprocess_box(mask, False, 1.0 / 1000, PostprocessConfig(min_component_ml=0.05))
    assert swapped[42, 15, 10] == 2
    # keep all components: the speck stays, on the side of the nearer lung
    every = postprocess_box(mask, True, 1.0 / 1000, PostprocessConfig(keep_components=0, min_component_ml=0.0))
    assert every[30, 3, 3] in (1, 2)
    # lungs joined by a bridge: one component, cut into two at the narrowest column
    merged = right | left
    merged[16:43, 14:17, 9:12] = True
    cut = postprocess_box(merged, True, 1.0 / 1000, PostprocessConfig(min_component_ml=0.05))
    assert (cut == 1).sum() > 0.9 * right.sum() and (cut == 2).sum() > 0.9 * left.sum()
    assert cut[42, 15, 10] == 1 and cut[16, 15, 10] == 2
    assert not postprocess_box(np.zeros(shape, bool), True, 0.001, POST).any()


def test_gas_components_are_dropped_before_the_two_largest_are_kept() -> None:
    """Bowel gas the network called lung (larger than both lung bases, HU about -1000) must not push
    the lungs (parenchyma about -850 HU, emphysematous patches below -950) out of the two kept."""
    shape = (60, 40, 20)
    right, left = _blob(shape, (46, 12, 14), 6), _blob(shape, (14, 12, 14), 6)
    gas = _blob(shape, (30, 30, 8), 9) & ~right & ~left
    hu = np.full(shape, 40.0, np.float32)
    hu[right | left] = -850.0
    hu[right & (np.indices(shape)[1] < 10)] = -980.0  # an emphysematous part of the right lung
    hu[gas] = -1000.0
    hu[gas & (np.indices(shape)[0] % 3 == 0)] = -200.0  # stool: 1/3 of the gas component's voxels
    mask = right | left | gas
    assert (hu[right] < -950).mean() > 0.2 and gas.sum() > right.sum()
    labels = postprocess_box(mask, True, 1.0 / 1000, PostprocessConfig(min_component_ml=0.05), hu)
    assert (labels == 1).sum() == right.sum() and (labels == 2).sum() == left.sum() and not labels[gas].any()
    # without the CT, or with the check off, the gas wins a place
    assert postprocess_box(mask, True, 1.0 / 1000, PostprocessConfig(min_component_ml=0.05))[gas].all()
    off = PostprocessConfig(min_component_ml=0.05, max_gas_fraction=1.0)
    assert postprocess_box(mask, True, 1.0 / 1000, off, hu)[gas].all()


def test_label_counts_equal_bincount_slab_by_slab() -> None:
    """The slab-wise count (no whole-volume int64 copy) is np.bincount's, with and without a selection."""
    from lungseg.morphology import label_counts

    rng = np.random.default_rng(3)
    lab = rng.integers(0, 7, size=(40, 300, 200)).astype(np.int32)  # 60,000 voxels a plane: slabs of 17 planes
    where = rng.random(lab.shape) < 0.3
    np.testing.assert_array_equal(label_counts(lab, 8), np.bincount(lab.ravel(), minlength=9))
    np.testing.assert_array_equal(label_counts(lab, 6, where), np.bincount(lab[where], minlength=7))
    np.testing.assert_array_equal(label_counts(lab[:, :, ::-1].T, 6), np.bincount(lab.ravel(), minlength=7))


def test_labels_are_column_major_like_the_ct(phantom, oracle_result) -> None:
    """The labels are written through their canonical view into a column-major array (no canonical copy): slices
    contiguous, as the NIfTI and DICOM writers read them; the same values as in C order (the other tests)."""
    seg, _ = oracle_result
    assert seg.labels.flags.f_contiguous and seg.labels.shape == phantom[0].shape


def test_lungseg_turns_numpys_huge_pages_off_unless_the_user_chose() -> None:
    """Importing lungseg first (as the CLI does) sets NUMPY_MADVISE_HUGEPAGE=0 before numpy reads it (see
    lungseg.nn.runtime); a value the user set is kept."""
    import os
    import subprocess
    import sys

    check = "import lungseg, numpy._core.multiarray as m; print(m._get_madvise_hugepage())"
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    for value, expected in ((None, "False"), ("1", "True")):
        run_env = env if value is None else {**env, "NUMPY_MADVISE_HUGEPAGE": value}
        out = subprocess.run([sys.executable, "-c", check], env=run_env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected


def test_load_ct_reads_nifti_and_a_dicom_folder_alike(phantom, tmp_path: Path) -> None:
    from lungseg.io.dicom_write import StudyInfo, make_uid, write_ct_series

    hu, geometry, _ = phantom
    write_nifti(hu, geometry, tmp_path / "scan.nii.gz", np.int16)
    a, ga = load_ct(tmp_path / "scan.nii.gz")
    study = StudyInfo(patient_id="P1", study_uid=make_uid("s"), frame_of_reference_uid=make_uid("f"))
    write_ct_series(hu, geometry, tmp_path / "dicom" / "series", study, make_uid("ct"))
    b, gb = load_ct(tmp_path / "dicom")
    assert a.dtype == np.float32 and b.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ga.affine_ras(), gb.affine_ras(), atol=1e-4)


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), flat)
    thin = tmp_path / "thin.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.int16), np.eye(4)), thin)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not a NIfTI file")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    for path, words in [(flat, "3D"), (thin, "3D"), (junk, "not a readable NIfTI"), (empty, "no DICOM CT"),
                        (tmp_path / "missing.nii.gz", "no such file")]:
        with pytest.raises(CaseError) as e:
            load_ct(path)
        assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_bundle_configs_keep_their_normalisation(tmp_path: Path) -> None:
    """A bundle records preprocess.normalize; one written before the key existed was trained on per-crop
    standardisation and is read as ``volume`` (not the new ``fixed`` default)."""
    path = tmp_path / CONFIG_FILE
    content = config_json(PreprocessConfig(), PostprocessConfig())
    path.write_text(json.dumps(content))
    assert read_config_json(path)[0].normalize == "fixed"
    for key in ("normalize", "norm_mean", "norm_sd"):
        del content["preprocess"][key]
    path.write_text(json.dumps(content))
    assert read_config_json(path)[0].normalize == "volume"


def test_case_names() -> None:
    assert case_name("/x/My Scan (1).nii.gz") == "My_Scan__1_"
    assert case_name("a/b/ct.NII") == "ct"
    assert case_name("/x/.hidden.nii") == "hidden"


def test_predict_paths_writes_masks_on_the_input_grid_and_survives_a_bad_case(
    phantom, tiny_keras: Path, tmp_path: Path
) -> None:
    hu, geometry, _ = phantom
    hu_f, geometry_f = reoriented(hu, geometry)
    src = tmp_path / "in"
    src.mkdir()
    write_nifti(hu_f, geometry_f, src / "odd orientation.nii.gz", np.int16)
    (src / "broken.nii.gz").write_bytes(b"\x1f\x8b broken")
    bundle = write_bundle(tmp_path / "bundle", tiny_keras, PRE, POST)
    segmenter = Segmenter.load(bundle)
    results = predict_paths([src / "broken.nii.gz", src / "odd orientation.nii.gz"], tmp_path / "out", segmenter,
                            overlay=True, progress=False)
    assert results[0].error and "broken.nii.gz" in results[0].error and results[1].error is None
    labels, g = read_nifti(tmp_path / "out" / "odd_orientation_lungs.nii.gz")
    assert labels.shape == hu_f.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(g.affine_ras(), geometry_f.affine_ras(), atol=1e-5)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    report = json.loads((tmp_path / "out" / "odd_orientation.json").read_text())
    assert report["volumes_ml"]["total"] == pytest.approx((labels > 0).sum() * g.voxel_volume_ml, abs=0.05)
    assert {"load", "preprocess", "infer", "map_back", "postprocess", "write", "total"} <= set(report["timings_s"])
    assert (tmp_path / "out" / "odd_orientation_overlay.png").stat().st_size > 0


def test_cli_predict_with_a_keras_file_and_exit_code(phantom, tiny_keras: Path, tmp_path: Path, capsys) -> None:
    hu, geometry, _ = phantom
    write_nifti(hu, geometry, tmp_path / "case.nii.gz", np.int16)
    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  shape: [32, 32, 32]\nmodel:\n  depth: 1\n")
    assert not (tiny_keras.parent / CONFIG_FILE).exists()  # configs come from --params
    options = ["--out", str(tmp_path / "o"), "--model", str(tiny_keras)]
    head = ["--params", str(params), "predict", str(tmp_path / "case.nii.gz")]
    assert main([*head, *options]) == 0
    assert (tmp_path / "o" / "case_lungs.nii.gz").exists() and (tmp_path / "o" / "case.json").exists()
    capsys.readouterr()
    assert main([*head, str(tmp_path / "nope.nii.gz"), *options]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lungseg predict: error: 1 of 2 cases failed") and "nope.nii.gz" in err[-1]


def _real_case() -> tuple[Path, Path] | None:
    interim, model = REPO / "data" / "interim", REPO / "models" / "model.keras"
    if not model.exists() or not interim.is_dir():
        return None
    split = interim / "split.json"
    cases = json.loads(split.read_text()).get("test", []) if split.exists() else []
    cases = cases or sorted(p.name[: -len("_ct.nii.gz")] for p in interim.glob("*_ct.nii.gz"))
    return (interim / f"{cases[0]}_ct.nii.gz", interim / f"{cases[0]}_lungs.nii.gz") if cases else None


@pytest.mark.skipif(_real_case() is None, reason="needs models/model.keras and data/interim (after `make run`)")
def test_trained_model_on_a_flipped_permuted_real_case(tmp_path: Path) -> None:
    """Acceptance: a prepared case stored flipped and permuted gets a mask that equals the
    un-flipped prediction transformed the same way and matches its own ground truth (Dice >= 0.95)."""
    ct_path, gt_path = _real_case()  # type: ignore[misc]
    segmenter = Segmenter.load(REPO / "models" / "model.keras", params_path=REPO / "params.yaml")
    hu, geometry = load_ct(ct_path)
    truth, _ = read_nifti(gt_path)
    hu_f, geometry_f = reoriented(hu, geometry)
    truth_f, _ = reoriented(truth, geometry)
    seg = segmenter.segment(hu, geometry)
    seg_f = segmenter.segment(hu_f, geometry_f)
    np.testing.assert_array_equal(seg_f.labels, reoriented(seg.labels, geometry)[0])
    assert dice(seg_f.labels > 0, truth_f > 0) >= 0.95
    assert dice(seg_f.labels == 1, truth_f == 1) >= 0.9 and dice(seg_f.labels == 2, truth_f == 2) >= 0.9
