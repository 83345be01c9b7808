"""Coqui TTS (the maintained `coqui-tts` fork): XTTS-v2 and VITS models from local directories.

Config: `models: {lang: path}` where path is a model directory holding config.json (XTTS-v2:
model.pth, vocab.json, speakers_xtts.pth; VITS: one .pth checkpoint) or a checkpoint file with
config.json beside it. One multilingual model may serve several languages (loaded once).
Voice id: "coqui:<lang>:<speaker>[:p<pitch factor>]", speaker being one of the model's speaker
names, "wav=<reference clip>" (XTTS voice cloning) or "default" (single-speaker models).
"""
from __future__ import annotations

import glob
import json
import os
import threading
from typing import Any, Optional

import numpy as np

from stages.config import resolve_device
from stages.synth.tts.base import DEFAULT_PITCH_FACTORS, BaseTts, TtsConfig, Voice, parse_pitch_factor

_CHECKPOINT_NAMES = ("model.pth", "model_file.pth", "best_model.pth", "checkpoint.pth")


def resolve_coqui_model(path: str) -> tuple[str, str, dict[str, Any]]:
    """(model_path, config_path, config) for a configured location; ValueError when incomplete."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise ValueError(f"coqui model path does not exist: {path}")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"coqui model at {path} has no config.json beside it")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if str(config.get("model", "")).lower() == "xtts":
        return folder, config_path, config  # XTTS loads from its checkpoint directory
    if os.path.isfile(path):
        return path, config_path, config
    found = [os.path.join(folder, n) for n in _CHECKPOINT_NAMES if os.path.isfile(os.path.join(folder, n))]
    found = found or sorted(glob.glob(os.path.join(folder, "*.pth")))
    if not found:
        raise ValueError(f"coqui model directory {folder} holds no .pth checkpoint")
    return found[0], config_path, config


class CoquiTts(BaseTts):
    name = "coqui"

    def __init__(self, cfg: TtsConfig):
        super().__init__(cfg)
        self._resolved = {lang: resolve_coqui_model(p) for lang, p in cfg.models.items()}
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.device = resolve_device(cfg.device)

    def languages(self) -> list[str]:
        return sorted(self._resolved)

    def _model(self, lang: str):
        model_path, config_path, _ = self._resolved[lang]
        with self._lock:
            if model_path not in self._models:
                from TTS.api import TTS

                tts = TTS(model_path=model_path, config_path=config_path, progress_bar=False)
                self._models[model_path] = tts.to(self.device)
            return self._models[model_path]

    def _default_voice_ids(self, lang: str) -> list[str]:
        speakers = list(getattr(self._model(lang), "speakers", None) or [])
        if speakers:
            return [f"coqui:{lang}:{s}" for s in speakers[:8]]
        return [f"coqui:{lang}:default:p{f:.2f}" for f in DEFAULT_PITCH_FACTORS]

    def _parse_voice(self, voice_id: str) -> Optional[Voice]:
        parts = voice_id.split(":")
        if len(parts) < 3 or parts[0] != "coqui" or parts[1] not in self._resolved:
            return None
        lang, speaker, pitch = parts[1], parts[2], 1.0
        if len(parts) == 4:
            pitch = parse_pitch_factor(parts[3])
            if pitch is None:
                return None
        elif len(parts) > 4:
            return None
        params: dict[str, Any] = {"pitch_factor": pitch}
        if speaker.startswith("wav="):
            if not os.path.isfile(speaker[4:]):
                return None
            params["speaker_wav"] = speaker[4:]
        elif speaker != "default":
            model_path = self._resolved[lang][0]
            loaded = self._models.get(model_path)
            if loaded is not None and speaker not in (getattr(loaded, "speakers", None) or []):
                return None
            params["speaker"] = speaker
        return Voice(voice_id, lang, self.name, params)

    def _synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        tts = self._model(voice.lang)
        if voice.params.get("speaker") and voice.params["speaker"] not in (tts.speakers or []):
            from stages.errors import RejectError

            raise RejectError("tts_unknown_voice", f"the coqui model has no speaker {voice.params['speaker']!r}")
        kwargs: dict[str, Any] = {k: voice.params[k] for k in ("speaker", "speaker_wav") if k in voice.params}
        if getattr(tts, "is_multi_lingual", False):
            kwargs["language"] = voice.lang
        config = self._resolved[voice.lang][2]
        if str(config.get("model", "")).lower() == "xtts":
            kwargs["speed"] = 1.0 / voice.params["pitch_factor"]  # keeps the tempo after the pitch shift
        with self._lock:
            wav = tts.tts(text=text, **kwargs)
        return np.asarray(wav, dtype=np.float32), int(tts.synthesizer.output_sample_rate)
