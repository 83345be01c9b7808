"""Speech synthesis behind one interface: backends (espeak-ng, MMS/VITS, Coqui, Piper, Kokoro),
their voices, and voice assignment for a dialogue's speakers.

Every backend returns float32 mono audio at `TtsConfig.sample_rate`, trimmed of leading and
trailing silence. Failures are RejectErrors with stable reasons: `tts_unsupported_language`,
`tts_unknown_voice`, `tts_not_enough_voices`, `tts_silent_output`, `tts_failed`.

Voice ids are stable strings, `<backend>:<lang>...`, e.g. "espeak:hi+f3:p55:s160",
"mms:te:p0.90", "coqui:hi:Ana Florence", "piper:en:3", "kokoro:en:jf_alpha+jm_kumo@0.35";
they go into the catalog as the speaker's voice.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Protocol, runtime_checkable

import numpy as np

import soxr
from pydantic import Field, model_validator

from stages.config import StageConfig
from stages.errors import RejectError
from stages.audio.signal import trim_silence
from stages.synth.text_normalize import normalize_for_tts

BackendName = Literal["espeak", "mms", "coqui", "piper", "kokoro"]

# Distinct espeak-ng voices per language: variant and pitch far enough apart that any two of a
# dialogue sound like different people (female variants high, male variants low).
DEFAULT_ESPEAK_VOICES: dict[str, list[str]] = {
    lang: [f"espeak:{lang}+{v}" for v in
           ("f3:p62:s160", "m3:p38:s155", "f2:p75:s170", "m1:p28:s150", "f4:p52:s165", "m6:p45:s165")]
    for lang in ("en", "hi", "te")
}
# MMS models are single-speaker: its voices are pitch/formant shifts of the one speaker.
DEFAULT_MMS_MODELS = {"hi": "facebook/mms-tts-hin", "te": "facebook/mms-tts-tel", "en": "facebook/mms-tts-eng"}
DEFAULT_PITCH_FACTORS = (1.0, 0.84, 1.16, 0.92)


class TtsConfig(StageConfig):
    backend: BackendName = "espeak"
    voices: dict[str, list[str]] = Field(
        default_factory=dict, description="voice ids per language; empty: the backend's defaults"
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="per language: mms → model directory (or a hub id, with network); coqui → model "
                    "directory holding config.json (XTTS-v2 or VITS); piper → the voice's .onnx file",
    )
    sample_rate: int = Field(24000, gt=0, description="rate of every synthesized clip")
    device: str = Field("auto", description="'auto' (GPU when there is one), 'cpu', 'cuda', 'cuda:1'")
    normalize_text: bool = Field(True, description="spell out numbers, dates, abbreviations first")
    trim_db: float = Field(-40.0, lt=0, description="leading/trailing frames below peak by this are cut")
    silence_peak: float = Field(1e-3, gt=0, description="output peaking below this counts as silence")
    min_duration_s: float = Field(0.05, ge=0, description="shorter output counts as silence")
    timeout_s: float = Field(120.0, gt=0, description="espeak-ng subprocess limit per clip")

    @model_validator(mode="after")
    def _check(self) -> "TtsConfig":
        for lang, ids in self.voices.items():
            for vid in ids:
                if not vid.startswith(f"{self.backend}:"):
                    raise ValueError(f"voice {vid!r} for {lang} is not a {self.backend} voice id")
        if self.backend in ("coqui", "piper") and not self.models:
            raise ValueError(f"tts backend {self.backend} needs models: {{lang: local path}}")
        return self


@dataclass(frozen=True)
class Voice:
    voice_id: str
    lang: str
    backend: str
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@runtime_checkable
class TtsBackend(Protocol):
    name: str

    def voices(self, lang: str) -> list[Voice]: ...

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, int]: ...


def pitch_shift(audio: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Raise pitch and formants by `factor` by resampling (the clip also gets 1/factor as long;
    callers synthesize it `factor` times slower first to keep the tempo)."""
    if abs(factor - 1.0) < 1e-6 or len(audio) == 0:
        return audio
    return soxr.resample(audio, sr * factor, sr, quality="HQ").astype(np.float32)


class BaseTts:
    """Shared checks and post-processing; a backend implements `languages`,
    `_default_voice_ids`, `_parse_voice` and `_synthesize_raw(text, voice) -> (audio, sr)`."""

    name = "base"

    def __init__(self, cfg: TtsConfig):
        self.cfg = cfg

    # -- voices
    def languages(self) -> list[str]:
        raise NotImplementedError

    def _default_voice_ids(self, lang: str) -> list[str]:
        raise NotImplementedError

    def _parse_voice(self, voice_id: str) -> Optional[Voice]:
        """The voice for an id, or None when this backend has no such voice."""
        raise NotImplementedError

    def voices(self, lang: str) -> list[Voice]:
        if lang not in self.languages():
            raise RejectError("tts_unsupported_language",
                              f"{self.name} has no voices for {lang!r} (has {sorted(self.languages())})")
        ids = self.cfg.voices.get(lang) or self._default_voice_ids(lang)
        out = [self.voice(vid) for vid in ids]
        for v in out:
            if v.lang != lang:
                raise RejectError("tts_unknown_voice", f"{v.voice_id} speaks {v.lang}, configured for {lang}")
        if not out:
            raise RejectError("tts_unsupported_language", f"{self.name}: no voices for {lang!r}")
        return out

    def voice(self, voice_id: str) -> Voice:
        v = self._parse_voice(voice_id)
        if v is None:
            raise RejectError("tts_unknown_voice", f"{self.name} has no voice {voice_id!r}")
        return v

    def prepare(self, langs: list[str]) -> None:
        """Check every language has voices (and load models): a clear error before any work."""
        for lang in langs:
            self.voices(lang)

    # -- synthesis
    def _synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def spoken_text(self, text: str, lang: str) -> str:
        return normalize_for_tts(text, lang) if self.cfg.normalize_text else text

    def synthesize(self, text: str, voice: Voice, text_lang: Optional[str] = None) -> tuple[np.ndarray, int]:
        """`text_lang` is the language the text is normalized as when it differs from the voice's
        (Hinglish spoken by a Hindi voice: numbers become romanized English words)."""
        if voice.backend != self.name or self._parse_voice(voice.voice_id) is None:
            raise RejectError("tts_unknown_voice", f"{self.name} has no voice {voice.voice_id!r}")
        try:
            audio, sr = self._synthesize_raw(self.spoken_text(text, text_lang or voice.lang), voice)
        except RejectError:
            raise
        except Exception as e:  # a backend crash is the turn's reject, never the build's
            raise RejectError("tts_failed", f"{voice.voice_id}: {type(e).__name__}: {e}") from e
        return self.finish(audio, sr, voice)

    def finish(self, audio: np.ndarray, sr: int, voice: Voice) -> tuple[np.ndarray, int]:
        """Mono float32, trimmed, resampled to the configured rate, checked for silence."""
        x = np.asarray(audio, dtype=np.float64)
        if x.ndim > 1:
            x = x.mean(axis=-1) if x.shape[-1] <= 2 else x.mean(axis=0)
        x = np.nan_to_num(x.reshape(-1))
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if peak < self.cfg.silence_peak:
            raise RejectError("tts_silent_output", f"{voice.voice_id}: peak {peak:.2g}")
        x = trim_silence(x, sr, self.cfg.trim_db)
        # Single-speaker models get distinct voices by pitch/formant shift (backends slow the
        # tempo by the same factor first where they can, so speech keeps its pace).
        x = pitch_shift(x, sr, float(voice.params.get("pitch_factor", 1.0)))
        if sr != self.cfg.sample_rate:
            x = soxr.resample(x, sr, self.cfg.sample_rate, quality="HQ")
        x = np.clip(x, -1.0, 1.0).astype(np.float32)
        if len(x) < self.cfg.min_duration_s * self.cfg.sample_rate:
            raise RejectError("tts_silent_output", f"{voice.voice_id}: {len(x) / self.cfg.sample_rate:.3f} s of sound")
        return x, self.cfg.sample_rate


def assign_voices(lang: str, n_speakers: int, seed: int | str, backend: TtsBackend) -> list[Voice]:
    """`n_speakers` distinct voices for one dialogue, the same for the same seed."""
    voices = backend.voices(lang)
    if n_speakers > len(voices):
        raise RejectError("tts_not_enough_voices",
                          f"{n_speakers} speakers, {len(voices)} {backend.name} voices for {lang}")
    rng = random.Random(f"tts-voices:{backend.name}:{lang}:{seed}")
    return rng.sample(voices, n_speakers)


def parse_pitch_factor(token: str) -> Optional[float]:
    """'p0.90' → 0.9 (None when malformed or outside 0.5-2)."""
    if not token.startswith("p"):
        return None
    try:
        f = float(token[1:])
    except ValueError:
        return None
    return f if 0.5 <= f <= 2.0 else None


def local_or_hub(path: str) -> str:
    """A model location from config: an existing local path, else taken as a hub id."""
    return os.path.abspath(os.path.expanduser(path)) if os.path.exists(os.path.expanduser(path)) else path
