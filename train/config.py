"""Typed training configs, validated at the edge: a phase YAML plus ``--set key=value`` flags.

The phases the research note describes are files in ``train/configs/`` (codec training, S2S
pre-training on all pairs, fine-tuning on a subset a DuckDB query picks).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.config import set_dotted
from train.distributed import Strategy


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimConfig(_Strict):
    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(1000, ge=0)
    max_steps: int = Field(100_000, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 turns clipping off
    grad_accum: int = Field(1, ge=1)


class DataConfig(_Strict):
    """Where the shards come from: a corpus root (its current or a named version's index), or
    explicit shard URLs. Credentials never go here: s3fs/gcsfs read them from the environment."""

    corpus: Optional[str] = None
    version: Optional[str] = None
    shards: list[str] = Field(default_factory=list)
    tokens: Optional[str] = None  # S2S: codec id under <corpus>/tokens/ (default: the only one)
    endpoint_url: Optional[str] = None  # an S3-compatible endpoint (MinIO, R2, moto)
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(2, ge=0)
    shuffle_buffer: int = Field(1000, ge=0)
    seed: int = 0
    crop_seconds: float = Field(1.0, gt=0)  # codec training crops
    max_user_frames: int = Field(750, gt=0)  # S2S: 15 s at 50 Hz
    max_context_frames: int = Field(1500, ge=0)
    max_ai_frames: int = Field(750, gt=0)
    n_voices: int = Field(256, ge=1)
    text: bool = False
    # Fine-tuning subsets: a DuckDB query over the corpus catalog returning a pair_id column,
    # e.g. "SELECT pair_id FROM pairs WHERE lang = 'te' AND source = 'fisher'".
    filter_sql: Optional[str] = None

    @model_validator(mode="after")
    def _has_shards(self) -> "DataConfig":
        if not self.corpus and not self.shards:
            raise ValueError("data needs 'corpus' (a corpus root) or 'shards' (shard URLs)")
        if self.filter_sql and not self.corpus:
            raise ValueError("filter_sql needs 'corpus': it queries that corpus's catalog")
        return self

    def storage_options(self) -> dict[str, Any]:
        return {"client_kwargs": {"endpoint_url": self.endpoint_url}} if self.endpoint_url else {}


class RunConfig(_Strict):
    out: str  # run directory: checkpoints, metrics, the resolved config (local or s3://)
    device: str = "auto"
    strategy: Strategy = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False
    seed: int = 0
    log_every: int = Field(50, ge=1)
    eval_every: int = Field(1000, ge=1)
    eval_batches: int = Field(20, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    tensorboard_dir: Optional[str] = None  # default: <out>/tensorboard when out is local


class CodecLossWeights(_Strict):
    reconstruction: float = 1.0
    commitment: float = 1.0
    adversarial: float = 1.0
    feature_matching: float = 2.0


class DiscriminatorConfig(_Strict):
    filters: int = Field(32, ge=1)
    n_ffts: list[int] = Field(default_factory=lambda: [2048, 1024, 512, 256, 128])


class CodecTrainConfig(_Strict):
    preset: str = "50hz"
    model: dict[str, Any] = Field(default_factory=dict)  # overrides of the preset's fields
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    eval_pesq: bool = True  # PESQ/STOI cost ~0.1 s per clip on a CPU; off for quick runs
    optim: OptimConfig = OptimConfig(lr=3e-4, betas=(0.5, 0.9), weight_decay=0.0)
    disc_optim: OptimConfig = OptimConfig(lr=3e-4, betas=(0.5, 0.9), weight_decay=0.0)
    loss: CodecLossWeights = CodecLossWeights()
    adversarial_start: int = Field(0, ge=0)  # steps of reconstruction-only warm-up
    data: DataConfig
    eval_data: Optional[DataConfig] = None
    run: RunConfig


class S2STrainConfig(_Strict):
    preset: str = "small"
    model: dict[str, Any] = Field(default_factory=dict)
    init_from: Optional[str] = None  # a pre-training run's checkpoint folder (fine-tuning)
    optim: OptimConfig = OptimConfig()
    data: DataConfig
    eval_data: Optional[DataConfig] = None
    run: RunConfig


def load_config(cls: type[BaseModel], path: Optional[str], overrides: Sequence[str] = ()):
    """Read a phase YAML (optional), apply ``a.b=value`` overrides (YAML values), validate."""
    tree: dict[str, Any] = {}
    if path:
        try:
            with open(path) as f:
                tree = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        set_dotted(tree, key.strip(), yaml.safe_load(value))
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"invalid {cls.__name__}:\n{e}") from e
