"""Tuning: search-space config, pruning, resumed studies, parallel workers, MLflow runs, overlay on train."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import yaml

from lungseg.config import AugmentConfig, SearchRange, load_params, params_from_dict
from lungseg.errors import ConfigError
from tests.helpers.training import blobs

BAD = {"intensity_shift_max": 50.0, "noise_sd": 50.0}  # shifts and noise that swamp the image: useless data
GOOD = {"intensity_shift_max": 0.0, "noise_sd": 0.001}


def _raw_params(root: Path, **tune: object) -> dict:
    """Tiny params: 16^3 blobs, a 4-filter one-level U-Net; only intensity shift and noise augment."""
    off = {k: 0.0 for k in ("elastic_p", "rotate_p", "flip_p", "scale_p", "brightness_p")}
    return {
        "data": {"processed_dir": "processed", "figures_dir": "figs"},
        "preprocess": {"shape": [16, 16, 16]},
        "model": {"base_filters": 4, "depth": 1, "dropout": 0.0},
        "train": {"max_epochs": 1, "batch_size": 2, "learning_rate": 0.01, "early_stopping_patience": 100,
                  "model_path": "models/model.keras", "state_dir": "models/state"},
        "augment": {**off, "intensity_p": 1.0, "noise_p": 1.0},
        "tune": {"n_trials": 3, "epochs": 3, "train_subset": 0, "storage": str(root / "optuna" / "study.journal"),
                 "sampler_startup_trials": 2, "pruner": "median", "pruner_startup_trials": 2, "pruner_warmup_steps": 1,
                 "search_space": {"intensity_shift_max": {"low": 0.0, "high": 50.0},
                                  "noise_sd": {"low": 0.001, "high": 50.0, "log": True}},
                 **tune},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
    }


def _project(root: Path, **tune: object) -> Path:
    """Processed arrays (8 training, 2 validation blobs at 16^3) and params.yaml under ``root``."""
    for split, n, seed in (("train", 8, 0), ("val", 2, 1)):
        images, masks = blobs(n, 16, seed)
        folder = root / "processed" / split
        folder.mkdir(parents=True)
        np.save(folder / "images.npy", images)
        np.save(folder / "masks.npy", masks)
        (folder / "cases.json").write_text(json.dumps([f"{split}{i}" for i in range(n)]))
    (root / "params.yaml").write_text(yaml.safe_dump(_raw_params(root, **tune)))
    return root / "params.yaml"


def _study(params, root: Path) -> optuna.Study:
    from lungseg.training import tuning
    from lungseg.training.dataset import load_split

    name = tuning.study_name(params, load_split(root / "processed", "train"), load_split(root / "processed", "val"))
    return optuna.load_study(study_name=name, storage=tuning.open_storage(params.tune.storage))


# ---------------------------------------------------------------- config


def test_default_search_space_covers_every_probability_and_strength() -> None:
    params = load_params(Path(__file__).resolve().parents[3] / "params.yaml")
    space = params.tune.search_space
    assert {k for k in AugmentConfig.__dataclass_fields__ if k.endswith("_p")} <= set(space)
    assert space["noise_sd"] == SearchRange(0.01, 0.2, log=True)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"noise_sdd": {"low": 0.0, "high": 1.0}}, "tune.search_space.noise_sdd"),
        ({"flip_axes": {"low": 0.0, "high": 1.0}}, "not a numeric augment value"),
        ({"noise_sd": {"low": 0.0, "high": 0.1, "log": True}}, "log scale"),
        ({"noise_sd": {"low": 0.2, "high": 0.1}}, "low < high"),
        ({"rotate_p": {"low": 0.5, "high": 1.5}}, "tune.search_space.rotate_p.high"),
        ({"scale_max": {"low": 0.1, "high": 1.0}}, "tune.search_space.scale_max.high"),
        ({"noise_sd": {"high": 0.1}}, "tune.search_space.noise_sd.low' is required"),
        ({"noise_sd": {"low": 0.0, "high": 0.1, "logg": True}}, "tune.search_space.noise_sd.logg"),
    ],
)
def test_bad_search_space_is_an_error_naming_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        params_from_dict({"tune": {"search_space": entry}})


def test_bad_storage_and_counts_are_errors() -> None:
    with pytest.raises(ConfigError, match="tune.storage"):
        params_from_dict({"tune": {"storage": "optuna/study.db"}})
    with pytest.raises(ConfigError, match="tune.epochs"):
        params_from_dict({"tune": {"epochs": 0}})
    assert params_from_dict({"tune": {"storage": "postgresql://u:p@host/db"}}).tune.storage.startswith("postgresql")


def test_sampled_values_stay_in_range_and_replace_only_searched_keys() -> None:
    from lungseg.training.tuning import sample_augment

    space = {"noise_sd": SearchRange(0.01, 0.2, log=True), "rotate_p": SearchRange(0.0, 1.0)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = AugmentConfig()
    for _ in range(20):
        aug = sample_augment(study.ask(), base, space)
        assert 0.01 <= aug.noise_sd <= 0.2 and 0.0 <= aug.rotate_p <= 1.0
        assert dataclasses.replace(aug, noise_sd=base.noise_sd, rotate_p=base.rotate_p) == base


def test_storage_factory() -> None:
    from lungseg.training.tuning import open_storage, redact

    assert redact("postgresql://user:secret@db.example:5432/optuna") == "postgresql://user:***@db.example:5432/optuna"
    assert isinstance(open_storage("sqlite://"), optuna.storages.RDBStorage)
    with pytest.raises(ConfigError, match=r"\.journal"):
        open_storage("study.db")


# ---------------------------------------------------------------- overlay on train


def test_overlay_best_params(tmp_path: Path) -> None:
    from lungseg.training.tuning import overlay_best_params, passthrough

    base = AugmentConfig()
    path = tmp_path / "best_params.json"
    assert overlay_best_params(base, path) == (base, {})  # no file: params.yaml values
    path.write_text(json.dumps({"source": "tune", "augment": {"noise_sd": 0.123, "rotate_p": 1}}))
    aug, tuned = overlay_best_params(base, path)
    assert aug == dataclasses.replace(base, noise_sd=0.123, rotate_p=1.0) and tuned == {"noise_sd": 0.123, "rotate_p": 1.0}
    path.write_text(json.dumps(passthrough(base)))
    assert overlay_best_params(base, path) == (base, {})
    path.write_text(json.dumps({"source": "tune", "augment": {"flip_axes": [1]}}))
    with pytest.raises(ConfigError, match="augment.flip_axes"):
        overlay_best_params(base, path)
    path.write_text(json.dumps({"source": "tune", "augment": {"rotate_p": 2.0}}))
    with pytest.raises(ConfigError, match="augment.rotate_p"):
        overlay_best_params(base, path)


def test_n_trials_zero_passes_params_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lungseg.stages import tune
    from lungseg.training.tuning import overlay_best_params

    monkeypatch.chdir(tmp_path)
    params = params_from_dict(_raw_params(tmp_path, n_trials=0))
    out = tune.run(params)  # no processed data, no storage, no MLflow needed
    best = json.loads(Path("reports/tune/best_params.json").read_text())
    assert best == out and best["source"] == "params"
    assert best["augment"]["noise_sd"] == params.augment.noise_sd and len(best["augment"]) == 14
    assert overlay_best_params(params.augment, Path("reports/tune/best_params.json")) == (params.augment, {})
    assert not (tmp_path / "optuna").exists() and not (tmp_path / "mlflow.db").exists()
    for png in ("optimization_history.png", "param_importances.png"):
        assert Path("reports/tune", png).stat().st_size > 1000


# ---------------------------------------------------------------- one study, in process


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Three trials (two good, then one bad on purpose), run through the stage; then the stage again.

    Read-only for the tests: a test that runs the stage again works on its own copy (:func:`study_copy`),
    so every test sees this state whatever ran before it, in any order and on any xdist worker."""
    from lungseg.stages import tune

    root = tmp_path_factory.mktemp("tune")
    _project(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        params = load_params("params.yaml")
        from lungseg.training import tuning

        # the study the stage will use; enqueue fixed trials so the test does not depend on TPE's draws
        study, _ = tuning.open_study(
            tuning.study_name(params, *_splits(root)), tuning.open_storage(params.tune.storage), params.tune
        )
        for values in (GOOD, GOOD, BAD):
            study.enqueue_trial(values)
        first = tune.run(params)
        first_text = (root / "reports/tune/best_params.json").read_text()
        again = tune.run(params)  # a rerun continues the study: nothing left to do
    return SimpleNamespace(root=root, params=params, first=first, first_text=first_text, again=again)


@pytest.fixture
def study_copy(tuned: SimpleNamespace, tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A private copy of the tuned project (arrays, Optuna journal, MLflow store, reports) whose params and
    MLflow store point at the copy; the working directory is the copy while the test runs."""
    root = tmp_path / "tune"
    shutil.copytree(tuned.root, root)
    (root / "params.yaml").write_text(yaml.safe_dump(_raw_params(root)))
    with sqlite3.connect(root / "mlflow.db") as db:  # artifact locations, logged paths: the copy's
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?)',
                               (str(tuned.root), str(root)))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield SimpleNamespace(root=root, params=load_params(root / "params.yaml"))


def _splits(root: Path):
    from lungseg.training.dataset import load_split

    return load_split(root / "processed", "train"), load_split(root / "processed", "val")


@pytest.mark.slow
def test_pruning_stops_a_bad_trial(tuned: SimpleNamespace) -> None:
    trials = _study(tuned.params, tuned.root).get_trials()  # the fixture's three trials: no test adds to them
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    bad = trials[2]
    assert bad.params == BAD and len(bad.intermediate_values) < 3
    assert max(bad.intermediate_values.values()) < min(trials[0].intermediate_values.values())
    best = tuned.first
    assert best["trials"] == {"complete": 2, "pruned": 1, "failed": 0, "running": 0}
    assert best["augment"] == GOOD and best["best_trial"] in (0, 1)
    assert best["epochs_without_pruning"] == 9 and best["epochs_run_total"] == 6 + len(bad.intermediate_values)
    assert best["epochs_saved_by_pruning"] == 9 - best["epochs_run_total"] > 0


@pytest.mark.slow
def test_rerun_keeps_finished_trials_and_runs_only_the_missing_ones(tuned: SimpleNamespace, study_copy) -> None:
    from lungseg.stages import tune

    assert tuned.again == tuned.first  # no new trial, same result
    before = _study(study_copy.params, study_copy.root).get_trials()
    more = dataclasses.replace(study_copy.params, tune=dataclasses.replace(study_copy.params.tune, n_trials=4))
    out = tune.run(more)
    trials = _study(study_copy.params, study_copy.root).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # exactly one more, the first three untouched
    assert [(t.state, t.params, t.intermediate_values) for t in trials[:3]] == \
        [(t.state, t.params, t.intermediate_values) for t in before]
    assert out["trials"]["complete"] + out["trials"]["pruned"] == 4
    assert len(_study(tuned.params, tuned.root).get_trials()) == 3  # the shared study is untouched


@pytest.mark.slow
def test_mlflow_parent_and_child_runs(tuned: SimpleNamespace) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tuned.root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'tune'")
    pid = parent.info.run_id
    assert tuned.first["mlflow_parent_run_id"] == pid
    study = _study(tuned.params, tuned.root)
    assert study.user_attrs["mlflow_parent_run_id"] == pid
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'")
    trials = {t.number: t for t in study.get_trials()}
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == sorted(trials)
    for child in children:
        trial = trials[int(child.data.tags["optuna_trial"])]
        assert child.data.tags["state"] == trial.state.name
        assert child.info.status == "FINISHED"
        for k, v in trial.params.items():
            assert float(child.data.params[f"augment.{k}"]) == pytest.approx(v)
        history = client.get_metric_history(child.info.run_id, "val_dice")
        assert {m.step: m.value for m in history} == pytest.approx(trial.intermediate_values)
        assert child.data.metrics["duration_s"] > 0
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
    parent = client.get_run(pid)
    best = study.best_trial
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.metrics["best.noise_sd"] == pytest.approx(best.params["noise_sd"])
    assert parent.data.metrics["n_pruned"] >= 1 and parent.data.params["tune.epochs"] == "3"
    assert parent.data.metrics["epochs_run_total"] < parent.data.metrics["epochs_without_pruning"]
    artifacts = {a.path: a.file_size for a in client.list_artifacts(pid, "tune")}
    assert artifacts["tune/optimization_history.png"] > 5000 and artifacts["tune/param_importances.png"] > 5000
    assert "tune/best_params.json" in artifacts


@pytest.mark.slow
def test_train_uses_the_tuned_values(tuned: SimpleNamespace, study_copy) -> None:
    import mlflow

    from lungseg.stages import train

    best = json.loads(tuned.first_text)
    assert (study_copy.root / "reports/tune/best_params.json").read_text() == tuned.first_text
    assert best["augment"]["noise_sd"] != tuned.params.augment.noise_sd  # tuning changed something
    train.run(study_copy.params)
    client = mlflow.MlflowClient(f"sqlite:///{study_copy.root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'train'")
    assert run.data.params["augment.source"] == "tune"
    assert run.data.params["augment.tuned"] == "intensity_shift_max,noise_sd"
    for k, v in best["augment"].items():
        assert float(run.data.params[f"augment.{k}"]) == v
    assert run.data.params["augment.rotate_p"] == "0.0"  # not searched: params.yaml value


@pytest.mark.slow
def test_timeout_ends_the_stage_with_a_smaller_reported_study(study_copy) -> None:
    from lungseg.stages import tune

    params, root = study_copy.params, study_copy.root
    before = len(_study(params, root).get_trials())
    assert before == 3
    budget = dataclasses.replace(params.tune, n_trials=before + 5, timeout_minutes=1e-4)
    out = tune.run(dataclasses.replace(params, tune=budget))
    assert len(_study(params, root).get_trials()) == before + 1  # one trial, then the budget is spent
    assert out["stopped_by_timeout"] is True and out["timeout_minutes"] == 1e-4
    written = json.loads((root / "reports/tune/best_params.json").read_text())
    assert written["stopped_by_timeout"] is True


# ---------------------------------------------------------------- several workers, one storage


@pytest.mark.slow
def test_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    _project(tmp_path, n_trials=4, epochs=1, pruner="none")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    cmd = [sys.executable, "-m", "lungseg.cli", "tune", "--n-trials", "2"]
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-3000:]
    params = load_params(tmp_path / "params.yaml")
    trials = _study(params, tmp_path).get_trials()
    assert len(trials) == 4 and sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # the workers drew different values
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lung-segmentation")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'tune'")
    children = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'tune-trial'")
    assert sorted(c.data.tags["optuna_trial"] for c in children) == ["0", "1", "2", "3"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    best = json.loads((tmp_path / "reports/tune/best_params.json").read_text())
    assert best["trials"]["complete"] >= 2  # each worker summarises the study as it finds it
