"""The MLflow-free registry lookup of `lungseg predict`: the same folder MLflow resolves, or None."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from lungseg.inference.registry import local_model_dir


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, mlflow.MlflowClient]:
    """A real MLflow SQLite registry: version 1 local (alias champion), version 2 remote (alias remote)."""
    root = tmp_path_factory.mktemp("registry")
    folder = root / "model v1"  # a space: the file URI is percent-encoded
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("lungs")
    local = client.create_model_version("lungs", source=folder.as_uri())
    remote = client.create_model_version("lungs", source="s3://bucket/model")
    client.set_registered_model_alias("lungs", "champion", local.version)
    client.set_registered_model_alias("lungs", "remote", remote.version)
    return uri, folder, client


def test_alias_and_version_resolve_to_the_folder_mlflow_gives(registry) -> None:  # noqa: ANN001
    uri, folder, client = registry
    expected = client.get_model_version_download_uri("lungs", "1")
    assert local_model_dir("models:/lungs@champion", uri) == folder
    assert local_model_dir("models:/lungs/1", uri) == folder
    assert folder.as_uri() == expected


@pytest.mark.parametrize("model_uri", [
    "models:/lungs@remote",      # stored remotely: MLflow downloads it
    "models:/lungs@nothing",     # no such alias: MLflow gives the error
    "models:/lungs/9",           # no such version
    "models:/other@champion",    # no such model
    "runs:/0123456789abcdef/model",
    "models:/lungs",
])
def test_anything_else_is_left_to_mlflow(registry, model_uri: str) -> None:  # noqa: ANN001
    uri, _, _ = registry
    assert local_model_dir(model_uri, uri) is None


def test_other_stores_and_a_broken_database_are_left_to_mlflow(registry, tmp_path: Path) -> None:  # noqa: ANN001
    assert local_model_dir("models:/lungs@champion", "http://127.0.0.1:5000") is None
    assert local_model_dir("models:/lungs@champion", "postgresql://u@h/db") is None
    assert local_model_dir("models:/lungs@champion", f"sqlite:///{tmp_path / 'missing.db'}") is None
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database")
    assert local_model_dir("models:/lungs@champion", f"sqlite:///{broken}") is None


def test_a_deleted_model_folder_is_left_to_mlflow(registry) -> None:  # noqa: ANN001
    uri, folder, _ = registry
    (folder / "MLmodel").rename(folder / "MLmodel.moved")
    try:
        assert local_model_dir("models:/lungs@champion", uri) is None
    finally:
        (folder / "MLmodel.moved").rename(folder / "MLmodel")
