"""The classical threshold/morphology baseline on synthetic chest CT."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.evaluation.baseline import segment_lungs
from lungseg.evaluation.metrics import dice
from lungseg.io.geometry import Geometry
from lungseg.synthetic import make_phantom


@pytest.fixture(scope="module")
def case():
    ph = make_phantom(np.random.default_rng([3, 0]), False, max_matrix=160)
    return ph, segment_lungs(ph.hu, ph.geometry)


def test_healthy_case_is_segmented(case) -> None:
    ph, labels = case
    assert labels.dtype == np.uint8 and labels.shape == ph.hu.shape
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    truth = ph.masks["Lung_R"] | ph.masks["Lung_L"]
    assert dice(labels > 0, truth) >= 0.9
    assert dice(labels == 1, ph.masks["Lung_R"]) >= 0.85
    assert dice(labels == 2, ph.masks["Lung_L"]) >= 0.85


def test_right_lung_is_label_1_at_negative_x(case) -> None:
    ph, labels = case
    g = ph.geometry
    x1 = g.voxel_to_lps(np.argwhere(labels == 1).mean(axis=0))[0]
    x2 = g.voxel_to_lps(np.argwhere(labels == 2).mean(axis=0))[0]
    assert x1 < x2
    # centroid of the right lung lies to the patient's right of the body midline
    body = ph.hu > -500
    assert x1 < g.voxel_to_lps(np.argwhere(body).mean(axis=0))[0]


def test_trachea_is_excluded(case) -> None:
    ph, labels = case
    for name in ("trachea", "carina"):
        ijk = np.rint(ph.geometry.lps_to_voxel(np.asarray(ph.info["landmarks_lps_mm"][name][0]))).astype(int)
        i, j, k = ijk
        assert not labels[i - 1 : i + 2, j - 1 : j + 2, k].any(), name


def test_left_right_follows_geometry_when_i_runs_to_patient_right(case) -> None:
    """Flip the i axis (direction column i = -x): labels must still name the patient's lungs."""
    ph, labels = case
    g = ph.geometry
    flipped = Geometry(
        shape=g.shape, spacing_mm=g.spacing_mm,
        origin_lps_mm=tuple(g.voxel_to_lps(np.array([g.shape[0] - 1, 0, 0]))),
        direction=((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    )  # fmt: skip
    out = segment_lungs(ph.hu[::-1], flipped)
    assert np.array_equal(out, labels[::-1])


def test_bad_shape_is_an_error(case) -> None:
    ph, _ = case
    with pytest.raises(ValueError, match="shape"):
        segment_lungs(ph.hu[:, :, :-1], ph.geometry)
