"""The shared real CTs beside the clone (``../shared/real-ct``, as in CI) and the NSCLC-Radiomics series
that ``make real-ct`` extracts into ``data/external/nsclc-radiomics``: one place for their paths.

A test that needs them calls :func:`real_ct` or :func:`nsclc_series` first:

* the data absent: the test is skipped, the reason naming the missing path;
* ``LUNGSEG_REQUIRE_REAL_CT=1`` in the environment: absence is a failure instead (for a CI that has the data);
* the folder present but the file the test needs missing (an incomplete copy): a failure, never a skip.

So where the data is present the test runs in full and fails on a wrong result; it never silently tests less.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
REAL_CT = REPO.parent / "shared" / "real-ct"
NSCLC_DIR = REPO / "data" / "external" / "nsclc-radiomics"
NSCLC_CASES = ("001", "002", "003")  # LUNG1-001 ... in params.yaml's evaluate.real_ct as nsclc_001 ...
REQUIRE_ENV = "LUNGSEG_REQUIRE_REAL_CT"


def _absent(path: Path, what: str) -> NoReturn:
    reason = f"{path} not present ({what})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it")
    pytest.skip(reason)


def real_ct(*parts: str) -> Path:
    """``../shared/real-ct/<parts>`` (the folder itself without ``parts``); see the module docstring."""
    if not REAL_CT.is_dir():
        _absent(REAL_CT, "the shared real CTs beside the clone")
    path = REAL_CT.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing from the shared real CTs at {REAL_CT} (an incomplete copy)")
    return path


def nsclc_series(case: str | None = None) -> Path:
    """``data/external/nsclc-radiomics/LUNG1-<case>/dicom`` (the folder itself without ``case``), after
    checking that all three series are extracted; see the module docstring."""
    if not NSCLC_DIR.is_dir():
        _absent(NSCLC_DIR, "the NSCLC-Radiomics DICOM series: `make real-ct`")
    missing = [NSCLC_DIR / f"LUNG1-{c}" / "dicom" for c in NSCLC_CASES if not (NSCLC_DIR / f"LUNG1-{c}" / "dicom").is_dir()]
    if missing:
        pytest.fail(f"{NSCLC_DIR} holds only part of the NSCLC-Radiomics series: missing {', '.join(map(str, missing))}")
    return NSCLC_DIR / f"LUNG1-{case}" / "dicom" if case else NSCLC_DIR
