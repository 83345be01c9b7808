"""Run a trainer as a Ray Train job, on the same Ray cluster as the corpus pipeline.

    python -m train.ray_job --trainer s2s --config train/configs/s2s_pretrain.yaml \
        --num-workers 8 --gpus --ray-address auto --set data.corpus=s3://bucket/corpus

Ray Train places the workers and forms the torch process group (NCCL on GPUs, gloo on CPUs);
each worker runs the same plain loop that torchrun would run, so checkpoints, resumption and
metrics are the trainer's own (keep ``run.out`` on storage every worker reaches, e.g. s3://).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Optional, Sequence

from train.config import CodecTrainConfig, ConfigError, S2STrainConfig, load_config

TRAINERS = {"codec": CodecTrainConfig, "s2s": S2STrainConfig}


def _worker(job: dict[str, Any]) -> None:
    import ray.train

    ctx = ray.train.get_context()
    os.environ.update(RANK=str(ctx.get_world_rank()), WORLD_SIZE=str(ctx.get_world_size()),
                      LOCAL_RANK=str(ctx.get_local_rank()))
    module = importlib.import_module(f"train.{job['trainer']}")
    cfg = TRAINERS[job["trainer"]].model_validate(job["config"])
    module.train(cfg)  # metrics and checkpoints go to run.out, as with torchrun


def launch(trainer: str, cfg: Any, num_workers: int, use_gpu: bool, address: Optional[str] = None,
           storage_path: Optional[str] = None) -> dict[str, Any]:
    """Start (or join) Ray, run the trainer on ``num_workers`` workers; returns the last
    training metrics the run logged (its own metrics.jsonl: Ray Train keeps only metrics
    attached to Ray checkpoints, and the trainers checkpoint themselves)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": project_root}} if address is None else None)
    job = TorchTrainer(
        _worker,
        train_loop_config={"trainer": trainer, "config": cfg.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"convcorpus-{trainer}", storage_path=storage_path),
    )
    result = job.fit()
    if result.error:
        raise result.error
    return last_metrics(cfg.run.out)


def last_metrics(run_out: str) -> dict[str, Any]:
    import json

    from catalog.store import Store

    store = Store(run_out)
    if not store.exists("metrics.jsonl"):
        return {}
    rows = [json.loads(line) for line in store.read_bytes("metrics.jsonl").decode().splitlines() if line]
    train_rows = [r for r in rows if r.get("split") == "train"]
    return train_rows[-1] if train_rows else {}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.ray_job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", choices=sorted(TRAINERS), required=True)
    p.add_argument("--config", help="phase YAML (see train/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--gpus", action="store_true", help="one GPU per worker")
    p.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    p.add_argument("--storage-path", help="where Ray Train keeps its own run state (default: ~/ray_results)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(TRAINERS[args.trainer], args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = launch(args.trainer, cfg, args.num_workers, args.gpus, args.ray_address, args.storage_path)
    print(" ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
