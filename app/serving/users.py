"""How a user is scored under one model, decided once a request.

- model: the user has an embedding row.
- fold_in: no row, but ratings of movies the model knows: an embedding and bias solved from
  them with the movie embeddings fixed (Predictor.fold_in), cached per model until they change.
- cold: no usable ratings (a new visitor): recommendations are the popular movies, a
  prediction is the global mean plus the movie's damped bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.db.reads import Reads
from app.ml.predictor import FoldedUser
from app.serving.serving_model import ServingModel

MODEL, FOLD_IN, COLD = 0, 1, 2


@dataclass(frozen=True)
class UserState:
    """How one user is scored under one model."""

    user_id: int
    kind: int
    row: int = -1
    folded: FoldedUser | None = None


@dataclass(frozen=True)
class UserTerms:
    """A user's side of every formula: embedding and bias (None and 0 for a cold user), and
    the offset of their baseline (global mean + this, for movies the model lacks)."""

    vector: np.ndarray | None
    bias: np.float32
    baseline_offset: float
    rank_vector: np.ndarray | None = None
    """Their row of the ranking head (None for a cold user, or a model without one)."""


def model_user(model: ServingModel, user_id: int) -> UserState | None:
    """The state of `user_id` when the model has a row for them, else None."""
    row = model.predictor.users.row(user_id)
    return None if row is None else UserState(user_id, MODEL, row)


def resolve_user(
    model: ServingModel, user_id: int, ratings: tuple[np.ndarray, np.ndarray] | None
) -> UserState:
    """The state of `user_id`; `ratings` (movie ids, values, ascending by id) are needed only
    when the user is not in the model (None there: treated as having none)."""
    known_user = model_user(model, user_id)
    if known_user is not None:
        return known_user
    if ratings is None or len(ratings[0]) == 0:
        return UserState(user_id, COLD)
    movie_ids, values = ratings
    rows = model.predictor.movies.rows(movie_ids)
    known = rows >= 0
    if not known.any():
        return UserState(user_id, COLD)
    folded = model.fold_cache.get(user_id, movie_ids, values)
    if folded is None:
        folded = model.predictor.fold_in(rows[known], values[known])
        model.fold_cache.put(user_id, movie_ids, values, folded)
    return UserState(user_id, FOLD_IN, folded=folded)


def user_terms(model: ServingModel, user: UserState) -> UserTerms:
    predictor = model.predictor
    if user.kind == MODEL:
        ranking = predictor.ranking
        return UserTerms(
            predictor.user_emb[user.row],
            predictor.user_bias[user.row],
            float(predictor.baseline_user_bias[user.row]),
            None if ranking is None else ranking.user_factors[user.row],
        )
    if user.kind == FOLD_IN:
        folded = user.folded
        assert folded is not None
        return UserTerms(folded.vector, np.float32(folded.bias), folded.baseline_bias, folded.rank_vector)
    return UserTerms(None, np.float32(0), 0.0)


async def read_user(model: ServingModel, reads: Reads, user_id: int) -> UserState:
    """How `user_id` is scored; reads their ratings only when the model does not know them."""
    return model_user(model, user_id) or resolve_user(model, user_id, await reads.user_ratings(user_id))


def read_users(model: ServingModel, reads: Reads, user_ids: list[int]) -> dict[int, UserState]:
    """Sync (worker threads): the state of each distinct user, one query for all the model lacks."""
    states: dict[int, UserState] = {}
    outside: list[int] = []
    for user_id in user_ids:
        known = model_user(model, user_id)
        if known is None:
            outside.append(user_id)
        else:
            states[user_id] = known
    if outside:
        ratings = reads.ratings_of_users(outside)
        for user_id in outside:
            states[user_id] = resolve_user(model, user_id, ratings.get(user_id))
    return states
