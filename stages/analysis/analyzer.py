"""Mono-mix recordings to utterances: VAD → ASR → diarization (with the words) → words aligned to
speakers; a conversation that diarizes to one speaker becomes a reject with its figures.

One `ConversationAnalyzer` holds its models (Silero VAD, Whisper, the diarizer's encoder) for
its whole life, so a Ray actor loads them once and reuses them for every recording it gets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from catalog.schema import Recording, Reject, Speaker, Utterance
from stages.config import AnalyzeConfig, DiarizeConfig
from stages.analysis.diarize.base import Diarization, DiarizeHints
from stages.errors import RejectError
from stages.registry import Implementation, Registry

# Bump when a change to the analysis (VAD, ASR, diarization, alignment) alters its utterances.
# 2: word times refined by Silero, utterances split at pauses, offline overlap detection.
CODE_VERSION = 2


@dataclass
class Analysis:
    speakers: list[Speaker]
    utterances: list[Utterance]
    rejects: list[Reject] = field(default_factory=list)
    lang: Optional[str] = None
    code_switched: bool = False


def expected_speakers(recording: Recording) -> Optional[int]:
    """A known speaker count from the source (a manifest's `speakers:`), if any."""
    try:
        n = json.loads(recording.metadata_json or "{}").get("speakers")
    except ValueError:
        return None
    return int(n) if isinstance(n, int) and n > 0 else None


def check_speakers(diarization: Diarization, expected: Optional[int], cfg: DiarizeConfig) -> None:
    """A conversation never ends silently as one speaker: it becomes a reject with the figures.

    - `single_speaker`: one speaker found where the source expects more (or says nothing, with
      `single_speaker: reject`, the default: a conversation corpus gets no pair from a monologue);
    - `diarization_uncertain`: two speakers, one of them with less than `min_speaker_share` of the
      speech (a voice's variation split off, or a partner barely heard)."""
    shares = diarization.speech_share()
    figures = {k: v for k, v in diarization.stats.items() if k != "shares"}
    detail = json.dumps({"speakers": len(shares), "expected": expected, **figures,
                         "shares": {k: round(v, 3) for k, v in shares.items()}}, sort_keys=True)
    if len(shares) == 1 and expected != 1 and (expected or cfg.single_speaker == "reject"):
        raise RejectError("single_speaker", detail)
    if len(shares) == 2 and min(shares.values()) < cfg.min_speaker_share and expected != 2:
        raise RejectError("diarization_uncertain", detail)


ASR_BACKENDS = Registry("ASR backend", [
    Implementation("faster-whisper", "stages.analysis.asr:WhisperASR", ("faster_whisper", "ctranslate2"),
                   "pip install faster-whisper"),
])
ASR_BACKEND = "faster-whisper"  # the one there is; a second backend would become an AsrConfig field


class ConversationAnalyzer:
    def __init__(self, cfg: AnalyzeConfig):
        from stages.analysis.diarize import make_diarizer
        from stages.analysis.vad import SileroVAD

        self.cfg = cfg
        self.vad = SileroVAD(cfg.vad)
        self.asr = ASR_BACKENDS.load(ASR_BACKEND)(cfg.asr)
        self.diarizer = make_diarizer(cfg.diarize, cfg.vad)

    def __call__(self, recording: Recording, audio: np.ndarray, sample_rate: int) -> Analysis:
        """`audio`: (channels, frames) float32 at the analysis rate (it may be a memory map)."""
        from stages.analysis.align import UTTERANCE_PAUSE_S, align_words, refine_word_times, to_utterances

        if sample_rate != self.cfg.analysis_sample_rate:
            raise ValueError(f"analysis audio must be {self.cfg.analysis_sample_rate} Hz, got {sample_rate}")
        mono = audio[0] if audio.shape[0] == 1 else audio.mean(axis=0, dtype=np.float32)
        speech, activity = self.vad.analyse(mono, sample_rate)
        if not speech:
            raise RejectError("no_speech", "voice activity detection found no speech")
        hint = recording.lang if recording.lang in self.cfg.asr.languages else None
        result = self.asr.transcribe(mono, speech, lang_hint=hint)
        if not result.segments:
            raise RejectError("no_speech", "speech recognition found no words")
        # Whisper's words, their times cut to the speech Silero hears, go to the diarizer (speaker
        # changes fall between words) and then to the speakers it found.
        segments = refine_word_times(result.segments, activity)
        words = tuple((w.start_s, w.end_s) for seg in segments for w in (seg.words or []))
        expected = expected_speakers(recording)
        diarization = self.diarizer.diarize(audio, sample_rate, speech, DiarizeHints(expected, words, activity))
        if not diarization.turns:
            raise RejectError("no_speech", "diarization found no speaker")
        check_speakers(diarization, expected, self.cfg.diarize)
        aligned = align_words(segments, diarization.turns, split_pause_s=UTTERANCE_PAUSE_S)
        speakers, utterances = to_utterances(recording, aligned)
        for s in speakers:
            s.lang = result.lang
        return Analysis(speakers, utterances, lang=result.lang, code_switched=result.code_switched)
