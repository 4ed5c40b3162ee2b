"""Top-k ranking quality, as `dotrec evaluate` and bench/bench_ranking.py report it.

- `top_lists`: each user's k best-scored movies, their training movies excluded (the kernel's
  top-k, as serving ranks);
- `ranking_metrics`: precision@k, recall@k, NDCG@k under two relevance rules (every held-out
  rating relevant; only those >= 4), catalogue coverage of all users' lists and mean popularity
  rank of the listed movies.

Numpy only (and the kernel), on plain arrays, so that the benchmark's peers' environment, which
has no dotrec dependencies, can import it too. Rows are dense 0-based codes (users
0..n_users-1, movies 0..n_movies-1) shared by every method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from app.ml import scoring

K = 10
#: the second relevance rule: only held-out ratings at or above this are relevant
RELEVANT_FROM = 4.0
RULES = ("all", "ge4")

#: maps int (P,) user rows to float (P, n_movies) scores, higher is better
Scorer = Callable[[np.ndarray], np.ndarray]


def csr_rows(user_rows: np.ndarray, movie_rows: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr (n_users+1,), movie rows sorted by user): each user's movies as one slice."""
    order = np.argsort(user_rows, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(user_rows, minlength=n_users))])
    return indptr, movie_rows[order]


def top_lists(
    score_users: Scorer,
    train_users: np.ndarray,
    train_movies: np.ndarray,
    n_users: int,
    users: np.ndarray,
    k: int = K,
    chunk: int = 1024,
) -> np.ndarray:
    """int (len(users), k) movie rows, best first, of each user's list (-1 past the end of a
    short one); the user's training movies excluded, and so are movies with no training rating
    (no model knows them: not in the catalogue)."""
    indptr, movies = csr_rows(train_users, train_movies, n_users)
    unknown = None
    lists = []
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = np.array(score_users(batch), dtype=np.float32, copy=True)
        lengths = indptr[batch + 1] - indptr[batch]
        rows = np.repeat(np.arange(len(batch)), lengths)
        cols = np.concatenate([movies[indptr[u] : indptr[u + 1]] for u in batch]) if len(rows) else rows
        scores[rows, cols] = -np.inf
        if unknown is None:
            unknown = np.bincount(train_movies, minlength=scores.shape[1]) == 0
        scores[:, unknown] = -np.inf
        best, values = scoring.top_k_rows(scores, k)
        lists.append(np.where(np.isfinite(values), best, -1))
    return np.concatenate(lists) if lists else np.zeros((0, k), dtype=np.int64)


@dataclass(frozen=True)
class RuleScores:
    precision: float
    recall: float
    ndcg: float
    users: int


@dataclass(frozen=True)
class RankingReport:
    """Both relevance rules' accuracy, and two beyond-accuracy figures of the same lists.

    Attributes:
        all: every held-out rating relevant.
        ge4: only held-out ratings >= 4 relevant.
        coverage: share of the training catalogue that appears in at least one user's list.
        mean_popularity_rank: mean over all list entries of the movie's popularity rank
            (1 = the movie with the most training ratings).
    """

    all: RuleScores
    ge4: RuleScores
    coverage: float
    mean_popularity_rank: float

    def ndcg_mean(self) -> float:
        """What tuning maximises: the mean of both rules' NDCG@k."""
        return (self.all.ndcg + self.ge4.ndcg) / 2

    def as_dict(self) -> dict:
        return asdict(self)


def popularity_ranks(train_movies: np.ndarray, n_movies: int) -> np.ndarray:
    """int (n_movies,) rank of each movie by training ratings, 1 = most rated (ties by row)."""
    counts = np.bincount(train_movies, minlength=n_movies)
    order = np.argsort(-counts, kind="stable")
    ranks = np.empty(n_movies, dtype=np.int64)
    ranks[order] = np.arange(1, n_movies + 1)
    return ranks


def ranking_metrics(
    users: np.ndarray,
    lists: np.ndarray,
    test_users: np.ndarray,
    test_movies: np.ndarray,
    test_ratings: np.ndarray,
    train_movies: np.ndarray,
    n_movies: int,
) -> RankingReport:
    """Score the lists (int (len(users), k) movie rows) of `users` against their held-out ratings.

    Per rule, users with no relevant held-out rating are left out of that rule's means. Recall is
    hits / relevant; NDCG's ideal list holds min(relevant, k) hits. The catalogue of coverage is
    the movies with at least one training rating (no method can list any other). A list entry -1
    (a short list's padding) is a miss and counts in neither coverage nor popularity rank.
    """
    k = lists.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    position = np.full(int(max(users.max(initial=0), test_users.max(initial=0))) + 1, -1)
    position[users] = np.arange(len(users))
    scores = {}
    for rule in RULES:
        keep = np.ones(len(test_users), bool) if rule == "all" else test_ratings >= RELEVANT_FROM
        keep &= position[test_users] >= 0
        relevant_keys = np.unique(test_users[keep].astype(np.int64) * n_movies + test_movies[keep])
        n_relevant = np.bincount(position[test_users[keep]], minlength=len(users))
        listed_keys = users[:, None].astype(np.int64) * n_movies + lists
        hits = np.isin(listed_keys, relevant_keys) & (lists >= 0)
        scored = n_relevant > 0
        ideal = np.cumsum(discounts)[np.minimum(n_relevant[scored], k) - 1]
        scores[rule] = RuleScores(
            precision=float(hits[scored].sum(1).mean() / k),
            recall=float((hits[scored].sum(1) / n_relevant[scored]).mean()),
            ndcg=float(((hits[scored] * discounts).sum(1) / ideal).mean()),
            users=int(scored.sum()),
        )
    catalogue = np.unique(train_movies)
    ranks = popularity_ranks(train_movies, n_movies)
    return RankingReport(
        all=scores["all"],
        ge4=scores["ge4"],
        coverage=float(len(np.intersect1d(np.unique(lists), catalogue)) / len(catalogue)),
        mean_popularity_rank=float(ranks[lists[lists >= 0]].mean()),
    )
