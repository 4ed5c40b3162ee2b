"""Accuracy (RMSE, MAE) and top-10 ranking quality of held-out ratings, with the baselines they
must beat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.data.training_set import TrainingSet
from app.ml.ranking_metrics import K, RankingReport, ranking_metrics, top_lists

UserScorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BiasBaseline:
    """`mu + b_u + b_m` fitted by damped alternating means (Surprise's BaselineOnly, ALS form).

    Attributes:
        global_mean: mu, the mean training rating.
        user_bias: float32 (n_users,), indexed by TrainingSet user rows.
        movie_bias: float32 (n_movies,), indexed by TrainingSet movie rows.
    """

    global_mean: float
    user_bias: np.ndarray
    movie_bias: np.ndarray

    @classmethod
    def fit(
        cls, data: TrainingSet, user_damping: float = 15.0, movie_damping: float = 10.0, sweeps: int = 10
    ) -> BiasBaseline:
        mu = float(data.ratings.mean())
        user_bias = np.zeros(data.n_users, dtype=np.float64)
        movie_bias = np.zeros(data.n_movies, dtype=np.float64)
        user_counts = np.bincount(data.user_rows, minlength=data.n_users) + user_damping
        movie_counts = np.bincount(data.movie_rows, minlength=data.n_movies) + movie_damping
        for _ in range(sweeps):
            residual = data.ratings - mu - user_bias[data.user_rows]
            movie_bias = np.bincount(data.movie_rows, residual, data.n_movies) / movie_counts
            residual = data.ratings - mu - movie_bias[data.movie_rows]
            user_bias = np.bincount(data.user_rows, residual, data.n_users) / user_counts
        return cls(mu, user_bias.astype(np.float32), movie_bias.astype(np.float32))

    def predict(self, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        return self.global_mean + self.user_bias[user_rows] + self.movie_bias[movie_rows]


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - actual) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - actual)))


def ranking_report(
    score_users: UserScorer, train: TrainingSet, test: TrainingSet, k: int = K
) -> RankingReport:
    """Top-k quality (`ranking_metrics.ranking_metrics`) of the lists `score_users` makes for
    every user with a held-out rating, their training movies excluded.

    Args:
        score_users: maps int (P,) user rows to float (P, n_movies) scores (higher is better).
        train: the ratings the scorer learnt from; a user's training movies are never listed.
        test: held-out ratings with the same id maps.
    """
    users = np.unique(test.user_rows).astype(np.int64)
    train_users, train_movies = train.user_rows.astype(np.int64), train.movie_rows.astype(np.int64)
    lists = top_lists(score_users, train_users, train_movies, train.n_users, users, k)
    return ranking_metrics(
        users, lists, test.user_rows, test.movie_rows, test.ratings, train_movies, train.n_movies
    )


def movie_popularity(data: TrainingSet) -> np.ndarray:
    """float32 (n_movies,) log(1 + number of ratings) of each movie row."""
    return np.log1p(np.bincount(data.movie_rows, minlength=data.n_movies)).astype(np.float32)


def popularity_scorer(train: TrainingSet) -> UserScorer:
    """Scores every movie by its number of training ratings, the same for every user."""
    counts = np.bincount(train.movie_rows, minlength=train.n_movies).astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), train.n_movies))
