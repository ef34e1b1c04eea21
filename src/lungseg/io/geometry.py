"""Voxel-grid geometry shared by the DICOM, NIfTI and synthetic modules.

Conventions (used everywhere in lungseg):

* A volume is a numpy array indexed ``[i, j, k]`` = ``[column, row, slice]``:
  ``i`` runs along a DICOM image row (the "row direction" of
  ImageOrientationPatient), ``j`` down the image columns, ``k`` across slices,
  ordered by position along the slice normal. A DICOM slice ``pixel_array``
  (shape ``(rows, columns)``) therefore goes into ``volume[:, :, k]`` transposed.
* World coordinates are in millimetres. DICOM patient space is LPS (+x patient
  left, +y posterior, +z superior); NIfTI is RAS (+x patient right, +y anterior, +z superior; ``x_ras = -x_lps``, ``y_ras = -y_lps``).
  :class:`Geometry` stores LPS, and ``affine_ras`` converts for NIfTI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungseg.io import exact

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a 3D volume stored as ``array[i, j, k]``.

    Attributes:
        shape: Array shape ``(n_i, n_j, n_k)`` = (columns, rows, slices).
        spacing_mm: Voxel size along ``i``, ``j``, ``k`` in mm (column spacing,
            row spacing, slice spacing).
        origin_lps_mm: LPS world position of the centre of voxel ``(0, 0, 0)``.
        direction: 3x3 matrix whose columns are the LPS unit vectors of the
            ``i``, ``j`` and ``k`` axes.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 float array, columns = LPS directions of the i, j, k axes."""
        return np.asarray(self.direction, dtype=float)

    def affine_lps(self) -> np.ndarray:
        """4x4 affine mapping voxel index ``(i, j, k, 1)`` to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing_mm, dtype=float)[None, :]
        affine[:3, 3] = self.origin_lps_mm
        return affine

    def affine_ras(self) -> np.ndarray:
        """4x4 affine mapping voxel index ``(i, j, k, 1)`` to RAS mm (NIfTI)."""
        return exact.matmul(LPS_TO_RAS, self.affine_lps())

    def voxel_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` (float allowed) to LPS mm ``(..., 3)``."""
        a = self.affine_lps()
        return exact.matmul(np.asarray(ijk, dtype=float), a[:3, :3].T) + a[:3, 3]

    def lps_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map LPS mm points ``(..., 3)`` to continuous voxel indices ``(..., 3)``."""
        a = self.affine_lps()
        return exact.matmul(np.asarray(xyz, dtype=float) - a[:3, 3], exact.inv3(a[:3, :3]).T)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray, shape: tuple[int, ...]) -> Geometry:
        """Build a geometry from a NIfTI (RAS) affine and a 3D shape."""
        lps = exact.matmul(LPS_TO_RAS, np.asarray(affine, dtype=float))  # its own inverse
        m = lps[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            raise ValueError(f"affine has a zero or non-finite voxel size: {spacing.tolist()}")
        direction = m / spacing[None, :]
        return cls(
            shape=tuple(int(s) for s in shape[:3]),  # type: ignore[arg-type]
            spacing_mm=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            origin_lps_mm=tuple(float(v) for v in lps[:3, 3]),  # type: ignore[arg-type]
            direction=tuple(tuple(float(v) for v in row) for row in direction),
        )
