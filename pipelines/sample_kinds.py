"""The kinds of training sample a corpus holds, described once: which record each kind is, where a
recording's results keep them, which audio span a sample needs, about how many bytes it takes,
and how it is cut. Shard planning (pipelines/assemble.py) and shard writing
(pipelines/process.py) both read this table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from catalog.schema import CodecChunk, DialogueWindow, Pair, Speaker, Turn
from stages.config import ShardConfig
from stages.corpus.samples import (
    codec_sample,
    estimate_sample_bytes,
    pair_audio_seconds,
    pair_sample,
    window_sample,
)

SampleMaker = Callable[[Any, np.ndarray, int, dict[str, Speaker], list[Turn], ShardConfig], dict[str, bytes]]


@dataclass(frozen=True)
class SampleKind:
    name: str  # shard file prefix and `Shard.kind`: "pairs", "dialogues", "codec"
    record: type
    id_field: str
    results_field: str  # the list in a recording's segment results (RecordingResult attribute)
    channels: int
    span: Callable[[Any, ShardConfig], tuple[float, float]]  # audio [start, end) the sample needs
    audio_seconds: Callable[[Any, ShardConfig], float]  # for size estimates
    make: SampleMaker

    def sample_id(self, record: Any) -> str:
        return getattr(record, self.id_field)

    def estimate_bytes(self, record: Any, cfg: ShardConfig, sample_rate: int) -> int:
        return estimate_sample_bytes(self.audio_seconds(record, cfg), self.channels, sample_rate)


def _pair_span(p: Pair, cfg: ShardConfig) -> tuple[float, float]:
    """The context, both turns and their clips' margins."""
    starts = [p.user_start_s, p.ai_start_s, p.user_clip_start_s, p.ai_clip_start_s]
    if cfg.include_context_audio and p.context_start_s is not None:
        starts.append(p.context_start_s)
    ends = [p.user_end_s, p.ai_end_s, p.user_clip_end_s, p.ai_clip_end_s]
    return min(t for t in starts if t is not None), max(t for t in ends if t is not None)


def _record_span(r: Any, cfg: ShardConfig) -> tuple[float, float]:
    return r.start_s, r.end_s


PAIRS = SampleKind(
    "pairs", Pair, "pair_id", "pairs", 1, _pair_span,
    lambda p, cfg: pair_audio_seconds(p, cfg.include_context_audio),
    lambda p, audio, sr, speakers, turns, cfg: pair_sample(p, audio, sr, speakers, turns, cfg.include_context_audio),
)
DIALOGUES = SampleKind(
    "dialogues", DialogueWindow, "window_id", "windows", 2, _record_span,
    lambda w, cfg: w.end_s - w.start_s,
    lambda w, audio, sr, speakers, turns, cfg: window_sample(w, audio, sr, speakers, turns),
)
CODEC = SampleKind(
    "codec", CodecChunk, "chunk_id", "codec_chunks", 1, _record_span,
    lambda c, cfg: c.end_s - c.start_s,
    lambda c, audio, sr, speakers, turns, cfg: codec_sample(c, audio, sr, speakers, turns),
)

SAMPLE_KINDS: tuple[SampleKind, ...] = (PAIRS, DIALOGUES, CODEC)
KIND_BY_NAME: dict[str, SampleKind] = {k.name: k for k in SAMPLE_KINDS}
