"""Row-wise mini-batch scoring and the spreadsheet-style dense `U @ M.T` give the same loss and gradients."""

import copy

import numpy as np
import torch

from app.data.training_set import TrainingSet
from app.ml.model import DotProductBias
from app.ml.train import Objective, TrainConfig, fit


def test_rowwise_and_dense_loss_and_gradients_agree() -> None:
    torch.manual_seed(0)
    rowwise = DotProductBias(25, 35, 6, (0.0, 5.5))
    dense = copy.deepcopy(rowwise)
    users = torch.randint(0, 25, (300,))
    movies = torch.randint(0, 35, (300,))
    ratings = torch.rand(300) * 4 + 1

    user_weight, movie_weight = torch.rand(25) + 0.5, torch.rand(35) + 0.5
    loss_rowwise = Objective(rowwise, 0.05, user_weight, movie_weight, "rowwise")(users, movies, ratings)
    loss_dense = Objective(dense, 0.05, user_weight, movie_weight, "dense")(users, movies, ratings)
    torch.testing.assert_close(loss_rowwise, loss_dense)
    loss_rowwise.backward()
    loss_dense.backward()
    for (name, a), (_, b) in zip(rowwise.named_parameters(), dense.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=f"gradient of {name}")
    untouched = torch.ones(35, dtype=torch.bool)
    untouched[movies] = False
    assert dense.movie_emb.weight.grad[untouched].abs().sum() == 0


def test_training_in_both_modes_follows_the_same_path() -> None:
    rng = np.random.default_rng(0)
    data = TrainingSet.from_arrays(
        rng.integers(1, 40, 2000), rng.integers(1, 30, 2000), rng.integers(1, 6, 2000).astype(np.float32)
    )
    config = TrainConfig(n_factors=4, epochs=2, batch_size=256)
    rowwise = fit(data, config, (0.0, 5.5)).model
    dense = fit(data, TrainConfig(**config.as_dict() | {"mode": "dense"}), (0.0, 5.5)).model
    for a, b in zip(rowwise.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
