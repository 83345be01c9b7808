"""Speech synthesis backends by name (stages/registry.py); the interface is in `base`."""
from __future__ import annotations

from stages.registry import Implementation, Registry
from stages.synth.tts.base import BaseTts, TtsConfig

TTS_BACKENDS = Registry("TTS backend", [
    Implementation("espeak", "stages.synth.tts.espeak:EspeakTts"),
    Implementation("mms", "stages.synth.tts.mms:MmsTts", ("torch", "transformers"),
                   "pip install transformers torch"),
    Implementation("coqui", "stages.synth.tts.coqui:CoquiTts", ("TTS",), "pip install coqui-tts"),
    Implementation("piper", "stages.synth.tts.piper:PiperTts", ("piper",), "pip install piper-tts"),
    Implementation("kokoro", "stages.synth.tts.kokoro:KokoroTts", ("onnxruntime",), "pip install onnxruntime"),
])


def make_tts(cfg: TtsConfig) -> BaseTts:
    """The configured backend (imported only when chosen: heavy dependencies stay optional)."""
    return TTS_BACKENDS.load(cfg.backend)(cfg)
