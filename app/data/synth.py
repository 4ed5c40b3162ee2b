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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from rich.progress import Progress

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
# Popularity of the movie of rank r (1 = most rated) is proportional to (r + offset) ** -exponent:
# the offset flattens the head (the top movie gets about 0.5 % of the draws, as in MovieLens), the
# steep exponent leaves a long tail. Fitted to ml-100k: top tenth of movies 0.44 of the ratings
# (real 0.43), median movie 25 ratings (real 27).
MOVIE_POPULARITY = {"exponent": 2.0, "offset": 200.0}
# Ratings per user beyond the minimum, by activity rank; gives the most active user about 2,200
# ratings like ml-1m (real 2,314) and 29,000 like ml-25m (real 32,202).
USER_ACTIVITY = {"exponent": 1.0, "offset": 100.0}
# MovieLens keeps only users with at least 20 ratings.
MIN_RATINGS_PER_USER = 20
START_TIME = 946_684_800  # 2000-01-01, when the first user joins
JOIN_SPAN_S = 18 * 365 * 86_400  # users join in id order over 18 years
ACTIVE_S_PER_RATING = 300  # a user rates during 5 minutes per rating after joining
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

_CHUNK_RATINGS = 500_000
# Rounds of "draw what each user misses" per distribution (popularity, then uniform).
_DRAW_ROUNDS = 8
# Seeds of the independent random streams, combined with the user's seed.
_FACTORS_STREAM, _LAYOUT_STREAM, _CHUNK_STREAM, _MOVIES_STREAM = range(4)


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


@dataclass(frozen=True)
class _Popularity:
    """Power-law movie popularity: rank r (0 = most rated) has weight ~ (r + 1 + offset) ** -exponent.

    Sampled by inverting the continuous power law's CDF in closed form, so a draw costs a few
    float operations instead of a binary search over the catalogue.
    """

    movie_of_rank: np.ndarray  # int64 (n_movies,), movie row holding each popularity rank
    exponent: float
    offset: float

    def _cdf_terms(self, ranks: np.ndarray | float) -> np.ndarray | float:
        return (np.asarray(ranks) + 1.0 + self.offset) ** (1.0 - self.exponent)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """int64 (size,) movie rows drawn independently with these popularities."""
        n = len(self.movie_of_rank)
        top, bottom = self._cdf_terms(0.0), self._cdf_terms(float(n))
        levels = top - rng.random(size) * (top - bottom)
        ranks = np.floor(levels ** (1.0 / (1.0 - self.exponent)) - 1.0 - self.offset)
        return self.movie_of_rank[np.clip(ranks, 0, n - 1).astype(np.int64)]


@dataclass(frozen=True)
class _Layout:
    """Who rates how much, how popular each movie is, and the pairs that cover every movie.

    Attributes:
        counts: int64 (n_users,), ratings of each user row; sums to n_ratings.
        popularity: the movies' popularity.
        covering_users: int64 (k,), sorted user rows; with `covering_movies`, one pair per movie
            (k = min(n_movies, n_ratings)) so that no movie goes unrated.
        covering_movies: int64 (k,), distinct movie rows.
    """

    counts: np.ndarray
    popularity: _Popularity
    covering_users: np.ndarray
    covering_movies: np.ndarray


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
    layout = _plan_layout(n_users, n_movies, n_ratings, seed)

    totals = _Totals()
    with (out_dir / "ratings.csv").open("wb") as out, Progress(disable=not progress) as bar:
        task = bar.add_task("writing ratings.csv", total=n_ratings)
        out.write(b"userId,movieId,rating,timestamp\n")
        for index, (first, stop) in enumerate(_user_chunks(layout.counts)):
            rng = np.random.default_rng([seed, _CHUNK_STREAM, index])
            users, movies = _chunk_pairs(layout, first, stop, rng)
            expected = planted.expected(users, movies)
            ratings = scale.snap(expected + rng.normal(0.0, noise, len(users)))
            times = _timestamps(users, layout.counts, n_users, rng)
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


# --- who rates what -----------------------------------------------------------------------------


def _plan_layout(n_users: int, n_movies: int, n_ratings: int, seed: int) -> _Layout:
    rng = np.random.default_rng([seed, _LAYOUT_STREAM])
    user_weights = _power_law(n_users, **USER_ACTIVITY)[rng.permutation(n_users)]
    floor = min(MIN_RATINGS_PER_USER, n_ratings // n_users)
    counts = _apportion(n_ratings, user_weights, floor, cap=n_movies)
    popularity = _Popularity(rng.permutation(n_movies).astype(np.int64), **MOVIE_POPULARITY)
    covering_users, covering_movies = _covering_pairs(counts, n_movies, rng)
    return _Layout(counts, popularity, covering_users, covering_movies)


def _power_law(n: int, exponent: float, offset: float) -> np.ndarray:
    """float64 (n,) weights (rank + offset) ** -exponent for ranks 1..n."""
    return (np.arange(1, n + 1) + offset) ** -exponent


def _apportion(total: int, weights: np.ndarray, floor: int, cap: int) -> np.ndarray:
    """int64 counts in [floor, cap], summing to `total`, otherwise proportional to `weights`.

    Needs floor * n <= total <= cap * n. What rounding leaves over goes one by one to the
    heaviest entries that still have room.
    """
    counts = np.full(len(weights), floor, dtype=np.int64)
    left = total - floor * len(weights)
    while left > 0:
        open_rows = np.flatnonzero(counts < cap)
        shares = left * weights[open_rows] / weights[open_rows].sum()
        added = np.minimum(np.floor(shares).astype(np.int64), cap - counts[open_rows])
        if added.sum() == 0:
            heaviest = open_rows[np.argsort(-weights[open_rows], kind="stable")[:left]]
            added = np.zeros(len(open_rows), dtype=np.int64)
            added[np.isin(open_rows, heaviest)] = 1
        counts[open_rows] += added
        left -= int(added.sum())
    return counts


def _covering_pairs(
    counts: np.ndarray, n_movies: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One (user row, movie row) pair per movie, sorted by user, within every user's count.

    Each movie takes a distinct rating slot drawn uniformly from all n_ratings slots, so no user
    gets more covering pairs than ratings, and busy users cover the most obscure movies.
    """
    n_ratings = int(counts.sum())
    n_covered = min(n_movies, n_ratings)
    slots = np.sort(rng.choice(n_ratings, size=n_covered, replace=False))
    users = np.searchsorted(np.cumsum(counts), slots, side="right")
    movies = rng.permutation(n_movies)[:n_covered]
    return users.astype(np.int64), movies.astype(np.int64)


def _user_chunks(counts: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) user rows of consecutive chunks holding about _CHUNK_RATINGS ratings each."""
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(_CHUNK_RATINGS, int(ends[-1]), _CHUNK_RATINGS))
    bounds = np.unique(np.concatenate(([0], cuts + 1, [len(counts)])))
    bounds = bounds[bounds <= len(counts)]
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _chunk_pairs(
    layout: _Layout, first: int, stop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user row, movie row) pairs of users first..stop-1, sorted by user then movie.

    Each user gets the covering pairs, then rounds of exactly as many popularity draws as they
    still miss, repeats dropped (so no user ever gets too many): a popularity-weighted sample
    without replacement. Heavy raters exhaust the popular movies; what they still miss comes
    uniformly from the movies they have not rated (rounds of uniform draws, then exactly), which
    is what keeps obscure movies rated, as in MovieLens. Pairs are handled as sorted int64 keys
    user * n_movies + movie. Returns int64 arrays (n,).
    """
    n_movies = len(layout.popularity.movie_of_rank)
    wanted = layout.counts[first:stop]
    lo, hi = np.searchsorted(layout.covering_users, [first, stop])
    keys = np.sort((layout.covering_users[lo:hi] - first) * n_movies + layout.covering_movies[lo:hi])
    keys = _draw_rounds(keys, wanted, n_movies, lambda size: layout.popularity.sample(rng, size))
    keys = _draw_rounds(keys, wanted, n_movies, lambda size: rng.integers(0, n_movies, size))
    keys = _fill_uniformly(keys, wanted, n_movies, rng)
    return keys // n_movies + first, keys % n_movies


def _draw_rounds(
    keys: np.ndarray, wanted: np.ndarray, n_movies: int, draw: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Add `draw(k)` movies (int64 (k,)) for what each user misses, repeats dropped, a few times."""
    for _ in range(_DRAW_ROUNDS):
        missing = _missing(keys, wanted, n_movies)
        if not missing.any():
            break
        drawn = np.repeat(np.arange(len(wanted)) * n_movies, missing)
        drawn += draw(len(drawn))
        keys = _distinct_sorted(np.concatenate((keys, np.sort(drawn))))
    return keys


def _missing(keys: np.ndarray, wanted: np.ndarray, n_movies: int) -> np.ndarray:
    """int64 (n_users,) how many movies each user of the chunk still needs."""
    return wanted - np.bincount(keys // n_movies, minlength=len(wanted))


def _distinct_sorted(keys: np.ndarray) -> np.ndarray:
    """Distinct values of two concatenated sorted runs, sorted.

    A stable sort of two sorted runs is a single linear merge (timsort), cheaper than np.unique.
    """
    keys = np.sort(keys, kind="stable")
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]


def _fill_uniformly(
    keys: np.ndarray, wanted: np.ndarray, n_movies: int, rng: np.random.Generator
) -> np.ndarray:
    """Top up users still short of `wanted` with random movies they have not rated.

    O(n_movies) per user, so only for the few rating nearly the whole catalogue. `keys` are
    sorted pair keys; returns them with the additions, sorted.
    """
    missing = _missing(keys, wanted, n_movies)
    additions = []
    for user in np.flatnonzero(missing):
        lo, hi = np.searchsorted(keys, [user * n_movies, (user + 1) * n_movies])
        priority = rng.random(n_movies)
        priority[keys[lo:hi] - user * n_movies] = np.inf
        picked = np.argpartition(priority, missing[user] - 1)[: missing[user]]
        additions.append(user * n_movies + picked)
    if not additions:
        return keys
    return np.sort(np.concatenate((keys, *additions)))


def _timestamps(users: np.ndarray, counts: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (n,) unix seconds of ratings by user rows `users`.

    Users join in id order over JOIN_SPAN_S; each then rates during an active period of
    ACTIVE_S_PER_RATING per rating, at uniformly random moments within it.
    """
    joined = START_TIME + (users / n_users * JOIN_SPAN_S).astype(np.int64)
    active = counts[users] * ACTIVE_S_PER_RATING
    return joined + np.floor(rng.random(len(users)) * active).astype(np.int64)


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
