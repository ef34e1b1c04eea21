"""sha256 digests of folders (byte-identical outputs) and of synthetic phantoms (pinned generator)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def file_digests(folder: Path, recursive: bool = True) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (only its own files if not ``recursive``)."""
    folder = Path(folder)
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(paths) if p.is_file()}


def tree_digest(folder: Path) -> str:
    """One sha256 over every file's relative path and sha256, in sorted path order (the recorded
    digests of ``tests/unit/synthetic/test_synthetic_checksum.py`` are of this form: do not change it)."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def phantom_digest(seed: int | list[int] | np.random.Generator, pathology: bool, max_matrix: int) -> str:
    """sha256 over the HU array bytes and the packed masks (sorted by name) of one phantom
    (``seed``: a generator, ``n`` for ``default_rng([n, 0])``, or a seed list for ``default_rng(list)``)."""
    from lungseg.synthetic import make_phantom

    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        rng = np.random.default_rng(seed if isinstance(seed, list) else [seed, 0])
    ph = make_phantom(rng, pathology, max_matrix=max_matrix)
    h = hashlib.sha256(ph.hu.tobytes())
    for name in sorted(ph.masks):
        h.update(name.encode())
        h.update(np.packbits(ph.masks[name]).tobytes())
    return h.hexdigest()
