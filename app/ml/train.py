"""The training loop: shuffled mini-batches of (user, movie, rating) rows, Adam, one-cycle schedule,
per-rating L2, early stopping on validation RMSE."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from app.data.training_set import TrainingSet
from app.ml.distributed import (
    Placement,
    average_sparse_gradients,
    broadcast_flag,
    current_placement,
    share_parameters,
)
from app.ml.model import DotProductBias, frequency_weights

log = logging.getLogger(__name__)

Mode = Literal["rowwise", "dense"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults were tuned on ml-100k (see BENCHMARKS.md). For a given data
    set build it with `TrainConfig.for_ratings`, which swaps in `defaults_for`'s values for large
    training sets.

    Attributes:
        n_factors: width k of the user and movie embeddings.
        epochs: most passes over the training ratings.
        lr: peak learning rate of the one-cycle schedule (Adam).
        weight_decay: lambda of the per-rating L2 penalty on the embedding rows a batch touches.
        frequency_power: scales each row's penalty by (mean count / its count) ** power
            (0: classic per-rating L2; see `frequency_weights`).
        batch_size: ratings per optimiser step.
        seed: seeds the initial weights and every epoch's shuffle.
        patience: epochs without a better validation RMSE before stopping early.
        validation_share: share of the training ratings the jobs carve out for early stopping
            (never the test fold); small, because every rating held out is one not learnt from.
        sparse: sparse gradients and SparseAdam: a step touches only the rows in its batch
            instead of whole tables; what large tables and DDP need (see README, "Scale").
        threads: torch's intra-op threads while training. A step works on (batch, k) arrays,
            too small to share out: a second thread costs more in hand-offs than it saves
            (BENCHMARKS.md); use processes (DDP) to use more cores.
        mode: "rowwise" scores a batch as `(U[u] * M[m]).sum(-1)`; "dense" scores the full
            `U @ M.T` and picks the batch's cells, the spreadsheet way (small data only).
    """

    n_factors: int = 50
    epochs: int = 10
    lr: float = 5e-3
    weight_decay: float = 0.1
    frequency_power: float = 0.5
    batch_size: int = 1024
    seed: int = 0
    patience: int = 2
    validation_share: float = 0.02
    sparse: bool = False
    threads: int = 1
    mode: Mode = "rowwise"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_ratings(cls, n_ratings: int, **given: object) -> TrainConfig:
        """The config for training on `n_ratings` ratings: the class defaults, then the
        size-aware `defaults_for(n_ratings)`, then `given` (the options a user passed), each
        overriding the last."""
        return cls(**(defaults_for(n_ratings) | given))  # type: ignore[arg-type]


LARGE_TRAINING_SET = 200_000
"""From this many training ratings on, `defaults_for` trades ml-100k's small steps for fewer,
larger ones (ml-100k's folds train on 80,000 ratings, ml-1m-part1's on 439,000-478,000)."""

#: `defaults_for`'s values from LARGE_TRAINING_SET ratings on (the sweep: BENCHMARKS.md,
#: "How the defaults were chosen")
LARGE_DEFAULTS: dict[str, float | int] = {
    "batch_size": 4096,
    "lr": 1.5e-2,
    "epochs": 5,
    "weight_decay": 0.08,
    "validation_share": 0.01,
}


def defaults_for(n_ratings: int) -> dict[str, float | int]:
    """The TrainConfig fields whose default depends on the data size, for `n_ratings` ratings.

    Below LARGE_TRAINING_SET: none (the class defaults, tuned on ml-100k: 10 epochs of 1,024,
    lr 0.005). From it on, LARGE_DEFAULTS: a step costs about 1 ms whatever its size (the
    optimiser and the embedding gradients span whole tables) plus about 0.6 us a rating, so at
    ml-1m-part1's size batches of 4,096 take half the time of 1,024 per epoch; 5 epochs at a
    peak lr of 0.015 fit within Surprise SVD's time. Fewer passes over-fit less, so the L2 is
    lighter (0.08), and 1 % of a large set (4,800 ratings of ml-1m-part1) is enough to pick the
    best epoch, leaving more to learn from. Explicit options override these
    (`TrainConfig.for_ratings`).
    """
    return dict(LARGE_DEFAULTS) if n_ratings >= LARGE_TRAINING_SET else {}


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_rmse: float | None
    seconds: float


@dataclass
class FitResult:
    model: DotProductBias
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0


EpochCallback = Callable[[EpochStats], None]


class Objective(nn.Module):
    """What training minimises, as a module so that DDP can wrap it (the model's parameters are its own).

    `loss = mean((rating - r)^2) + weight_decay * mean(w_u |U[u]|^2 + w_m |M[m]|^2)` over the
    batch: the squared error plus an L2 penalty on the embedding rows the batch touched, each
    scaled by its row's `frequency_weights`; rows a batch did not touch and the biases are not
    shrunk. The penalty reuses the rows looked up for the prediction.

    Args:
        model: the model being trained.
        weight_decay: lambda.
        user_weight, movie_weight: float (n_users,) and (n_movies,) penalty scales.
        mode: "rowwise" scores the batch's pairs; "dense" scores the full `U @ M.T` and takes
            the batch's cells (the same numbers and gradients, at the cost of the whole matrix).
    """

    def __init__(
        self,
        model: DotProductBias,
        weight_decay: float,
        user_weight: torch.Tensor,
        movie_weight: torch.Tensor,
        mode: Mode = "rowwise",
    ) -> None:
        super().__init__()
        self.model = model
        self.weight_decay = weight_decay
        self.register_buffer("user_weight", user_weight, persistent=False)
        self.register_buffer("movie_weight", movie_weight, persistent=False)
        self.mode = mode

    def forward(self, users: torch.Tensor, movies: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        model = self.model
        user_rows, movie_rows = model.user_emb(users), model.movie_emb(movies)
        if self.mode == "dense":
            all_users = torch.arange(model.user_emb.num_embeddings, device=users.device)
            all_movies = torch.arange(model.movie_emb.num_embeddings, device=users.device)
            predicted = model.forward_matrix(all_users, all_movies)[users, movies]
        else:
            predicted = model.rate(user_rows, movie_rows, users, movies)
        penalty = (
            user_rows.pow(2).sum(-1) * self.user_weight[users]
            + movie_rows.pow(2).sum(-1) * self.movie_weight[movies]
        ).mean()
        return nn.functional.mse_loss(predicted, ratings) + self.weight_decay * penalty


@torch.no_grad()
def rmse(model: DotProductBias, data: TrainingSet, batch_size: int = 1 << 16) -> float:
    """Root mean squared error of the model on every rating of `data`."""
    device = model.user_emb.weight.device
    users, movies, ratings = (tensor.to(device) for tensor in as_tensors(data))
    squared = sum(
        (model(u, m) - r).pow(2).sum().item()
        for u, m, r in zip(
            users.split(batch_size),
            movies.split(batch_size),
            ratings.split(batch_size),
            strict=True,
        )
    )
    return float((squared / max(len(data), 1)) ** 0.5)


def as_tensors(data: TrainingSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-copy torch views of a TrainingSet's user rows, movie rows and ratings.

    The arrays may be read-only (pandas' copy-on-write, memory-mapped caches); training only
    reads them, so torch's warning about non-writable arrays is silenced rather than paid for
    with a copy.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return (
            torch.from_numpy(data.user_rows),
            torch.from_numpy(data.movie_rows),
            torch.from_numpy(data.ratings),
        )


def fit(
    train: TrainingSet,
    config: TrainConfig,
    y_range: tuple[float, float],
    validation: TrainingSet | None = None,
    on_epoch: EpochCallback | None = None,
    placement: Placement | None = None,
) -> FitResult:
    """Train a DotProductBias on `train`; with `validation`, stop early and keep the best epoch.

    Args:
        train: the ratings to learn from; its id maps size the embedding tables.
        config: hyper-parameters.
        y_range: (lo, hi) the sigmoid maps onto.
        validation: ratings held out from `train` (same id maps) for early stopping.
        on_epoch: called after every epoch with its statistics (progress bars, logs).
        placement: rank, world size and device; in a world of N, every rank runs this with the
            same data and seed, each takes rows rank, rank + N, ... of every global batch of
            `config.batch_size`, DDP averages the gradients (so N ranks take the same steps one
            process would), and rank 0 alone validates. Default: one process on the CPU.
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _fit(train, config, y_range, validation, on_epoch, placement or current_placement())
    finally:
        torch.set_num_threads(threads_before)


def _fit(
    train: TrainingSet,
    config: TrainConfig,
    y_range: tuple[float, float],
    validation: TrainingSet | None,
    on_epoch: EpochCallback | None,
    placement: Placement,
) -> FitResult:
    if placement.world > 1 and config.mode == "dense":
        raise ValueError("--mode dense scores the whole matrix in one process; use rowwise with DDP")
    torch.manual_seed(config.seed)
    model = DotProductBias(train.n_users, train.n_movies, config.n_factors, y_range, config.sparse)
    model = model.to(placement.device)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = max(1, -(-len(train) // config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    shuffler = torch.Generator().manual_seed(config.seed)
    users, movies, ratings = (tensor.to(placement.device) for tensor in as_tensors(train))
    objective = Objective(
        model,
        config.weight_decay,
        frequency_weights(users, train.n_users, config.frequency_power),
        frequency_weights(movies, train.n_movies, config.frequency_power),
        config.mode,
    )
    trainee: nn.Module = objective
    average_sparse = placement.world > 1 and config.sparse
    if average_sparse:
        share_parameters(model)
    elif placement.world > 1:
        # the penalty weights are the same constants on every rank: nothing to broadcast each step
        trainee = DistributedDataParallel(objective, broadcast_buffers=False)
    result = FitResult(model=model)
    best_rmse, best_state = float("inf"), None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        trainee.train()
        total_loss = torch.zeros((), device=placement.device)
        order = torch.randperm(len(train), generator=shuffler).to(placement.device)
        for batch in order.split(config.batch_size):
            if len(batch) < placement.world:
                continue  # a last sliver too small to give every rank a row
            mine = batch[placement.rank :: placement.world]
            loss = trainee(users[mine], movies[mine], ratings[mine])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if average_sparse:
                average_sparse_gradients(model, placement)
            optimizer.step()
            schedule.step()
            total_loss += loss.detach() * len(mine)
        model.eval()
        val_rmse = None
        if placement.is_main and validation is not None and len(validation):
            val_rmse = rmse(model, validation)
        shard = -(-len(train) // placement.world)
        stats = EpochStats(epoch, total_loss.item() / shard, val_rmse, time.perf_counter() - started)
        result.history.append(stats)
        if on_epoch is not None and placement.is_main:
            on_epoch(stats)
        if val_rmse is not None and val_rmse < best_rmse:
            best_rmse, best_state, result.best_epoch = val_rmse, copy.deepcopy(model.state_dict()), epoch
        elif val_rmse is None:
            result.best_epoch = epoch
        stop = val_rmse is not None and epoch - result.best_epoch >= config.patience
        if broadcast_flag(stop, placement):
            log.info(
                "early stop at epoch %d: best validation RMSE %.4f at epoch %d",
                epoch,
                best_rmse,
                result.best_epoch,
            )
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def make_optimizer(model: DotProductBias, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; with sparse gradients SparseAdam, which updates only the rows a batch touched."""
    if config.sparse:
        return torch.optim.SparseAdam(list(model.parameters()), lr=config.lr)
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
