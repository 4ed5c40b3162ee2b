"""The movie map's numpy PCA (app.ui.movie_map) against the training-time plot's, and its cache."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml.plots import pca_2d
from app.ui.movie_map import MapCache, principal_components_2d


def test_it_is_the_plots_pca_with_fixed_signs() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(200, 8)) @ np.diag([3, 2, 1, 1, 0.5, 0.5, 0.2, 0.1])
    points, shares = principal_components_2d(vectors.astype(np.float32))
    expected = pca_2d(vectors)
    for axis in (0, 1):
        sign = np.sign(points[:, axis] @ expected[:, axis])
        np.testing.assert_allclose(points[:, axis], sign * expected[:, axis], atol=1e-4)
        assert points[np.argmax(np.abs(points[:, axis])), axis] > 0
    variance = ((vectors - vectors.mean(0)) ** 2).sum()
    assert shares[0] == pytest.approx((points[:, 0] ** 2).sum() / variance, rel=1e-4)
    assert shares[0] > shares[1] > 0


def test_small_and_empty_inputs() -> None:
    points, shares = principal_components_2d(np.array([[1.0], [2.0], [4.0]]))
    assert points.shape == (3, 2) and np.all(points[:, 1] == 0) and shares == (pytest.approx(1.0), 0.0)
    empty, none = principal_components_2d(np.zeros((0, 4)))
    assert empty.shape == (0, 2) and none == (0.0, 0.0)
    constant, zero = principal_components_2d(np.ones((5, 3)))
    assert np.all(constant == 0) and zero == (0.0, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        principal_components_2d(np.zeros(3))


def test_the_cache_computes_once_a_version_and_keeps_two() -> None:
    cache = MapCache(kept=2)
    a = np.random.default_rng(0).normal(size=(10, 4))
    first = cache.get("v1", a)
    assert cache.get("v1", np.zeros((10, 4))) is first  # not recomputed
    cache.get("v2", a)
    cache.get("v3", a)
    assert cache.get("v1", np.zeros((10, 4))) is not first  # v1 was dropped
