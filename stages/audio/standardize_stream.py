"""Standardize a long audio file without holding it in memory.

ffmpeg streams the file twice: once to measure its EBU R128 loudness (and true peak), once to
write the standardized FLAC (the corpus rate) and the analysis WAV (16 kHz float, read back as
a memory map by VAD, diarization and ASR). Python never holds more than a short excerpt, used
to measure the effective bandwidth at the native rate.

Files decoded to float samples (float WAV, MP3, AAC, Opus, ...) are also checked for NaN/Inf and
denormal samples, counted block by block from a second output of the measuring pass: too many
NaN/Inf is `audio_invalid_samples`; a few (stages.audio.decode.MAX_INVALID_SHARE) are set to 0
by a filter ahead of everything else (then the loudness is measured again), so one bad sample
becomes neither a full-scale click nor a poisoned resampler window. A loudness measurement that
fails is `loudness_failed`, never taken for silence.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile as sf

from stages.audio.decode import (
    _ENCODING_NAMES,
    FLOAT_SAMPLE_FORMATS,
    SampleRepair,
    _last_line,
    _probe,
    effective_bandwidth_hz,
    ffmpeg_decode_f32,
    repair_filter,
    scan_file_samples,
    sha256_file,
)
from stages.config import StandardizeConfig
from stages.errors import RejectError, TransientError


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
    repair: Optional[SampleRepair] = None  # NaN/Inf/denormal samples zeroed (recorded in the recording's metadata)


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", *args], capture_output=True, stdin=subprocess.DEVNULL)


def _loudness_output(sample_rate: Optional[int], prefilter: str = "") -> list[str]:
    resample = f"aresample={sample_rate}:resampler=soxr," if sample_rate else ""
    return ["-map", "0:a:0", "-af", f"{prefilter}{resample}loudnorm=print_format=json", "-f", "null", "-"]


def _parse_loudnorm(log: bytes, path: str) -> tuple[Optional[float], Optional[float]]:
    """(LUFS, dBTP) from loudnorm's report; None for what is below -70 (too quiet to measure).
    No report, or one that is not numbers, is RejectError("loudness_failed"): levels are never
    left as they are without a word."""
    match = re.search(rb"\{[^{}]*\"input_i\"[^{}]*\}", log)
    if not match:
        raise RejectError("loudness_failed", f"{path}: ffmpeg loudnorm gave no measurement: {_last_line(log)}")
    try:
        stats = json.loads(match.group(0))
        lufs, peak = float(stats["input_i"]), float(stats["input_tp"])
    except (KeyError, ValueError, TypeError) as e:
        raise RejectError("loudness_failed", f"{path}: unreadable loudnorm measurement ({e})") from None
    if math.isnan(lufs) or math.isnan(peak) or lufs == math.inf or peak == math.inf:
        raise RejectError("loudness_failed", f"{path}: loudnorm measured {lufs} LUFS, {peak} dBTP")
    return (lufs if lufs > -70 else None), (peak if peak > -70 else None)


def measure_loudness(path: str, sample_rate: Optional[int] = None, prefilter: str = "") -> tuple[Optional[float], Optional[float]]:
    """Integrated loudness (LUFS) and true peak (dBTP) of the whole file, streamed; measured
    after resampling to `sample_rate` when given, since dropping the band above its Nyquist
    lowers the loudness of wideband material. `prefilter`: filters applied first (a repair)."""
    proc = _ffmpeg(["-i", path, *_loudness_output(sample_rate, prefilter)])
    if proc.returncode < 0:
        raise TransientError("subprocess_killed", f"ffmpeg (loudness) ended by signal {-proc.returncode}")
    if proc.returncode != 0:
        raise RejectError("audio_decode_failed", f"ffmpeg: {_last_line(proc.stderr)}")
    return _parse_loudnorm(proc.stderr, path)


def _check_samples(path: str, info: dict, channels: int, cfg: StandardizeConfig
                   ) -> tuple[Optional[SampleRepair], Optional[tuple[Optional[float], Optional[float]]]]:
    """NaN/Inf and denormal samples of a float-decoded file, counted in one streamed pass that
    also measures the loudness when it is wanted (one decode, two outputs). Returns what was
    found (None: clean, or a format that cannot hold them) and the measurement if it was made
    and holds (a repaired file is measured again, after its repair)."""
    if str(info.get("sample_fmt") or "flt") not in FLOAT_SAMPLE_FORMATS:
        return None, None  # integer samples: no NaN, Inf or denormal
    measure = cfg.loudness_lufs is not None
    found, log = scan_file_samples(path, channels, _loudness_output(cfg.sample_rate) if measure else ())
    if not found:
        return None, _parse_loudnorm(log, path) if measure else None
    found.check(path)
    return found, None


def _bandwidth(path: str, channels: int, duration_s: float, excerpts: int = 4, excerpt_s: float = 30.0) -> float:
    """Effective bandwidth from a few excerpts at the native rate (no upsampling artefacts)."""
    rate = int(_probe(path)["sample_rate"])
    starts = np.linspace(0, max(0.0, duration_s - excerpt_s), num=excerpts if duration_s > excerpt_s else 1)
    values = []
    for start in starts:
        audio = ffmpeg_decode_f32(["-ss", f"{start:.3f}", "-t", f"{excerpt_s:.3f}", "-i", path], channels)
        audio[~np.isfinite(audio)] = 0.0  # as repaired (a file with too many was rejected before)
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
    repair, measured = _check_samples(path, info, channels, cfg)
    prefilter = repair_filter(channels, info.get("channel_layout")) + "," if repair else ""
    if measured is not None:
        lufs, peak = measured
    elif cfg.loudness_lufs is not None:
        lufs, peak = measure_loudness(path, cfg.sample_rate, prefilter)
    else:
        lufs, peak = None, None
    gain = 0.0
    if cfg.loudness_lufs is not None and lufs is not None:
        gain = min(cfg.loudness_lufs - lufs, cfg.max_gain_db)
        if peak is not None:
            gain = min(gain, -1.0 - peak)  # keep the true peak at or below -1 dBTP
    os.makedirs(workdir, exist_ok=True)
    flac_path = os.path.join(workdir, "standard.flac")
    analysis_path = os.path.join(workdir, "analysis.wav")
    graph = (
        f"[0:a:0]{prefilter}volume={gain:.3f}dB,asplit=2[a][b];"
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
        repair=repair,
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
