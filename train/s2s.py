"""Train the S2S model on token shards: pre-training on all pairs, fine-tuning on a subset.

    python -m train.s2s --config train/configs/s2s_pretrain.yaml --set run.out=runs/s2s
    torchrun --nproc-per-node 8 -m train.s2s --config train/configs/s2s_pretrain.yaml ...

A plain loop (nanoGPT's shape): warmup + cosine learning rate as a function of the step,
gradient accumulation (DDP syncs only on the last micro-batch), clipping, bf16 autocast on GPU,
periodic eval and checkpoints that resume exactly where the run stopped, data position included.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from catalog.store import Store
from model.s2s import S2S_PRESETS, S2SConfig, S2SModel, load_s2s
from train import checkpoint
from train.common import (adamw, autocast, cli, data_resume, export_weights, loader_config, save_run_record,
                          seed_everything, shard_urls_for, to_device, tokens_root)
from train.config import ConfigError, S2STrainConfig
from train.distributed import Dist, all_reduce_mean, setup, teardown, unwrap, wrap
from train.logs import MetricsLog
from train.schedule import cosine_with_warmup, set_lr

EXPORT = "s2s.pt"  # the latest weights + config, what train.respond loads


def model_config(cfg: S2STrainConfig) -> S2SConfig:
    if cfg.preset not in S2S_PRESETS:
        raise ConfigError(f"unknown S2S preset {cfg.preset!r}; known: {', '.join(S2S_PRESETS)}")
    base = asdict(S2S_PRESETS[cfg.preset])
    unknown = set(cfg.model) - set(base)
    if unknown:
        raise ConfigError(f"unknown S2S model fields: {sorted(unknown)}")
    return S2SConfig(**{**base, **cfg.model})


def load_exported(path: str, device: str | torch.device = "cpu") -> S2SModel:
    """An exported ``s2s.pt``, or a run folder holding one, in eval mode."""
    import fsspec

    fs, where = fsspec.core.url_to_fs(path)
    if fs.isdir(where):
        where = where.rstrip("/") + "/" + EXPORT
    if not fs.isfile(where):
        raise FileNotFoundError(f"no S2S weights at {path} (expected an .pt file or a run folder with {EXPORT})")
    with fs.open(where, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    return load_s2s(state).to(device).eval()


def check_codec(data, mcfg: S2SConfig) -> None:
    """The model's codebooks must be the ones the token corpus was written with."""
    if data.shards:  # explicit shard URLs: samples with codes out of range are skipped and counted
        return
    root = Store(tokens_root(data), data.storage_options())
    info = root.read_json("CURRENT.json").get("codec_info") or {}
    if not info:
        return
    if mcfg.codebook_size != info["codebook_size"] or mcfg.n_codebooks > info["n_codebooks"]:
        raise ConfigError(
            f"the token corpus holds {info['n_codebooks']} codebooks of {info['codebook_size']} entries "
            f"(codec {info.get('id')}); the model is set to {mcfg.n_codebooks} of {mcfg.codebook_size}: "
            "set model.codebook_size / model.n_codebooks to match"
        )


def _loader(data, mcfg: S2SConfig, d: Dist, resume=None):
    from train.data import token_loader

    check_codec(data, mcfg)
    urls, keep = shard_urls_for(data, "tokens")
    if not urls:
        raise ConfigError("no token shards selected: run pipelines.tokenize first, or widen filter_sql")
    cfg = loader_config(data, n_codebooks=mcfg.n_codebooks, codebook_size=mcfg.codebook_size)
    return token_loader(urls, cfg, rank=d.rank, world_size=d.world_size, resume=resume, keep=keep)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterator[dict], n: int, d: Dist, precision: str) -> dict[str, float]:
    model.eval()
    losses, accs = [], []
    for _ in range(n):
        batch = to_device(next(batches), d.device)
        with autocast(d.device, precision):
            out = model(batch)
        losses.append(float(out.loss))
        accs.append(float(out.accuracy.float().mean()))
    model.train()
    return {
        "loss": all_reduce_mean(sum(losses) / len(losses), d),
        "accuracy": all_reduce_mean(sum(accs) / len(accs), d),
    }


def train(cfg: S2STrainConfig, stop_after: Optional[int] = None) -> dict[str, Any]:
    """Run (or resume) training to ``optim.max_steps``; ``stop_after`` ends the process's work
    early at that step, as a kill would (tests use it to check exact resumption)."""
    d = setup(cfg.run.device)
    try:
        return _train(cfg, d, stop_after)
    finally:
        teardown()


def _train(cfg: S2STrainConfig, d: Dist, stop_after: Optional[int]) -> dict[str, Any]:
    from train.data import DataState

    store = Store(cfg.run.out)
    mcfg = model_config(cfg)
    seed_everything(cfg.run.seed)
    model = S2SModel(mcfg).to(d.device)
    if cfg.init_from:
        model.load_state_dict(load_exported(cfg.init_from).state_dict())
    # Wrap before building the optimizer: FSDP replaces the parameters with sharded ones.
    wrapped = wrap(model, d, cfg.run.strategy)
    optimizer = adamw(model, cfg.optim, d.device)
    resumed = checkpoint.load(store, d, {"model": model}, {"model": optimizer})
    step = resumed["step"] if resumed else 0
    saved_data = data_resume(resumed["rank_extra"], d.world_size) if resumed else None
    data_state = DataState.from_dict(saved_data) if saved_data else DataState()
    if not resumed:
        seed_everything(cfg.run.seed + d.rank)
    fwd = torch.compile(wrapped) if cfg.run.compile else wrapped
    if d.is_main:
        save_run_record(store, cfg, {"model_params": unwrap(model).num_params(), "world_size": d.world_size})
    log = MetricsLog(store, d.is_main, cfg.run.tensorboard_dir)
    train_iter = iter(_loader(cfg.data, mcfg, d, resume=saved_data))
    o = cfg.optim
    frames_seen, t0 = 0, time.perf_counter()
    last: dict[str, float] = {}
    while step < o.max_steps and (stop_after is None or step < stop_after):
        lr = set_lr(optimizer, o.lr, cosine_with_warmup(step, o.warmup_steps, o.max_steps, o.min_lr_ratio))
        loss_sum, n_corrupt = 0.0, 0
        for micro in range(o.grad_accum):
            batch = next(train_iter)
            data_state.update(batch)
            n_corrupt = int(batch.get("n_corrupt", 0))
            batch = to_device(batch, d.device)
            frames_seen += int(batch["ai_mask"].sum())
            sync = micro == o.grad_accum - 1 or not isinstance(wrapped, nn.parallel.DistributedDataParallel)
            with (contextlib.nullcontext() if sync else wrapped.no_sync()):
                with autocast(d.device, cfg.run.precision):
                    out = fwd(batch)
                (out.loss / o.grad_accum).backward()
            loss_sum += float(out.loss.detach()) / o.grad_accum
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)) if o.grad_clip else 0.0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = {"loss": loss_sum, "lr": lr, "grad_norm": grad_norm}
        if step % cfg.run.log_every == 0 or step == o.max_steps:
            elapsed = time.perf_counter() - t0
            log.log(step, "train", {**last, "ai_frames_per_s": frames_seen * d.world_size / max(elapsed, 1e-9),
                                    "corrupt_samples": n_corrupt})
            frames_seen, t0 = 0, time.perf_counter()
        if cfg.eval_data is not None and (step % cfg.run.eval_every == 0 or step == o.max_steps):
            # The same held-out batches every time (a fresh, seeded stream), so evals compare.
            eval_iter = iter(_loader(cfg.eval_data, mcfg, d))
            log.log(step, "eval", evaluate(model, eval_iter, cfg.run.eval_batches, d, cfg.run.precision))
        if step % cfg.run.ckpt_every == 0 or step == o.max_steps:
            checkpoint.save(store, d, step, {"model": model}, {"model": optimizer},
                            {"model_config": asdict(mcfg)}, {"data": data_state.state_dict()},
                            cfg.run.keep_checkpoints)
            export_weights(store, EXPORT, unwrap(model), asdict(mcfg), d.is_main)
            log.flush()
    log.close()
    return {"step": step, **last}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli("python -m train.s2s", __doc__, S2STrainConfig, train, argv)


if __name__ == "__main__":
    sys.exit(main())
