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


def shard_urls_for(data: DataConfig, kind: str) -> tuple[list, Optional[set[str]]]:
    """Shards to stream (``ShardRef``s with the index's checksums, or the explicit URLs) and,
    for a filtered subset, the pair ids to keep.

    ``kind`` is a corpus shard kind ("codec", "pairs", "dialogues") or "tokens" (the token
    corpus pipelines.tokenize wrote under the corpus). Filtering keeps only the shards that
    hold a chosen pair, then the chosen pairs inside them.
    """
    from train.data import shard_refs

    if data.shards:
        return list(data.shards), None
    root = tokens_root(data) if kind == "tokens" else data.corpus
    urls = shard_refs(root, kind, version=data.version, storage_options=data.storage_options())
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
        urls = [u for u in urls if u.url.rsplit("/", 1)[-1] in wanted]
    return urls, keep


def run_record(cfg: Any) -> dict[str, Any]:
    """The resolved config as stored beside checkpoints (no credentials are ever in it)."""
    return cfg.model_dump(mode="json")


def save_run_record(store: Store, cfg: Any, extra: Optional[dict[str, Any]] = None) -> None:
    store.write_json("config.json", {**run_record(cfg), **(extra or {})})


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def split_for(data: DataConfig, role: str) -> str:
    """The split a loader keeps: the config's, else "train" for training, "valid" for eval."""
    return data.split or ("train" if role == "train" else "valid")


def turn_limits(data: DataConfig) -> dict[str, float]:
    """S2S turn limits in seconds; an unset user/AI limit is segmentation's ``max_turn_s``, so
    the loader and segmentation agree on how long a turn may be."""
    from stages.config import SegmentConfig

    segment_max = float(SegmentConfig.model_fields["max_turn_s"].default)
    return {
        "max_user_s": data.max_user_s if data.max_user_s is not None else segment_max,
        "max_context_s": data.max_context_s,
        "max_ai_s": data.max_ai_s if data.max_ai_s is not None else segment_max,
    }


def loader_config(data: DataConfig, role: str = "train", **model_fields: Any):
    """The loader's settings from a validated DataConfig plus what the model dictates
    (codebook count, sample rate, text, voices, the batch budget in the model's unit)."""
    from train.data import LoaderConfig

    return LoaderConfig(
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        shuffle_buffer=data.shuffle_buffer,
        seed=data.seed,
        bucket_boundaries=tuple(data.bucket_boundaries_s),
        split=split_for(data, role),
        holdout=data.holdout,
        crop_seconds=data.crop_seconds,
        length_tolerance_s=data.verify_length_tolerance_s,
        long_ai=data.long_ai_turns,
        user_text_dropout=data.user_text_dropout,
        max_text_bytes=data.max_text_bytes,
        storage_options=data.storage_options(),
        **{**turn_limits(data), **model_fields},
    )


class DataCounts:
    """Samples the loaders left out, summed over this rank's dataloader workers (each batch
    carries its worker's running counts)."""

    def __init__(self) -> None:
        self._by_worker: dict[int, tuple[dict[str, int], dict[str, int]]] = {}

    def update(self, batch: dict[str, Any]) -> None:
        self._by_worker[int(batch.get("worker", 0))] = (dict(batch.get("corrupt_reasons", {})),
                                                        dict(batch.get("skipped_reasons", {})))

    def metrics(self) -> dict[str, int]:
        corrupt: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for c, k in self._by_worker.values():
            for r, n in c.items():
                corrupt[r] = corrupt.get(r, 0) + n
            for r, n in k.items():
                skipped[r] = skipped.get(r, 0) + n
        out = {"corrupt_samples": sum(corrupt.values()), "skipped_samples": sum(skipped.values())}
        out.update({f"corrupt.{r}": n for r, n in sorted(corrupt.items())})
        out.update({f"skipped.{r}": n for r, n in sorted(skipped.items())})
        return out


class PaddingMeter:
    """Real and padded positions over a logging window: the padding share the batches carry
    (encoder and decoder for S2S, audio samples for the codec) and real tokens per second."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    def add(self, stats: dict[str, int]) -> None:
        for k, v in stats.items():
            self.totals[k] = self.totals.get(k, 0) + int(v)

    def shares(self) -> dict[str, float]:
        t = self.totals
        out = {}
        for part in ("enc", "dec", "audio"):
            if t.get(f"{part}_total"):
                name = {"enc": "encoder", "dec": "decoder", "audio": "audio"}[part]
                out[f"pad_share_{name}"] = 1.0 - t[f"{part}_real"] / t[f"{part}_total"]
        return out

    def real(self) -> int:
        return sum(v for k, v in self.totals.items() if k.endswith("_real"))

    def reset(self) -> None:
        self.totals = {}


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


def export_weights(store: Store, name: str, model: torch.nn.Module, config: dict[str, Any], is_main: bool,
                   extra: Optional[dict[str, Any]] = None) -> Optional[str]:
    """``{"config", "model", **extra}`` at ``name`` in the run folder: what inference and
    tokenizing load. Returns the file's sha256 (on the main rank; None elsewhere).

    Every rank must call it: under FSDP the full weights are gathered from all shards."""
    import hashlib
    import io

    from train.checkpoint import full_model_state

    state = full_model_state(model)
    if not is_main:
        return None
    buf = io.BytesIO()
    torch.save({**(extra or {}), "config": config, "model": state}, buf)
    data = buf.getvalue()
    store.write_bytes(name, data)
    return hashlib.sha256(data).hexdigest()


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
