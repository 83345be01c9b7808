"""Train the S2S model on token shards: pre-training on all pairs, fine-tuning on a subset.

    python -m train.s2s --config train/configs/s2s_pretrain.yaml --set run.out=runs/s2s
    torchrun --nproc-per-node 8 -m train.s2s --config train/configs/s2s_pretrain.yaml ...

A plain loop (nanoGPT's shape): warmup + cosine learning rate as a function of the step,
gradient accumulation (DDP syncs only on the last micro-batch), clipping, bf16 autocast on GPU,
periodic eval and checkpoints that resume exactly where the run stopped, data position included.

What the run takes from the data rather than from settings: the codebook geometry (count,
size, frame rate) from the token corpus's codec, recorded with the codec's id and sha256 in
``s2s.pt`` so that ``train.respond`` refuses another codec; the voice table from the catalog's
speakers (train/voices.py). Batches are length-bucketed under a padded-seconds budget
(``data.bucket_boundaries_s``, ``data.max_batch_s``); the logs report the padding share of
encoder and decoder and real (non-padding) tokens per second. Eval reads only held-out
recordings (``eval_data``'s split), which training never reads.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from catalog.store import Store
from catalog.views import connect
from model.codec import CHECKPOINT_NAME
from model.s2s import S2S_PRESETS, S2SConfig, S2SModel, load_s2s
from train import checkpoint
from train.common import (DataCounts, PaddingMeter, adamw, autocast, cli, data_resume, export_weights, loader_config,
                          save_run_record, seed_everything, shard_urls_for, to_device, tokens_root, turn_limits)
from train.config import ConfigError, S2STrainConfig
from train.distributed import Dist, all_reduce_mean, setup, teardown, unwrap, wrap
from train.logs import MetricsLog
from train.schedule import cosine_with_warmup, set_lr
from train.voices import VoiceTable, build_voice_table, catalog_voice_rows

EXPORT = "s2s.pt"  # the latest weights + config + codec identity + voice table, what train.respond loads
log = logging.getLogger(__name__)


def read_export(path: str) -> dict[str, Any]:
    """The dict an exported ``s2s.pt`` (or a run folder holding one) holds: ``config``,
    ``model`` and, from this version on, ``codec`` (id, sha256, geometry, where the token corpus
    keeps the codec file), ``voices`` (the voice table) and ``data`` (text and turn settings)."""
    import fsspec

    fs, where = fsspec.core.url_to_fs(path)
    if fs.isdir(where):
        where = where.rstrip("/") + "/" + EXPORT
    if not fs.isfile(where):
        raise FileNotFoundError(f"no S2S weights at {path} (expected an .pt file or a run folder with {EXPORT})")
    with fs.open(where, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def load_exported(path: str, device: str | torch.device = "cpu") -> S2SModel:
    """An exported ``s2s.pt``, or a run folder holding one, in eval mode."""
    return load_s2s(read_export(path)).to(device).eval()


def _first_codec_entry(data) -> dict[str, Any]:
    """The ``codec`` entry of the first token sample (explicit shard URLs have no index)."""
    from train.shards import CorruptCounter, as_refs, iter_shard

    urls, _ = shard_urls_for(data, "tokens")
    for ref in as_refs(urls):
        for sample in iter_shard(ref, data.storage_options(), CorruptCounter()):
            try:
                codec = json.loads(sample.get("json", b"{}")).get("codec")
            except (ValueError, AttributeError):
                continue
            if isinstance(codec, dict):
                return dict(codec)
    return {}


def token_codec(data) -> dict[str, Any]:
    """The codec the token corpus was written with: id, sha256, ``n_codebooks``,
    ``codebook_size``, ``frame_rate``, ``sample_rate`` and ``path`` (the copy the token corpus
    keeps). From the token corpus's ``CURRENT.json``, else the first sample's JSON."""
    info: dict[str, Any] = {}
    if not data.shards:
        root = Store(tokens_root(data), data.storage_options())
        current = root.read_json("CURRENT.json")
        info = dict(current.get("codec_info") or {})
        if info:
            info.setdefault("id", current.get("codec"))
            info["path"] = root.uri(CHECKPOINT_NAME) if root.exists(CHECKPOINT_NAME) else None
    if not info:
        info = _first_codec_entry(data)
    missing = [k for k in ("n_codebooks", "codebook_size", "frame_rate") if not info.get(k)]
    if missing:
        raise ConfigError(f"the token corpus does not say its codec's {', '.join(missing)}: re-run pipelines.tokenize")
    return info


def model_config(cfg: S2STrainConfig, codec: Optional[dict[str, Any]] = None) -> S2SConfig:
    """The preset, the config's overrides, and the codebook geometry of the token corpus: the
    codebook size is the codec's and the codebook count the codec's (or fewer when
    ``model.n_codebooks`` asks); a ``model.codebook_size`` that differs is an error."""
    if cfg.preset not in S2S_PRESETS:
        raise ConfigError(f"unknown S2S preset {cfg.preset!r}; known: {', '.join(S2S_PRESETS)}")
    base = asdict(S2S_PRESETS[cfg.preset])
    unknown = set(cfg.model) - set(base)
    if unknown:
        raise ConfigError(f"unknown S2S model fields: {sorted(unknown)}")
    fields = {**base, **cfg.model}
    if codec:
        k, n = int(codec["n_codebooks"]), int(codec["codebook_size"])
        if cfg.model.get("codebook_size", n) != n or cfg.model.get("n_codebooks", k) > k:
            raise ConfigError(
                f"the token corpus holds {k} codebooks of {n} entries (codec {codec.get('id')}); the model is "
                f"set to {fields['n_codebooks']} of {fields['codebook_size']}: leave model.codebook_size / "
                "model.n_codebooks unset (they come from the token corpus) or set them to match"
            )
        fields["codebook_size"] = n
        fields["n_codebooks"] = cfg.model.get("n_codebooks", k)
    return S2SConfig(**fields)


def voice_table(cfg: S2STrainConfig, mcfg: S2SConfig, saved: Optional[dict[str, Any]],
                init: Optional[dict[str, Any]]) -> VoiceTable:
    """The run's voice table: the one a resumed checkpoint saved, else the pre-trained model's
    (fine-tuning keeps its indices), else one built from the corpus catalog's speakers."""
    if saved:
        return VoiceTable.from_dict(saved)
    if init and init.get("voices"):
        return VoiceTable.from_dict(init["voices"])
    if not cfg.data.corpus:
        log.warning("explicit token shards without a catalog: every AI voice is the unknown voice (index 0)")
        return VoiceTable()
    con = connect(Store(cfg.data.corpus, cfg.data.storage_options()))
    try:
        rows = catalog_voice_rows(con)
    finally:
        con.close()
    return build_voice_table(rows, mcfg.n_voices, cfg.min_voice_pairs)


def pairs_over_limits(data, limits: dict[str, float]) -> Optional[dict[str, int]]:
    """How many of the corpus's pairs exceed the loader's turn limits (from the catalog): the
    check that segmentation's turn lengths and the loader's limits agree."""
    if not data.corpus:
        return None
    con = connect(Store(data.corpus, data.storage_options()))
    try:
        total, user, ai = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE user_duration_s > ?), count(*) FILTER (WHERE ai_duration_s > ?) "
            "FROM pairs", [limits["max_user_s"], limits["max_ai_s"]]).fetchone()
    finally:
        con.close()
    return {"pairs": int(total), "user_turn_cropped": int(user), "ai_turn_over_limit": int(ai)}


def _loader(data, mcfg: S2SConfig, d: Dist, codec: dict[str, Any], voices: VoiceTable, resume=None,
            role: str = "train"):
    from train.data import token_loader

    urls, keep = shard_urls_for(data, "tokens")
    if not urls:
        raise ConfigError("no token shards selected: run pipelines.tokenize first, or widen filter_sql")
    budget = int(data.max_batch_s * float(codec["frame_rate"])) if data.max_batch_s else None
    cfg = loader_config(data, role, n_codebooks=mcfg.n_codebooks, codebook_size=mcfg.codebook_size,
                        text=bool(mcfg.text_vocab), voices=dict(voices.speakers), max_batch_frames=budget)
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
    from train.data import DataState, padding_stats

    store = Store(cfg.run.out)
    codec = token_codec(cfg.data)
    mcfg = model_config(cfg, codec)
    seed_everything(cfg.run.seed)
    model = S2SModel(mcfg).to(d.device)
    init = read_export(cfg.init_from) if cfg.init_from else None
    if init is not None:
        model.load_state_dict(load_s2s(init).state_dict())
    # Wrap before building the optimizer: FSDP replaces the parameters with sharded ones.
    wrapped = wrap(model, d, cfg.run.strategy)
    optimizer = adamw(model, cfg.optim, d.device)
    resumed = checkpoint.load(store, d, {"model": model}, {"model": optimizer})
    step = resumed["step"] if resumed else 0
    voices = voice_table(cfg, mcfg, resumed["extra"].get("voices") if resumed else None, init)
    saved_data = data_resume(resumed["rank_extra"], d.world_size) if resumed else None
    data_state = DataState.from_dict(saved_data) if saved_data else DataState()
    if not resumed:
        seed_everything(cfg.run.seed + d.rank)
    fwd = torch.compile(wrapped) if cfg.run.compile else wrapped
    limits = turn_limits(cfg.data)
    over = pairs_over_limits(cfg.data, limits) if d.is_main else None
    if over and over["ai_turn_over_limit"]:
        what = "skipped (ai_turn_too_long)" if cfg.data.long_ai_turns == "skip" else "cropped, trained without end-of-turn"
        log.warning("%d of %d pairs have an AI turn over max_ai_s=%g s: %s", over["ai_turn_over_limit"],
                    over["pairs"], limits["max_ai_s"], what)
    export_info = {
        "codec": {k: codec.get(k) for k in ("id", "sha256", "n_codebooks", "codebook_size", "frame_rate",
                                              "sample_rate", "path")},
        "voices": voices.to_dict(),
        "data": {**limits, "text": bool(mcfg.text_vocab), "max_text_bytes": cfg.data.max_text_bytes,
                 "user_text_dropout": cfg.data.user_text_dropout, "long_ai_turns": cfg.data.long_ai_turns},
    }
    if d.is_main:
        save_run_record(store, cfg, {"model_params": unwrap(model).num_params(), "world_size": d.world_size,
                                     "codec": export_info["codec"], "voices": voices.size - 1,
                                     "turn_limits": limits, "pairs_over_limits": over})
    metrics_log = MetricsLog(store, d.is_main, cfg.run.tensorboard_dir)
    train_iter = iter(_loader(cfg.data, mcfg, d, codec, voices, resume=saved_data))
    o = cfg.optim
    counts, padding = DataCounts(), PaddingMeter()
    frames_seen, t0 = 0, time.perf_counter()
    last: dict[str, float] = {}
    while step < o.max_steps and (stop_after is None or step < stop_after):
        lr = set_lr(optimizer, o.lr, cosine_with_warmup(step, o.warmup_steps, o.max_steps, o.min_lr_ratio))
        loss_sum = 0.0
        for micro in range(o.grad_accum):
            batch = next(train_iter)
            data_state.update(batch)
            counts.update(batch)
            padding.add(padding_stats(batch))
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
            elapsed = max(time.perf_counter() - t0, 1e-9)
            metrics_log.log(step, "train", {
                **last, "ai_frames_per_s": frames_seen * d.world_size / elapsed,
                "real_tokens_per_s": padding.real() * d.world_size / elapsed,
                **padding.shares(), **counts.metrics()})
            frames_seen, t0 = 0, time.perf_counter()
            padding.reset()
        if cfg.eval_data is not None and (step % cfg.run.eval_every == 0 or step == o.max_steps):
            # The same held-out batches every time (a fresh, seeded stream), so evals compare.
            eval_iter = iter(_loader(cfg.eval_data, mcfg, d, codec, voices, role="eval"))
            metrics_log.log(step, "eval", evaluate(model, eval_iter, cfg.run.eval_batches, d, cfg.run.precision))
        if step % cfg.run.ckpt_every == 0 or step == o.max_steps:
            checkpoint.save(store, d, step, {"model": model}, {"model": optimizer},
                            {"model_config": asdict(mcfg), "voices": voices.to_dict(), "codec": export_info["codec"]},
                            {"data": data_state.state_dict()}, cfg.run.keep_checkpoints)
            export_weights(store, EXPORT, unwrap(model), asdict(mcfg), d.is_main, export_info)
            metrics_log.flush()
    metrics_log.close()
    return {"step": step, **last}


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli("python -m train.s2s", __doc__, S2STrainConfig, train, argv)


if __name__ == "__main__":
    sys.exit(main())
