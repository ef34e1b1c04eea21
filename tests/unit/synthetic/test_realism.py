"""Synthetic-to-real effects: each does what it says, masks stay consistent, off means unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import RealismConfig
from lungseg.synthetic import make_phantom, synthesize_cohort
from lungseg.synthetic.realism import apply_realism
from tests.helpers.digests import file_digests


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng([7, 3]), pathology=False, max_matrix=96)


def _only(name: str) -> RealismConfig:
    return RealismConfig(**{f"{name}_p": 1.0})


def _lungs(ph) -> np.ndarray:
    return ph.masks["Lung_R"] | ph.masks["Lung_L"]


def _apply(ph, name: str, seed: int = 0):
    return apply_realism(ph, _only(name), np.random.default_rng(seed))


def test_off_changes_nothing(phantom) -> None:
    out = apply_realism(phantom, RealismConfig(), np.random.default_rng(0))
    assert out.hu is phantom.hu and out.info["realism"] == []


def test_each_effect_is_reproducible_and_keeps_masks_on_the_grid(phantom) -> None:
    for name in ("bases_only", "apex_cut", "bowel_gas", "arms", "fissures", "streaks", "low_dose", "fov_padding"):
        a, b = _apply(phantom, name, 6), _apply(phantom, name, 6)
        assert np.array_equal(a.hu, b.hu), name
        assert a.hu.shape == tuple(a.geometry.shape) and all(m.shape == a.hu.shape for m in a.masks.values()), name
        assert name in a.info["realism"], name  # seed 6 places bowel gas in this phantom (seed 5 does not: below)
        assert a.hu.dtype == np.float32 and np.array_equal(a.hu, np.rint(a.hu)), name


def test_bowel_gas_is_listed_exactly_when_a_pocket_was_placed(phantom) -> None:
    """A drawn bowel_gas whose pockets all fall too near the lungs places none: then it is not listed and the
    scan is unchanged. For this phantom seed 5 is such a draw; the other seeds place gas and list it."""
    lungs = _lungs(phantom)
    outcomes = {}
    for seed in range(8):
        out = _apply(phantom, "bowel_gas", seed)
        changed = not np.array_equal(out.hu, np.rint(phantom.hu))
        listed = "bowel_gas" in out.info["realism"]
        assert listed == changed, seed
        if listed:  # the change is new air outside the lungs, the masks untouched
            assert ((out.hu < -900) & ~lungs).sum() > ((phantom.hu < -900) & ~lungs).sum(), seed
            assert all(np.array_equal(out.masks[k], phantom.masks[k]) for k in phantom.masks), seed
        outcomes[seed] = listed
    assert outcomes[5] is False and sum(outcomes.values()) == 7  # both outcomes are exercised


def test_bases_only_is_an_abdominal_scan_with_the_lung_bases_on_top(phantom) -> None:
    out = _apply(phantom, "bases_only")
    lung_k = np.flatnonzero(_lungs(out).any(axis=(0, 1)))
    before = np.flatnonzero(_lungs(phantom).any(axis=(0, 1)))
    dz = out.geometry.spacing_mm[2]
    assert lung_k[0] * dz >= 100  # at least 100 mm of abdomen below the lungs
    assert lung_k[-1] == out.hu.shape[2] - 1  # the lungs reach the top slice: partial coverage
    assert len(lung_k) <= 0.36 * len(before) + 2
    # world position of the lung bases is unchanged
    z_before = phantom.geometry.origin_lps_mm[2] + before[0] * dz
    assert out.geometry.origin_lps_mm[2] + lung_k[0] * dz == pytest.approx(z_before, abs=1e-3)
    below = out.hu[:, :, : lung_k[0]]
    assert (below < -900).sum() > 0 and "bowel_gas" in out.info["realism"]


def test_apex_cut_removes_the_top_of_the_lungs(phantom) -> None:
    out = _apply(phantom, "apex_cut")
    assert out.hu.shape[2] < phantom.hu.shape[2]
    assert _lungs(out)[:, :, -1].any()
    assert _lungs(out).sum() < _lungs(phantom).sum()


def test_gas_arms_fissures_streaks_noise_and_padding(phantom) -> None:
    lungs = _lungs(phantom)
    gas = _apply(phantom, "bowel_gas", 2)
    assert "bowel_gas" in gas.info["realism"]
    assert ((gas.hu < -900) & ~lungs).sum() > ((phantom.hu < -900) & ~lungs).sum() + 50
    assert np.array_equal(gas.masks["Lung_R"], phantom.masks["Lung_R"])
    arms = _apply(phantom, "arms")
    assert ((arms.hu > -500).sum()) > (phantom.hu > -500).sum()
    fis = _apply(phantom, "fissures")
    assert fis.hu[lungs].mean() > phantom.hu[lungs].mean() and np.array_equal(fis.masks["Lung_L"], phantom.masks["Lung_L"])
    streak = _apply(phantom, "streaks")
    assert np.abs(streak.hu - phantom.hu).max() > 20
    noisy = _apply(phantom, "low_dose")
    assert (noisy.hu - phantom.hu)[lungs].std() > 10
    pad = _apply(phantom, "fov_padding")
    assert pad.hu[0, 0, 0] in (-3024.0, -2048.0) and pad.hu[48, 48, 0] == phantom.hu[48, 48, 0]


def test_cohort_with_realism_off_is_byte_identical_and_on_is_readable(tmp_path: Path) -> None:
    from lungseg.inference.segmenter import load_ct

    plain = synthesize_cohort(tmp_path / "plain", cases=1, seed=3, workers=1, max_matrix=64)
    off = synthesize_cohort(tmp_path / "off", cases=1, seed=3, workers=1, max_matrix=64, realism=RealismConfig())
    assert plain == off and file_digests(tmp_path / "plain") == file_digests(tmp_path / "off")
    on = RealismConfig(fov_padding_p=1.0, apex_cut_p=1.0)
    rows = synthesize_cohort(tmp_path / "on", cases=1, seed=3, workers=1, max_matrix=64, realism=on)
    assert rows[0]["realism"] == "apex_cut;fov_padding" and rows[0]["n_slices"] < plain[0]["n_slices"]
    series = [p.parent for p in (tmp_path / "on").rglob("1-001.dcm")][0]
    hu, _ = load_ct(series)
    assert hu.min() in (-3024.0, -2048.0)  # the padding survives the DICOM round trip
    assert dataclasses.asdict(on)["arms_p"] == 0.0
