"""Diarizer backend "channels": one speaker per channel of a multi-channel recording."""
from __future__ import annotations

from typing import Optional

import numpy as np

from stages.analysis.diarize.base import Diarization, DiarizeHints, DiarizerBase, SpeakerTurn, as_channels, sort_turns
from stages.analysis.vad import SileroVAD, SpeechSegment
from stages.config import DiarizeConfig, VadConfig
from stages.errors import RejectError


class ChannelDiarizer(DiarizerBase):
    """One speaker per channel ("CH0", "CH1", ...); each channel's speech from Silero VAD run on
    that channel alone (a neural VAD ignores the faint crosstalk an energy threshold would
    count as speech). The mix's `speech` regions are not used."""

    def __init__(self, cfg: DiarizeConfig, vad_cfg: Optional[VadConfig] = None):
        self.cfg = cfg
        self.vad = SileroVAD(vad_cfg or VadConfig())

    def diarize(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
        hints: Optional[DiarizeHints] = None,
    ) -> Diarization:
        audio = as_channels(audio)
        if audio.shape[0] < 2:
            raise RejectError(
                "channels_need_multichannel",
                f"the channels diarizer needs one speaker per channel, got {audio.shape[0]} channel",
            )
        turns = [
            SpeakerTurn(seg.start_s, seg.end_s, f"CH{ch}")
            for ch in range(audio.shape[0])
            for seg in self.vad(np.ascontiguousarray(audio[ch]), sample_rate)
        ]
        return Diarization(sort_turns(turns), {"speakers": len({t.speaker for t in turns})})
