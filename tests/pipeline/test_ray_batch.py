"""``lungseg predict --ray`` on a real local Ray (no mocks): the plain loop's masks and table, broken cases
as rows, and a rerun after the driver was SIGKILLed half-way that recomputes no completed case.

Two Ray start-ups (the killed driver, the rerun); about a minute on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lungseg.cli import main
from tests.helpers.cohort import BROKEN, make_cohort, read_rows, tiny_bundle

pytestmark = pytest.mark.pipeline
import ray  # noqa: E402, F401 - in the test extra: without it this test must fail, not be skipped

N_CASES = 16  # copies of one 96-voxel phantom under other names: slow enough to kill the driver half-way


def _session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (the killed driver's: Ray's agents may outlive it)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("raycohort")
    manifest = make_cohort(tmp, 1, max_matrix=96)
    one = (tmp / "cts" / "ct00.nii.gz").read_bytes()
    lines = manifest.read_text().splitlines()
    for i in range(1, N_CASES):
        (tmp / "cts" / f"ct{i:02d}.nii.gz").write_bytes(one)
        lines.append(f"case-{i:02d},cts/ct{i:02d}.nii.gz")
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, tiny_bundle(tmp / "model")


def test_ray_matches_the_plain_loop_and_resumes_after_the_driver_is_killed(cohort, tmp_path: Path, caplog) -> None:
    from lungseg.io.nifti import read_nifti

    manifest, model = cohort
    base = ["predict", "--manifest", str(manifest), "--model", str(model), "--statistics", "-q"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 1  # the broken cases fail: exit 1
    plain = read_rows(tmp_path / "plain" / "results.csv")
    assert len(plain) == N_CASES + len(BROKEN)

    out = tmp_path / "ray"
    table = out / "results.csv"
    cmd = [sys.executable, "-m", "lungseg.cli", *base, "--out", str(out), "--ray", "local", "--actors", "2"]
    log = tmp_path / "driver.log"
    with open(log, "wb") as f:
        driver = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if table.is_file() and len(table.read_text().splitlines()) - 1 >= 3:  # a row may be a broken case's
                break
            time.sleep(0.02)
        assert driver.poll() is None, log.read_text()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        time.sleep(2)
        for pid in _session_pids(driver.pid):  # Ray's agents of the killed driver's local Ray
            os.kill(pid, signal.SIGKILL)
    complete = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/*.json") if p.stem == p.parent.name}
    assert 1 <= len(complete) < N_CASES, f"{len(complete)} cases complete when the driver was killed"

    caplog.set_level("INFO", "lungseg")
    assert main([*base, "--out", str(out), "--ray", "local", "--actors", "2"]) == 1
    assert f"{N_CASES + len(BROKEN)} cases: {len(complete)} complete from an earlier run" in caplog.text
    assert all((out / i / f"{i}.json").stat().st_mtime_ns == t for i, t in complete.items())  # not recomputed
    assert read_rows(table) == plain  # same rows (runtime columns aside), sorted by id, no duplicates
    assert {r["id"] for r in plain if r["status"] == "failed"} == set(BROKEN)
    for i in range(N_CASES):
        name = f"case-{i:02d}"
        a, _ = read_nifti(tmp_path / "plain" / name / f"{name}_lungs.nii.gz")
        b, _ = read_nifti(out / name / f"{name}_lungs.nii.gz")
        assert np.array_equal(a, b) and (a > 0).any(), name
