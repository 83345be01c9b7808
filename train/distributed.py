"""Process-group setup for torchrun, and wrapping a model for DDP or FSDP.

``torchrun --nproc-per-node N -m train.s2s ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; a plain
``python -m train.s2s`` runs as a world of one. GPUs use NCCL, CPUs gloo (tests run DDP on CPU).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

Strategy = Literal["auto", "none", "ddp", "fsdp"]


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    global _owns_group
    if dist.is_initialized():  # a launcher (Ray Train) made the group: take its view of the world
        rank, world_size = dist.get_rank(), dist.get_world_size()
    elif world_size > 1:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _owns_group = True
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


_owns_group = False


def teardown() -> None:
    """Leave the process group if ``setup`` created it (a launcher's group is the launcher's)."""
    global _owns_group
    if _owns_group and dist.is_initialized():
        dist.destroy_process_group()
    _owns_group = False


def wrap(model: nn.Module, d: Dist, strategy: Strategy = "auto") -> nn.Module:
    """DDP for models that fit one device, FSDP (fully_shard per block) for the large presets.

    ``auto`` means DDP when there are several ranks, nothing otherwise. FSDP shards every child
    module listed in ``model.fsdp_units()`` (the transformer blocks) and then the root.
    """
    if strategy == "auto":
        strategy = "ddp" if d.enabled else "none"
    if strategy == "none" or not d.enabled:
        return model
    if strategy == "ddp":
        ids = [d.device.index] if d.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        units = model.fsdp_units() if hasattr(model, "fsdp_units") else []
        for unit in units:
            fully_shard(unit)
        fully_shard(model)
        return model
    raise ValueError(f"unknown distributed strategy {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_mean(value: float, d: Dist) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def average_gradients(model: nn.Module, d: Dist) -> None:
    """Mean of every gradient over the ranks, for a model DDP does not wrap."""
    if not d.enabled:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= d.world_size
