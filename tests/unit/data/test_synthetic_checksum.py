"""The synthetic data is pinned: the same seed gives the same bytes, checked against recorded digests.

The digests were recorded from the single-module ``lungseg/data/synthetic.py`` (commit 0c1e0fe)
before it became the ``lungseg.data.synthetic`` package, so a refactor that reorders one random
draw fails here. The phantom digests cover only the generator; the cohort digests also cover the
DICOM writer (and :mod:`lungseg.data.realism`). When a change is *meant* to alter the data,
check the new data, then paste the digest the failure message prints.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import RealismConfig
from lungseg.data.synthetic import make_phantom, synthesize_cohort

MATRIX = 48
SEED = 1  # patient 1 has pathology, patient 2 has none

#: (seed, pathology) -> sha256 of the HU array and masks of make_phantom(default_rng([seed, 0]))
PHANTOM_DIGESTS = {
    (3, False): "19fff2126a1c2a557fbf4a1c476c61482bd78291cd9771518c124b0415f83665",
    (4, True): "8d8928cf8b1196e7d86cedf8265f677dd2944dc24599723eb592141d05943cc2",
}
COHORT_DIGEST = "7d648f3247010dd85a5aa2a09320cf3961433faeb960ae864f0e0b09af135f1b"
REALISM_DIGEST = "7be18d27a9d3f24ffefd62dc50a440c69a59a6ab5e4f5df1b3822ef5b9d9b413"
ALL_REALISM = RealismConfig(**{f"{name}_p": 1.0 for name in (
    "bases_only", "apex_cut", "bowel_gas", "arms", "fissures", "streaks", "low_dose", "fov_padding")})  # fmt: skip


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and sha256, in sorted path order."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def phantom_digest(seed: int, pathology: bool) -> str:
    """sha256 over the HU array bytes and the packed masks (sorted by name) of one phantom."""
    ph = make_phantom(np.random.default_rng([seed, 0]), pathology, max_matrix=MATRIX)
    h = hashlib.sha256(ph.hu.tobytes())
    for name in sorted(ph.masks):
        h.update(name.encode())
        h.update(np.packbits(ph.masks[name]).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("seed, pathology", sorted(PHANTOM_DIGESTS))
def test_phantom_arrays_are_unchanged(seed: int, pathology: bool) -> None:
    got = phantom_digest(seed, pathology)
    assert got == PHANTOM_DIGESTS[seed, pathology], f"phantom ({seed}, {pathology}) changed: {got}"


def test_cohort_files_are_unchanged(tmp_path: Path) -> None:
    rows = synthesize_cohort(tmp_path, cases=2, seed=SEED, pathology_fraction=0.5, workers=1, max_matrix=MATRIX)
    assert [r["pathology"] for r in rows] == [1, 0]
    got = tree_digest(tmp_path)
    assert got == COHORT_DIGEST, f"synthetic cohort files changed: {got}"


def test_cohort_with_realism_is_unchanged(tmp_path: Path) -> None:
    synthesize_cohort(tmp_path, cases=2, seed=SEED, pathology_fraction=0.5, workers=1, max_matrix=MATRIX,
                      realism=ALL_REALISM)  # fmt: skip
    got = tree_digest(tmp_path)
    assert got == REALISM_DIGEST, f"synthetic cohort files with realism changed: {got}"
