"""The synthetic data is pinned: the same seed gives the same bytes, checked against recorded digests.

The digests were recorded from the single-module ``lungseg/synthetic.py`` (commit 0c1e0fe)
before it became the ``lungseg.synthetic`` package, so a refactor that reorders one random
draw fails here. The phantom digests cover only the generator; the cohort digests also cover the
DICOM writer (and :mod:`lungseg.synthetic.realism`). When a change is *meant* to alter the data,
check the new data, then paste the digest the failure message prints.

Since 2026-12-02 the generator, the DICOM geometry and the augmentation do their small linear
algebra with :mod:`lungseg.io.exact` instead of BLAS/LAPACK, so the digests hold on every CPU
(they used to depend on the OpenBLAS kernel: AVX2 and AVX-512 hosts wrote different cohorts);
that change re-recorded them (same masks; vessel trees differ: 3% of voxels by 1-2 HU on average).
The last tests check a full-size patient's digest with the host's own BLAS kernels and, on x86-64 CPUs that
can run them, with other BLAS kernels and numpy SIMD paths forced.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lungseg.config import RealismConfig
from lungseg.synthetic import synthesize_cohort
from tests.helpers.digests import phantom_digest as _phantom_digest
from tests.helpers.digests import tree_digest
from tests.helpers.host import has, is_x86_64, numpy_dispatch_targets

REPO = Path(__file__).resolve().parents[3]

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


def phantom_digest(seed: int | np.random.Generator, pathology: bool) -> str:
    """:func:`tests.helpers.digests.phantom_digest` at this module's matrix size."""
    return _phantom_digest(seed, pathology, MATRIX)


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


def _digest_in_subprocess(env: dict[str, str], seed: list[int], max_matrix: int) -> tuple[str, dict[str, bool]]:
    """The phantom digest computed in a fresh interpreter with ``env``, and numpy's CPU features there."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from tests.helpers.digests import phantom_digest; "
            "from tests.helpers.host import cpu_features; "
            "print(phantom_digest(eval(sys.argv[2]), False, int(sys.argv[3]))); print(json.dumps(cpu_features()))")
    proc = subprocess.run([sys.executable, "-W", "error::ImportWarning", "-c", code, str(REPO), repr(seed), str(max_matrix)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    digest, features = proc.stdout.strip().splitlines()
    return digest, json.loads(features)


def _variant(name: str) -> tuple[dict[str, str], list[str]]:
    """(extra environment, numpy dispatch targets that must be off there) of one kernel variant; skips
    (naming what is missing) where this CPU cannot run it.

    OpenBLAS' Haswell kernels need AVX2 and FMA, its Sandy Bridge ones AVX: forcing a core type the CPU
    lacks dies of an illegal instruction, and neither exists outside x86-64. numpy's dispatch targets are
    named as this numpy build names them (``X86_V3``, ``X86_V4``, ``AVX512_ICL``, ... in numpy 2.4; a name
    it does not dispatch is ignored with an ImportWarning, which the subprocess turns into an error)."""
    needs = {"haswell": ("AVX2", "FMA3"), "sandybridge": ("AVX",)}[name]
    if not is_x86_64() or not has(*needs):
        pytest.skip(f"OpenBLAS' {name} kernels need an x86-64 CPU with {' and '.join(needs)}; "
                    f"this one ({platform.machine()}) has {[f for f in needs if has(f)] or 'none of them'}")
    if name == "haswell":
        return {"OPENBLAS_CORETYPE": "Haswell"}, []
    above_avx = [t for t in numpy_dispatch_targets() if t.startswith(("X86_V3", "X86_V4", "AVX512"))]
    return {"OPENBLAS_CORETYPE": "Sandybridge", "NPY_DISABLE_CPU_FEATURES": " ".join(above_avx)}, above_avx


def _native_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")}


@pytest.mark.slow  # a full-size 512 phantom in a fresh interpreter
def test_the_same_bits_with_the_hosts_own_blas_kernels() -> None:
    """A full-size patient with the host's own BLAS kernels and numpy loops (AVX-512 ones where the CPU has
    them, NEON on Arm): the recorded digest, on any CPU."""
    assert _digest_in_subprocess(_native_env(), [2017, 0], 512)[0] == FULL_SIZE_DIGEST


@pytest.mark.slow  # the same, twice
@pytest.mark.parametrize("name", ["haswell", "sandybridge"])
def test_the_same_bits_with_other_blas_kernels_and_simd_paths(name: str) -> None:
    """The same patient with OpenBLAS' Haswell (AVX2) kernels, and with its Sandy Bridge ones (AVX, no FMA)
    plus numpy without its AVX2 and AVX-512 loops: the same recorded digest (not so before lungseg.io.exact)."""
    extra, off = _variant(name)
    digest, features = _digest_in_subprocess({**_native_env(), **extra}, [2017, 0], 512)
    assert not [t for t in off if features.get(t)], f"{name}: numpy still runs {off}"  # the variant is what it says
    assert digest == FULL_SIZE_DIGEST, name
