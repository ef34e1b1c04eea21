"""lungseg.io.exact: the same results as numpy's BLAS/LAPACK calls, up to rounding."""

from __future__ import annotations

import numpy as np
import pytest

from lungseg.io import exact


def test_products_norms_and_inverse_agree_with_numpy() -> None:
    rng = np.random.default_rng(0)
    a, m, v = rng.normal(size=(50, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)
    np.testing.assert_allclose(exact.matmul(a, m), a @ m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(exact.matmul(a, v), a @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(exact.matmul(rng.normal(size=(2, 4, 3)), m).shape, (2, 4, 3))
    assert exact.dot(v, v) == pytest.approx(float(v @ v), rel=1e-12)
    assert exact.norm(v) == pytest.approx(float(np.linalg.norm(v)), rel=1e-12)
    np.testing.assert_allclose(exact.inv3(m), np.linalg.inv(m), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(exact.covariance(a), np.cov(a.T), rtol=1e-12, atol=1e-12)


def test_principal_axis_is_the_largest_eigenvector() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(500, 3)) * [5.0, 1.0, 0.5]
    cov = exact.covariance(points)
    axis = exact.principal_axis(cov)
    expected = np.linalg.eigh(cov)[1][:, -1]
    assert abs(exact.dot(axis, expected)) == pytest.approx(1.0, abs=1e-9)
    assert exact.norm(axis) == pytest.approx(1.0)


def test_bad_shapes_and_a_singular_matrix_are_errors() -> None:
    with pytest.raises(ValueError, match="inner dimensions"):
        exact.matmul(np.ones((4, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="singular"):
        exact.inv3(np.ones((3, 3)))
