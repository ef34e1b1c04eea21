"""Quality warnings: each warning fires on the case it describes and not on a normal one."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.inference.preprocessing import canonical_ornt, to_canonical
from lungseg.inference.quality import assess
from lungseg.io.nifti import read_nifti
from tests.helpers.phantoms import small_patient
from tests.helpers.real_ct import real_ct


@pytest.fixture(scope="module")
def normal():
    return small_patient()


def _volumes(labels: np.ndarray, voxel_ml: float, right_scale: float = 1.0) -> dict[str, float]:
    r, left = float((labels == 1).sum()) * voxel_ml * right_scale, float((labels == 2).sum()) * voxel_ml
    return {"right": r, "left": left, "total": r + left}


def _assess(hu, geometry, labels, probability=None, volumes=None):  # noqa: ANN001, ANN202
    canon = to_canonical(labels, canonical_ornt(geometry))
    return assess(canon, volumes or _volumes(labels, geometry.voxel_volume_ml), hu, probability)


def test_a_normal_whole_chest_case_has_no_warning(normal) -> None:
    hu, geometry, labels = normal
    prob = np.where(labels > 0, 0.97, 0.02).astype(np.float32)
    q = _assess(hu, geometry, labels, prob)
    assert q["warnings"] == [], q
    assert q["checks"]["touches_first_slice"] is False and q["checks"]["uncertain_fraction"] == 0.0
    assert 0.4 <= q["checks"]["side_ratio"] <= 1.0


def test_each_warning_fires_on_its_own_case(normal) -> None:
    hu, geometry, labels = normal
    empty = np.zeros_like(labels)
    assert [w.split(":")[0] for w in _assess(hu, geometry, empty)["warnings"]] == ["no lung"]
    raw = (hu + 1024).astype(np.float32)  # stored values, not HU: no air below -900
    assert any(w.startswith("HU not CT-like") for w in _assess(raw, geometry, labels)["warnings"])
    small = _volumes(labels, geometry.voxel_volume_ml, right_scale=0.2)
    assert any(w.startswith("left/right imbalance") for w in _assess(hu, geometry, labels, volumes=small)["warnings"])
    huge = {"right": 7000.0, "left": 6000.0, "total": 13000.0}
    assert any(w.startswith("implausible volume") for w in _assess(hu, geometry, labels, volumes=huge)["warnings"])
    unsure = np.where(labels > 0, 0.55, 0.0).astype(np.float32)
    q = _assess(hu, geometry, labels, unsure)
    assert any(w.startswith("low confidence") for w in q["warnings"]) and q["checks"]["uncertain_fraction"] == 1.0
    axis = int(np.argmax(np.abs(np.asarray(geometry.direction_matrix)[2])))  # the voxel axis running head-feet
    rows = np.flatnonzero(labels.any(axis=tuple(a for a in range(3) if a != axis)))
    keep = [slice(None)] * 3
    keep[axis] = slice(int(rows[len(rows) // 2]), None)  # the scan starts mid-lung: lung on its edge slice
    cut = labels[tuple(keep)]
    q = assess(to_canonical(cut, canonical_ornt(geometry)), _volumes(cut, geometry.voxel_volume_ml),
               hu[tuple(keep)], None)  # cropping keeps the orientation, so the same ornt applies
    assert [w.split(":")[0] for w in q["warnings"]] == ["partial coverage"], q


def test_the_real_lung_bases_case_is_partial_coverage() -> None:
    hu, geometry = read_nifti(real_ct("abdomen-lung-bases", "ct.nii.gz"))  # skips visibly where absent
    truth, _ = read_nifti(real_ct("abdomen-lung-bases", "lungs.nii.gz"))
    labels = (truth > 0).astype(np.uint8)
    ml = float(labels.sum()) * geometry.voxel_volume_ml
    q = assess(to_canonical(labels, canonical_ornt(geometry)), {"right": ml / 2, "left": ml / 2, "total": ml}, hu, None)
    assert [w.split(":")[0] for w in q["warnings"]] == ["partial coverage"], q
    assert q["checks"]["touches_last_slice"] is True and q["checks"]["touches_first_slice"] is False


def test_aerated_lung_left_out_of_the_mask_is_a_warning(normal) -> None:
    """A model that misses a third of one lung (aerated, joined to what it found) is warned about; airway gas
    (below -950 HU) joined to the lungs and aerated tissue away from them are not counted."""
    from lungseg.inference.quality import aerated_left_out

    hu, geometry, labels = normal
    lungs = labels > 0
    v = geometry.voxel_volume_ml
    left_out = aerated_left_out(lungs, hu)
    assert float(left_out.sum()) * v < 0.03 * float(lungs.sum()) * v  # the right mask leaves (almost) nothing out
    axis = int(np.argmax(np.abs(np.asarray(geometry.direction_matrix)[2])))
    rows = np.flatnonzero((labels == 1).any(axis=tuple(a for a in range(3) if a != axis)))
    missed = np.zeros_like(lungs)
    sl = [slice(None)] * 3
    sl[axis] = slice(int(rows[-1] - len(rows) // 3), None)  # the top third of the right lung
    missed[tuple(sl)] = labels[tuple(sl)] == 1
    partial = np.where(missed, 0, labels).astype(np.uint8)
    gone = float((missed & (hu > -950) & (hu < -600)).sum()) * v
    assert gone > 50.0
    assert float(aerated_left_out(partial > 0, hu).sum()) * v >= 0.9 * gone
    q = assess(to_canonical(partial, canonical_ornt(geometry)), _volumes(partial, v), hu, None,
               float(aerated_left_out(partial > 0, hu).sum()) * v)
    assert any(w.startswith("aerated tissue left out") for w in q["warnings"]), q
    gas = hu.copy()
    gas[missed] = -1000.0  # the same region as gas (an airway, say): not lung the model missed
    assert float(aerated_left_out(partial > 0, gas).sum()) * v < 0.1 * gone
