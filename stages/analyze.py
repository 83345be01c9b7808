"""Mono-mix recordings to utterances: VAD → diarization → ASR → words aligned to speakers.

One `ConversationAnalyzer` holds its models (Silero VAD, Whisper, the diarizer's encoder) for
its whole life, so a Ray actor loads them once and reuses them for every recording it gets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from catalog.schema import Recording, Reject, Speaker, Utterance
from stages.config import AnalyzeConfig
from stages.sources.base import RejectError


@dataclass
class Analysis:
    speakers: list[Speaker]
    utterances: list[Utterance]
    rejects: list[Reject] = field(default_factory=list)
    lang: Optional[str] = None
    code_switched: bool = False


class ConversationAnalyzer:
    def __init__(self, cfg: AnalyzeConfig):
        from stages.asr import WhisperASR
        from stages.diarize import make_diarizer
        from stages.vad import SileroVAD

        self.cfg = cfg
        self.vad = SileroVAD(cfg.vad)
        self.asr = WhisperASR(cfg.asr)
        self.diarizer = make_diarizer(cfg.diarize)

    def __call__(self, recording: Recording, audio: np.ndarray, sample_rate: int) -> Analysis:
        """`audio`: (channels, frames) float32 at the analysis rate (it may be a memory map)."""
        from stages.align import align_words, to_utterances

        if sample_rate != self.cfg.analysis_sample_rate:
            raise ValueError(f"analysis audio must be {self.cfg.analysis_sample_rate} Hz, got {sample_rate}")
        mono = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0, dtype=np.float32)
        speech = self.vad(mono, sample_rate)
        if not speech:
            raise RejectError("no_speech", "voice activity detection found no speech")
        turns = self.diarizer(audio, sample_rate, speech)
        if not turns:
            raise RejectError("no_speech", "diarization found no speaker")
        hint = recording.lang if recording.lang in self.cfg.asr.languages else None
        result = self.asr.transcribe(mono, speech, lang_hint=hint)
        if not result.segments:
            raise RejectError("no_speech", "speech recognition found no words")
        aligned = align_words(result.segments, turns)
        speakers, utterances = to_utterances(recording, aligned)
        for s in speakers:
            s.lang = result.lang
        return Analysis(speakers, utterances, lang=result.lang, code_switched=result.code_switched)
