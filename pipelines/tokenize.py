"""Tokenize a corpus version's pair shards with a trained codec (Ray actors, GPUs when present).

    python -m pipelines.tokenize --corpus ./corpus --codec runs/codec

writes ``<corpus>/tokens/<codec id>/`` as a corpus of its own: ``shards/data/tokens-*.tar``
(named by the source shard's checksum, reused by later versions), ``shards/<version>/index.json``,
``rejects/<version>.json``, ``codec.pt`` (a copy of the codec file the tokens were made with:
the codec id is its sha256, so the tokens never lose their codec when a training run prunes its
exports) and ``CURRENT.json`` (with ``codec_info``: id, sha256, codebook count and size, frame
and sample rate). The S2S trainer reads it with ``data.corpus=<corpus> data.tokens=<codec id>``.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from typing import Optional, Sequence

from catalog.store import Store
from model.codec import CHECKPOINT_NAME
from catalog.versions import current
from pipelines.config import EngineConfig
from pipelines.engine import make_engine
from stages.corpus.shards import read_index, write_index
from stages.corpus.tokens import ShardTokenizer, codec_id


def resolve_codec_file(path: str) -> str:
    """A local codec checkpoint file, or a folder: a codec training run (its latest export) or
    a token corpus (its ``codec.pt``)."""
    from model.codec import resolve_checkpoint

    try:
        candidate = resolve_checkpoint(path)
    except FileNotFoundError:
        candidate = ""
    if not os.path.isfile(candidate):
        raise FileNotFoundError(f"no codec checkpoint at {path} (expected a file, a codec run folder or a "
                                "token corpus)")
    return candidate


def tokenize_corpus(
    corpus: str,
    codec: str,
    version: Optional[str] = None,
    engine: Optional[EngineConfig] = None,
    gpus_per_worker: float = 0.0,
    storage_options: Optional[dict] = None,
) -> dict:
    """Tokenize every pairs shard of ``version`` (default: the current one); returns a summary."""
    store = Store(corpus, storage_options)
    if version is None:
        live = current(store)
        if live is None:
            raise FileNotFoundError(f"{corpus} has no committed corpus version (CURRENT.json)")
        version = live.version
    pairs = [s for s in read_index(store, f"shards/{version}/index.json") if s.kind == "pairs"]
    checkpoint = resolve_codec_file(codec)
    cid = codec_id(checkpoint)
    tokens_root = store.uri(f"tokens/{cid}")
    engine_impl = make_engine(engine or EngineConfig())
    shards, rejects, reused = [], [], 0
    codec_info: dict = {}
    try:
        ctor = (checkpoint, corpus, tokens_root, version, storage_options)
        for result in engine_impl.map(ShardTokenizer, ctor, pairs, num_cpus=1.0, num_gpus=gpus_per_worker):
            shards.append(result.shard)
            codec_info = result.codec
            rejects.extend(result.rejects)
            reused += int(result.reused)
    finally:
        engine_impl.shutdown()
    out = Store(tokens_root, storage_options)
    if not out.exists(CHECKPOINT_NAME):
        with open(checkpoint, "rb") as f:
            out.write_bytes(CHECKPOINT_NAME, f.read())
    shards.sort(key=lambda s: s.path)
    write_index(out, f"shards/{version}/index.json", version, shards)
    out.write_json(f"rejects/{version}.json", [asdict(r) for r in rejects])
    out.write_json("CURRENT.json", {"version": version, "codec": cid, "codec_info": codec_info})
    return {
        "codec": cid,
        "version": version,
        "tokens_root": tokens_root,
        "shards": len(shards),
        "reused": reused,
        "samples": sum(s.num_samples for s in shards),
        "rejects": len(rejects),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.tokenize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="corpus root (local or s3://)")
    p.add_argument("--codec", required=True, help="codec checkpoint file, or a codec training run folder (its latest export)")
    p.add_argument("--version", help="corpus version (default: the current one)")
    p.add_argument("--engine", choices=["ray", "inline"], default="ray")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per tokenizer actor (default: 1 when this machine has a GPU, else 0)")
    args = p.parse_args(argv)
    gpus = args.gpus_per_worker
    if gpus is None:
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
    engine = EngineConfig(kind=args.engine, address=args.ray_address, num_cpus=args.num_cpus)
    try:
        summary = tokenize_corpus(args.corpus, args.codec, args.version, engine, gpus)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
