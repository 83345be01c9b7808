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


DEFAULT_BUCKETS_S = (2.0, 3.0, 4.5, 7.0, 10.0, 15.0, 22.0, 32.0, 45.0, 64.0)


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
    # Length buckets (boundaries in seconds; S2S samples bucket on encoder and AI-turn seconds)
    # and a budget of padded seconds per batch (samples x the longest of each stream, summed
    # over the streams; frames = seconds x the codec's frame rate). batch_size stays the cap.
    bucket_boundaries_s: list[float] = Field(default_factory=lambda: list(DEFAULT_BUCKETS_S))
    max_batch_s: Optional[float] = Field(None, gt=0)
    # S2S turn limits in seconds. None: segmentation's max_turn_s (stages.config.SegmentConfig),
    # so the loader keeps every turn segmentation lets through. The user turn and the context
    # keep their ends; an AI turn over the limit is skipped (counted ai_turn_too_long) or, with
    # long_ai_turns=no_eos, cropped and trained without end-of-turn.
    max_user_s: Optional[float] = Field(None, gt=0)
    max_context_s: float = Field(60.0, ge=0)
    max_ai_s: Optional[float] = Field(None, gt=0)
    long_ai_turns: Literal["skip", "no_eos"] = "skip"
    # Text stream (used when the model has one): the user transcript is left out of this share
    # of samples, so the model also learns to answer from audio alone, as train.respond does
    # without --user-text.
    user_text_dropout: float = Field(0.5, ge=0, le=1)
    max_text_bytes: int = Field(512, ge=1)
    # Splits: the JSON's `split` column when the corpus has one, else a held-out share of
    # recordings (by a hash of the recording id). None: "train" for data, "valid" for eval_data.
    split: Optional[Literal["train", "valid", "test", "all"]] = None
    holdout: float = Field(0.02, ge=0, lt=1)
    verify_length_tolerance_s: float = Field(0.05, ge=0)  # decoded audio vs the JSON's duration
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

    def same_source(self, other: "DataConfig") -> bool:
        return (self.corpus, self.version, self.tokens, self.shards) == (other.corpus, other.version, other.tokens, other.shards)

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


def _eval_is_held_out(data: "DataConfig", eval_data: Optional["DataConfig"]) -> None:
    """Eval data read from the training corpus must be its held-out split, chosen alike."""
    if eval_data is None or not data.same_source(eval_data):
        return
    if (eval_data.split or "valid") in ("train", "all") or (data.split or "train") in ("valid", "all"):
        raise ValueError("eval_data reads the training corpus: it needs split valid/test and data split train")
    if eval_data.holdout != data.holdout:
        raise ValueError(f"eval_data.holdout ({eval_data.holdout}) differs from data.holdout ({data.holdout}): "
                         "the held-out recordings would overlap the training ones")


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

    @model_validator(mode="after")
    def _held_out(self) -> "CodecTrainConfig":
        _eval_is_held_out(self.data, self.eval_data)
        return self


class S2STrainConfig(_Strict):
    preset: str = "small"
    # Overrides of the preset. n_codebooks / codebook_size come from the token corpus's codec
    # (set them only to check, or n_codebooks to use fewer); n_voices is the voice table's size.
    model: dict[str, Any] = Field(default_factory=dict)
    init_from: Optional[str] = None  # a pre-training run's checkpoint folder (fine-tuning)
    min_voice_pairs: int = Field(20, ge=1)  # fewer AI pairs: the voice shares the unknown index
    optim: OptimConfig = OptimConfig()
    data: DataConfig
    eval_data: Optional[DataConfig] = None
    run: RunConfig

    @model_validator(mode="after")
    def _held_out(self) -> "S2STrainConfig":
        _eval_is_held_out(self.data, self.eval_data)
        return self


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
