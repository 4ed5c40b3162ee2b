"""Which formula scores a (user, movie), and the scoring itself, on numpy: no HTTP here.

Users (decided once a request, `resolve_user`):

- model: the user has an embedding row.
- fold_in: no row, but ratings of movies the model knows: an embedding and bias solved from
  them with the movie embeddings fixed (Predictor.fold_in), cached per model until they change.
- cold: no usable ratings (a new visitor): recommendations are the popular movies (strategy
  "popular"), a prediction is the global mean plus the movie's damped bias ("baseline").

Movies: one the model has no row for (added to the catalog after training) gets the user's
baseline, the global mean plus the user's damped bias ("user_baseline").

Personal scores are `lo + (hi - lo) * sigmoid(v_u . q_m + b_u + b_m)` in float32 whichever
endpoint asks, so single predictions, pairs, matrices and recommendations agree to float32
rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.api.model_store import ServingModel
from app.ml.predictor import FoldedUser, Predictor

MODEL, FOLD_IN, COLD = 0, 1, 2
#: strategy of a prediction, by the user's kind, for movies the model knows
PREDICT_STRATEGY = {MODEL: "model", FOLD_IN: "fold_in", COLD: "baseline"}
#: strategy of a recommendation list, by the user's kind
RECOMMEND_STRATEGY = {MODEL: "model", FOLD_IN: "fold_in", COLD: "popular"}
USER_BASELINE = "user_baseline"


@dataclass(frozen=True)
class UserState:
    """How one user is scored under one model."""

    user_id: int
    kind: int
    row: int = -1
    folded: FoldedUser | None = None


def resolve_user(
    model: ServingModel, user_id: int, ratings: tuple[np.ndarray, np.ndarray] | None
) -> UserState:
    """The state of `user_id`; `ratings` (movie ids, values, ascending by id) are needed only
    when the user is not in the model (None there: treated as having none)."""
    row = model.user_index.get(user_id)
    if row is not None:
        return UserState(user_id, MODEL, row)
    if ratings is None or len(ratings[0]) == 0:
        return UserState(user_id, COLD)
    movie_ids, values = ratings
    predictor = model.predictor
    rows = model.movie_rows(movie_ids)
    known = rows >= 0
    if not known.any():
        return UserState(user_id, COLD)
    folded = model.fold_cache.get(user_id, movie_ids, values)
    if folded is None:
        folded = predictor.fold_in(rows[known], values[known])
        model.fold_cache.put(user_id, movie_ids, values, folded)
    return UserState(user_id, FOLD_IN, folded=folded)


def _user_terms(model: ServingModel, user: UserState) -> tuple[np.ndarray | None, np.float32, float]:
    """(embedding, bias, baseline offset) of a user; embedding None for a cold user."""
    predictor = model.predictor
    if user.kind == MODEL:
        return (
            predictor.user_emb[user.row],
            predictor.user_bias[user.row],
            float(predictor.baseline_user_bias[user.row]),
        )
    if user.kind == FOLD_IN:
        assert user.folded is not None
        return user.folded.vector, np.float32(user.folded.bias), user.folded.baseline_bias
    return None, np.float32(0), 0.0


def user_baseline(model: ServingModel, offset: float) -> float:
    """The global mean plus a user's damped bias, clipped to the scale."""
    return model.predictor.clip(model.predictor.global_mean + offset)


# --- one prediction -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    rating: float
    strategy: str
    movie_in_model: bool
    explain: dict | None = None


def predict_one(model: ServingModel, user: UserState, movie_id: int, explain: bool = False) -> Prediction:
    """The rating of `movie_id` (a catalog movie) for `user`, and how it was made."""
    predictor = model.predictor
    vector, bias, offset = _user_terms(model, user)
    movie_row = model.movie_index.get(movie_id)
    if movie_row is None:
        rating = user_baseline(model, offset)
        parts = {
            "formula": "clip(global_mean + user_bias)",
            "global_mean": predictor.global_mean,
            "user_bias": offset,
        }
        return Prediction(rating, USER_BASELINE, False, parts if explain else None)
    if vector is None:
        rating = float(predictor.baseline(np.array([movie_row]))[0])
        parts = {
            "formula": "clip(global_mean + movie_bias)",
            "global_mean": predictor.global_mean,
            "movie_bias": float(predictor.baseline_movie_bias[movie_row]),
        }
        return Prediction(rating, "baseline", True, parts if explain else None)
    movie_vector = predictor.movie_emb[movie_row]
    score = np.dot(vector, movie_vector) + bias + predictor.movie_bias[movie_row]
    rating = float(predictor.squash(score))
    parts = None
    if explain:
        products = vector * movie_vector
        parts = {
            "formula": "lo + (hi - lo) * sigmoid(user_bias + movie_bias + dot_product)",
            "user_bias": float(bias),
            "movie_bias": float(predictor.movie_bias[movie_row]),
            "dot_product": float(products.sum()),
            "factor_products": products.tolist(),
            "score": float(score),
            "y_range": [predictor.y_lo, predictor.y_hi],
        }
    return Prediction(rating, PREDICT_STRATEGY[user.kind], True, parts)


# --- recommendations ----------------------------------------------------------------------------------


Recommended = dict
"""{"movie_id", "title", "predicted_rating"} (6 decimals), as the API returns them."""


def recommend(
    model: ServingModel,
    user: UserState,
    k: int,
    exclude_movie_ids: np.ndarray | None = None,
    genre: str | None = None,
) -> tuple[str, list[Recommended]]:
    """The k best catalog movies of the model for `user`, best first, never one of
    `exclude_movie_ids`, only of `genre` when given. Returns (strategy, items).

    Personal lists rank by Predictor.ranking_scores (the predicted rating plus the model's
    popularity prior) and report the predicted rating; a cold user's list is the popular
    movies by damped mean rating, reporting their baseline. Model users' lists come from their
    cached candidates (see CandidateCache) and are kept whole while nothing they depend on
    changed (ListCache); folded-in users' rank every movie. The items returned may be shared:
    callers must not change them.
    """
    predictor = model.predictor
    view = model.view()
    memo_key = (user.row, k, genre.casefold() if genre else None)
    if user.kind == MODEL:
        items = model.lists.get(memo_key, exclude_movie_ids, view.revision)
        if items is not None:
            return RECOMMEND_STRATEGY[MODEL], items
    blocked = view.blocked(genre)
    if exclude_movie_ids is not None and len(exclude_movie_ids):
        excluded = model.excluded_mask(exclude_movie_ids)
        blocked = excluded if blocked is None else excluded | blocked

    vector, bias, _ = _user_terms(model, user)
    if vector is None:
        order = model.popular_order
        rows = (order if blocked is None else order[~blocked[order]])[:k]
        values = model.popular_ratings[rows]
    elif user.kind == MODEL:
        rows, values = _from_candidates(model, user, vector, bias, k, blocked)
    else:
        ratings = _ratings(predictor, vector, bias)
        ranking = predictor.ranking_scores(ratings)
        if blocked is not None:
            ranking[blocked[:-1]] = -np.inf
        rows = _top(ranking, k)
        values = ratings[rows]
    titles = view.titles
    items = [
        {"movie_id": movie_id, "title": titles[row], "predicted_rating": rating}
        for movie_id, row, rating in zip(
            predictor.movie_ids[rows].tolist(),
            rows.tolist(),
            np.round(values.astype(np.float64), 6).tolist(),
            strict=True,
        )
    ]
    if user.kind == MODEL:
        model.lists.put(memo_key, exclude_movie_ids, view.revision, items)
    return RECOMMEND_STRATEGY[user.kind], items


def _ratings(predictor: Predictor, vector: np.ndarray, bias: np.float32) -> np.ndarray:
    """float32 (n_movies,) predicted ratings of every movie for a user's embedding and bias,
    summed in GET /predict's order."""
    scores = predictor.movie_emb @ vector
    scores += bias
    scores += predictor.movie_bias
    return predictor.squash(scores)


def _from_candidates(
    model: ServingModel,
    user: UserState,
    vector: np.ndarray,
    bias: np.float32,
    k: int,
    blocked: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, ratings) of the first k unblocked of the user's cached candidates (computed on a
    miss). When the list is shorter than k or the filters leave fewer than k, a list longer by
    the number of blocked movies replaces the cached one, so a user who has rated much is
    ranked in full once, not at every request; fewer than k come back only when fewer are left
    in the whole catalog."""
    entry = model.candidates.get(user.row)
    if entry is None:
        entry = _candidates(model, user, vector, bias, model.n_candidates)
    rows, ratings = _unblocked(entry, blocked)
    n_movies = model.predictor.n_movies
    if len(rows) < k and len(entry[0]) < n_movies:
        hidden = 0 if blocked is None else int(blocked.sum())
        entry = _candidates(model, user, vector, bias, min(n_movies, max(k, len(entry[0])) + hidden))
        rows, ratings = _unblocked(entry, blocked)
    return rows[:k], ratings[:k]


def _candidates(
    model: ServingModel, user: UserState, vector: np.ndarray, bias: np.float32, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """The `length` best movie rows of a model user by ranking score and their predicted
    ratings, put into the model's candidate cache."""
    ratings = _ratings(model.predictor, vector, bias)
    rows = _top(model.predictor.ranking_scores(ratings), length)
    entry = (rows.astype(model.candidate_dtype), ratings[rows])
    model.candidates.put(user.row, entry)
    return entry


def _unblocked(
    entry: tuple[np.ndarray, np.ndarray], blocked: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    rows, ratings = entry
    if blocked is None:
        return rows, ratings
    keep = ~blocked[rows]
    return rows[keep], ratings[keep]


TOP_BLOCK = 32
"""Block width of the top-k prefilter (see `_top`)."""


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k highest finite scores, best first (ties: lower row first).

    For a small k a prefilter replaces the (slow) selection over every score: the k-th
    largest of the block maxima (blocks of TOP_BLOCK scores) is a value that at least k scores
    reach, so it bounds the k-th largest score from below; only the few scores at or above it
    are sorted.
    """
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    blocks = n // TOP_BLOCK
    if blocks >= 4 * k:
        maxima = scores[: blocks * TOP_BLOCK].reshape(blocks, TOP_BLOCK).max(axis=1)
        bound = np.partition(maxima, blocks - k)[blocks - k]
    else:
        bound = np.partition(scores, n - k)[n - k]
    top = np.flatnonzero(scores >= bound)
    top = top[np.lexsort((top, -scores[top]))][:k]
    return top[np.isfinite(scores[top])]


def similar(model: ServingModel, movie_row: int, k: int) -> list[tuple[int, str | None, float]]:
    """The k catalog movies nearest `movie_row` by cosine similarity: (id, title, similarity)."""
    predictor = model.predictor
    view = model.view()
    emb = predictor.movie_emb
    norms = model.movie_norms * model.movie_norms[movie_row]
    cosine = (emb @ emb[movie_row]) / np.where(norms > 0, norms, 1)
    cosine[movie_row] = -np.inf
    if not view.all_recommendable:
        cosine[~view.recommendable] = -np.inf
    rows = _top(cosine, k)
    return [(predictor.movie_ids[row].item(), view.titles[row], float(cosine[row])) for row in rows.tolist()]


# --- many users: pairs and matrices -------------------------------------------------------------------


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
    baselines = np.clip(
        predictor.global_mean + offsets.astype(np.float64), predictor.rating_min, predictor.rating_max
    ).astype(np.float32)
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
        vector, bias, offset = _user_terms(model, user)
        if vector is not None:
            vectors[i] = vector
            biases[i] = bias
        baselines[i] = user_baseline(model, offset)
    return UserBlock(kinds, vectors, biases, baselines)


def pair_ratings(
    model: ServingModel, block: UserBlock, user_index: np.ndarray, movie_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise: float32 ratings of (block user user_index[i], movie row movie_rows[i]), and
    each pair's strategy code (MODEL, FOLD_IN, COLD, or 3 for a movie the model lacks)."""
    predictor = model.predictor
    kinds = block.kinds[user_index]
    known_movie = movie_rows >= 0
    personal = known_movie & (kinds != COLD)
    ratings = np.empty(len(user_index), dtype=np.float32)
    if personal.any():
        users, movies = user_index[personal], movie_rows[personal]
        dots = np.einsum("ij,ij->i", block.vectors[users], predictor.movie_emb[movies])
        ratings[personal] = predictor.squash(dots + block.biases[users] + predictor.movie_bias[movies])
    cold = known_movie & (kinds == COLD)
    if cold.any():
        ratings[cold] = predictor.baseline(movie_rows[cold])
    ratings[~known_movie] = block.baselines[user_index[~known_movie]]
    codes = np.where(known_movie, kinds, 3).astype(np.int8)
    return ratings, codes


PAIR_STRATEGIES = ["model", "fold_in", "baseline", USER_BASELINE]


class MatrixPlan:
    """ratings[i, j] of block user i and movie movie_ids[j], computed a band of rows at a time.

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
        self.movie_emb_t = (predictor.movie_emb if every_movie else predictor.movie_emb[known_rows]).T
        self.movie_bias = predictor.movie_bias if every_movie else predictor.movie_bias[known_rows]
        self.dense = len(self.unknown_cols) == 0
        self.cold_rows = np.flatnonzero(block.kinds == COLD)
        self.movie_baselines = predictor.baseline(known_rows) if len(self.cold_rows) else None

    def band(self, start: int, stop: int) -> np.ndarray:
        """float32 (stop - start, n_cols): rows start..stop-1."""
        scores = self.block.vectors[start:stop] @ self.movie_emb_t
        scores += self.block.biases[start:stop, None]
        scores += self.movie_bias
        _squash_inplace(self.predictor, scores)
        if len(self.cold_rows):
            cold = self.cold_rows[(self.cold_rows >= start) & (self.cold_rows < stop)] - start
            scores[cold] = self.movie_baselines
        if self.dense:
            return scores
        out = np.empty((stop - start, self.n_cols), dtype=np.float32)
        out[:, self.known_cols] = scores
        out[:, self.unknown_cols] = self.block.baselines[start:stop, None]
        return out

    def bands(self, max_cells: int = 1 << 20) -> Iterator[np.ndarray]:
        """Every row, `max_cells` cells or so at a time."""
        step = max(1, max_cells // max(1, self.n_cols))
        for start in range(0, self.n_rows, step):
            yield self.band(start, min(start + step, self.n_rows))

    def full(self) -> np.ndarray:
        return self.band(0, self.n_rows)


def _squash_inplace(predictor: Predictor, scores: np.ndarray) -> None:
    """Predictor.squash, in place: lo + (hi - lo) / (1 + exp(-scores)) clipped to the scale, the
    same float32 steps (exp overflowing to inf for a very negative score gives lo, as it should)."""
    lo, hi = predictor.y_lo, predictor.y_hi
    np.negative(scores, out=scores)
    with np.errstate(over="ignore"):
        np.exp(scores, out=scores)
    scores += 1
    np.divide(hi - lo, scores, out=scores)
    scores += lo
    np.clip(scores, predictor.rating_min, predictor.rating_max, out=scores)
