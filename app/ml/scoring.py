"""The scoring kernel: every formula that turns embeddings into served numbers, written once.

Serving (`app.serving`), batch recommendations (`app.ml.recommend_all`) and evaluation
(`app.jobs.evaluate`) call these functions, and training's model calls `squash`, so changing a
formula is a change to this file. Arrays are float32 numpy unless said otherwise; "rows" are
embedding rows, never external ids.

- a rating: `clip(lo + (hi - lo) * sigmoid(U[u] . M[m] + b_u + b_m))`, `lo, hi` the model's
  y_range (a step wider than the scale, so its ends are reachable) and the clip the scale;
- row-wise pairs: `(U[users] * M[movies]).sum(-1)`; a matrix: `U[users] @ M[movies].T`;
- top-k with exclusions: blocked rows score -inf and never appear;
- nearest neighbours: cosine similarity of embedding rows;
- fold-in: a user's vector and bias solved from their ratings with the movie side fixed;
- the ranking head's weights: how much each rating counts, how much each row is shrunk.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

Range = tuple[float, float]
T = TypeVar("T")

#: ratings are mapped into (0, 1) before the logit; this keeps the logit finite at the ends
LOGIT_EPS = 1e-3
#: block width of the top-k prefilter (see `top_k`)
TOP_BLOCK = 32


# --- ratings ----------------------------------------------------------------------------------------


def squash(scores: T, y_range: Range) -> T:
    """`lo + (hi - lo) * sigmoid(scores)`, for a torch tensor (training, autograd-safe through
    the tensor's own sigmoid) or numpy (serving, float32)."""
    lo, hi = y_range
    if not isinstance(scores, np.ndarray | np.generic | float):
        return scores.sigmoid() * (hi - lo) + lo  # type: ignore[attr-defined]
    squashed = np.asarray(scores, dtype=np.float32).copy()
    return _squash_numpy(squashed, lo, hi)  # type: ignore[return-value]


def served_ratings(scores: np.ndarray, y_range: Range, scale: Range, in_place: bool = False) -> np.ndarray:
    """Ratings as served: `squash` clipped to the scale, float32; `in_place` reuses `scores`
    (a float32 buffer the caller owns: whole matrices are squashed without temporaries)."""
    out = scores if in_place else np.array(scores, dtype=np.float32)
    _squash_numpy(out, *y_range)
    np.maximum(out, scale[0], out=out)  # np.clip's own overhead is most of a one-pair request
    return np.minimum(out, scale[1], out=out)


def served_rating(score: float, y_range: Range, scale: Range) -> float:
    """`served_ratings` of one score, on Python floats: for a single GET /predict, numpy's cost
    per call was most of the request. The same formula in float64, so it can differ from the
    float32 buffers in the seventh digit."""
    lo, hi = y_range
    rating = lo + (hi - lo) * (1 + math.tanh(score * 0.5)) / 2
    return min(max(rating, scale[0]), scale[1])


def linear_rating(score: float, global_mean: float, scale: Range) -> float:
    """`linear_ratings` of one score, on Python floats."""
    return min(max(global_mean + score, scale[0]), scale[1])


def _squash_numpy(buffer: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """In place, as `sigmoid(x) = (1 + tanh(x / 2)) / 2`: no exp to overflow, within 1e-6 of
    torch's sigmoid over the whole range."""
    buffer *= 0.5
    np.tanh(buffer, out=buffer)
    buffer += 1
    buffer *= (hi - lo) / 2
    buffer += lo
    return buffer


def linear_ratings(scores: np.ndarray, global_mean: float, scale: Range) -> np.ndarray:
    """`clip(global_mean + scores)` in place: the ratings of a rating head of biases alone
    (`dotrec train --objective ranking`), where a score is the sum of two damped biases."""
    scores += global_mean
    np.maximum(scores, scale[0], out=scores)
    return np.minimum(scores, scale[1], out=scores)


def clip(values: np.ndarray | float, scale: Range) -> np.ndarray:
    """Values clipped to the rating scale, float32."""
    return np.clip(np.asarray(values, dtype=np.float64), *scale).astype(np.float32)


def pair_scores(
    user_vectors: np.ndarray, user_biases: np.ndarray, movie_emb: np.ndarray, movie_bias: np.ndarray
) -> np.ndarray:
    """Row-wise: float32 (n,) pre-squash scores `user_vectors[i] . movie_emb[i] + biases` of n
    pairs whose rows were looked up already ((n, k) each)."""
    dots = np.einsum("ij,ij->i", user_vectors, movie_emb)
    return dots + user_biases + movie_bias


def matrix_scores(
    user_vectors: np.ndarray,
    user_biases: np.ndarray | None,
    movie_emb_t: np.ndarray,
    movie_bias: np.ndarray | None,
) -> np.ndarray:
    """One matrix product: float32 (P, Q) scores `user_vectors @ movie_emb_t (+ biases)`, the
    movies' side already transposed ((k, Q)); a buffer of the caller's to squash in place."""
    scores = np.asarray(user_vectors @ movie_emb_t, dtype=np.float32)
    if user_biases is not None:
        scores += user_biases[:, None]
    if movie_bias is not None:
        scores += movie_bias
    return scores


# --- fold-in ----------------------------------------------------------------------------------------


def fold_in_rating(
    movie_emb: np.ndarray, movie_bias: np.ndarray, ratings: np.ndarray, y_range: Range, ridge: float
) -> tuple[np.ndarray, float]:
    """(vector float32 (k,), bias) of a user from their `ratings` of the movies whose rows
    `movie_emb` (n, k) and `movie_bias` (n,) are, the movie side held fixed.

    A ridge regression in the model's pre-sigmoid space: the target of each rated movie is
    `logit((r - lo) / (hi - lo)) - b_m`, the features the movie's embedding and a constant (the
    user's bias), both shrunk by `ridge`: one 5-star rating must not make every movie 5 stars.
    """
    lo, hi = y_range
    fraction = np.clip((np.asarray(ratings, np.float64) - lo) / (hi - lo), LOGIT_EPS, 1 - LOGIT_EPS)
    target = np.log(fraction / (1 - fraction)) - movie_bias
    features = np.hstack([movie_emb, np.ones((len(movie_emb), 1))]).astype(np.float64)
    system = features.T @ features + ridge * np.eye(features.shape[1])
    solution = np.linalg.solve(system, features.T @ target)
    return solution[:-1].astype(np.float32), float(solution[-1])


def ranking_weights(ratings: np.ndarray, rating_weight: float, pivot: float, least: float) -> np.ndarray:
    """float32 (n,) how much each rating counts for the ranking head: 1, or with a positive
    `rating_weight` `1 + rating_weight * (r - pivot)`, at least `least`: a 5-star rating says
    more about what a user wants than a 1-star one, which still says they chose to watch it."""
    ratings = np.asarray(ratings, dtype=np.float32)
    if rating_weight == 0:
        return np.ones(len(ratings), dtype=np.float32)
    return np.maximum(1.0 + rating_weight * (ratings - pivot), least).astype(np.float32)


def row_penalties(
    counts: np.ndarray, n_other: int, reg: float, unobserved: float, power: float
) -> np.ndarray:
    """float32 (n,) the ranking head's L2 weight of each row, `reg * (count + unobserved *
    n_other) ** power` (Rendle et al. 2021's frequency-scaled regularization)."""
    return (reg * (np.asarray(counts, dtype=np.float64) + unobserved * n_other) ** power).astype(np.float32)


def fold_in_ranking(
    movie_factors: np.ndarray, weights: np.ndarray, gramian: np.ndarray, penalty: float
) -> np.ndarray:
    """float32 (k,) a user's ranking-head vector from the factors (n, k) of the movies they
    rated and those ratings' `weights`, the movie side fixed: the same closed form training
    solves for every user, `(gramian + M_I^T W M_I + penalty I) u = M_I^T W 1`, `gramian` being
    `unobserved * M^T M` of the whole catalogue (the same for every user of a model)."""
    factors = np.asarray(movie_factors, dtype=np.float64)
    weighted = factors * np.asarray(weights, dtype=np.float64)[:, None]
    system = gramian + factors.T @ weighted + penalty * np.eye(factors.shape[1])
    return np.linalg.solve(system, weighted.sum(0)).astype(np.float32)


def damped_mean(residuals: np.ndarray, damping: float) -> float:
    """`sum(residuals) / (n + damping)`: a bias shrunk towards 0 for rows with few ratings."""
    return float(np.sum(residuals) / (len(residuals) + damping))


# --- top-k and neighbours ---------------------------------------------------------------------------


def top_k(scores: np.ndarray, k: int, blocked: np.ndarray | None = None) -> np.ndarray:
    """int64 rows of the k highest finite `scores` (n,), best first (ties: lower row first),
    never a row where `blocked` (bool, at least n long) is True. `scores` may be changed.

    For a small k a prefilter replaces the (slow) selection over every score: the k-th largest
    of the block maxima (blocks of TOP_BLOCK scores) is a value that at least k scores reach,
    so it bounds the k-th largest score from below; only the few scores at or above it are
    sorted.
    """
    if blocked is not None:
        scores[blocked[: len(scores)]] = -np.inf
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


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a (P, n) score matrix, the k best columns: (int64 (P, k) columns, float32
    (P, k) scores), best first; where a row has fewer than k finite scores its last entries
    score -inf (callers drop them). Blocked cells are -inf already. `scores` is not changed."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.empty((len(scores), 0), np.int64), np.empty((len(scores), 0), np.float32)
    if k < scores.shape[1]:
        columns = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        columns = np.broadcast_to(np.arange(k), scores.shape).copy()
    values = np.take_along_axis(scores, columns, axis=1)
    order = np.lexsort((columns, -values), axis=1)
    columns = np.take_along_axis(columns, order, axis=1).astype(np.int64)
    return columns, np.take_along_axis(values, order, axis=1)


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """float32 (n,) Euclidean norm of each row."""
    return np.linalg.norm(vectors, axis=1).astype(np.float32)


def cosine_neighbours(
    vectors: np.ndarray, norms: np.ndarray, row: int, k: int, blocked: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k rows nearest `row` by cosine similarity of `vectors` (n, k) (norms from
    `row_norms`), never `row` itself nor a blocked one: (int64 rows, float32 similarities)."""
    scale = norms * norms[row]
    cosine = (vectors @ vectors[row]) / np.where(scale > 0, scale, 1)
    cosine[row] = -np.inf
    rows = top_k(cosine, k, blocked)
    return rows, cosine[rows]
