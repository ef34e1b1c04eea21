"""Small linear algebra that gives the same bits on every CPU.

Why: numpy hands ``@``, ``np.dot``, ``np.linalg.norm`` of a vector, ``np.cov``, ``inv`` and
``eigh`` to BLAS/LAPACK, whose kernels are chosen per CPU (OpenBLAS: Haswell, SkylakeX, Zen, ...)
and sum or fuse multiply-adds in different orders. The last bits then differ between hosts, a
voxel's rounding flips, and the same seed wrote a different synthetic cohort on an AVX-512 host
than on an AVX2 one (measured: 18 of the DICOM files of 4 patients differed between
``OPENBLAS_CORETYPE=Haswell`` and the native kernels). Here every product and sum is a numpy
elementwise operation over the (short) inner dimension, in a fixed order: exactly rounded
IEEE arithmetic, the same everywhere. For 3-vectors and 3x3/4x4 matrices only; big products
(images) stay with numpy/scipy.
"""

from __future__ import annotations

import math

import numpy as np


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for ``a`` of shape ``(..., n)`` and ``b`` of shape ``(n,)`` or ``(n, m)``, ``n`` small."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    out = a[..., 0] * b[0] if b.ndim == 1 else a[..., 0, None] * b[0]
    for k in range(1, b.shape[0]):
        out = out + (a[..., k] * b[k] if b.ndim == 1 else a[..., k, None] * b[k])
    return out


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two vectors."""
    return float(matmul(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))


def norm(v: np.ndarray) -> float:
    """Euclidean length of a vector."""
    return math.sqrt(dot(v, v))


def inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 matrix by its adjugate.

    Raises:
        ValueError: the matrix is singular.
    """
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(m, dtype=float).tolist()
    adj = np.array([
        [e * i - f * h, c * h - b * i, b * f - c * e],
        [f * g - d * i, a * i - c * g, c * d - a * f],
        [d * h - e * g, b * g - a * h, a * e - b * d],
    ])
    det = a * adj[0, 0] + b * adj[1, 0] + c * adj[2, 0]
    if det == 0.0 or not math.isfinite(det):
        raise ValueError("singular 3x3 matrix")
    return adj / det


def covariance(points: np.ndarray) -> np.ndarray:
    """Sample covariance ``(d, d)`` of ``points`` ``(n, d)`` (``np.cov(points.T)``)."""
    p = np.asarray(points, dtype=float)
    d = p - p.mean(axis=0)
    k = p.shape[1]
    cov = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            cov[i, j] = cov[j, i] = float(np.sum(d[:, i] * d[:, j])) / max(len(p) - 1, 1)
    return cov


def principal_axis(cov: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Unit eigenvector of the largest eigenvalue of a symmetric positive semi-definite matrix
    (power iteration in Python floats, the same operation order as :func:`matmul`/:func:`norm`;
    sign fixed by the start vector; stops early at an exact fixed point)."""
    c = np.asarray(cov, dtype=float).tolist()
    n = len(c)
    v = ([1.0, 0.5, 0.25] + [0.125] * n)[:n]
    length = math.sqrt(sum(x * x for x in v))
    v = [x / length for x in v]
    for _ in range(iterations):
        w = [sum(row[k] * v[k] for k in range(n)) for row in c]
        length = math.sqrt(sum(x * x for x in w))
        if length == 0.0:
            break
        w = [x / length for x in w]
        if w == v:
            break
        v = w
    return np.array(v)
