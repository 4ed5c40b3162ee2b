"""Small rating sets with a known answer, shared by the model tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from app.data.training_set import TrainingSet

NOISE = 0.2


def planted_ratings(
    n_users: int = 300, n_movies: int = 200, rank: int = 3, density: float = 0.3, seed: int = 0
) -> tuple[TrainingSet, np.ndarray]:
    """Ratings drawn from the model's own family plus Gaussian noise of sd NOISE.

    Returns the observed set (external ids 1-based) and the noise-free (n_users, n_movies) matrix.
    """
    rng = np.random.default_rng(seed)
    users = rng.normal(0, 0.8, (n_users, rank))
    movies = rng.normal(0, 0.8, (n_movies, rank))
    scores = users @ movies.T + rng.normal(0, 0.5, (n_users, 1)) + rng.normal(0, 0.5, (1, n_movies))
    truth = 5.5 / (1 + np.exp(-scores))
    observed = rng.random((n_users, n_movies)) < density
    user_rows, movie_rows = np.nonzero(observed)
    ratings = truth[user_rows, movie_rows] + rng.normal(0, NOISE, len(user_rows))
    timestamps = rng.integers(1_000_000, 2_000_000, len(user_rows))
    data = TrainingSet.from_arrays(user_rows + 1, movie_rows + 1, ratings.astype(np.float32), timestamps)
    return data, truth


@dataclass(frozen=True)
class Planted:
    data: TrainingSet
    truth: np.ndarray
    noise: float = NOISE


@pytest.fixture(scope="session")
def planted() -> Planted:
    return Planted(*planted_ratings())
