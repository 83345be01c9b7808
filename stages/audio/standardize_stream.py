"""Standardize a long audio file without holding it in memory.

ffmpeg streams the file twice: once to measure its EBU R128 loudness (and true peak), once to
write the standardized FLAC (the corpus rate) and the analysis WAV (16 kHz float, read back as
a memory map by VAD, diarization and ASR). Python never holds more than a short excerpt, used
to measure the effective bandwidth at the native rate.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile as sf

from stages.audio.decode import _ENCODING_NAMES, _last_line, _probe, effective_bandwidth_hz, ffmpeg_decode_f32, sha256_file
from stages.config import StandardizeConfig
from stages.errors import RejectError


@dataclass
class StandardizedFile:
    flac_path: str  # at cfg.sample_rate, 16-bit FLAC
    analysis_path: str  # at the analysis rate, float32 WAV
    native_sample_rate: int
    num_channels: int
    duration_s: float
    encoding: str
    sha256: str
    bandwidth: str
    effective_bandwidth_hz: float
    loudness_lufs: Optional[float]
    gain_db: float


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", *args], capture_output=True, stdin=subprocess.DEVNULL)


def measure_loudness(path: str, sample_rate: Optional[int] = None) -> tuple[Optional[float], Optional[float]]:
    """Integrated loudness (LUFS) and true peak (dBTP) of the whole file, streamed; measured
    after resampling to `sample_rate` when given, since dropping the band above its Nyquist
    lowers the loudness of wideband material."""
    resample = f"aresample={sample_rate}:resampler=soxr," if sample_rate else ""
    proc = _ffmpeg(["-i", path, "-map", "0:a:0", "-af", f"{resample}loudnorm=print_format=json", "-f", "null", "-"])
    if proc.returncode != 0:
        raise RejectError("audio_decode_failed", f"ffmpeg: {_last_line(proc.stderr)}")
    match = re.search(rb"\{[^{}]*\"input_i\"[^{}]*\}", proc.stderr)
    if not match:
        return None, None
    stats = json.loads(match.group(0))
    try:
        lufs, peak = float(stats["input_i"]), float(stats["input_tp"])
    except (KeyError, ValueError):
        return None, None
    return (lufs if lufs > -70 else None), (peak if peak > -70 else None)


def _bandwidth(path: str, channels: int, duration_s: float, excerpts: int = 4, excerpt_s: float = 30.0) -> float:
    """Effective bandwidth from a few excerpts at the native rate (no upsampling artefacts)."""
    rate = int(_probe(path)["sample_rate"])
    starts = np.linspace(0, max(0.0, duration_s - excerpt_s), num=excerpts if duration_s > excerpt_s else 1)
    values = []
    for start in starts:
        audio = ffmpeg_decode_f32(["-ss", f"{start:.3f}", "-t", f"{excerpt_s:.3f}", "-i", path], channels)
        if audio.shape[1]:
            values.append(effective_bandwidth_hz(audio, rate))
    return float(np.median(values)) if values else 0.0


def standardize_file(
    path: str, cfg: StandardizeConfig, analysis_rate: int, workdir: str, analysis_mono: bool = True
) -> StandardizedFile:
    """`analysis_mono`: downmix the analysis WAV (what mono-mix models want); keep the channels
    for per-channel diarization."""
    if not os.path.isfile(path):
        raise RejectError("audio_not_found", path)
    if os.path.getsize(path) == 0:
        raise RejectError("audio_empty", f"{path}: zero-length file")
    info = _probe(path)
    native, channels = int(info["sample_rate"]), int(info["channels"])
    lufs, peak = measure_loudness(path, cfg.sample_rate) if cfg.loudness_lufs is not None else (None, None)
    gain = 0.0
    if cfg.loudness_lufs is not None and lufs is not None:
        gain = min(cfg.loudness_lufs - lufs, cfg.max_gain_db)
        if peak is not None:
            gain = min(gain, -1.0 - peak)  # keep the true peak at or below -1 dBTP
    os.makedirs(workdir, exist_ok=True)
    flac_path = os.path.join(workdir, "standard.flac")
    analysis_path = os.path.join(workdir, "analysis.wav")
    graph = (
        f"[0:a:0]volume={gain:.3f}dB,asplit=2[a][b];"
        f"[a]aresample={cfg.sample_rate}:resampler=soxr[std];"
        f"[b]aresample={analysis_rate}:resampler=soxr[ana]"
    )
    proc = _ffmpeg([
        "-v", "error", "-y", "-i", path, "-filter_complex", graph,
        "-map", "[std]", "-c:a", "flac", "-sample_fmt", "s16", "-fflags", "+bitexact", "-flags:a", "+bitexact", flac_path,
        "-map", "[ana]", *(["-ac", "1"] if analysis_mono else []), "-c:a", "pcm_f32le", "-fflags", "+bitexact", "-flags:a", "+bitexact", analysis_path,
    ])
    if proc.returncode != 0:
        raise RejectError("audio_decode_failed", f"ffmpeg: {_last_line(proc.stderr)}")
    frames = sf.info(analysis_path).frames
    if frames == 0:
        raise RejectError("audio_empty", f"{path}: no audio frames decoded")
    duration = frames / analysis_rate
    if duration > cfg.max_duration_s:
        raise RejectError("audio_too_long", f"{duration:.0f}s > {cfg.max_duration_s:.0f}s")
    bw = min(_bandwidth(path, channels, duration), native / 2)
    codec = str(info.get("codec_name", "unknown"))
    return StandardizedFile(
        flac_path=flac_path,
        analysis_path=analysis_path,
        native_sample_rate=native,
        num_channels=channels,
        duration_s=round(sf.info(flac_path).frames / cfg.sample_rate, 3),
        encoding=_ENCODING_NAMES.get(codec, codec),
        sha256=sha256_file(path),
        bandwidth="narrowband" if bw <= cfg.narrowband_max_hz else "wideband",
        effective_bandwidth_hz=round(bw, 1),
        loudness_lufs=lufs,
        gain_db=round(gain, 3),
    )


def open_analysis_audio(path: str) -> tuple[np.ndarray, int]:
    """The analysis WAV as a read-only memory map shaped (channels, frames): long episodes are
    paged in by the OS as the models read them, never copied whole into the heap."""
    info = sf.info(path)
    data_bytes = info.frames * info.channels * 4
    offset = os.path.getsize(path) - data_bytes
    with open(path, "rb") as f:  # the data chunk ends the file ffmpeg writes; verify its tag
        f.seek(offset - 8)
        if f.read(4) != b"data":
            data = sf.read(path, dtype="float32", always_2d=True)[0]
            return np.ascontiguousarray(data.T), info.samplerate
    mm = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(info.frames, info.channels))
    return mm.T, info.samplerate
