"""Train the neural codec on the corpus's codec shards (raw speech of every language).

    python -m train.codec --config train/configs/codec.yaml --set run.out=runs/codec
    torchrun --nproc-per-node 8 -m train.codec --config train/configs/codec.yaml ...

Each step: the codec reconstructs a batch of crops (EMA codebook updates and dead-code restarts
happen inside the quantizer); after ``adversarial_start`` steps the multi-scale STFT
discriminator takes a hinge step on real vs reconstructed audio, and the codec's loss adds the
adversarial and feature-matching terms to the multi-scale mel/STFT reconstruction and
commitment losses. Eval reports mel distance, SI-SDR, STOI, PESQ and codebook usage/perplexity
on crops of held-out recordings (``eval_data``'s split; training never reads them).

Every checkpoint exports the codec to ``exports/codec-step-N.pt``, a file written once and never
rewritten (its sha256 is the codec id the token corpus records), and then points
``codec.json`` at it; a run folder given to ``pipelines.tokenize`` or ``train.respond`` means
that latest export. Exports are pruned with their checkpoints: the token corpus keeps its own
copy of the codec it was made with.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any, Optional, Sequence

import torch
from torch import nn

from catalog.store import Store
from model.codec import CODEC_PRESETS, LATEST_EXPORT, Codec, CodecConfig
from model.codec_losses import (discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss,
                                multiscale_mel_stft_loss)
from model.codec_metrics import CodebookUsage, MetricAverager, reconstruction_metrics
from model.discriminator import MultiScaleSTFTDiscriminator
from train import checkpoint
from stages.corpus.tokens import codec_id_for
from train.common import (DataCounts, PaddingMeter, adamw, autocast, cli, data_resume, export_weights, loader_config,
                          save_run_record, seed_everything, shard_urls_for, to_device)
from train.config import CodecTrainConfig, ConfigError, DataConfig
from train.distributed import Dist, all_reduce_mean, average_gradients, setup, teardown, unwrap, wrap
from train.logs import MetricsLog
from train.schedule import cosine_with_warmup, set_lr


def model_config(cfg: CodecTrainConfig) -> CodecConfig:
    if cfg.preset not in CODEC_PRESETS:
        raise ConfigError(f"unknown codec preset {cfg.preset!r}; known: {', '.join(CODEC_PRESETS)}")
    try:
        return replace(CODEC_PRESETS[cfg.preset], **cfg.model)
    except TypeError as e:
        raise ConfigError(f"bad codec model fields {sorted(cfg.model)}: {e}") from e


def _loader(data: DataConfig, mcfg: CodecConfig, d: Dist, resume=None, epochs=None, role: str = "train"):
    from train.data import codec_loader

    urls, _ = shard_urls_for(data, "codec")
    if not urls:
        raise ConfigError(f"no codec shards in {data.corpus or data.shards}")
    lcfg = loader_config(data, role, sample_rate=mcfg.sample_rate, pad_to_multiple=mcfg.hop_length,
                         max_batch_seconds=data.max_batch_s)
    return codec_loader(urls, lcfg, rank=d.rank, world_size=d.world_size, resume=resume, epochs=epochs)


def export_path(step: int) -> str:
    return f"exports/codec-step-{step:06d}.pt"


def export_codec(store: Store, step: int, codec: Codec, d: Dist, keep: int) -> None:
    """Write this step's export, point codec.json at it, prune exports of pruned checkpoints."""
    rel = export_path(step)
    sha256 = export_weights(store, rel, codec, codec.config_dict(), d.is_main)
    if not d.is_main:
        return
    store.write_json(LATEST_EXPORT, {"path": rel, "step": step, "sha256": sha256, "id": codec_id_for(sha256)})
    exports = sorted(p.rsplit("/", 1)[-1] for p in store.list("exports") if p.endswith(".pt"))
    for old in exports[:-keep]:
        store.remove(f"exports/{old}")


@torch.no_grad()
def evaluate(codec: Codec, cfg: CodecTrainConfig, mcfg: CodecConfig, d: Dist) -> dict[str, float]:
    """Reconstruction metrics and codebook statistics over the held-out crops (the same ones
    every time: one seeded pass)."""
    codec.eval()
    metrics = MetricAverager()
    usage = CodebookUsage(mcfg.n_codebooks, mcfg.codebook_size)
    for i, batch in enumerate(_loader(cfg.eval_data, mcfg, d, role="eval")):
        if i >= cfg.run.eval_batches:
            break
        audio = batch["audio"].to(d.device)
        with autocast(d.device, cfg.run.precision):
            out = codec(audio)
        frames = out.codes.shape[-1]
        frame_mask = batch["mask"][:, :: mcfg.hop_length][:, :frames]
        usage.update(out.codes, frame_mask)
        for j, n in enumerate(batch["lengths"].tolist()):
            ref = audio[j, 0, :n].float().cpu().numpy()
            est = out.audio[j, 0, :n].float().cpu().numpy()
            metrics.update(reconstruction_metrics(ref, est, mcfg.sample_rate, with_pesq=cfg.eval_pesq,
                                                  with_stoi=cfg.eval_pesq))
    usage.all_reduce()
    codec.train()
    summary = {k: all_reduce_mean(v, d) for k, v in metrics.summary().items() if isinstance(v, float)}
    stats = usage.summary()
    summary["codebook_usage"] = stats["usage_mean"]
    summary["codebook_perplexity"] = stats["perplexity_mean"]
    return summary


def train(cfg: CodecTrainConfig, stop_after: Optional[int] = None) -> dict[str, Any]:
    """Run (or resume) to ``optim.max_steps``; ``stop_after`` ends early at that step, as a
    kill would (tests use it to check exact resumption)."""
    d = setup(cfg.run.device)
    try:
        return _train(cfg, d, stop_after)
    finally:
        teardown()


def _train(cfg: CodecTrainConfig, d: Dist, stop_after: Optional[int]) -> dict[str, Any]:
    from train.data import DataState

    store = Store(cfg.run.out)
    mcfg = model_config(cfg)
    seed_everything(cfg.run.seed)
    codec = Codec(mcfg).to(d.device)
    disc = MultiScaleSTFTDiscriminator(filters=cfg.discriminator.filters, n_ffts=cfg.discriminator.n_ffts,
                                       channels=mcfg.channels).to(d.device)
    # The discriminator runs three times per step (real, detached fake, generator pass), which
    # DDP's once-per-backward reducer does not allow: its gradients are averaged by hand.
    g = wrap(codec, d, cfg.run.strategy)
    opt_g, opt_d = adamw(codec, cfg.optim, d.device), adamw(disc, cfg.disc_optim, d.device)
    models, optimizers = {"codec": codec, "disc": disc}, {"codec": opt_g, "disc": opt_d}
    resumed = checkpoint.load(store, d, models, optimizers)
    step = resumed["step"] if resumed else 0
    saved_data = data_resume(resumed["rank_extra"], d.world_size) if resumed else None
    data_state = DataState.from_dict(saved_data) if saved_data else DataState()
    if not resumed:
        seed_everything(cfg.run.seed + d.rank)
    if d.is_main:
        save_run_record(store, cfg, {"codec_params": sum(p.numel() for p in codec.parameters()),
                                     "frame_rate": mcfg.frame_rate, "world_size": d.world_size})
    log = MetricsLog(store, d.is_main, cfg.run.tensorboard_dir)
    batches = iter(_loader(cfg.data, mcfg, d, resume=saved_data))
    o, w = cfg.optim, cfg.loss
    counts, padding = DataCounts(), PaddingMeter()
    seconds_seen, t0 = 0.0, time.perf_counter()
    last: dict[str, float] = {}
    while step < o.max_steps and (stop_after is None or step < stop_after):
        mult = cosine_with_warmup(step, o.warmup_steps, o.max_steps, o.min_lr_ratio)
        lr = set_lr(opt_g, o.lr, mult)
        set_lr(opt_d, cfg.disc_optim.lr, cosine_with_warmup(step, cfg.disc_optim.warmup_steps,
                                                            cfg.disc_optim.max_steps, cfg.disc_optim.min_lr_ratio))
        adversarial = step >= cfg.adversarial_start
        sums: dict[str, float] = {}
        for _ in range(o.grad_accum):
            batch = next(batches)
            data_state.update(batch)
            counts.update(batch)
            padding.add({"audio_real": int(batch["mask"].sum()), "audio_total": batch["mask"].numel()})
            batch = to_device(batch, d.device)
            audio, mask = batch["audio"], batch["mask"][:, None, :].to(batch["audio"].dtype)
            seconds_seen += float(batch["lengths"].sum()) / mcfg.sample_rate
            with autocast(d.device, cfg.run.precision):
                out = g(audio)
                recon_audio = out.audio * mask  # padding is not the codec's to reconstruct
                recon = multiscale_mel_stft_loss(recon_audio.float(), audio.float(), mcfg.sample_rate)
                loss = w.reconstruction * recon + w.commitment * out.commit_loss
                terms = {"reconstruction": recon, "commitment": out.commit_loss}
                if adversarial:
                    real_logits, real_maps = disc(audio)
                    fake_logits, _ = disc(recon_audio.detach())
                    d_loss = discriminator_hinge_loss(real_logits, fake_logits)
            if adversarial:
                (d_loss / o.grad_accum).backward()
                disc.requires_grad_(False)  # the generator's pass leaves no gradient on D
                with autocast(d.device, cfg.run.precision):
                    gen_logits, gen_maps = disc(recon_audio)
                    adv = generator_hinge_loss(gen_logits)
                    fm = feature_matching_loss(real_maps, gen_maps)
                    loss = loss + w.adversarial * adv + w.feature_matching * fm
                terms.update(discriminator=d_loss, adversarial=adv, feature_matching=fm)
            (loss / o.grad_accum).backward()
            disc.requires_grad_(True)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / o.grad_accum
        gn = _clip(codec, o.grad_clip)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        if adversarial:
            average_gradients(disc, d)
            _clip(disc, cfg.disc_optim.grad_clip)
            opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        step += 1
        stats = out.quantizer_stats
        last = {**sums, "lr": lr, "grad_norm": gn,
                "perplexity": float(torch.as_tensor(stats.get("perplexity", 0.0)).float().mean()),
                "restarted_codes": float(stats.get("n_restarted", 0))}
        if step % cfg.run.log_every == 0 or step == o.max_steps:
            elapsed = time.perf_counter() - t0
            log.log(step, "train", {**last, "audio_s_per_s": seconds_seen * d.world_size / max(elapsed, 1e-9),
                                    **padding.shares(), **counts.metrics()})
            seconds_seen, t0 = 0.0, time.perf_counter()
            padding.reset()
        if cfg.eval_data is not None and (step % cfg.run.eval_every == 0 or step == o.max_steps):
            log.log(step, "eval", evaluate(unwrap(g), cfg, mcfg, d))
        if step % cfg.run.ckpt_every == 0 or step == o.max_steps:
            checkpoint.save(store, d, step, models, optimizers, {"model_config": unwrap(g).config_dict()},
                            {"data": data_state.state_dict()}, cfg.run.keep_checkpoints)
            export_codec(store, step, codec, d, cfg.run.keep_checkpoints)
            log.flush()
    log.close()
    return {"step": step, **last}


def _clip(model: nn.Module, max_norm: float) -> float:
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)) if max_norm else 0.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli("python -m train.codec", __doc__, CodecTrainConfig, train, argv)


if __name__ == "__main__":
    sys.exit(main())
