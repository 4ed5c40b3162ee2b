"""Distributed training on PyTorch's own engine: torchrun + DistributedDataParallel.

`dotrec train --nproc N ARGS` runs `torchrun --nproc-per-node N --no-python python -m app.cli
train ARGS`: N copies of `dotrec train`; each joins the process group named by
torchrun's environment (gloo on CPU, nccl on a GPU), reads the same ratings, and takes its share
of every global batch. Only rank 0 validates, logs and writes the artifact.
"""

from __future__ import annotations

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
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_flag(flag: bool, placement: Placement) -> bool:
    """Rank 0's `flag` on every rank (for instance: stop early now)."""
    if placement.world == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=placement.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
