"""The ranking head: user and movie embeddings learnt from who rated what (implicit ALS).

`GET /recommendations` ranks by its row-wise dot product `(P[u] * Q[m]).sum(-1)` (all movies at
once: `P[u] @ Q.T`): a rating model only ever sees the movies a user chose to rate, and which
movies a user rates is the strongest signal of what they want (BENCHMARKS.md, "Ranking"). The
loss, over every (user, movie) cell, with y = P Q^T (Hu et al. 2008, tuned as Rendle et al.
2021 "Revisiting the Performance of iALS on Item Recommendation Benchmarks"):

    sum_{(u, m) rated} w_um (y_um - 1)^2  +  alpha0 * sum_{all u, m} y_um^2
    + lambda * ( sum_u (|I_u| + alpha0 |I|)^nu |P_u|^2  +  sum_m (|U_m| + alpha0 |U|)^nu |Q_m|^2 )

- alpha0 (`unobserved_weight`) pulls every cell towards 0; its sum over all cells costs only the
  k x k Gramian `Q^T Q`, never the dense matrix;
- the penalty of a row grows with its data (`scoring.row_penalties`);
- w (`scoring.ranking_weights`) grows with the rating.

Alternating least squares: with Q fixed, each user row has the closed form
`P_u = (alpha0 Q^T Q + Q_I^T W Q_I + penalty_u I)^-1 Q_I^T W 1` (and likewise for movies), which
fold-in solves for a new user (`scoring.fold_in_ranking`). Training runs a few steps of
Jacobi-preconditioned conjugate gradients on all rows at once instead (batched in torch: one
sampled dense-dense and one sparse x dense product a step, warm-started from the previous
epoch): the same accuracy as the exact solves at a twentieth of their time here.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from app.data.training_set import TrainingSet
from app.ml import scoring


@dataclass(frozen=True)
class RankingConfig:
    """Hyper-parameters of the ranking head, tuned on ml-100k and ml-1m-part1 (BENCHMARKS.md).

    Attributes:
        n_factors: k, the width of its user and movie embeddings.
        epochs: alternating passes (users, then movies).
        reg_scale: lambda is `reg_scale / (unobserved_weight * n_movies)`, so that a user's
            penalty is `reg_scale * (1 + |I_u| / (alpha0 |I|))` whatever the catalogue's size.
        reg_exponent: nu of the frequency-scaled penalty.
        unobserved_weight: alpha0, the weight of every cell towards 0.
        rating_weight, rating_pivot, min_weight: a rating's weight (`scoring.ranking_weights`).
        init_std: rows start N(0, (init_std / sqrt(k))^2).
        cg_steps: conjugate-gradient steps per half-epoch.
        seed: seeds the initial rows.
        threads: torch's intra-op threads while fitting (0: torch's default); unlike the rating
            head's small batches, these whole-table products use every core.
    """

    n_factors: int = 32
    epochs: int = 10
    reg_scale: float = 12.0
    reg_exponent: float = 1.0
    unobserved_weight: float = 0.3
    rating_weight: float = 0.5
    rating_pivot: float = 3.0
    min_weight: float = 0.05
    init_std: float = 0.1
    cg_steps: int = 2
    seed: int = 0
    threads: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def reg(self, n_movies: int) -> float:
        """lambda for a catalogue of n_movies rows."""
        return self.reg_scale / (self.unobserved_weight * max(n_movies, 1))


@dataclass(frozen=True)
class RankingFit:
    """The fitted head: float32 user factors (n_users, k) and movie factors (n_movies, k)."""

    user_factors: np.ndarray
    movie_factors: np.ndarray
    reg: float
    seconds: float


@dataclass
class _Side:
    """One side's ratings as CSR (its rows x the other side's), the ratings' weights as values."""

    pattern: torch.Tensor
    weights: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor
    counts: np.ndarray

    @classmethod
    def build(
        cls, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int, n_cols: int
    ) -> _Side:
        order = np.lexsort((cols, rows))
        counts = np.bincount(rows, minlength=n_rows)
        crow = torch.zeros(n_rows + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(torch.as_tensor(counts, dtype=torch.int64), 0)
        col = torch.as_tensor(cols[order], dtype=torch.int64)
        pattern = _csr(crow, col, torch.ones(len(col)), (n_rows, n_cols))
        return cls(pattern, torch.as_tensor(weights[order]), crow, col, counts)

    def weighted(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.col, values, self.pattern.shape)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch calls its CSR support "beta"; these products are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        # the arrays are built here, sorted and in range: checking them again would cost a pass
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def _solve_rows(
    side: _Side, other: torch.Tensor, rows: torch.Tensor, penalty: torch.Tensor, alpha0: float, steps: int
) -> torch.Tensor:
    """`steps` Jacobi-preconditioned CG steps on every row's normal equations at once, from `rows`."""
    gramian = other.T @ other
    dim = other.shape[1]
    # one sparse product gives both the right-hand side Q_I^T W 1 and the diagonal of Q_I^T W Q_I
    both = torch.sparse.mm(side.weighted(side.weights), torch.cat([other, other * other], 1))
    rhs = both[:, :dim]
    diagonal = alpha0 * gramian.diagonal() + penalty[:, None] + both[:, dim:]

    def apply(x: torch.Tensor) -> torch.Tensor:
        at_ratings = torch.sparse.sampled_addmm(side.pattern, x, other.T, beta=0.0).values()
        observed = torch.sparse.mm(side.weighted(at_ratings * side.weights), other)
        return alpha0 * (x @ gramian) + penalty[:, None] * x + observed

    x = rows.clone()
    residual = rhs - apply(x)
    z = residual / diagonal
    direction = z
    rz = (residual * z).sum(1)
    for _ in range(steps):
        a_direction = apply(direction)
        step = rz / (direction * a_direction).sum(1).clamp_min(1e-30)
        x += step[:, None] * direction
        residual -= step[:, None] * a_direction
        z = residual / diagonal
        rz_next = (residual * z).sum(1)
        direction = z + (rz_next / rz.clamp_min(1e-30))[:, None] * direction
        rz = rz_next
    x[torch.as_tensor(side.counts == 0)] = 0.0  # a row without ratings solves to 0; CG only nears it
    return x


def _one_cell_a_pair(data: TrainingSet, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user rows, movie rows, weights) with one entry per rated (user, movie): the store keeps
    one rating a pair, but a file may hold several, whose weights then add up."""
    keys = data.user_rows.astype(np.int64) * data.n_movies + data.movie_rows
    unique, inverse = np.unique(keys, return_inverse=True)
    if len(unique) == len(keys):
        return data.user_rows.astype(np.int64), data.movie_rows.astype(np.int64), weights
    summed = np.bincount(inverse, weights, minlength=len(unique)).astype(np.float32)
    return unique // data.n_movies, unique % data.n_movies, summed


def fit_ranking(data: TrainingSet, config: RankingConfig) -> RankingFit:
    """Fit the ranking head on every rating of `data` (its rows are the embedding rows)."""
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        started = time.perf_counter()
        weights = scoring.ranking_weights(
            data.ratings, config.rating_weight, config.rating_pivot, config.min_weight
        )
        user_rows, movie_rows, weights = _one_cell_a_pair(data, weights)
        by_user = _Side.build(user_rows, movie_rows, weights, data.n_users, data.n_movies)
        by_movie = _Side.build(movie_rows, user_rows, weights, data.n_movies, data.n_users)
        generator = torch.Generator().manual_seed(config.seed)
        scale = config.init_std / config.n_factors**0.5
        users = torch.randn(data.n_users, config.n_factors, generator=generator) * scale
        movies = torch.randn(data.n_movies, config.n_factors, generator=generator) * scale
        reg, alpha0, power = config.reg(data.n_movies), config.unobserved_weight, config.reg_exponent
        user_penalty = torch.as_tensor(
            scoring.row_penalties(by_user.counts, data.n_movies, reg, alpha0, power)
        )
        movie_penalty = torch.as_tensor(
            scoring.row_penalties(by_movie.counts, data.n_users, reg, alpha0, power)
        )
        for _ in range(config.epochs):
            users = _solve_rows(by_user, movies, users, user_penalty, alpha0, config.cg_steps)
            movies = _solve_rows(by_movie, users, movies, movie_penalty, alpha0, config.cg_steps)
        return RankingFit(users.numpy(), movies.numpy(), reg, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads_before)
