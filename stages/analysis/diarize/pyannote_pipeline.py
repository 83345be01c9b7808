"""pyannote.audio diarization backend (community-1 or 3.1 pipelines), overlap-aware.

The pipeline comes from `DiarizeConfig.pyannote_pipeline`: a local directory holding its
config.yaml (the layout of a Hugging Face pipeline repository, e.g. a snapshot of
pyannote/speaker-diarization-community-1), a config.yaml file, or a hub id, downloaded with the
token in HF_TOKEN (or HUGGINGFACE_TOKEN). The token is only handed to pyannote; it is never
logged, stored or put in an error message.

Audio is passed in memory (``{"waveform", "sample_rate"}``), so pyannote's own file decoding
(torchcodec) is not needed; pyannote.audio itself still imports torchaudio.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from stages.config import DiarizeConfig, resolve_device
from stages.analysis.diarize.base import (
    SAMPLE_RATE, Diarization, DiarizeHints, DiarizerBase, SpeakerTurn, mono_16k, sort_turns,
)
from stages.analysis.vad import SpeechSegment

def hub_token() -> Optional[str]:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_TOKEN") or None


def load_pipeline(source: str, token: Optional[str] = None) -> Any:
    """pyannote.audio's Pipeline.from_pretrained for a local directory, file or hub id.

    pyannote.audio 4.x takes `token=`; 3.x took `use_auth_token=`."""
    from pyannote.audio import Pipeline  # the registry checked it is installed
    is_local = os.path.exists(source)
    try:
        pipeline = Pipeline.from_pretrained(source, token=None if is_local else token)
    except TypeError as e:
        if "token" not in str(e):
            raise
        pipeline = Pipeline.from_pretrained(source, use_auth_token=None if is_local else token)
    if pipeline is None:
        # from_pretrained returns None (after logging why) when the hub refuses the download.
        where = "local path" if is_local else "hub id (set HF_TOKEN and accept its conditions)"
        raise RuntimeError(f"could not load the pyannote pipeline from {where} {source!r}")
    return pipeline


class PyannoteDiarizer(DiarizerBase):
    """Diarizer backend "pyannote". Loads the pipeline once (on GPU when there is one)."""

    def __init__(self, cfg: DiarizeConfig):
        import torch

        self.cfg = cfg
        self.torch = torch
        self.pipeline = load_pipeline(cfg.pyannote_pipeline, hub_token())
        self.device = torch.device(resolve_device(cfg.device))
        self.pipeline.to(self.device)

    def diarize(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
        hints: Optional[DiarizeHints] = None,
    ) -> Diarization:
        """`speech` and word hints are not used: the pipeline's segmentation model finds speech
        itself. A known speaker count (hints) is passed as `num_speakers`."""
        mono = mono_16k(audio, sample_rate)
        if not len(mono):
            return Diarization([], {"speakers": 0})
        kwargs = {}
        if hints is not None and hints.num_speakers:
            kwargs["num_speakers"] = hints.num_speakers
        else:
            if self.cfg.min_speakers is not None:
                kwargs["min_speakers"] = self.cfg.min_speakers
            if self.cfg.max_speakers is not None:
                kwargs["max_speakers"] = self.cfg.max_speakers
        waveform = self.torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None]
        output = self.pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, **kwargs)
        turns = turns_from_output(output)
        return Diarization(turns, {"speakers": len({t.speaker for t in turns})})


def turns_from_output(output: Any) -> list[SpeakerTurn]:
    """SpeakerTurns from a pipeline's output: a pyannote.core Annotation (3.x, or 4.x legacy),
    or 4.x's DiarizeOutput, whose overlap-aware `speaker_diarization` is used (its
    `exclusive_speaker_diarization` drops overlapped speech). Labels are renumbered
    SPEAKER_00, SPEAKER_01, ... by first appearance."""
    annotation = getattr(output, "speaker_diarization", output)
    if not hasattr(annotation, "itertracks"):
        raise TypeError(f"unexpected pyannote pipeline output: {type(output).__name__}")
    tracks = sorted(
        ((float(seg.start), float(seg.end), str(label)) for seg, _, label in annotation.itertracks(yield_label=True)),
        key=lambda t: (t[0], t[1], t[2]),
    )
    names: dict[str, str] = {}
    turns = []
    for start, end, label in tracks:
        if end <= start:
            continue
        name = names.setdefault(label, f"SPEAKER_{len(names):02d}")
        turns.append(SpeakerTurn(round(start, 3), round(end, 3), name))
    return sort_turns(turns)
