"""Top-k recommendation lists (GET /recommendations/{user}).

Personal lists rank by `Predictor.list_scores` (the ranking head's `P[u] . Q[m]`, or for a model
without one the predicted rating plus a popularity prior) and report each movie's predicted
rating beside its score; a cold user's list is the popular movies by damped mean rating. A
model user's ranking depends on the model alone, so their best CANDIDATES rows are kept
(CandidateCache) and each request filters them (rated, genre, catalog); finished lists are kept
too (ListCache) under a key naming everything they depend on. Folded-in users rank every movie.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.ml import scoring
from app.serving.caches import Candidates
from app.serving.catalog import genre_key
from app.serving.precomputed import PrecomputedTable
from app.serving.serving_model import ServingModel
from app.serving.users import COLD, FOLD_IN, MODEL, UserState, UserTerms, user_terms

#: strategy of a recommendation list, by the user's kind
RECOMMEND_STRATEGY = {MODEL: "model", FOLD_IN: "fold_in", COLD: "popular"}
PRECOMPUTED = "precomputed"


class Item(BaseModel):
    """One movie of a list, as the API returns it (its response schema uses this very model, so
    a kept list is validated once, when it is made)."""

    model_config = ConfigDict(frozen=True)

    movie_id: int
    title: str | None
    predicted_rating: float = Field(description="The rating the model predicts (6 decimals).")
    score: float = Field(
        description="What the list is ranked by, descending (6 decimals): the ranking head's dot "
        "product for personal lists (for a model without one, the predicted rating plus a "
        "popularity prior); the damped mean rating for the popular list."
    )


def recommend(
    model: ServingModel,
    user: UserState,
    k: int,
    exclude_movie_ids: np.ndarray | None = None,
    genre: str | None = None,
    ratings_version: Hashable | None = None,
) -> tuple[str, list[Item]]:
    """The k best catalog movies of the model for `user`, best first, never one of
    `exclude_movie_ids`, only of `genre` when given. Returns (strategy, items).

    `ratings_version` names the state of the database `exclude_movie_ids` was read at (None:
    unknown); a model user's finished list is reused only under the same one. The items
    returned may be shared: callers must not change them.
    """
    view = model.view()
    key = (user.row, genre_key(genre), ratings_version, view.revision)
    cacheable = user.kind == MODEL and ratings_version is not None
    if cacheable and (items := model.lists.first(key, k)) is not None:
        return RECOMMEND_STRATEGY[MODEL], items
    blocked = model.blocked(genre, exclude_movie_ids)
    terms = user_terms(model, user)
    if terms.vector is None:
        order = model.popular_order
        rows = (order if blocked is None else order[~blocked[order]])[:k]
        found = Candidates(rows, model.popular_scores[rows], model.popular_ratings[rows])
    elif user.kind == MODEL:
        found = _from_candidates(model, user, terms, k, blocked)
    else:
        found = ranked(model, terms, k, blocked)
    items = list_items(model, found)
    if cacheable:
        model.lists.put(key, (k, items))
    return RECOMMEND_STRATEGY[user.kind], items


def list_items(model: ServingModel, found: Candidates) -> list[Item]:
    """The items of a list, best first, as the API returns them."""
    titles = model.view().titles
    return [
        Item(movie_id=movie_id, title=titles[row], predicted_rating=rating, score=score)
        for movie_id, row, rating, score in zip(
            model.predictor.movie_ids[found.rows].tolist(),
            found.rows.tolist(),
            np.round(found.ratings.astype(np.float64), 6).tolist(),
            np.round(found.scores.astype(np.float64), 6).tolist(),
            strict=True,
        )
    ]


def ranked(
    model: ServingModel, terms: UserTerms, length: int, blocked: np.ndarray | None = None
) -> Candidates:
    """The `length` best unblocked movie rows of a user by list score, with their predicted
    ratings (computed for those movies alone when a ranking head decides the order)."""
    predictor = model.predictor
    assert terms.vector is not None
    vector, bias = terms.vector[None], np.array([terms.bias])
    if predictor.ranking is None:
        ratings = predictor.ratings_matrix(vector, bias)[0]
        scores = predictor.list_scores(None, ratings[None])[0]
        rows = scoring.top_k(scores.copy(), length, blocked)
        return Candidates(rows.astype(np.int32), scores[rows], ratings[rows])
    assert terms.rank_vector is not None
    scores = predictor.list_scores(terms.rank_vector[None], None)[0]
    rows = scoring.top_k(scores.copy(), length, blocked)
    return Candidates(rows.astype(np.int32), scores[rows], predictor.ratings_matrix(vector, bias, rows)[0])


def _from_candidates(
    model: ServingModel, user: UserState, terms: UserTerms, k: int, blocked: np.ndarray | None
) -> Candidates:
    """The first k unblocked of the user's cached candidates (ranked on a miss). When the
    filters leave fewer than k, a list longer by the number of blocked movies replaces the
    cached one, so a user who has rated much is ranked in full once, not at every request;
    fewer than k come back only when fewer are left in the whole catalog."""
    entry = model.candidates.get(user.row)
    if entry is None:
        entry = ranked(model, terms, model.n_candidates)
        model.candidates.put(user.row, entry)
    found = entry.unblocked(blocked)
    n_movies = model.predictor.n_movies
    if len(found.rows) < k and len(entry.rows) < n_movies:
        hidden = 0 if blocked is None else int(blocked.sum())
        entry = ranked(model, terms, min(n_movies, max(k, len(entry.rows)) + hidden))
        model.candidates.put(user.row, entry)
        found = entry.unblocked(blocked)
    return found.first(k)


def precomputed_items(
    model: ServingModel,
    table: PrecomputedTable,
    user_id: int,
    k: int,
    rated: np.ndarray | None,
    genre: str | None,
) -> list[Item] | None:
    """The user's first k movies of the precomputed table that are in the catalog, of `genre`
    when given, and not `rated`, as items; None when the table has no list for the user or
    fewer than k movies are left (the caller then scores live)."""
    span = table.span(user_id)
    if span is None:
        return None
    found = table.top(span, k, model.blocked(genre, rated))
    return None if found is None else list_items(model, found)
