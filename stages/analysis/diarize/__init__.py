"""Who spoke when, by backend name (stages/registry.py); the interface and records are in `base`."""
from __future__ import annotations

from typing import Optional

from stages.analysis.diarize.base import Diarizer
from stages.config import DiarizeConfig, VadConfig
from stages.registry import Implementation, Registry

DIARIZERS = Registry("diarization backend", [
    Implementation("offline", "stages.analysis.diarize.offline:OfflineDiarizer", ("torch", "resemblyzer", "sklearn")),
    Implementation("pyannote", "stages.analysis.diarize.pyannote_pipeline:PyannoteDiarizer",
                   ("pyannote.audio", "torchaudio"),
                   "pip install convcorpus[pyannote] (pyannote.audio with its own torch and torchaudio: see the "
                   "README's Diarization section)"),
    Implementation("channels", "stages.analysis.diarize.channels:ChannelDiarizer"),
])


def make_diarizer(cfg: DiarizeConfig, vad_cfg: Optional[VadConfig] = None) -> Diarizer:
    """The configured backend, its models loaded once (hold it for many recordings).
    `vad_cfg`: the Silero settings the offline and channels backends use for their own VAD
    passes (defaults otherwise)."""
    cls = DIARIZERS.load(cfg.backend)
    return cls(cfg) if cfg.backend == "pyannote" else cls(cfg, vad_cfg)
