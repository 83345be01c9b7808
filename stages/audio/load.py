"""Any audio file to samples: NIST SPHERE (with embedded shorten) through stages.audio.sphere,
everything else through ffmpeg (stages.audio.decode). NaN/Inf and denormal samples are zeroed
(`audio_invalid_samples` when too many: stages.audio.decode.MAX_INVALID_SHARE)."""
from __future__ import annotations

import os

import numpy as np

from stages.audio.decode import _ENCODING_NAMES, DecodedAudio, _probe, ffmpeg_decode_f32, repair_samples, sha256_file
from stages.audio.sphere import decode_sphere
from stages.errors import RejectError


def decode_file(path: str) -> DecodedAudio:
    """Decode any audio file at its native rate and channel count. NIST SPHERE files go
    through stages.audio.sphere (which also handles embedded shorten)."""
    if not os.path.isfile(path):
        raise RejectError("audio_not_found", path)
    if os.path.getsize(path) == 0:
        raise RejectError("audio_empty", f"{path}: zero-length file")
    with open(path, "rb") as f:
        magic = f.read(7)
    if magic == b"NIST_1A":
        return decode_sphere(path)
    info = _probe(path)
    try:
        rate, channels = int(info["sample_rate"]), int(info["channels"])
    except (KeyError, TypeError, ValueError):
        raise RejectError("audio_decode_failed", f"ffprobe: unusable stream info {info}")
    if rate <= 0 or channels <= 0:
        raise RejectError("audio_decode_failed", f"ffprobe: rate={rate} channels={channels}")
    samples = ffmpeg_decode_f32(["-i", path], channels)
    if samples.shape[1] == 0:
        raise RejectError("audio_empty", f"{path}: no audio frames decoded")
    repair = repair_samples(samples, path)  # before clipping, which would turn Inf into full-scale clicks
    np.clip(samples, -1.0, 1.0, out=samples)
    codec = str(info.get("codec_name", "unknown"))
    return DecodedAudio(samples, rate, _ENCODING_NAMES.get(codec, codec), sha256_file(path), repair)
