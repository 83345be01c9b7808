"""Standardize: decoded audio of any rate → the corpus's rate (the codec's, 24 kHz), FLAC,
with the native rate and the effective bandwidth kept so trainers can filter telephone audio."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from stages.audio.decode import DecodedAudio, SampleRepair, count_bad_samples, effective_bandwidth_hz, encode_flac, repair_samples, resample
from stages.config import StandardizeConfig
from stages.audio.loudness import normalize_channels

# Bump when a change alters standardized audio (this module and standardize_stream.py).
CODE_VERSION = 2
from stages.errors import RejectError


@dataclass
class StandardAudio:
    samples: np.ndarray  # float32 (channels, frames) at sample_rate
    sample_rate: int
    native_sample_rate: int
    bandwidth: str  # "narrowband" | "wideband"
    effective_bandwidth_hz: float
    repair: Optional[SampleRepair] = None  # NaN/Inf/denormal samples zeroed (recorded in the recording's metadata)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate

    def flac(self) -> bytes:
        return encode_flac(self.samples, self.sample_rate)


def standardize(decoded: DecodedAudio, cfg: StandardizeConfig) -> StandardAudio:
    if decoded.samples.size == 0:
        raise RejectError("audio_empty", "no samples after decoding")
    if decoded.duration_s > cfg.max_duration_s:
        raise RejectError("audio_too_long", f"{decoded.duration_s:.0f}s > {cfg.max_duration_s:.0f}s")
    samples, repair = decoded.samples, decoded.repair
    found = count_bad_samples(samples)  # sources that decode on their own (SPHERE, TTS) are checked here
    if found:
        found.check("decoded audio")
        samples = np.array(samples, dtype=np.float32, order="C")
        repair_samples(samples, "decoded audio")
        repair = found.add(repair)
    # Bandwidth is measured on the native signal: upsampling adds no content above its Nyquist.
    bw = min(effective_bandwidth_hz(samples, decoded.sample_rate), decoded.sample_rate / 2)
    if cfg.loudness_lufs is not None:
        samples, _ = normalize_channels(samples, decoded.sample_rate, cfg.loudness_lufs, cfg.max_gain_db)
    samples = resample(samples, decoded.sample_rate, cfg.sample_rate)
    return StandardAudio(
        samples=samples.astype(np.float32, copy=False),
        sample_rate=cfg.sample_rate,
        native_sample_rate=decoded.sample_rate,
        bandwidth="narrowband" if bw <= cfg.narrowband_max_hz else "wideband",
        effective_bandwidth_hz=round(float(bw), 1),
        repair=repair,
    )
