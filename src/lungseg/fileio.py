"""Files: atomic writes, and the project root that relative local stores belong to.

Atomic writes (a reader, or a crash, never sees half a file): every write goes to a hidden
temporary file in the target's folder (``.<name>.<random>.partial``, plus ``suffix`` for writers
that insist on an extension, e.g. Keras' ``.keras``), is flushed to disk, then renamed over the
target with :func:`os.replace` (atomic on POSIX within one file system). Concurrent writers of
the same target (two ``lungseg tune`` workers finishing together) each use their own temporary
name; the last rename wins and the file is always whole.

Project root: MLflow's SQLite database and the Optuna journal are relative paths in
``params.yaml``; :func:`resolve_store` anchors them at :func:`project_root` (``$DVC_ROOT``), so
a stage that DVC runs in a throw-away copy (``dvc exp run --temp``, ``--queue``) still writes
to the project's own stores.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT_ENV = "DVC_ROOT"  # set by DVC for each stage command (exp --temp/--queue: the original repo)


def project_root() -> Path:
    """The folder that relative local stores (MLflow's SQLite file, the Optuna journal) belong to.

    DVC sets ``DVC_ROOT`` for each stage command: the repository root in ``dvc repro``, and the
    *original* repository (not the copy under ``.dvc/tmp/exps`` that runs the stage) in
    ``dvc exp run --temp`` and queued experiments, whose copy is deleted afterwards. Outside
    DVC it is the working directory.
    """
    root = os.environ.get(PROJECT_ROOT_ENV)
    return Path(root).resolve() if root else Path.cwd().resolve()


def resolve_store(uri: str, root: str | Path | None = None) -> str:
    """Anchor a relative local store at the project root; other stores are returned unchanged.

    ``sqlite:///mlflow.db`` becomes ``sqlite:////<root>/mlflow.db``, ``optuna/tune.journal``
    becomes ``<root>/optuna/tune.journal`` and ``file:mlruns`` becomes ``file://<root>/mlruns``;
    absolute paths, in-memory SQLite and server URLs (``postgresql://``, ``http://``) stay as
    they are.

    Args:
        uri: A tracking URI, database URL or file path.
        root: The folder relative paths are anchored at (default :func:`project_root`).
    """
    base = Path(root) if root is not None else project_root()
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        if not rest or rest.startswith("/") or rest.startswith(":memory:"):
            return uri
        return f"sqlite:///{base / rest}"
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return f"file://{base / uri[len('file:'):]}"
    if "://" in uri or not uri or Path(uri).is_absolute():
        return uri
    return str(base / uri)


@contextmanager
def atomic_write(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, move it onto ``path``.

    The block writes the temporary path in any way it likes (``open``, ``model.save``,
    ``np.save``). On an exception the temporary file is removed and ``path`` is untouched.
    The parent folder is created if needed.

    Args:
        path: The final file.
        suffix: Extension the temporary name must end with (e.g. ``".keras"``).

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial{suffix}")
    try:
        yield tmp
        if tmp.is_file():  # flush what the writer left in the page cache before the rename
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))
