"""The product's ranking head (app/ml/ranking.py) on the benchmarks' dense row codes.

The prototype this folder was made for became `app.ml.ranking` (its history is in git); the
benchmark scripts fit and fold in through the product's own code, so what they measure is
what `dotrec train` trains and the API folds in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.data.training_set import TrainingSet
from app.ml.predictor import RankingHead
from app.ml.ranking import RankingConfig, fit_ranking

IALSConfig = RankingConfig
"""The name the benchmark scripts know the ranking head's hyper-parameters by."""


@dataclass
class FittedHead:
    """Fitted factors: float32 (n_users, k) and (n_movies, k); score = user_factors @ movie_factors.T."""

    user_factors: np.ndarray
    movie_factors: np.ndarray
    head: RankingHead
    fit_seconds: float

    def score(self, users: np.ndarray) -> np.ndarray:
        """float32 (len(users), n_movies) scores of the users at rows `users`."""
        return self.head.scores(self.user_factors[users])


def fit(
    user_rows: np.ndarray,
    movie_rows: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_movies: int,
    config: RankingConfig,
) -> FittedHead:
    """`fit_ranking` on ratings given as dense row codes; timed (`fit_seconds`)."""
    data = TrainingSet(
        user_rows=np.asarray(user_rows, np.int32),
        movie_rows=np.asarray(movie_rows, np.int32),
        ratings=np.asarray(ratings, np.float32),
        timestamps=np.zeros(len(ratings), np.int64),
        user_ids=np.arange(1, n_users + 1),
        movie_ids=np.arange(1, n_movies + 1),
        fingerprint={},
    )
    fitted = fit_ranking(data, config)
    terms = {
        "unobserved_weight": config.unobserved_weight,
        "reg": fitted.reg,
        "reg_exponent": config.reg_exponent,
        "rating_weight": config.rating_weight,
        "rating_pivot": config.rating_pivot,
        "min_weight": config.min_weight,
    }
    head = RankingHead(fitted.user_factors, fitted.movie_factors, terms)
    return FittedHead(fitted.user_factors, fitted.movie_factors, head, fitted.seconds)


def fold_in(fitted: FittedHead, movie_rows: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """float32 (k,) a new user's row from their ratings, as the API folds them in."""
    return fitted.head.fold_in(np.asarray(movie_rows), np.asarray(ratings, np.float32))
