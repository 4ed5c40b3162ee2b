"""The dot-product model: a rating is the dot product of a user row and a movie row, plus biases."""

from __future__ import annotations

import torch
from torch import nn

from app.ml import scoring


class DotProductBias(nn.Module):
    """`rating = sigmoid(U[u] . M[m] + b_u[u] + b_m[m]) * (hi - lo) + lo` (fastai's EmbeddingDotBias).

    Args:
        n_users: rows of the user table U.
        n_movies: rows of the movie table M.
        n_factors: k, the width of each embedding row.
        y_range: (lo, hi), the open interval the sigmoid maps onto; slightly wider than the
            rating scale so that the extreme ratings are reachable with finite scores.
        sparse: sparse gradients (only the rows a batch touched): for large tables and DDP.
    """

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        n_factors: int,
        y_range: tuple[float, float],
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.user_emb = nn.Embedding(n_users, n_factors, sparse=sparse)
        self.movie_emb = nn.Embedding(n_movies, n_factors, sparse=sparse)
        self.user_bias = nn.Embedding(n_users, 1, sparse=sparse)
        self.movie_bias = nn.Embedding(n_movies, 1, sparse=sparse)
        self.y_range = y_range
        for table in (self.user_emb, self.movie_emb):
            nn.init.normal_(table.weight, std=0.01)
        for table in (self.user_bias, self.movie_bias):
            nn.init.zeros_(table.weight)

    def forward(self, users: torch.Tensor, movies: torch.Tensor) -> torch.Tensor:
        """Row-wise: users and movies are int (B,) row indices; returns the B predicted ratings."""
        return self.rate(self.user_emb(users), self.movie_emb(movies), users, movies)

    def rate(
        self, user_rows: torch.Tensor, movie_rows: torch.Tensor, users: torch.Tensor, movies: torch.Tensor
    ) -> torch.Tensor:
        """The B ratings from already looked-up (B, k) embedding rows `U[users]` and `M[movies]`."""
        dot = (user_rows * movie_rows).sum(-1)
        return self.squash(dot + self.user_bias(users)[:, 0] + self.movie_bias(movies)[:, 0])

    def forward_matrix(self, users: torch.Tensor, movies: torch.Tensor) -> torch.Tensor:
        """All pairs at once: int (P,) and (Q,) rows give the (P, Q) matrix `U[u] @ M[m].T + b`."""
        scores = self.user_emb(users) @ self.movie_emb(movies).T
        scores = scores + self.user_bias(users) + self.movie_bias(movies).T
        return self.squash(scores)

    def squash(self, scores: torch.Tensor) -> torch.Tensor:
        return scoring.squash(scores, self.y_range)


def frequency_weights(rows: torch.Tensor, n_rows: int, power: float = 0.5) -> torch.Tensor:
    """float (n_rows,) penalty scales `(mean count / count) ** power` of each row.

    A per-rating penalty shrinks a row in proportion to its n ratings per epoch; scaling it by
    n ** -power makes that n ** (1 - power): power 0 is the classic per-rating L2, 1 a per-row one.
    With 0.5, busy users and blockbusters are shrunk less, rare ones still firmly.
    """
    counts = torch.bincount(rows, minlength=n_rows).clamp(min=1).float()
    return (counts.mean() / counts).pow(power)
