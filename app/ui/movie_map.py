"""The movie map: movie embeddings on their first two principal components, on numpy alone.

The same projection as `app.ml.plots.pca_2d` (which draws `movie_map.png` at training time), without
matplotlib or torch, so the serving process imports neither. A model's map never changes, so it is
computed once per model version and kept (`MapCache`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

MAPS_KEPT = 2
"""Versions whose map is kept: the serving one and the one before (a reload swaps them)."""


@dataclass(frozen=True)
class MovieMap:
    """Where each embedding row lies on the first two principal components."""

    version: str
    x: np.ndarray
    """float64 (n_movies,): coordinate on the first principal component."""
    y: np.ndarray
    """float64 (n_movies,): coordinate on the second principal component."""
    explained_variance: tuple[float, float]
    """Share of the embeddings' total variance along each of the two components (0 to 1)."""


def principal_components_2d(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """(n, k) rows -> their (n, 2) projection on the two main principal components, and the share of
    the variance each component carries. Signs are made deterministic: the largest-magnitude
    coordinate of each component is positive (an SVD may flip a component between runs otherwise)."""
    rows = np.asarray(vectors, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-D array of embedding rows, got shape {rows.shape}")
    n = rows.shape[0]
    if n == 0:
        return np.zeros((0, 2)), (0.0, 0.0)
    centred = rows - rows.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    points = np.zeros((n, 2))
    shares = [0.0, 0.0]
    total = float((singular**2).sum())
    for i in range(min(2, len(singular))):
        projected = centred @ components[i]
        if projected[np.argmax(np.abs(projected))] < 0:
            projected = -projected
        points[:, i] = projected
        shares[i] = float(singular[i] ** 2 / total) if total > 0 else 0.0
    return points, (shares[0], shares[1])


def movie_map(version: str, movie_emb: np.ndarray) -> MovieMap:
    points, shares = principal_components_2d(movie_emb)
    return MovieMap(version=version, x=points[:, 0], y=points[:, 1], explained_variance=shares)


class MapCache:
    """The maps of the last `MAPS_KEPT` model versions; each is computed once (thread-safe)."""

    def __init__(self, kept: int = MAPS_KEPT) -> None:
        self._kept = kept
        self._maps: dict[str, MovieMap] = {}
        self._lock = threading.Lock()

    def get(self, version: str, movie_emb: np.ndarray) -> MovieMap:
        with self._lock:
            found = self._maps.get(version)
            if found is None:
                found = movie_map(version, movie_emb)
                self._maps[version] = found
                while len(self._maps) > self._kept:
                    del self._maps[next(iter(self._maps))]
            return found
