"""MovieLens-shaped synthetic ratings with a planted low-rank signal, written in bounded memory.

The planted model is the one a dot-product recommender fits:

    rating(u, m) = round_to_scale(mu + b_u + b_m + p_u . q_m + N(0, noise)), clipped to the scale

with power-law movie popularity and user activity, so the data is as sparse and skewed as real
MovieLens. Users are generated in chunks (vectorised numpy per chunk, each with its own random
stream), so memory stays flat whatever the size and the files are byte-identical for a seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from rich.progress import Progress

from app.data.synth_layout import (
    MOVIE_POPULARITY,
    USER_ACTIVITY,
    chunk_pairs,
    plan_layout,
    timestamps,
    user_chunks,
)

# Users, movies and ratings of the real data sets, for data "like" them.
PRESETS: dict[str, tuple[int, int, int]] = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-25m": (162_541, 59_047, 25_000_095),
}

GLOBAL_MEAN = 3.5
USER_BIAS_STD = 0.35
MOVIE_BIAS_STD = 0.45
# Standard deviation of p_u . q_m, whatever the rank; sets the factors' scale.
INTERACTION_STD = 0.8
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

# Seeds of the independent random streams, combined with the user's seed.
_FACTORS_STREAM, _CHUNK_STREAM, _MOVIES_STREAM = 0, 2, 3  # 1: the layout's (app.data.synth_layout)


@dataclass(frozen=True)
class PlantedFactors:
    """The true model behind a synthetic data set; row i is the user (movie) with id i + 1.

    Attributes:
        global_mean: mu.
        user_bias: float64 (n_users,).
        movie_bias: float64 (n_movies,).
        user_factors: float64 (n_users, rank).
        movie_factors: float64 (n_movies, rank).
    """

    global_mean: float
    user_bias: np.ndarray
    movie_bias: np.ndarray
    user_factors: np.ndarray
    movie_factors: np.ndarray

    @property
    def scale(self) -> float:
        """Standard deviation of one factor entry."""
        return factor_scale(self.user_factors.shape[1])

    def expected(self, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        """float64 (n,) noise-free, unrounded rating of each (user row, movie row) pair."""
        interaction = np.einsum("ij,ij->i", self.user_factors[user_rows], self.movie_factors[movie_rows])
        return self.global_mean + self.user_bias[user_rows] + self.movie_bias[movie_rows] + interaction


def factor_scale(rank: int) -> float:
    """Per-entry std of the factors so that p_u . q_m has std INTERACTION_STD at this rank."""
    return (INTERACTION_STD**2 / rank) ** 0.25


def planted_factors(n_users: int, n_movies: int, seed: int = 0, rank: int = 8) -> PlantedFactors:
    """The planted model `write_synthetic` uses for these sizes, seed and rank."""
    rng = np.random.default_rng([seed, _FACTORS_STREAM])
    scale = factor_scale(rank)
    return PlantedFactors(
        global_mean=GLOBAL_MEAN,
        user_bias=rng.normal(0.0, USER_BIAS_STD, n_users),
        movie_bias=rng.normal(0.0, MOVIE_BIAS_STD, n_movies),
        user_factors=rng.normal(0.0, scale, (n_users, rank)),
        movie_factors=rng.normal(0.0, scale, (n_movies, rank)),
    )


@dataclass(frozen=True)
class _RatingScale:
    """Allowed ratings: minimum, minimum + step, ..., maximum."""

    minimum: float
    maximum: float
    step: float

    @classmethod
    def movielens(cls, half_stars: bool) -> _RatingScale:
        return cls(0.5, 5.0, 0.5) if half_stars else cls(1.0, 5.0, 1.0)

    def snap(self, values: np.ndarray) -> np.ndarray:
        """float64 (n,): each value rounded to the nearest allowed rating."""
        steps = np.rint((values - self.minimum) / self.step)
        return np.clip(self.minimum + steps * self.step, self.minimum, self.maximum)


def write_synthetic(
    out_dir: Path,
    n_users: int,
    n_movies: int,
    n_ratings: int,
    seed: int = 0,
    rank: int = 8,
    noise: float = 0.5,
    half_stars: bool = False,
    progress: bool = False,
) -> Path:
    """Write `ratings.csv`, `movies.csv` (ml-latest layout) and `synth.json` into `out_dir`.

    Exactly `n_ratings` distinct (user, movie) pairs, user ids 1..n_users, movie ids 1..n_movies;
    every user and every movie rated at least once when n_ratings allows. `synth.json` is written
    last, so its presence means the set is complete. Returns `out_dir`.
    """
    _check_sizes(n_users, n_movies, n_ratings, rank, noise)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "synth.json").unlink(missing_ok=True)
    scale = _RatingScale.movielens(half_stars)
    planted = planted_factors(n_users, n_movies, seed, rank)
    layout = plan_layout(n_users, n_movies, n_ratings, seed)

    totals = _Totals()
    with (out_dir / "ratings.csv").open("wb") as out, Progress(disable=not progress) as bar:
        task = bar.add_task("writing ratings.csv", total=n_ratings)
        out.write(b"userId,movieId,rating,timestamp\n")
        for index, (first, stop) in enumerate(user_chunks(layout.counts)):
            rng = np.random.default_rng([seed, _CHUNK_STREAM, index])
            users, movies = chunk_pairs(layout, first, stop, rng)
            expected = planted.expected(users, movies)
            ratings = scale.snap(expected + rng.normal(0.0, noise, len(users)))
            times = timestamps(users, layout.counts, n_users, rng)
            totals.add(ratings, np.clip(expected, scale.minimum, scale.maximum))
            _write_ratings(out, users, movies, ratings, times)
            bar.advance(task, len(users))
    _write_movies(out_dir / "movies.csv", n_movies, seed)
    summary = {
        "generator": "dotrec synth",
        "n_users": n_users,
        "n_movies": n_movies,
        "n_ratings": n_ratings,
        "seed": seed,
        "rank": rank,
        "noise": noise,
        "half_stars": half_stars,
        "rating_min": scale.minimum,
        "rating_max": scale.maximum,
        "rating_step": scale.step,
        "scale": planted.scale,
        "global_mean": GLOBAL_MEAN,
        "user_bias_std": USER_BIAS_STD,
        "movie_bias_std": MOVIE_BIAS_STD,
        "interaction_std": INTERACTION_STD,
        "movie_popularity": MOVIE_POPULARITY,
        "user_activity": USER_ACTIVITY,
        **totals.summary(),
    }
    (out_dir / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out_dir


def _check_sizes(n_users: int, n_movies: int, n_ratings: int, rank: int, noise: float) -> None:
    if min(n_users, n_movies, n_ratings, rank) < 1:
        raise ValueError("n_users, n_movies, n_ratings and rank must be positive")
    if n_ratings > n_users * n_movies:
        raise ValueError(f"{n_ratings} distinct ratings do not fit {n_users} users x {n_movies} movies")
    if noise < 0:
        raise ValueError("noise must be >= 0")


class _Totals:
    """Running sums over written ratings, for the summary in synth.json."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.total_squares = 0.0
        self.planted_squared_error = 0.0

    def add(self, ratings: np.ndarray, planted: np.ndarray) -> None:
        self.count += len(ratings)
        self.total += float(ratings.sum())
        self.total_squares += float(np.square(ratings).sum())
        self.planted_squared_error += float(np.square(ratings - planted).sum())

    def summary(self) -> dict[str, float]:
        """mean_rating and rating_std of the written ratings; rmse_planted: RMSE of the planted
        model's noise-free rating clipped to the scale, about the best a learner can get."""
        mean = self.total / self.count
        return {
            "mean_rating": mean,
            "rating_std": math.sqrt(max(self.total_squares / self.count - mean**2, 0.0)),
            "rmse_planted": math.sqrt(self.planted_squared_error / self.count),
        }


def _write_ratings(
    out: BinaryIO,
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    times: np.ndarray,
) -> None:
    """Append rows (ids are row + 1), ratings written "4.0" / "3.5" as in GroupLens' files."""
    table = pa.table(
        {
            "userId": users + 1,
            "movieId": movies + 1,
            "rating": _rating_labels(ratings),
            "timestamp": times,
        }
    )
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="none"))


def _rating_labels(ratings: np.ndarray) -> pa.Array:
    """Ratings (multiples of 0.5 in 0..5) as text, through an 11-entry table: fast to write."""
    labels = pa.array([f"{half / 2:.1f}" for half in range(11)])
    return labels.take(pa.array(np.rint(ratings * 2).astype(np.int32)))


def _write_movies(path: Path, n_movies: int, seed: int) -> None:
    """movies.csv: `movieId,title,genres`, titles "Synthetic Movie 12 (1997)", 1-3 genres each."""
    rng = np.random.default_rng([seed, _MOVIES_STREAM])
    years = 1930 + np.floor(90 * np.sqrt(rng.random(n_movies))).astype(int)  # more recent films
    n_genres = rng.integers(1, 4, n_movies)
    lines = ["movieId,title,genres\n"]
    for row in range(n_movies):
        genres = rng.choice(len(GENRES), n_genres[row], replace=False)
        names = "|".join(GENRES[g] for g in sorted(genres))
        lines.append(f"{row + 1},Synthetic Movie {row + 1} ({years[row]}),{names}\n")
    path.write_text("".join(lines), encoding="utf-8")
