"""Who spoke when: one interface, three backends.

- ``offline`` (stages/diarize_offline.py): Silero VAD + resemblyzer's speaker encoder +
  clustering with an automatic speaker count; models that packages carry, no overlap detection.
- ``pyannote`` (stages/diarize_pyannote.py): a pyannote.audio pipeline from a local directory
  or a hub id (token from the environment); overlap-aware.
- ``channels`` (here): one speaker per channel of a multi-channel recording.

Every backend takes (channels, frames) float32 audio at 16 kHz and returns SpeakerTurns sorted
by start; turns of different speakers may overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

import numpy as np

from stages.config import DiarizeConfig, VadConfig
from stages.sources.base import RejectError

if TYPE_CHECKING:
    from stages.vad import SpeechSegment

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SpeakerTurn:
    start_s: float
    end_s: float
    speaker: str  # "SPEAKER_00", "SPEAKER_01", ... or "CH0", "CH1" for the channels backend

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class Diarizer(Protocol):
    def __call__(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None
    ) -> list[SpeakerTurn]:
        """`audio`: (channels, frames) float32; `speech`: VAD regions of the mix when known."""
        ...


def make_diarizer(cfg: DiarizeConfig, vad_cfg: Optional[VadConfig] = None) -> Diarizer:
    """The configured backend, its models loaded once (hold it for many recordings).
    `vad_cfg`: the Silero settings the offline and channels backends use for their own VAD
    passes (defaults otherwise)."""
    if cfg.backend == "offline":
        from stages.diarize_offline import OfflineDiarizer

        return OfflineDiarizer(cfg, vad_cfg)
    if cfg.backend == "pyannote":
        from stages.diarize_pyannote import PyannoteDiarizer

        return PyannoteDiarizer(cfg)
    if cfg.backend == "channels":
        return ChannelDiarizer(cfg, vad_cfg)
    raise ValueError(f"unknown diarization backend {cfg.backend!r}")


class ChannelDiarizer:
    """One speaker per channel ("CH0", "CH1", ...); each channel's speech from Silero VAD run on
    that channel alone (a neural VAD ignores the faint crosstalk an energy threshold would
    count as speech). The mix's `speech` regions are not used."""

    def __init__(self, cfg: DiarizeConfig, vad_cfg: Optional[VadConfig] = None):
        from stages.vad import SileroVAD

        self.cfg = cfg
        self.vad = SileroVAD(vad_cfg or VadConfig())

    def __call__(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None
    ) -> list[SpeakerTurn]:
        audio = as_channels(audio)
        if audio.shape[0] < 2:
            raise RejectError(
                "channels_need_multichannel",
                f"the channels diarizer needs one speaker per channel, got {audio.shape[0]} channel",
            )
        turns = [
            SpeakerTurn(seg.start_s, seg.end_s, f"CH{ch}")
            for ch in range(audio.shape[0])
            for seg in self.vad(np.ascontiguousarray(audio[ch]), sample_rate)
        ]
        return sort_turns(turns)


def as_channels(audio: np.ndarray) -> np.ndarray:
    """(channels, frames) view of 1-D or 2-D audio."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, frames), got shape {audio.shape}")
    return audio


def mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix down to mono float32 and resample to 16 kHz if needed."""
    audio = as_channels(audio)
    mono = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0, dtype=np.float32)
    mono = np.nan_to_num(np.asarray(mono, dtype=np.float32))
    if sample_rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return mono


def sort_turns(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    return sorted(turns, key=lambda t: (t.start_s, t.end_s, t.speaker))


def resolve_device(device: str) -> str:
    """"auto" → "cuda" when torch sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
