"""A team shares the reproduced project: metrics in git, data and models on a DVC remote.

On the already reproduced tiny project (no second full run):

* committing it puts every metrics/plots file of dvc.yaml in git, and no data, model or figure;
* `dvc push` to a local-folder remote, then a colleague's `git clone` + `dvc pull` gets the same
  data and model, with nothing left to run, and `lungseg register` gives their registry the
  champion without retraining;
* `dvc exp run --temp -S train.max_epochs=3` (run in a copy under .dvc/tmp/exps) logs to the
  project's own MLflow store, and after `dvc exp apply` + commit, `dvc metrics diff HEAD~1` shows
  the changed numbers.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.helpers.digests import file_digests

from .conftest import run

pytestmark = pytest.mark.pipeline

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
MAIN = ["dvc.yaml", "--with-deps"]  # the root pipeline and the synthesize stage it needs; pipelines/cv never ran here
METRICS_AND_PLOTS = {  # dvc.yaml metrics/plots, all `cache: false`
    "reports/prepare.json", "reports/preprocess.json", "reports/tune/best_params.json", "reports/train_metrics.json",
    "reports/train_history.csv", "reports/refine_metrics.json", "reports/refine_history.csv", "reports/metrics.json",
    "reports/per_case.csv",
}


@pytest.fixture(scope="module")
def published(reproduced: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reproduced project with a default local-folder remote, committed and pushed."""
    remote = tmp_path_factory.mktemp("dvc-remote")
    run(["dvc", "remote", "add", "--force", "-d", "shared", str(remote)], reproduced)
    new_ignores = [p for p in run(["git", "ls-files", "--others", "--exclude-standard"], reproduced).stdout.split()
                   if p.endswith(".gitignore")]
    run(["git", "add", "dvc.lock", "pipelines", ".dvc/config", "reports", *new_ignores], reproduced)
    run([*GIT, "commit", "-qm", "reproduce the tiny pipeline; remote 'shared'"], reproduced)
    run(["dvc", "push"], reproduced)
    return reproduced


def _clone(published: Path, tmp_path_factory: pytest.TempPathFactory, who: str) -> Path:
    """A clone of the published project (its own DVC cache, no MLflow store) that pulled data and models."""
    clone = tmp_path_factory.mktemp(who) / "lungseg"
    run(["git", "clone", "-q", str(published), str(clone)], clone.parent)
    run(["git", "config", "user.email", f"{who}@lungseg.local"], clone)
    run(["git", "config", "user.name", who], clone)
    run(["dvc", "pull"], clone)
    return clone


@pytest.fixture(scope="module")
def colleague(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second clone that pulled data and models from the remote."""
    return _clone(published, tmp_path_factory, "colleague")


def test_metrics_and_plots_are_in_git_data_models_and_figures_are_not(published: Path) -> None:
    tracked = set(run(["git", "ls-files"], published).stdout.split())
    assert METRICS_AND_PLOTS <= tracked, METRICS_AND_PLOTS - tracked
    assert not [p for p in tracked if p.endswith((".png", ".keras", ".npy", ".nii.gz", ".dcm"))]
    assert not [p for p in tracked if p.startswith(("data/", "models/", "mlruns/", "optuna/", "reports/figures/"))]
    assert "in sync" in run(["dvc", "status", "--cloud"], published).stdout  # the remote has it all


def test_a_colleague_pulls_data_and_the_champion_without_retraining(published: Path, colleague: Path) -> None:
    import mlflow

    for folder in ("models", "data/processed", "data/interim", "reports/figures"):
        assert file_digests(colleague / folder) == file_digests(published / folder), folder
    assert "Data and pipelines are up to date" in run(["dvc", "status", *MAIN], colleague).stdout
    dry = run(["dvc", "repro", "--dry"], colleague).stdout
    assert "Running stage" not in dry, dry
    run(["lungseg", "register"], colleague)  # their own registry gets the pulled model as champion
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{colleague / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("lung-segmentation", "champion")
    metrics = json.loads((published / "reports/metrics.json").read_text())
    assert float(champion.tags["test_dice"]) == pytest.approx(metrics["unet"]["dice"]["mean"], abs=1e-5)


def test_exp_run_temp_logs_to_the_project_and_metrics_diff_shows_the_change(colleague: Path) -> None:
    import mlflow

    run(["dvc", "exp", "run", "--temp", "-n", "epochs3", "-S", "train.max_epochs=3"], colleague)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{colleague / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    (train,) = client.search_runs([exp.experiment_id],
                                  filter_string="params.`train.max_epochs` = '3' AND tags.stage = 'train'")
    artifacts = Path(unquote(urlparse(train.info.artifact_uri).path))
    assert artifacts.is_relative_to(colleague) and ".dvc" not in artifacts.parts  # mlruns/ at the project root
    assert (artifacts / "model" / "MLmodel").is_file()

    shown = json.loads(run(["dvc", "exp", "show", "--json"], colleague).stdout)
    (exp3,) = [e for base in shown for e in base.get("experiments") or [] if e["name"] == "epochs3"]
    assert exp3["revs"][0]["data"]["metrics"]["reports/train_metrics.json"]["data"]["epochs_run"] == 3
    run(["dvc", "exp", "apply", "epochs3"], colleague)
    run(["git", "add", "-A"], colleague)
    run(["git", "commit", "-qm", "train.max_epochs=3"], colleague)
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--json"], colleague).stdout)
    assert diff["reports/train_metrics.json"]["epochs_run"] == {"old": 2, "new": 3, "diff": 1}
    assert "reports/metrics.json" in diff  # the test split was scored again with the new model
    params = json.loads(run(["dvc", "params", "diff", "HEAD~1", "--json"], colleague).stdout)
    assert {k: params["params.yaml"]["train.max_epochs"][k] for k in ("old", "new")} == {"old": 2, "new": 3}
    assert "Data and pipelines are up to date" in run(["dvc", "status", *MAIN], colleague).stdout
    table = run(["dvc", "metrics", "diff", "HEAD~1"], colleague).stdout  # what a person reads
    assert "epochs_run" in table and "HEAD~1" in table


def _wait_for_queue(root: Path, timeout: float = 1800) -> str:
    """Poll `dvc queue status` until no task is queued or running; its last output."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], root).stdout
        if not re.search(r"\b(Queued|Running)\b", status) and "0 active" in status:
            return status
        assert time.monotonic() < deadline, f"queued experiments still running after {timeout:.0f} s:\n{status}"
        time.sleep(5)


def test_exp_run_queue_and_queue_start_as_the_readme_shows(published: Path, tmp_path_factory) -> None:
    """README: `dvc exp run --queue -S train.max_epochs=30 && dvc queue start`. A queued experiment runs in the
    background in its own copy, logs to the project's MLflow store (not the copy's), shows up in
    `dvc exp show` with its metrics, and leaves the workspace as it was."""
    import mlflow

    root = _clone(published, tmp_path_factory, "queuer")
    before = {f: file_digests(root / f) for f in ("models", "reports")}
    params_before = (root / "params.yaml").read_text()
    queued = run(["dvc", "exp", "run", "--queue", "-n", "queued3", "-S", "train.max_epochs=3"], root).stdout
    assert "Queued experiment 'queued3'" in queued, queued
    try:
        run(["dvc", "queue", "start"], root)
        status = _wait_for_queue(root)
    finally:
        run(["dvc", "queue", "stop"], root, check=False)  # no worker outlives the test
    line = next((s for s in status.splitlines() if "queued3" in s), "")
    assert "Success" in line, status + run(["dvc", "queue", "logs", "queued3"], root, check=False).stdout[-4000:]

    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    (exp,) = [e for base in shown for e in base.get("experiments") or [] if e["name"] == "queued3"]
    data = exp["revs"][0]["data"]
    assert data["metrics"]["reports/train_metrics.json"]["data"]["epochs_run"] == 3
    assert data["params"]["params.yaml"]["data"]["train"]["max_epochs"] == 3
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("lung-segmentation").experiment_id
    (train,) = client.search_runs([exp_id], filter_string="params.`train.max_epochs` = '3' AND tags.stage = 'train'")
    artifacts = Path(unquote(urlparse(train.info.artifact_uri).path))
    assert artifacts.is_relative_to(root) and ".dvc" not in artifacts.parts  # mlruns/ at the project root
    assert (artifacts / "model" / "MLmodel").is_file()
    assert (root / "params.yaml").read_text() == params_before  # the workspace is untouched
    assert {f: file_digests(root / f) for f in ("models", "reports")} == before
