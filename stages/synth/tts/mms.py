"""MMS (Meta's Massively Multilingual Speech) VITS models through `transformers`:
`models: {lang: local model directory}` (facebook/mms-tts-hin, -tel, -eng style: config.json,
model weights, vocab.json), or a hub id for users with network. One model per language, loaded
once, on the GPU when there is one.

MMS models speak with one voice; voice id "mms:<lang>:p<pitch factor>" gives distinct voices
by synthesizing `factor` times slower and shifting pitch and formants up by `factor`.
Synthesis is seeded from the voice and text, so the same turn always sounds the same.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import threading
from typing import Any, Optional

import numpy as np

from stages.config import resolve_device
from stages.synth.tts.base import (DEFAULT_MMS_MODELS, DEFAULT_PITCH_FACTORS, BaseTts, TtsConfig, Voice,
                                   local_or_hub, parse_pitch_factor)


class MmsTts(BaseTts):
    name = "mms"

    def __init__(self, cfg: TtsConfig):
        super().__init__(cfg)
        self._paths = {lang: local_or_hub(p) for lang, p in (cfg.models or DEFAULT_MMS_MODELS).items()}
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self.device = resolve_device(cfg.device)

    def languages(self) -> list[str]:
        return sorted(self._paths)

    def _default_voice_ids(self, lang: str) -> list[str]:
        return [f"mms:{lang}:p{f:.2f}" for f in DEFAULT_PITCH_FACTORS]

    def _parse_voice(self, voice_id: str) -> Optional[Voice]:
        parts = voice_id.split(":")
        if len(parts) != 3 or parts[0] != "mms" or parts[1] not in self._paths:
            return None
        factor = parse_pitch_factor(parts[2])
        if factor is None:
            return None
        return Voice(voice_id, parts[1], self.name, {"pitch_factor": factor})

    def load(self, lang: str) -> tuple[Any, Any]:
        """(model, tokenizer) for a language, loaded on first use."""
        with self._lock:
            if lang not in self._loaded:
                from transformers import AutoTokenizer, VitsModel

                path = self._paths[lang]
                tokenizer = AutoTokenizer.from_pretrained(path)
                if getattr(tokenizer, "is_uroman", False) and importlib.util.find_spec("uroman") is None:
                    # The tokenizer romanizes by itself when uroman is there; without it, it would
                    # silently drop every non-Latin character.
                    raise RuntimeError(f"MMS model {path} reads romanized text: pip install uroman")
                model = VitsModel.from_pretrained(path).to(self.device).eval()
                self._loaded[lang] = (model, tokenizer)
            return self._loaded[lang]

    def prepare(self, langs: list[str]) -> None:
        super().prepare(langs)
        for lang in langs:
            self.load(lang)

    def _synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        import torch

        model, tokenizer = self.load(voice.lang)
        inputs = tokenizer(text, return_tensors="pt")
        sr = int(model.config.sampling_rate)
        if inputs["input_ids"].shape[-1] == 0:
            return np.zeros(0, dtype=np.float32), sr
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        seed = int.from_bytes(hashlib.sha256(f"{voice.voice_id}|{text}".encode()).digest()[:8], "little")
        base_rate = float(getattr(model.config, "speaking_rate", 1.0) or 1.0)
        rate = base_rate / voice.params["pitch_factor"]
        with self._lock, torch.no_grad():
            torch.manual_seed(seed % (2**63))  # VITS samples noise: seeded, under the lock
            if "speaking_rate" in inspect.signature(model.forward).parameters:
                wave = model(**inputs, speaking_rate=rate).waveform[0]
            else:  # older transformers read it from the model object
                model.speaking_rate = rate
                try:
                    wave = model(**inputs).waveform[0]
                finally:
                    model.speaking_rate = base_rate
        return wave.float().cpu().numpy(), sr
