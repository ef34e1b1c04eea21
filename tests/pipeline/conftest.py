"""Fixtures for end-to-end tests: a throw-away copy of the project run through the real CLI and dvc."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.helpers.real_ct import REAL_CT

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Tiny but complete: a few small patients, the whole chain.
TINY_PARAMS = {
    "synthesize": {"cases": 5, "max_matrix": 96, "workers": 1},
    "prepare": {"n_figure_cases": 2, "split": {"folds": 3}},  # 4 non-test cases: folds of 2, 1 and 1
    "cv": {"folds": [0, 1, 2]},
    "preprocess": {"shape": [32, 32, 32]},
    "model": {"base_filters": 4, "depth": 2},
    "train": {"max_epochs": 2, "batch_size": 2, "steps_per_epoch": 2},
    "tune": {"n_trials": 2, "epochs": 1, "steps_per_epoch": 0, "train_subset": 0, "sampler_startup_trials": 1},
    "evaluate": {"min_dice": 0.0},  # two epochs of a 4-filter net: any test Dice may take the alias
    # the cascade on, tiny: evaluate, the registry and serving then carry both networks
    "refine": {"enabled": True, "spacing_mm": 4.0, "patch": [16, 16, 16], "base_filters": 2, "depth": 1,
               "batch_size": 2, "patches_per_epoch": 4, "val_patches_per_case": 1, "max_epochs": 1},
}
# Two of the shared real CTs (beside the clone, as in CI), by absolute path from the project copy, whether
# or not they are there (evaluate skips a missing case with a log line; the test that reads their scores
# skips visibly, tests/helpers/real_ct.py); the other evaluate.real_ct cases keep their relative paths and
# are skipped in the copy as missing.
TINY_PARAMS["evaluate"]["real_ct"] = {
    "copdgene_10002k": {"ct": str(REAL_CT / "copdgene-10002k/ct.nii.gz"),
                        "truth": str(REAL_CT / "copdgene-10002k/lungs.nii.gz")},
    "abdomen_no_lung": {"ct": str(REAL_CT / "abdomen-lung-bases/no-lung-dicom")},
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/pipeline/ runs the real pipeline: marked `pipeline` (its modules say so) and `slow`."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.slow)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command with the project's venv first on PATH; fail with its output shown."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's params decide (sqlite:///mlflow.db in the copy)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh git + dvc copy of the project (code, dvc.yaml, tiny params), not yet reproduced."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "MLproject", "python_env.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "pipelines", root / "pipelines", ignore=shutil.ignore_patterns("dvc.lock"))
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], root)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], root)
    return root


@pytest.fixture(scope="module")
def reproduced(project: Path) -> Path:
    """The project after `dvc repro` (run once per session; each later module's `dvc repro` finds it up to date)."""
    run(["dvc", "repro"], project)
    return project


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_process(cmd: list[str], port: int, health: str, log: Path, env: dict[str, str],
                 cwd: Path | None = None) -> Iterator[str]:
    """Start a server process (its own session, output to ``log``, in ``cwd``), wait up to 180 s until
    ``health`` answers 200, yield its URL; stop the whole process group afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[1]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}{health}", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd[1]} did not answer {health} in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
