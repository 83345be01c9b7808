"""Piper voices (ONNX, `piper-tts`): `models: {lang: path to the voice's .onnx}`, its
`<name>.onnx.json` config beside it.

Voice id: "piper:<lang>:<speaker>[:p<pitch factor>]", speaker being a name of the config's
speaker_id_map, a numeric speaker id, or "default" (single-speaker voices).
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Optional

import numpy as np

from stages.config import resolve_device
from stages.synth.tts.base import DEFAULT_PITCH_FACTORS, BaseTts, TtsConfig, Voice, parse_pitch_factor


def resolve_piper_model(path: str) -> tuple[str, str, dict[str, Any]]:
    """(onnx path, config path, config); ValueError when either is missing."""
    onnx = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(onnx) or not onnx.endswith(".onnx"):
        raise ValueError(f"piper model must be an existing .onnx file: {onnx}")
    config_path = onnx + ".json"
    if not os.path.isfile(config_path):
        raise ValueError(f"piper model {onnx} has no {os.path.basename(config_path)} beside it")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    return onnx, config_path, config


class PiperTts(BaseTts):
    name = "piper"

    def __init__(self, cfg: TtsConfig):
        super().__init__(cfg)
        self._resolved = {lang: resolve_piper_model(p) for lang, p in cfg.models.items()}
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.use_cuda = resolve_device(cfg.device).startswith("cuda")

    def languages(self) -> list[str]:
        return sorted(self._resolved)

    def _speakers(self, lang: str) -> dict[str, int]:
        return dict(self._resolved[lang][2].get("speaker_id_map") or {})

    def _default_voice_ids(self, lang: str) -> list[str]:
        speakers = self._speakers(lang)
        if len(speakers) > 1:
            return [f"piper:{lang}:{name}" for name in list(speakers)[:8]]
        return [f"piper:{lang}:default:p{f:.2f}" for f in DEFAULT_PITCH_FACTORS]

    def _parse_voice(self, voice_id: str) -> Optional[Voice]:
        parts = voice_id.split(":")
        if not 3 <= len(parts) <= 4 or parts[0] != "piper" or parts[1] not in self._resolved:
            return None
        lang, speaker = parts[1], parts[2]
        pitch = parse_pitch_factor(parts[3]) if len(parts) == 4 else 1.0
        if pitch is None:
            return None
        speakers = self._speakers(lang)
        num = int(self._resolved[lang][2].get("num_speakers", 1) or 1)
        if speaker == "default":
            sid = None
        elif speaker in speakers:
            sid = speakers[speaker]
        elif speaker.isdigit() and int(speaker) < num:
            sid = int(speaker)
        else:
            return None
        return Voice(voice_id, lang, self.name, {"speaker_id": sid, "pitch_factor": pitch})

    def _voice(self, lang: str):
        with self._lock:
            if lang not in self._voices:
                from piper import PiperVoice

                onnx, config_path, _ = self._resolved[lang]
                self._voices[lang] = PiperVoice.load(onnx, config_path=config_path, use_cuda=self.use_cuda)
            return self._voices[lang]

    def _synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        pv = self._voice(voice.lang)
        sid, length_scale = voice.params["speaker_id"], 1.0 / voice.params["pitch_factor"]
        sr = int(pv.config.sample_rate)
        try:
            from piper import SynthesisConfig  # piper-tts >= 1.3
        except ImportError:
            SynthesisConfig = None
        if SynthesisConfig is not None:
            chunks = pv.synthesize(text, syn_config=SynthesisConfig(speaker_id=sid, length_scale=length_scale))
            parts = [np.asarray(c.audio_float_array, dtype=np.float32) for c in chunks]
        else:  # piper-tts 1.2: 16-bit PCM bytes per sentence
            raw = pv.synthesize_stream_raw(text, speaker_id=sid, length_scale=length_scale)
            parts = [np.frombuffer(b, dtype=np.int16).astype(np.float32) / 32768.0 for b in raw]
        return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), sr
