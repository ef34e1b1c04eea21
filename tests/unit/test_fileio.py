"""lungseg.fileio: atomic writes and the project root that relative local stores resolve against."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from lungseg.fileio import atomic_write, atomic_write_bytes, atomic_write_text, project_root, resolve_store


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "best.json"
    atomic_write_text(target, "old\n")
    atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["best.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_bytes(b"good model")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_write(target, suffix=".keras") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".model.keras.") and tmp.suffix == ".keras"
            tmp.write_bytes(b"half a mod")
            raise RuntimeError("crash while saving")
    assert target.read_bytes() == b"good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_concurrent_writers_of_one_file_never_collide(tmp_path: Path) -> None:
    """Two tune workers finishing together both write best_params.json: each rename succeeds, the file is whole."""
    target = tmp_path / "best_params.json"
    payloads = [(f'{{"worker": {i}, "pad": "{"x" * 200_000}"}}\n').encode() for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(5):
                atomic_write_bytes(target, data)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["best_params.json"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "sqlite:////proj/mlflow.db"),
        ("sqlite:///db/x.db?timeout=30", "sqlite:////proj/db/x.db?timeout=30"),
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("optuna/tune.journal", "/proj/optuna/tune.journal"),
        ("/abs/tune.journal", "/abs/tune.journal"),
        ("file:mlruns", "file:///proj/mlruns"),
        ("file:///abs/mlruns", "file:///abs/mlruns"),
        ("postgresql://u:p@db:5432/optuna", "postgresql://u:p@db:5432/optuna"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_relative_local_stores_resolve_against_the_project_root(uri: str, expected: str) -> None:
    assert resolve_store(uri, root="/proj") == expected


def test_project_root_is_dvc_root_when_dvc_sets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc exp run --temp` runs stages in a copy under .dvc/tmp/exps with DVC_ROOT = the original repo."""
    original, copy = tmp_path / "repo", tmp_path / "repo/.dvc/tmp/exps/tmp123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert project_root() == copy.resolve()
    monkeypatch.setenv("DVC_ROOT", str(original))
    assert project_root() == original.resolve()
    assert resolve_store("sqlite:///mlflow.db") == f"sqlite:///{original.resolve()}/mlflow.db"
    assert resolve_store("optuna/tune.journal") == str(original.resolve() / "optuna/tune.journal")
