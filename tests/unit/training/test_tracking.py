"""lungseg.training.tracking: where runs go when DVC runs a stage in a throw-away copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungseg.config import TrackingConfig


def test_a_stage_run_in_dvcs_temp_copy_logs_to_the_project_store(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc exp run --temp` runs the stage in .dvc/tmp/exps/<tmp> with DVC_ROOT = the project (deleted after)."""
    import mlflow

    from lungseg.training import tracking

    project = tmp_path / "project"
    copy = project / ".dvc/tmp/exps/tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure(TrackingConfig(tracking_uri="sqlite:///mlflow.db", experiment="lung seg"))
    assert uri == f"sqlite:///{project.resolve()}/mlflow.db"
    with tracking.run("train") as run_id:
        tracking.log_metrics({"val_dice": 0.5}, step=1)
        (copy / "note.txt").write_text("x")
        tracking.log_artifact(copy / "note.txt", "reports")
    assert (project / "mlflow.db").is_file() and not (copy / "mlflow.db").exists()
    assert not (copy / "mlruns").exists()
    artifacts = project.resolve() / "mlruns" / "lung_seg" / run_id / "artifacts" / "reports" / "note.txt"
    assert artifacts.read_text() == "x"
    assert mlflow.get_run(run_id).data.metrics["val_dice"] == 0.5


def test_mlflow_tracking_uri_wins_and_a_server_url_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from lungseg.training import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(TrackingConfig(tracking_uri="sqlite:///mlflow.db")) == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", "/proj")
    assert tracking.tracking_uri(TrackingConfig(tracking_uri="sqlite:///mlflow.db")) == "sqlite:////proj/mlflow.db"
