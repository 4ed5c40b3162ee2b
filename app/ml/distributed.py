"""Distributed training on PyTorch's own engine: torchrun + DistributedDataParallel.

`dotrec train --nproc N ARGS` runs `torchrun --nproc-per-node N --no-python python -m app.cli
train ARGS`: N copies of `dotrec train`; each joins the process group named by
torchrun's environment (gloo on CPU, nccl on a GPU), reads the same ratings, and takes its share
of every global batch. Only rank 0 validates, logs and writes the artifact.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its rank among `world` processes, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str) -> torch.device:
    """ "auto" takes a GPU when there is one; "cpu" and "cuda" are taken as asked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no GPU")
    return torch.device(device)


def join_from_environment(device: str = "auto") -> Placement:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a world of one."""
    target = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Placement(0, 1, target)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if target.type == "cuda":
        target = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(target)
    return Placement(rank, dist.get_world_size(), target)


def current_placement() -> Placement:
    """The placement of a process that has (or has not) joined a group, on the CPU."""
    if dist.is_available() and dist.is_initialized():
        return Placement(dist.get_rank(), dist.get_world_size(), torch.device("cpu"))
    return Placement(0, 1, torch.device("cpu"))


def leave() -> None:
    """Leave the group once every rank is done (rank 0 last: it writes the artifact)."""
    if dist.is_available() and dist.is_initialized():
        # A rank that tore its group down while rank 0 was still saving aborted now and then
        # at exit (gloo: "terminate called without an active exception", 2 runs in 15), and
        # torchrun then killed rank 0 before the artifact was written.
        dist.barrier()
        dist.destroy_process_group()


def broadcast_flag(flag: bool, placement: Placement) -> bool:
    """Rank 0's `flag` on every rank (for instance: stop early now)."""
    if placement.world == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=placement.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def share_parameters(model: torch.nn.Module) -> None:
    """Rank 0's parameters on every rank (what DistributedDataParallel does when it wraps)."""
    for parameter in model.parameters():
        dist.broadcast(parameter.data, src=0)


def average_sparse_gradients(model: torch.nn.Module, placement: Placement) -> None:
    """Every rank's sparse gradients replaced by their mean over the ranks, as DDP does for dense
    ones. Each rank pads each gradient's (row, value) entries with zero rows to the longest
    rank's count, so that one all_gather of fixed size carries all the rows and one all the
    values; each rank then sums what it gathered. Sparse models use this instead of
    DistributedDataParallel, whose sparse all-reduce over gloo corrupts the heap now and then
    (torch 2.13: "malloc(): unaligned tcache chunk detected" in backward)."""
    parameters = list(model.parameters())
    gradients = [parameter.grad.coalesce() for parameter in parameters]
    counts = torch.tensor([gradient.indices().shape[1] for gradient in gradients])
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)
    rows, values = [], []
    for gradient, longest in zip(gradients, counts.tolist(), strict=True):
        padding = longest - gradient.indices().shape[1]
        rows.append(torch.nn.functional.pad(gradient.indices()[0], (0, padding)))
        values.append(
            torch.nn.functional.pad(gradient.values().reshape(-1), (0, padding * row_width(gradient)))
        )
    gathered_rows, gathered_values = (gather(torch.cat(parts), placement.world) for parts in (rows, values))
    row_start = value_start = 0
    for parameter, gradient, longest in zip(parameters, gradients, counts.tolist(), strict=True):
        width = row_width(gradient)
        mine_rows = gathered_rows[:, row_start : row_start + longest].reshape(-1)
        mine_values = gathered_values[:, value_start : value_start + longest * width].reshape(
            -1, *gradient.shape[1:]
        )
        row_start, value_start = row_start + longest, value_start + longest * width
        summed = torch.sparse_coo_tensor(
            mine_rows.unsqueeze(0), mine_values / placement.world, gradient.shape
        )
        parameter.grad = summed.coalesce()


def row_width(gradient: torch.Tensor) -> int:
    """Values a row of the sparse `gradient` holds (its dense dimensions' product)."""
    return math.prod(gradient.shape[1:])


def gather(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """(world, len(tensor)): every rank's `tensor`, all of the same length."""
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor)
    return torch.stack(parts)
