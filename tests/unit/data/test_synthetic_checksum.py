"""The synthetic data is pinned: the same seed gives the same bytes, checked against recorded digests.

The digests were recorded from the single-module ``lungseg/data/synthetic.py`` (commit 0c1e0fe)
before it became the ``lungseg.data.synthetic`` package, so a refactor that reorders one random
draw fails here. The phantom digests cover only the generator; the cohort digests also cover the
DICOM writer (and :mod:`lungseg.data.realism`). When a change is *meant* to alter the data,
check the new data, then paste the digest the failure message prints.

Since 2026-12-02 the generator, the DICOM geometry and the augmentation do their small linear
algebra with :mod:`lungseg.data.exact` instead of BLAS/LAPACK, so the digests hold on every CPU
(they used to depend on the OpenBLAS kernel: AVX2 and AVX-512 hosts wrote different cohorts);
that change re-recorded them (same masks; vessel trees differ: 3% of voxels by 1-2 HU on average).
The last test checks a full-size patient's digest with other BLAS kernels and numpy SIMD paths forced.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import RealismConfig
from lungseg.data.synthetic import make_phantom, synthesize_cohort

MATRIX = 48
SEED = 1  # patient 1 has pathology, patient 2 has none

#: (seed, pathology) -> sha256 of the HU array and masks of make_phantom(default_rng([seed, 0]))
PHANTOM_DIGESTS = {
    (3, False): "5ca208aa8483e9086b144b5c15481c3d7f1f30ac1ed1d481f39fda606954e614",
    (4, True): "4fcaf6ad6e40c21c5077a618b1b74db096c0817cfd3b332420e60a0964cdf652",
}
COHORT_DIGEST = "5a3e592b9cb356f368bcc243d6a54bea96f99e2735d04eb779d7a7bf3c5ec178"
REALISM_DIGEST = "23b7191cd0057340fe459b86637e41ab6f8e6c7c704990f325356c947b77f954"
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


def phantom_digest(seed: int | np.random.Generator, pathology: bool) -> str:
    """sha256 over the HU array bytes and the packed masks (sorted by name) of one phantom
    (``seed``: the generator, or ``n`` for ``default_rng([n, 0])``)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng([seed, 0])
    ph = make_phantom(rng, pathology, max_matrix=MATRIX)
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


#: the first patient of the default cohort (seed 2017) at full size, whose vessel tree came out
#: differently with OpenBLAS' AVX-512 (SkylakeX) kernels than with its AVX2 (Haswell) ones
FULL_SIZE_DIGEST = "80641d90690dfd8295c0e4499b7b3d935e7b8f747ebeacadae488d85e06467ae"


def _digest_in_subprocess(env: dict[str, str], seed: list[int], max_matrix: int) -> str:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; "
            "import test_synthetic_checksum as t; t.MATRIX = int(sys.argv[3]); "
            "print(t.phantom_digest(np.random.default_rng(eval(sys.argv[2])), False))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), repr(seed), str(max_matrix)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_the_same_bits_with_other_blas_kernels_and_simd_paths() -> None:
    """A full-size patient with the host's own BLAS kernels (AVX-512 ones where the CPU has it),
    with OpenBLAS' Haswell (AVX2) kernels, and with Sandy Bridge ones (AVX, no FMA) plus numpy
    without its AVX-512 loops: the same recorded digest each time (not so before lungseg.data.exact)."""
    native = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    old_avx = dict(native, OPENBLAS_CORETYPE="Sandybridge",
                   NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR")
    for env in (native, dict(native, OPENBLAS_CORETYPE="Haswell"), old_avx):
        assert _digest_in_subprocess(env, [2017, 0], 512) == FULL_SIZE_DIGEST, env.get("OPENBLAS_CORETYPE", "native")
