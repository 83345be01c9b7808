"""What both trainers share: shard selection, the DuckDB subset, precision, seeding, the run record."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Optional

import numpy as np
import torch

from catalog.store import Store
from catalog.views import connect
from stages.corpus.shards import read_index
from stages.corpus.tokens import tokens_shard_path
from train.config import DataConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on GPU (``auto`` or ``bf16``); fp32 elsewhere, where bf16 buys nothing."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def tokens_root(data: DataConfig) -> str:
    store = Store(data.corpus, data.storage_options())
    if data.tokens:
        return store.uri(f"tokens/{data.tokens}")
    found = [p.rsplit("/", 1)[-1] for p in store.list("tokens")]
    if len(found) != 1:
        raise FileNotFoundError(
            f"{data.corpus}/tokens holds {found or 'no token corpora'}: run pipelines.tokenize, "
            "or name one with data.tokens"
        )
    return store.uri(f"tokens/{found[0]}")


def select_pairs(data: DataConfig) -> tuple[set[str], set[str]]:
    """Run ``data.filter_sql`` on the corpus catalog: the chosen pair ids and the pairs shards
    (paths relative to the corpus) that hold them."""
    con = connect(Store(data.corpus, data.storage_options()))
    try:
        rows = con.execute(
            f"SELECT q.pair_id, p.shard FROM ({data.filter_sql}) AS q JOIN pairs AS p USING (pair_id)"
        ).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}, {r[1] for r in rows if r[1]}


def shard_urls_for(data: DataConfig, kind: str) -> tuple[list[str], Optional[set[str]]]:
    """Shard URLs to stream and, for a filtered subset, the pair ids to keep.

    ``kind`` is a corpus shard kind ("codec", "pairs", "dialogues") or "tokens" (the token
    corpus pipelines.tokenize wrote under the corpus). Filtering keeps only the shards that
    hold a chosen pair, then the chosen pairs inside them.
    """
    from train.data import shard_urls

    if data.shards:
        return list(data.shards), None
    root = tokens_root(data) if kind == "tokens" else data.corpus
    urls = shard_urls(root, kind, version=data.version, storage_options=data.storage_options())
    if not data.filter_sql:
        return urls, None
    keep, pair_shards = select_pairs(data)
    if kind in ("pairs", "tokens"):
        corpus = Store(data.corpus, data.storage_options())
        version = data.version or corpus.read_json("CURRENT.json")["version"]
        by_path = {s.path: s for s in read_index(corpus, f"shards/{version}/index.json")}
        wanted = {
            (tokens_shard_path(by_path[p]) if kind == "tokens" else p).rsplit("/", 1)[-1]
            for p in pair_shards
            if p in by_path
        }
        urls = [u for u in urls if u.rsplit("/", 1)[-1] in wanted]
    return urls, keep


def run_record(cfg: Any) -> dict[str, Any]:
    """The resolved config as stored beside checkpoints (no credentials are ever in it)."""
    return cfg.model_dump(mode="json")


def save_run_record(store: Store, cfg: Any, extra: Optional[dict[str, Any]] = None) -> None:
    store.write_json("config.json", {**run_record(cfg), **(extra or {})})


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def loader_config(data: DataConfig, **model_fields: Any):
    """The loader's settings from a validated DataConfig plus what the model dictates
    (codebook count, sample rate)."""
    from train.data import LoaderConfig

    return LoaderConfig(
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        shuffle_buffer=data.shuffle_buffer,
        seed=data.seed,
        crop_seconds=data.crop_seconds,
        max_user_frames=data.max_user_frames,
        max_context_frames=data.max_context_frames,
        max_ai_frames=data.max_ai_frames,
        n_voices=data.n_voices,
        text=data.text,
        storage_options=data.storage_options(),
        **model_fields,
    )


def data_resume(rank_extra: dict[str, Any], world_size: int) -> Optional[dict[str, Any]]:
    """This rank's saved data position, or None (fresh stream) when the run is new or the
    world size changed (positions of another world size do not map onto this one)."""
    state = rank_extra.get("data")
    if not state or int(state.get("world_size", 1)) != world_size:
        return None
    return state


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on norms, biases, or codebook-free vectors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def adamw(model: torch.nn.Module, optim: Any, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas,
                             fused=device.type == "cuda")


def export_weights(store: Store, name: str, model: torch.nn.Module, config: dict[str, Any], is_main: bool) -> None:
    """``{"config", "model"}`` at ``name`` in the run folder: what inference and tokenizing load.

    Every rank must call it: under FSDP the full weights are gathered from all shards."""
    import io

    from train.checkpoint import full_model_state

    state = full_model_state(model)
    if is_main:
        buf = io.BytesIO()
        torch.save({"config": config, "model": state}, buf)
        store.write_bytes(name, buf.getvalue())


def cli(prog: str, doc: str, cls: type, train_fn, argv=None) -> int:
    """``--config phase.yaml --set key=value``: validate, train, print the last metrics."""
    import argparse
    import sys

    from train.config import ConfigError, load_config

    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="phase YAML (see train/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optim.lr=1e-4")
    args = p.parse_args(argv)
    try:
        result = train_fn(load_config(cls, args.config, args.set))
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 0
