"""One artifact's numbers: its arrays, id maps and the kernel's formulas bound to them.

Serving, `recommend-all` and evaluation all score through a Predictor, so every figure the
project reports is what the API serves. Torch is not needed: the serving process stays small
and starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.ml import scoring
from app.ml.artifact import Artifact
from app.ml.ids import IdIndex

USER_BASELINE_DAMPING = 15.0
"""The damping of a user's bias in `baseline` terms (the artifact's baseline_user_bias uses it)."""


@dataclass(frozen=True)
class FoldedUser:
    """A user the model never saw, placed in its space from their ratings (`Predictor.fold_in`)."""

    vector: np.ndarray
    bias: float
    baseline_bias: float
    rank_vector: np.ndarray | None = None
    """Their row of the ranking head (None: the model has none)."""


class RankingHead:
    """The ranking head of an artifact: what `GET /recommendations` ranks by, `P[u] . Q[m]`.

    Attributes:
        user_factors (n_users, k), movie_factors (n_movies, k): P and Q.
        terms: meta.json's `ranking_head` (the weights and penalties a fold-in needs).
    """

    def __init__(self, user_factors: np.ndarray, movie_factors: np.ndarray, terms: dict) -> None:
        self.user_factors = user_factors
        self.movie_factors = movie_factors
        self.terms = terms
        self._gramian: np.ndarray | None = None

    def gramian(self) -> np.ndarray:
        """`unobserved_weight * Q^T Q` (k x k, float64), made once per model on first use."""
        if self._gramian is None:
            factors = np.asarray(self.movie_factors, dtype=np.float64)
            self._gramian = self.terms["unobserved_weight"] * (factors.T @ factors)
        return self._gramian

    def scores(self, vectors: np.ndarray, movie_rows: np.ndarray | None = None) -> np.ndarray:
        """float32 (P, Q) ranking scores of users given by their rows (P, k) of P."""
        factors = self.movie_factors if movie_rows is None else self.movie_factors[movie_rows]
        return scoring.matrix_scores(vectors, None, factors.T, None)

    def fold_in(self, movie_rows: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """A new user's row of P from their ratings, by the closed form training solves."""
        terms = self.terms
        weights = scoring.ranking_weights(
            ratings, terms["rating_weight"], terms["rating_pivot"], terms["min_weight"]
        )
        penalty = scoring.row_penalties(
            np.array([len(movie_rows)]),
            len(self.movie_factors),
            terms["reg"],
            terms["unobserved_weight"],
            terms["reg_exponent"],
        )[0]
        return scoring.fold_in_ranking(
            self.movie_factors[movie_rows], weights, self.gramian(), float(penalty)
        )


class Predictor:
    """Predictions from one loaded artifact.

    Attributes:
        version, meta: the artifact's version name and meta.json.
        users, movies: the id -> row maps of the embedding rows.
        user_emb (n_users, k), movie_emb (n_movies, k), user_bias, movie_bias: the rating head.
        baseline_user_bias, baseline_movie_bias, global_mean: the no-factor baseline terms.
        y_range: (lo, hi) of the sigmoid; scale: (min, max) a served rating is clipped to.
    """

    def __init__(self, artifact: Artifact, popularity_weight: float = 0.5) -> None:
        weights, meta = artifact.weights, artifact.meta
        self.artifact = artifact
        self.version: str = artifact.version
        self.meta = meta
        self.users = IdIndex(artifact.user_ids)
        self.movies = IdIndex(artifact.movie_ids)
        self.user_emb = weights["user_emb"]
        self.movie_emb = weights["movie_emb"]
        self.user_bias = weights["user_bias"]
        self.movie_bias = weights["movie_bias"]
        self.baseline_user_bias = weights["baseline_user_bias"]
        self.baseline_movie_bias = weights["baseline_movie_bias"]
        self.global_mean = float(meta["global_mean"])
        y_lo, y_hi = (float(v) for v in meta["y_range"])
        self.y_range = (y_lo, y_hi)
        scale = meta.get("rating_scale", {})
        self.scale = (float(scale.get("min", y_lo)), float(scale.get("max", y_hi)))
        self.popularity_boost = (popularity_weight * weights["movie_popularity"]).astype(np.float32)
        hyper = meta.get("hyper_parameters", {})
        self.weight_decay = float(hyper.get("weight_decay", 0.1))
        self.frequency_power = float(hyper.get("frequency_power", 0.0))
        self.mean_user_ratings = (meta.get("n_ratings") or len(self.users)) / max(len(self.users), 1)
        self.linear = meta.get("rating_head", {}).get("transform") == "linear"
        """The rating head is biases alone (`--objective ranking`): clip(mean + b_u + b_m)."""
        self.ranking: RankingHead | None = None
        if "ranking_head" in meta:
            self.ranking = RankingHead(
                weights["rank_user_emb"], weights["rank_movie_emb"], meta["ranking_head"]
            )

    @property
    def user_ids(self) -> np.ndarray:
        return self.users.ids

    @property
    def movie_ids(self) -> np.ndarray:
        return self.movies.ids

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_movies(self) -> int:
        return len(self.movies)

    # --- the rating head ---

    def pairs(self, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        """Row-wise: float32 (n,) served ratings of model users' pairs (user_rows[i], movie_rows[i])."""
        return self.pair_ratings(self.user_emb[user_rows], self.user_bias[user_rows], movie_rows)

    def pair_ratings(self, vectors: np.ndarray, biases: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        """Row-wise: float32 (n,) served ratings of users given by their terms (n, k) and (n,)."""
        scores = scoring.pair_scores(vectors, biases, self.movie_emb[movie_rows], self.movie_bias[movie_rows])
        return self._ratings(scores)

    def pair_rating(self, vector: np.ndarray, bias: float, movie_row: int) -> float:
        """One pair's served rating, for a user given by their terms (k,) and bias: `pair_ratings`
        of a single pair, on Python floats."""
        score = float(vector @ self.movie_emb[movie_row]) + float(bias) + float(self.movie_bias[movie_row])
        if self.linear:
            return scoring.linear_rating(score, self.global_mean, self.scale)
        return scoring.served_rating(score, self.y_range, self.scale)

    def matrix(self, user_rows: np.ndarray, movie_rows: np.ndarray | None = None) -> np.ndarray:
        """float32 (P, Q) served ratings of model users x movies (None: every movie)."""
        return self.ratings_matrix(self.user_emb[user_rows], self.user_bias[user_rows], movie_rows)

    def ratings_matrix(
        self, vectors: np.ndarray, biases: np.ndarray, movie_rows: np.ndarray | None = None
    ) -> np.ndarray:
        """float32 (P, Q) served ratings of users given by their terms (P, k) and (P,), against
        `movie_rows` (None: every movie, without copying the movie table): one matrix product."""
        movie_emb, movie_bias = self.movie_emb, self.movie_bias
        if movie_rows is not None:
            movie_emb, movie_bias = movie_emb[movie_rows], movie_bias[movie_rows]
        scores = scoring.matrix_scores(vectors, biases, movie_emb.T, movie_bias)
        return self._ratings(scores)

    def _ratings(self, scores: np.ndarray) -> np.ndarray:
        """Served ratings of a buffer of scores, in place."""
        if self.linear:
            return scoring.linear_ratings(scores, self.global_mean, self.scale)
        return scoring.served_ratings(scores, self.y_range, self.scale, in_place=True)

    def fold_in(self, movie_rows: np.ndarray, ratings: np.ndarray) -> FoldedUser:
        """Place a new user from their ratings of known movies, the movie side held fixed: in the
        rating head by a ridge regression whose ridge is the training penalty such a user would
        have had (`fold_in_ridge`), in the ranking head by its closed form."""
        residual = np.asarray(ratings) - self.global_mean - self.baseline_movie_bias[movie_rows]
        baseline_bias = scoring.damped_mean(residual, USER_BASELINE_DAMPING)
        rank_vector = None if self.ranking is None else self.ranking.fold_in(movie_rows, ratings)
        if self.linear:  # biases alone: the user's is their damped bias, as in baseline_user_bias
            vector = np.zeros(self.movie_emb.shape[1], dtype=np.float32)
            return FoldedUser(vector, baseline_bias, baseline_bias, rank_vector)
        vector, bias = scoring.fold_in_rating(
            self.movie_emb[movie_rows],
            self.movie_bias[movie_rows],
            ratings,
            self.y_range,
            self.fold_in_ridge(len(movie_rows)),
        )
        return FoldedUser(vector, bias, baseline_bias, rank_vector)

    def fold_in_ridge(self, n_ratings: int) -> float:
        """The L2 weight training puts on a user with n ratings, moved into pre-sigmoid units.

        Per epoch training adds `weight_decay * (mean / n) ** power * n * |u|^2` for such a
        user against the squared rating errors; a score error e moves the rating by about
        e * (hi - lo) / 4 (the sigmoid's slope at its middle), hence the division. A model
        trained without weight decay still gets a small ridge: the system must stay solvable
        for a user with fewer ratings than factors.
        """
        scaled = self.weight_decay * self.mean_user_ratings**self.frequency_power
        ridge = (
            scaled * n_ratings ** (1 - self.frequency_power) / ((self.y_range[1] - self.y_range[0]) / 4) ** 2
        )
        return max(ridge, MIN_FOLD_IN_RIDGE)

    # --- baselines and ranking ---

    def baseline(self, movie_rows: np.ndarray, user_offset: float = 0.0) -> np.ndarray:
        """Global mean + damped movie bias (+ a user's offset), clipped: no personal factors."""
        return scoring.clip(self.global_mean + self.baseline_movie_bias[movie_rows] + user_offset, self.scale)

    def user_baselines(self, user_offsets: np.ndarray) -> np.ndarray:
        """Global mean + users' damped biases, clipped: the guess for a movie the model lacks."""
        return scoring.clip(self.global_mean + np.asarray(user_offsets, dtype=np.float64), self.scale)

    def user_baseline(self, user_offset: float) -> float:
        return float(self.user_baselines(np.array([user_offset]))[0])

    def popular_scores(self) -> np.ndarray:
        """(n_movies,) damped mean rating of every movie: the ranking for a user with no ratings."""
        return self.global_mean + self.baseline_movie_bias

    def user_list_scores(self, user_rows: np.ndarray, ratings: np.ndarray | None = None) -> np.ndarray:
        """`list_scores` of model users at `user_rows`; `ratings` (their served ratings of every
        movie) are computed here when the order needs them and none are given."""
        if self.ranking is not None:
            return self.ranking.scores(self.ranking.user_factors[user_rows])
        return self.list_scores(None, self.matrix(user_rows) if ratings is None else ratings)

    def list_scores(self, rank_vectors: np.ndarray | None, ratings: np.ndarray | None) -> np.ndarray:
        """What top-N lists sort by, (P, n_movies) for P users: the ranking head's scores of the
        users' rows `rank_vectors` (P, k) when the model has one; else (an artifact trained with
        `--objective rating`, or an older one) their served `ratings` plus a popularity prior.

        Predicted ratings alone favour movies with few, glowing ratings; adding
        popularity_weight * log(1 + ratings) ranked what people actually rate highly better,
        but far below the ranking head (BENCHMARKS.md, "Ranking").
        """
        if self.ranking is not None:
            assert rank_vectors is not None
            return self.ranking.scores(rank_vectors)
        assert ratings is not None
        return ratings + self.popularity_boost


MIN_FOLD_IN_RIDGE = 1e-3
