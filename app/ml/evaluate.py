"""Accuracy (RMSE, MAE) and top-10 ranking quality, with the baselines they must beat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.data.training_set import TrainingSet
from app.ml import scoring

RELEVANT_FROM = 4.0

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


@dataclass(frozen=True)
class RankingScores:
    precision: float
    recall: float
    ndcg: float
    users: int


def ranking_scores(
    score_users: UserScorer,
    train: TrainingSet,
    test: TrainingSet,
    k: int = 10,
    chunk_users: int = 512,
) -> RankingScores:
    """Precision, recall and NDCG at k of top-k lists, averaged over users with a relevant test item.

    Args:
        score_users: maps int (P,) user rows to float (P, n_movies) scores (higher is better).
        train: the ratings the scorer learnt from; a user's rated training movies are never listed.
        test: held-out ratings with the same id maps; those >= 4 are the relevant items.
        k: list length.
        chunk_users: users scored at once, bounding memory to chunk_users x n_movies floats.
    """
    k = min(k, train.n_movies)
    relevant = test.subset(test.ratings >= RELEVANT_FROM)
    users = np.unique(relevant.user_rows)
    relevant_keys = _pair_keys(relevant.user_rows, relevant.movie_rows, train.n_movies)
    n_relevant = np.bincount(relevant.user_rows, minlength=train.n_users)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    hits_sum = recall_sum = ndcg_sum = 0.0
    for chunk in np.array_split(users, max(1, -(-len(users) // chunk_users))):
        scores = np.asarray(score_users(chunk), dtype=np.float32).copy()
        _mask_rated(scores, chunk, train)
        top, _ = scoring.top_k_rows(scores, k)
        hits = np.isin(_pair_keys(chunk[:, None], top, train.n_movies), relevant_keys)
        ideal = np.array([discounts[: min(n, k)].sum() for n in n_relevant[chunk]])
        hits_sum += hits.sum() / k
        recall_sum += (hits.sum(1) / n_relevant[chunk]).sum()
        ndcg_sum += ((hits * discounts).sum(1) / ideal).sum()
    n = max(len(users), 1)
    return RankingScores(hits_sum / n, recall_sum / n, ndcg_sum / n, len(users))


def movie_popularity(data: TrainingSet) -> np.ndarray:
    """float32 (n_movies,) log(1 + number of ratings) of each movie row."""
    return np.log1p(np.bincount(data.movie_rows, minlength=data.n_movies)).astype(np.float32)


def popularity_scorer(train: TrainingSet) -> UserScorer:
    """Scores every movie by its number of training ratings, the same for every user."""
    counts = np.bincount(train.movie_rows, minlength=train.n_movies).astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), train.n_movies))


def _pair_keys(user_rows: np.ndarray, movie_rows: np.ndarray, n_movies: int) -> np.ndarray:
    return user_rows.astype(np.int64) * n_movies + movie_rows


def _mask_rated(scores: np.ndarray, users: np.ndarray, train: TrainingSet) -> None:
    """Set to -inf the scores of movies each user rated in training."""
    position = np.full(train.n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    in_chunk = position[train.user_rows] >= 0
    scores[position[train.user_rows[in_chunk]], train.movie_rows[in_chunk]] = -np.inf
