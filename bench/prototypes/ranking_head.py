"""Prototype of the ranking head of issue 14: iALS (Hu et al. 2008) as tuned by Rendle et al. 2021.

User and movie embeddings trained on who rated what, scored by the product's row-wise dot
product `(U[u] * M[m]).sum(-1)` (all movies at once: `U[u] @ M.T`). The loss, over every
(user, movie) cell, with y = U M^T:

    sum_{(u, m) rated} w_um (y_um - 1)^2  +  alpha0 * sum_{all u, m} y_um^2
    + lambda * ( sum_u (|I_u| + alpha0 |I|)^nu ||U_u||^2  +  sum_m (|U_m| + alpha0 |U|)^nu ||M_m||^2 )

- alpha0 (`unobserved_weight`) weighs every cell towards 0; the sum over all cells costs only
  the k x k Gramian `M^T M` (or `U^T U`), never the dense matrix.
- nu (`reg_exponent`) scales each row's penalty with how much data it has (Rendle's
  frequency-scaled regularization; nu = 1 in their best runs).
- w_um (`observed_weight`) is 1 for every rating, or grows with the rating when
  `rating_weight` > 0: w = max(1 + rating_weight * (r - rating_pivot), min_weight).

Alternating least squares: with M fixed, each user row has the closed form

    U_u = (alpha0 M^T M + M_Iu^T W_u M_Iu + reg_u I)^-1  M_Iu^T W_u 1

and likewise for movies. `solver="cg"` runs a few steps of Jacobi-preconditioned conjugate
gradients on all rows at once (batched in torch: one sampled dense-dense product and one sparse
x dense product per step, warm-started from the previous epoch, as implicit's ALS does);
`solver="exact"` builds every row's k x k system with bmm over padded movie blocks and solves it
by a batched Cholesky. Fold-in of a new user is the same per-row closed form (`fold_in`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


@dataclass(frozen=True)
class IALSConfig:
    """Hyper-parameters of the ranking head.

    Attributes:
        dim: k, the width of the user and movie embeddings.
        epochs: alternating passes (users, then movies).
        reg: lambda of the frequency-scaled L2 penalty; None: reg_scale / (alpha0 * n_movies),
            so that a user's penalty reg * (|I_u| + alpha0 |I|) is reg_scale * (1 + |I_u| / (alpha0 |I|))
            whatever the catalogue's size (tuned: ml-100k 0.023, ml-1m-part1 0.013; the scaled
            default gives 0.024 and 0.011).
        reg_scale: see reg.
        reg_exponent: nu: a row's penalty is reg * (its ratings + alpha0 * other side's rows) ** nu.
        unobserved_weight: alpha0, the weight of every cell towards 0.
        init_std: rows start N(0, (init_std / sqrt(dim))^2) (Rendle et al.'s scale).
        rating_weight: > 0 makes a rating's weight grow with its value (see `observed_weights`).
        rating_pivot: the rating whose weight is 1.
        min_weight: the least weight any rating gets.
        solver: "cg" (batched conjugate gradients) or "exact" (batched Cholesky).
        init: "random" (Rendle et al.) or "svd": movie rows from a randomized truncated SVD of
            the who-rated-what matrix (torch.svd_lowrank), scaled to init_std; users solved first.
        cg_steps: CG steps per half-epoch (warm-started).
        seed: seeds the initial rows.
        threads: torch intra-op threads while fitting.
    """

    dim: int = 32
    epochs: int = 10
    reg: float | None = None
    reg_scale: float = 12.0
    reg_exponent: float = 1.0
    unobserved_weight: float = 0.3
    init_std: float = 0.1
    rating_weight: float = 0.5
    rating_pivot: float = 3.0
    min_weight: float = 0.05
    solver: Literal["cg", "exact"] = "cg"
    init: Literal["random", "svd"] = "random"
    cg_steps: int = 2
    seed: int = 0
    threads: int = 2

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes: object) -> IALSConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    def reg_for(self, n_movies: int) -> float:
        """lambda as used for a catalogue of n_movies rows."""
        return self.reg if self.reg is not None else self.reg_scale / (self.unobserved_weight * n_movies)


@dataclass
class RankingHead:
    """Fitted factors: float32 (n_users, dim) and (n_movies, dim); score = user_factors @ movie_factors.T."""

    user_factors: torch.Tensor
    movie_factors: torch.Tensor
    config: IALSConfig
    fit_seconds: float

    def score(self, users: np.ndarray) -> np.ndarray:
        """float32 (len(users), n_movies) scores of the users at rows `users`."""
        return (self.user_factors[torch.as_tensor(users, dtype=torch.long)] @ self.movie_factors.T).numpy()


def observed_weights(ratings: np.ndarray, config: IALSConfig) -> np.ndarray:
    """float32 (n,) weight w of each rating: 1, or 1 + rating_weight * (r - pivot), at least min_weight."""
    if config.rating_weight == 0:
        return np.ones(len(ratings), dtype=np.float32)
    weights = 1.0 + config.rating_weight * (np.asarray(ratings, np.float32) - config.rating_pivot)
    return np.maximum(weights, config.min_weight).astype(np.float32)


def row_regularization(counts: torch.Tensor, n_other: int, reg: float, config: IALSConfig) -> torch.Tensor:
    """float32 (n_rows,) reg * (count + alpha0 * n_other) ** nu of each row."""
    return reg * (counts.float() + config.unobserved_weight * n_other).pow(config.reg_exponent)


@dataclass
class _Side:
    """One side's ratings as CSR (rows of this side x columns of the other), weights as values."""

    pattern: torch.Tensor  # sparse CSR, values 1
    weights: torch.Tensor  # float32 (nnz,), CSR order
    crow: torch.Tensor
    col: torch.Tensor
    counts: torch.Tensor  # int64 (n_rows,)

    @classmethod
    def build(
        cls, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int, n_cols: int
    ) -> _Side:
        order = np.lexsort((cols, rows))
        counts = torch.as_tensor(np.bincount(rows, minlength=n_rows), dtype=torch.int64)
        crow = torch.zeros(n_rows + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(counts, 0)
        col = torch.as_tensor(cols[order], dtype=torch.int64)
        pattern = torch.sparse_csr_tensor(crow, col, torch.ones(len(col)), size=(n_rows, n_cols))
        return cls(pattern, torch.as_tensor(weights[order]), crow, col, counts)

    def weighted(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, size=self.pattern.shape)


def _cg_solve(
    side: _Side, other: torch.Tensor, rows: torch.Tensor, reg: torch.Tensor, alpha0: float, steps: int
) -> torch.Tensor:
    """A few Jacobi-preconditioned CG steps on every row's normal equations at once, from `rows`."""
    gramian = other.T @ other
    dim = other.shape[1]
    # one sparse product for both the right-hand side M_I^T W 1 and the diagonal of M_I^T W M_I
    both = torch.sparse.mm(side.weighted(side.weights), torch.cat([other, other * other], 1))
    rhs = both[:, :dim]
    diagonal = alpha0 * gramian.diagonal() + reg[:, None] + both[:, dim:]

    def apply(x: torch.Tensor) -> torch.Tensor:
        at_ratings = torch.sparse.sampled_addmm(side.pattern, x, other.T, beta=0.0).values()
        observed = torch.sparse.mm(side.weighted(at_ratings * side.weights), other)
        return alpha0 * (x @ gramian) + reg[:, None] * x + observed

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
    return x


def _exact_solve(
    side: _Side, other: torch.Tensor, reg: torch.Tensor, alpha0: float, block_cells: int = 1 << 24
) -> torch.Tensor:
    """Every row's closed form: its k x k system built with bmm over padded blocks, batched Cholesky."""
    n_rows, dim = len(side.counts), other.shape[1]
    gramian = alpha0 * (other.T @ other)
    solution = torch.zeros(n_rows, dim)
    order = torch.argsort(side.counts)
    counts = side.counts[order]
    start = 0
    while start < n_rows:
        longest = max(int(counts[min(n_rows, start + 1) - 1]), 1)
        size = max(1, min(n_rows - start, block_cells // (longest * dim)))
        batch = order[start : start + size]
        longest = max(int(side.counts[batch].max()), 1)
        offsets = torch.arange(longest)
        present = offsets[None, :] < side.counts[batch, None]
        index = (side.crow[batch, None] + offsets[None, :]).clamp_max(len(side.col) - 1)
        cols = torch.where(present, side.col[index], 0)
        weights = torch.where(present, side.weights[index], 0.0)
        block = other[cols]  # (batch, longest, dim)
        weighted = block * weights[..., None]
        systems = gramian + torch.bmm(block.transpose(1, 2), weighted)
        systems.diagonal(dim1=1, dim2=2).add_(reg[batch, None])
        rhs = weighted.sum(1, keepdim=True).transpose(1, 2)
        solution[batch] = torch.cholesky_solve(rhs, torch.linalg.cholesky(systems))[..., 0]
        start += size
    return solution


def fit(
    user_rows: np.ndarray,
    movie_rows: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_movies: int,
    config: IALSConfig,
) -> RankingHead:
    """Fit the ranking head on ratings given as dense row codes; timed (`fit_seconds`)."""
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    weights = observed_weights(ratings, config)
    by_user = _Side.build(user_rows, movie_rows, weights, n_users, n_movies)
    by_movie = _Side.build(movie_rows, user_rows, weights, n_movies, n_users)
    generator = torch.Generator().manual_seed(config.seed)
    scale = config.init_std / config.dim**0.5
    users = torch.randn(n_users, config.dim, generator=generator) * scale
    movies = torch.randn(n_movies, config.dim, generator=generator) * scale
    if config.init == "svd":
        torch.manual_seed(config.seed)
        _, values, vectors = torch.svd_lowrank(by_user.weighted(by_user.weights), q=config.dim, niter=2)
        movies = vectors * values.sqrt() / values.sqrt().max() * config.init_std
        users = torch.zeros(n_users, config.dim)
    reg = config.reg_for(n_movies)
    user_reg = row_regularization(by_user.counts, n_movies, reg, config)
    movie_reg = row_regularization(by_movie.counts, n_users, reg, config)
    alpha0 = config.unobserved_weight
    empty_users, empty_movies = by_user.counts == 0, by_movie.counts == 0
    for _ in range(config.epochs):
        if config.solver == "exact":
            users = _exact_solve(by_user, movies, user_reg, alpha0)
            movies = _exact_solve(by_movie, users, movie_reg, alpha0)
        else:
            users = _cg_solve(by_user, movies, users, user_reg, alpha0, config.cg_steps)
            users[empty_users] = 0.0  # a row with no rating solves to 0; CG from its start only nears it
            movies = _cg_solve(by_movie, users, movies, movie_reg, alpha0, config.cg_steps)
            movies[empty_movies] = 0.0
    return RankingHead(users, movies, config, time.perf_counter() - started)


def fold_in(
    movie_factors: torch.Tensor,
    movie_rows: np.ndarray,
    ratings: np.ndarray,
    config: IALSConfig,
    gramian: torch.Tensor | None = None,
) -> torch.Tensor:
    """float32 (dim,) embedding of a user not in training, from their ratings, movies fixed.

    The exact per-row solve of training: (alpha0 M^T M + M_I^T W M_I + reg_u I) u = M_I^T W 1,
    with reg_u from the user's number of ratings. `gramian` (alpha0 * M^T M) can be cached by the
    caller: it is the same for every user of a model.
    """
    alpha0 = config.unobserved_weight
    if gramian is None:
        gramian = alpha0 * (movie_factors.T @ movie_factors)
    block = movie_factors[torch.as_tensor(movie_rows, dtype=torch.long)]
    weights = torch.as_tensor(observed_weights(ratings, config))[:, None]
    n_movies = movie_factors.shape[0]
    reg = row_regularization(torch.tensor([len(movie_rows)]), n_movies, config.reg_for(n_movies), config)
    system = gramian + block.T @ (weights * block) + reg * torch.eye(movie_factors.shape[1])
    return torch.linalg.solve(system, (weights * block).sum(0))
