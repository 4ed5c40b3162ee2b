"""Who rates what in a synthetic set: power-law user activity and movie popularity, every movie
rated at least once, distinct pairs drawn user chunk by user chunk, and when each rating was made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
_CHUNK_RATINGS = 500_000
# Rounds of "draw what each user misses" per distribution (popularity, then uniform).
_DRAW_ROUNDS = 8
_LAYOUT_STREAM = 1
"""The seed stream of the layout (app.data.synth's streams: factors 0, layout 1, chunks 2, movies 3)."""


@dataclass(frozen=True)
class Popularity:
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
class Layout:
    """Who rates how much, how popular each movie is, and the pairs that cover every movie.

    Attributes:
        counts: int64 (n_users,), ratings of each user row; sums to n_ratings.
        popularity: the movies' popularity.
        covering_users: int64 (k,), sorted user rows; with `covering_movies`, one pair per movie
            (k = min(n_movies, n_ratings)) so that no movie goes unrated.
        covering_movies: int64 (k,), distinct movie rows.
    """

    counts: np.ndarray
    popularity: Popularity
    covering_users: np.ndarray
    covering_movies: np.ndarray


def plan_layout(n_users: int, n_movies: int, n_ratings: int, seed: int) -> Layout:
    rng = np.random.default_rng([seed, _LAYOUT_STREAM])
    user_weights = _power_law(n_users, **USER_ACTIVITY)[rng.permutation(n_users)]
    floor = min(MIN_RATINGS_PER_USER, n_ratings // n_users)
    counts = _apportion(n_ratings, user_weights, floor, cap=n_movies)
    popularity = Popularity(rng.permutation(n_movies).astype(np.int64), **MOVIE_POPULARITY)
    covering_users, covering_movies = _covering_pairs(counts, n_movies, rng)
    return Layout(counts, popularity, covering_users, covering_movies)


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


def user_chunks(counts: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) user rows of consecutive chunks holding about _CHUNK_RATINGS ratings each."""
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(_CHUNK_RATINGS, int(ends[-1]), _CHUNK_RATINGS))
    bounds = np.unique(np.concatenate(([0], cuts + 1, [len(counts)])))
    bounds = bounds[bounds <= len(counts)]
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def chunk_pairs(
    layout: Layout, first: int, stop: int, rng: np.random.Generator
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


def timestamps(users: np.ndarray, counts: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (n,) unix seconds of ratings by user rows `users`.

    Users join in id order over JOIN_SPAN_S; each then rates during an active period of
    ACTIVE_S_PER_RATING per rating, at uniformly random moments within it.
    """
    joined = START_TIME + (users / n_users * JOIN_SPAN_S).astype(np.int64)
    active = counts[users] * ACTIVE_S_PER_RATING
    return joined + np.floor(rng.random(len(users)) * active).astype(np.int64)
