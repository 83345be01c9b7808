"""Who spoke when: the records and the interface every diarization backend implements.

- ``offline`` (stages/analysis/diarize/offline.py): Silero VAD + resemblyzer's speaker encoder, speaker
  change points, clustering with a speaker count relative to the recording's own distances,
  HMM resegmentation and overlap detection; models that packages carry.
- ``pyannote`` (stages/analysis/diarize/pyannote_pipeline.py): a pyannote.audio pipeline from a local directory
  or a hub id (token from the environment); overlap-aware.
- ``channels`` (stages/analysis/diarize/channels.py): one speaker per channel of a multi-channel recording.

Every backend takes (channels, frames) float32 audio at 16 kHz and returns a `Diarization`:
SpeakerTurns sorted by start (turns of different speakers may overlap) and the backend's figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    from stages.analysis.vad import SpeechActivity, SpeechSegment

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SpeakerTurn:
    start_s: float
    end_s: float
    speaker: str  # "SPEAKER_00", "SPEAKER_01", ... or "CH0", "CH1" for the channels backend

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class DiarizeHints:
    """What a source or the earlier stages know before diarization: a known speaker count (a
    podcast's manifest entry), word spans (speaker changes fall between words) and the VAD's
    window probabilities (so a backend need not run Silero again)."""

    num_speakers: Optional[int] = None
    words: tuple[tuple[float, float], ...] = ()
    activity: Optional[SpeechActivity] = None


@dataclass(frozen=True)
class Diarization:
    turns: list[SpeakerTurn]
    stats: dict[str, Any] = field(default_factory=dict)  # backend figures (counts, scores) for rejects

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})

    def speech_share(self) -> dict[str, float]:
        """Each speaker's share of the speaker time (overlap counted for both)."""
        total: dict[str, float] = {}
        for t in self.turns:
            total[t.speaker] = total.get(t.speaker, 0.0) + t.duration_s
        whole = sum(total.values()) or 1.0
        return {k: v / whole for k, v in sorted(total.items())}


class Diarizer(Protocol):
    def diarize(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
        hints: Optional[DiarizeHints] = None,
    ) -> Diarization:
        """`audio`: (channels, frames) float32; `speech`: VAD regions of the mix when known."""
        ...

    def __call__(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
        hints: Optional[DiarizeHints] = None,
    ) -> list[SpeakerTurn]:
        ...


class DiarizerBase:
    """`__call__` gives just the turns of `diarize`."""

    def diarize(self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
                hints: Optional[DiarizeHints] = None) -> Diarization:
        raise NotImplementedError

    def __call__(self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
                 hints: Optional[DiarizeHints] = None) -> list[SpeakerTurn]:
        return self.diarize(audio, sample_rate, speech, hints).turns


def as_channels(audio: np.ndarray) -> np.ndarray:
    """(channels, frames) view of 1-D or 2-D audio."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, frames), got shape {audio.shape}")
    return audio


def mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz. One channel already at 16 kHz in float32 comes back as a view (a
    memory-mapped hour stays on disk; callers clean NaNs in the slices they read); otherwise the
    channels are averaged and resampled into a new array."""
    audio = as_channels(audio)
    if audio.shape[0] == 1 and sample_rate == SAMPLE_RATE and audio.dtype == np.float32:
        return audio[0]
    mono = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0, dtype=np.float32)
    mono = np.nan_to_num(np.asarray(mono, dtype=np.float32))
    if sample_rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return mono


def sort_turns(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    return sorted(turns, key=lambda t: (t.start_s, t.end_s, t.speaker))
