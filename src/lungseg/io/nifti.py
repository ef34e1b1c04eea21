"""Deterministic NIfTI-1 writing and checked reading.

Arrays follow the lungseg convention (see :mod:`lungseg.io.geometry`):
indexed ``[i, j, k]`` on the grid of a :class:`~lungseg.io.geometry.Geometry`;
the file's affine is ``geometry.affine_ras()`` (RAS mm), stored as both sform
and qform with code 1 (scanner).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike

from lungseg.errors import CaseError
from lungseg.fileio import atomic_write_bytes
from lungseg.io.geometry import Geometry

__all__ = ["atomic_write_bytes", "nifti_bytes", "read_nifti", "read_nifti_bytes", "write_nifti"]

logger = logging.getLogger(__name__)


def nifti_bytes(array: np.ndarray, geometry: Geometry, dtype: DTypeLike, *, gzipped: bool = True) -> bytes:
    """Encode a volume as NIfTI-1 file contents (gzip with mtime 0 when ``gzipped``).

    Args:
        array: Volume ``[i, j, k]`` with shape ``geometry.shape``.
        geometry: Grid of ``array``; its RAS affine goes into sform and qform.
        dtype: On-disk data type (values are cast, not scaled).
        gzipped: Compress the bytes (for ``.nii.gz``).
    """
    array = np.asarray(array)
    if array.shape != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    affine = geometry.affine_ras()
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    img.header.set_data_dtype(dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    raw = img.to_bytes()
    # gzip.compress writes no file name and, with mtime=0, no time stamp: same input, same bytes.
    return gzip.compress(raw, compresslevel=6, mtime=0) if gzipped else raw


def write_nifti(array: np.ndarray, geometry: Geometry, path: Path, dtype: DTypeLike) -> None:
    """Write a volume as NIfTI-1 with byte-identical output for identical input.

    The file is written to a temporary name and renamed, so a crash never
    leaves a half-written file at ``path``. ``.nii.gz`` paths are gzipped
    (mtime 0, no file name in the header); ``.nii`` paths are not.

    Args:
        array: Volume ``[i, j, k]`` with shape ``geometry.shape``.
        geometry: Grid of ``array`` (LPS); the file gets ``geometry.affine_ras()``.
        path: Output file.
        dtype: On-disk data type, e.g. ``np.int16`` for HU or ``np.uint8`` for labels.
    """
    path = Path(path)
    atomic_write_bytes(path, nifti_bytes(array, geometry, dtype, gzipped=path.name.endswith(".gz")))


def read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a 3D NIfTI volume and its grid.

    A 4D image with a single volume (trailing size-1 axes) is accepted and squeezed.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``(array, geometry)``: the voxel data ``[i, j, k]`` in its stored dtype
        (or float when the header scales it) and the grid from the file's
        affine (sform, else qform) via :meth:`Geometry.from_affine_ras`.

    Raises:
        CaseError: (naming the file) not a readable NIfTI, not 3D, a degenerate
            affine, or NaN/inf voxels.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = img.affine
    except Exception as e:  # noqa: BLE001 - nibabel/gzip/numpy raise many types for bad files
        raise CaseError(str(path), f"not a readable NIfTI file ({type(e).__name__}: {e})") from e
    return _checked(data, affine, str(path))


def read_nifti_bytes(data: bytes, name: str) -> tuple[np.ndarray, Geometry]:
    """Like :func:`read_nifti` for the contents of a ``.nii`` or ``.nii.gz`` file (gzip is detected).

    Args:
        data: File contents.
        name: What to call the input in error messages.

    Raises:
        CaseError: (naming ``name``) not NIfTI-1/2, not 3D, a degenerate affine, or NaN/inf voxels.
    """
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else bytes(data)
        try:
            img = nib.Nifti1Image.from_bytes(raw)
        except Exception:  # noqa: BLE001 - not NIfTI-1: try NIfTI-2, whose error is reported
            img = nib.Nifti2Image.from_bytes(raw)
        array = np.asanyarray(img.dataobj)
        affine = img.affine
    except Exception as e:  # noqa: BLE001 - nibabel/gzip/numpy raise many types for bad bytes
        raise CaseError(name, f"not a readable NIfTI file ({type(e).__name__}: {e})") from e
    return _checked(array, affine, name)


def _checked(data: np.ndarray, affine: np.ndarray | None, name: str) -> tuple[np.ndarray, Geometry]:
    """The checks and the geometry of :func:`read_nifti` (``name`` goes into error messages)."""
    if data.ndim > 3 and all(s == 1 for s in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise CaseError(name, f"expected a 3D image, got shape {data.shape}")
    if affine is None:
        raise CaseError(name, "no affine (sform and qform codes are 0)")
    try:
        geometry = Geometry.from_affine_ras(affine, data.shape)
    except ValueError as e:
        raise CaseError(name, f"bad affine: {e}") from e
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise CaseError(name, f"{int(np.count_nonzero(~np.isfinite(data)))} NaN or infinite voxels")
    return data, geometry
