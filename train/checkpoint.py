"""Checkpoints that resume a run exactly: model, optimizers, step, data position and RNG.

Layout under the run directory (local path or s3:// through fsspec):

    checkpoints/step-000200/state.pt     model + optimizers + step + data position + config
    checkpoints/step-000200/rank-<rank>.pt  every rank's RNG (Python, NumPy, torch, CUDA) and
                                         data position (each rank streams its own shards)
    checkpoints/LATEST.json              {"step": 200} written last: the commit point

Full (unsharded) state dicts come from ``torch.distributed.checkpoint.state_dict``, which
gathers FSDP shards and unwraps DDP alike, so a checkpoint loads under any strategy.
The learning-rate schedule is a pure function of the step, so it needs no state of its own.
"""
from __future__ import annotations

import io
import random
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from catalog.store import Store
from train.distributed import Dist

LATEST = "checkpoints/LATEST.json"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def step_dir(step: int) -> str:
    return f"checkpoints/step-{step:06d}"


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain, unsharded CPU tensors whatever the wrapping (a collective under FSDP)."""
    return get_model_state_dict(model, options=_FULL)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _barrier(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.barrier()


def save(
    store: Store,
    d: Dist,
    step: int,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    extra: dict[str, Any],
    rank_extra: Optional[dict[str, Any]] = None,
    keep: int = 3,
) -> str:
    """Write a checkpoint for ``step`` (every rank must call it) and return its folder."""
    folder = step_dir(step)
    state: dict[str, Any] = {"step": step, "extra": extra, "models": {}, "optimizers": {}}
    for name, model in models.items():
        state["models"][name] = full_model_state(model)
        opt = optimizers.get(name)
        if opt is not None:
            state["optimizers"][name] = get_optimizer_state_dict(model, opt, options=_FULL)
    store.write_bytes(f"{folder}/rank-{d.rank}.pt", _to_bytes({"rng": rng_state(), "extra": rank_extra or {}}))
    if d.is_main:
        store.write_bytes(f"{folder}/state.pt", _to_bytes(state))
    _barrier(d)
    if d.is_main:
        store.write_json(LATEST, {"step": step, "world_size": d.world_size})
        _prune(store, keep)
    _barrier(d)
    return folder


def _prune(store: Store, keep: int) -> None:
    folders = sorted(p for p in store.list("checkpoints") if p.rsplit("/", 1)[-1].startswith("step-"))
    for old in folders[:-keep] if keep > 0 else []:
        store.remove(old)


def latest_step(store: Store) -> Optional[int]:
    return int(store.read_json(LATEST)["step"]) if store.exists(LATEST) else None


def read_state(store: Store, step: int) -> dict[str, Any]:
    return torch.load(io.BytesIO(store.read_bytes(f"{step_dir(step)}/state.pt")), map_location="cpu", weights_only=False)


def load(
    store: Store,
    d: Dist,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    step: Optional[int] = None,
) -> Optional[dict[str, Any]]:
    """Restore the latest (or a given) checkpoint into the models and optimizers, and this
    rank's RNG; returns {"step", "extra", "rank_extra"}, or None when the run has no checkpoint.

    A rank missing from the checkpoint (the world grew) keeps its fresh RNG and gets an empty
    ``rank_extra``; its data stream then starts from the beginning."""
    step = latest_step(store) if step is None else step
    if step is None:
        return None
    state = read_state(store, step)
    for name, model in models.items():
        set_model_state_dict(model, state["models"][name], options=_FULL)
        if name in optimizers and name in state["optimizers"]:
            set_optimizer_state_dict(model, optimizers[name], state["optimizers"][name], options=_FULL)
    rank_file = f"{step_dir(step)}/rank-{d.rank}.pt"
    rank_extra: dict[str, Any] = {}
    if store.exists(rank_file):
        rank_state = torch.load(io.BytesIO(store.read_bytes(rank_file)), weights_only=False)
        set_rng_state(rank_state["rng"])
        rank_extra = rank_state["extra"]
    return {"step": state["step"], "extra": state["extra"], "rank_extra": rank_extra}
