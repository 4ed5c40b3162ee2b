"""Serving-side math on numpy: one artifact's ratings for pairs, matrices, top-N, neighbours, fold-in.

Torch is not needed to serve: the formulas are the model's, on float32 arrays, so the serving
process stays small and starts fast. Rows are embedding rows; ids are the catalog's and clients'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.ml.artifact import Artifact

UNKNOWN = -1
#: ratings are mapped into (0, 1) before the logit; this keeps the logit finite at the ends
LOGIT_EPS = 1e-3


@dataclass(frozen=True)
class FoldedUser:
    """A user the model never saw, placed in its space from their ratings (see Predictor.fold_in)."""

    vector: np.ndarray
    bias: float
    baseline_bias: float


class Predictor:
    """Predictions from one loaded artifact.

    Attributes:
        version: the artifact's version name.
        user_ids, movie_ids: int64 ascending external ids of the embedding rows.
    """

    def __init__(self, artifact: Artifact, popularity_weight: float = 0.5) -> None:
        weights = artifact.weights
        self.artifact = artifact
        self.version = artifact.version
        self.meta = artifact.meta
        self.user_ids = artifact.user_ids
        self.movie_ids = artifact.movie_ids
        self.user_emb = weights["user_emb"]
        self.movie_emb = weights["movie_emb"]
        self.user_bias = weights["user_bias"]
        self.movie_bias = weights["movie_bias"]
        self.baseline_user_bias = weights["baseline_user_bias"]
        self.baseline_movie_bias = weights["baseline_movie_bias"]
        self.global_mean = float(artifact.meta["global_mean"])
        self.y_lo, self.y_hi = (float(v) for v in artifact.meta["y_range"])
        scale = artifact.meta.get("rating_scale", {})
        self.rating_min = float(scale.get("min", self.y_lo))
        self.rating_max = float(scale.get("max", self.y_hi))
        self.popularity_boost = popularity_weight * weights["movie_popularity"]
        hyper = artifact.meta.get("hyper_parameters", {})
        self.weight_decay = float(hyper.get("weight_decay", 0.1))
        self.frequency_power = float(hyper.get("frequency_power", 0.0))
        self.mean_user_ratings = artifact.meta.get("n_ratings", len(self.user_ids)) / max(
            len(self.user_ids), 1
        )
        self._movie_norms = np.linalg.norm(self.movie_emb, axis=1)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)

    def user_rows(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """int64 rows of external user ids, UNKNOWN (-1) where the model has no such user."""
        return _rows_of(self.user_ids, ids)

    def movie_rows(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """int64 rows of external movie ids, UNKNOWN (-1) where the model has no such movie."""
        return _rows_of(self.movie_ids, ids)

    def squash(self, scores: np.ndarray) -> np.ndarray:
        """The model's sigmoid onto y_range, clipped to the rating scale, in float32.

        y_range is a step wider than the scale (so that its ends are reachable during training);
        a served rating never leaves the scale.
        """
        scores = np.asarray(scores, dtype=np.float32)
        with np.errstate(over="ignore"):
            squashed = (self.y_hi - self.y_lo) / (1 + np.exp(-scores)) + self.y_lo
        return np.clip(squashed, self.rating_min, self.rating_max)

    def pairs(self, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        """Row-wise: float32 (n,) ratings of the pairs (user_rows[i], movie_rows[i])."""
        dots = np.einsum("ij,ij->i", self.user_emb[user_rows], self.movie_emb[movie_rows])
        return self.squash(dots + self.user_bias[user_rows] + self.movie_bias[movie_rows])

    def matrix(self, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        """One matrix product: float32 (P, Q) ratings, [i, j] for (user_rows[i], movie_rows[j])."""
        scores = self.user_emb[user_rows] @ self.movie_emb[movie_rows].T
        scores += self.user_bias[user_rows, None]
        scores += self.movie_bias[None, movie_rows]
        return self.squash(scores)

    def explain(self, user_row: int, movie_row: int) -> dict:
        """The parts of one score: biases, per-factor products and their sum, before the sigmoid."""
        products = self.user_emb[user_row] * self.movie_emb[movie_row]
        return {
            "user_bias": float(self.user_bias[user_row]),
            "movie_bias": float(self.movie_bias[movie_row]),
            "dot_product": float(products.sum()),
            "factor_products": products.tolist(),
            "y_range": [self.y_lo, self.y_hi],
        }

    def all_movie_ratings(self, user_row: int) -> np.ndarray:
        """float32 (n_movies,) ratings of every movie for one known user."""
        return self.matrix(np.array([user_row]), np.arange(self.n_movies))[0]

    def folded_movie_ratings(self, user: FoldedUser) -> np.ndarray:
        """float32 (n_movies,) ratings of every movie for a folded-in user."""
        return self.squash(self.movie_emb @ user.vector + user.bias + self.movie_bias)

    def baseline(self, movie_rows: np.ndarray, user_offset: float = 0.0) -> np.ndarray:
        """Global mean + damped movie bias (+ a user offset), clipped to the scale: no personal factors."""
        values = self.global_mean + self.baseline_movie_bias[movie_rows] + user_offset
        return np.clip(values, self.rating_min, self.rating_max).astype(np.float32)

    def user_baseline(self, user_row: int) -> float:
        """Global mean + the user's damped bias: the guess for a movie the model does not know."""
        return self.clip(self.global_mean + float(self.baseline_user_bias[user_row]))

    def clip(self, value: float) -> float:
        return float(min(max(value, self.rating_min), self.rating_max))

    def popular_scores(self) -> np.ndarray:
        """(n_movies,) damped mean rating of every movie: the ranking for a user with no ratings."""
        return self.global_mean + self.baseline_movie_bias

    def ranking_scores(self, ratings: np.ndarray) -> np.ndarray:
        """What top-N lists sort by: predicted ratings (..., n_movies) plus a popularity prior.

        Predicted ratings alone favour movies with few, glowing ratings; adding
        popularity_weight * log(1 + ratings) ranks what people actually rate highly (BENCHMARKS.md).
        """
        return ratings + self.popularity_boost

    def top_rows(self, scores: np.ndarray, k: int, exclude_rows: np.ndarray | None = None) -> np.ndarray:
        """Rows of the k highest `scores`, best first, never one of `exclude_rows`."""
        scores = np.array(scores, dtype=np.float32)
        if exclude_rows is not None and len(exclude_rows):
            scores[exclude_rows] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top], kind="stable")]

    def similar(self, movie_row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k movies nearest `movie_row` by cosine similarity of embeddings: (rows, similarities)."""
        norms = self._movie_norms * self._movie_norms[movie_row]
        cosine = (self.movie_emb @ self.movie_emb[movie_row]) / np.where(norms > 0, norms, 1)
        rows = self.top_rows(cosine, k, exclude_rows=np.array([movie_row]))
        return rows, cosine[rows]

    def fold_in(self, movie_rows: np.ndarray, ratings: np.ndarray) -> FoldedUser:
        """Place a new user from their ratings of known movies, movie embeddings held fixed.

        A ridge regression in the model's pre-sigmoid space: the target for each rated movie is
        `logit((r - lo) / (hi - lo)) - b_m`, the features are the movie's embedding and a constant
        (the user's bias). The ridge is the training penalty this user would have had
        (see `fold_in_ridge`), so a folded-in user is shrunk as a trained one would be.
        """
        fraction = (np.asarray(ratings, np.float64) - self.y_lo) / (self.y_hi - self.y_lo)
        fraction = np.clip(fraction, LOGIT_EPS, 1 - LOGIT_EPS)
        target = np.log(fraction / (1 - fraction)) - self.movie_bias[movie_rows]
        features = np.hstack([self.movie_emb[movie_rows], np.ones((len(movie_rows), 1))]).astype(np.float64)
        # the bias is shrunk like the factors: one 5-star rating must not make every movie 5 stars
        ridge = self.fold_in_ridge(len(movie_rows)) * np.eye(features.shape[1])
        solution = np.linalg.solve(features.T @ features + ridge, features.T @ target)
        residual = np.asarray(ratings) - self.global_mean - self.baseline_movie_bias[movie_rows]
        return FoldedUser(
            vector=solution[:-1].astype(np.float32),
            bias=float(solution[-1]),
            baseline_bias=float(residual.sum() / (len(residual) + 15.0)),
        )

    def fold_in_ridge(self, n_ratings: int) -> float:
        """The L2 weight training puts on a user with n ratings, moved into pre-sigmoid units.

        Per epoch training adds `weight_decay * (mean / n) ** power * n * |u|^2` for such a
        user against the squared rating errors; a score error e moves the rating by about
        e * (hi - lo) / 4 (the sigmoid's slope at its middle), hence the division.
        """
        scaled = self.weight_decay * self.mean_user_ratings**self.frequency_power
        return scaled * n_ratings ** (1 - self.frequency_power) / ((self.y_hi - self.y_lo) / 4) ** 2


def _rows_of(sorted_ids: np.ndarray, ids: np.ndarray | list[int]) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(ids.shape, UNKNOWN, dtype=np.int64)
    rows = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[rows] == ids, rows, UNKNOWN).astype(np.int64)
