"""Many users at once: row-wise pairs (POST /predict/pairs) and matrices (POST /predict/matrix).

Every cell comes from the same kernel as GET /predict: personal cells from the users' terms,
cold users' cells from the movies' baselines, cells of movies the model lacks from each user's
baseline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.serving.predictions import PREDICT_STRATEGY, USER_BASELINE
from app.serving.serving_model import ServingModel
from app.serving.users import COLD, MODEL, UserState, user_terms

#: the strategy of a pair by its code: the user's kind, or 3 for a movie the model lacks
PAIR_STRATEGIES = [PREDICT_STRATEGY[MODEL], PREDICT_STRATEGY[1], PREDICT_STRATEGY[COLD], USER_BASELINE]
MOVIE_NOT_IN_MODEL = 3


@dataclass(frozen=True)
class UserBlock:
    """Many users' terms as arrays, row i for users[i]."""

    kinds: np.ndarray
    """int8 (n,): MODEL, FOLD_IN or COLD."""
    vectors: np.ndarray
    """float32 (n, k); zeros for cold users."""
    biases: np.ndarray
    """float32 (n,)."""
    baselines: np.ndarray
    """float32 (n,): each user's rating of a movie the model does not know."""

    @property
    def strategies(self) -> list[str]:
        return [PREDICT_STRATEGY[int(kind)] for kind in self.kinds]


def model_users_block(model: ServingModel, rows: np.ndarray | None = None) -> UserBlock:
    """The block of model users at `rows` (None: every user, no copy of the embeddings)."""
    predictor = model.predictor
    if rows is None:
        vectors, biases, offsets = predictor.user_emb, predictor.user_bias, predictor.baseline_user_bias
    else:
        vectors, biases = predictor.user_emb[rows], predictor.user_bias[rows]
        offsets = predictor.baseline_user_bias[rows]
    baselines = predictor.user_baselines(offsets)
    return UserBlock(np.full(len(vectors), MODEL, dtype=np.int8), vectors, biases, baselines)


def user_block(model: ServingModel, users: list[UserState]) -> UserBlock:
    """The block of any users, in order."""
    predictor = model.predictor
    kinds = np.fromiter((u.kind for u in users), dtype=np.int8, count=len(users))
    if len(users) and (kinds == MODEL).all():
        return model_users_block(model, np.array([u.row for u in users], dtype=np.int64))
    vectors = np.zeros((len(users), predictor.user_emb.shape[1]), dtype=np.float32)
    biases = np.zeros(len(users), dtype=np.float32)
    baselines = np.empty(len(users), dtype=np.float32)
    for i, user in enumerate(users):
        terms = user_terms(model, user)
        if terms.vector is not None:
            vectors[i] = terms.vector
            biases[i] = terms.bias
        baselines[i] = predictor.user_baseline(terms.baseline_offset)
    return UserBlock(kinds, vectors, biases, baselines)


def pair_ratings(
    model: ServingModel, block: UserBlock, user_index: np.ndarray, movie_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise: float32 ratings of (block user user_index[i], movie row movie_rows[i]), and
    each pair's strategy code (an index of PAIR_STRATEGIES)."""
    predictor = model.predictor
    kinds = block.kinds[user_index]
    known_movie = movie_rows >= 0
    personal = known_movie & (kinds != COLD)
    ratings = np.empty(len(user_index), dtype=np.float32)
    if personal.any():
        users, movies = user_index[personal], movie_rows[personal]
        ratings[personal] = predictor.pair_ratings(block.vectors[users], block.biases[users], movies)
    cold = known_movie & (kinds == COLD)
    if cold.any():
        ratings[cold] = predictor.baseline(movie_rows[cold])
    ratings[~known_movie] = block.baselines[user_index[~known_movie]]
    codes = np.where(known_movie, kinds, MOVIE_NOT_IN_MODEL).astype(np.int8)
    return ratings, codes


class MatrixPlan:
    """ratings[i, j] of block user i and movie movie_rows[j], computed a band of rows at a time.

    Personal cells are one matrix product per band; cold users' rows take the movies'
    baselines, and columns of movies the model lacks take each user's baseline.
    """

    def __init__(self, model: ServingModel, block: UserBlock, movie_rows: np.ndarray) -> None:
        predictor = model.predictor
        self.predictor = predictor
        self.block = block
        self.n_rows, self.n_cols = len(block.kinds), len(movie_rows)
        self.known_cols = np.flatnonzero(movie_rows >= 0)
        self.unknown_cols = np.flatnonzero(movie_rows < 0)
        known_rows = movie_rows[self.known_cols]
        every_movie = len(known_rows) == predictor.n_movies and bool(
            (known_rows == np.arange(predictor.n_movies)).all()
        )
        self.movie_rows = None if every_movie else known_rows
        self.cold_rows = np.flatnonzero(block.kinds == COLD)
        self.movie_baselines = predictor.baseline(known_rows) if len(self.cold_rows) else None

    def band(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, n_cols): rows start..stop-1."""
        block = self.block
        ratings = self.predictor.ratings_matrix(
            block.vectors[start:stop], block.biases[start:stop], self.movie_rows
        )
        if len(self.cold_rows):
            cold = self.cold_rows[(self.cold_rows >= start) & (self.cold_rows < stop)] - start
            ratings[cold] = self.movie_baselines
        if len(self.unknown_cols) == 0:
            return ratings
        out = np.empty((stop - start, self.n_cols), dtype=np.float32)
        out[:, self.known_cols] = ratings
        out[:, self.unknown_cols] = block.baselines[start:stop, None]
        return out

    def bands(self, max_cells: int = 1 << 20) -> Iterator[np.ndarray]:
        """Every row, `max_cells` cells or so at a time."""
        step = max(1, max_cells // max(1, self.n_cols))
        for start in range(0, self.n_rows, step):
            yield self.band(start, min(start + step, self.n_rows))

    def full(self) -> np.ndarray:
        return self.band(0, self.n_rows)
