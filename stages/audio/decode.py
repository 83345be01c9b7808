"""Generic audio I/O: decode anything ffmpeg decodes, resample, FLAC in and out, bandwidth.

Samples are float32 arrays shaped (channels, frames) in [-1, 1] throughout.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

from stages.errors import RejectError

PathOrFile = Union[str, os.PathLike, BinaryIO]


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, (channels, frames), [-1, 1]
    sample_rate: int
    encoding: str  # "pcm_s16le", "ulaw", "shorten", "flac", "mp3", ...
    sha256: str  # of the source file's bytes

    @property
    def num_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_frames / float(self.sample_rate) if self.sample_rate else 0.0


def sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def ffmpeg_decode_f32(
    input_args: list[str], channels: int, stdin_bytes: bytes | None = None
) -> np.ndarray:
    """Run ffmpeg with `input_args` (format options and -i ...) and return its first audio
    stream as float32 (channels, frames) at the native rate. Raises audio_decode_failed."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", *input_args,
           "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    if stdin_bytes is not None:
        cmd.remove("-nostdin")
        proc = subprocess.run(cmd, input=stdin_bytes, capture_output=True)
    else:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        raise RejectError("audio_decode_failed", f"ffmpeg: {_last_line(proc.stderr)}")
    data = np.frombuffer(proc.stdout, dtype="<f4")
    usable = (data.size // channels) * channels
    return np.array(data[:usable].reshape(-1, channels).T, dtype=np.float32)  # a writable copy


def _probe(path: str) -> dict:
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_name,sample_rate,channels", "-of", "json", path],
        capture_output=True, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RejectError("audio_decode_failed", f"ffprobe: {_last_line(proc.stderr)}")
    streams = json.loads(proc.stdout or b"{}").get("streams") or []
    if not streams:
        raise RejectError("audio_decode_failed", "ffprobe: no audio stream")
    return streams[0]


_ENCODING_NAMES = {"pcm_mulaw": "ulaw", "pcm_alaw": "alaw"}


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality (soxr HQ) resampling of (channels, frames) float32 audio."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if sr_in == sr_out:
        return x
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 0), dtype=np.float32)
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC bytes of (channels, frames) float audio; same input, same bytes."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    x = np.clip(x, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, x.T, int(sample_rate), format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def read_flac(path_or_fileobj: PathOrFile) -> tuple[np.ndarray, int]:
    """Whole FLAC (or any libsndfile format) as float32 (channels, frames) and its rate."""
    data, sr = sf.read(path_or_fileobj, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(sr)


def read_audio_range(
    path_or_fileobj: PathOrFile, start_s: float, end_s: float
) -> tuple[np.ndarray, int]:
    """Frames [start_s, end_s) clamped to the file, by seeking rather than decoding all."""
    with sf.SoundFile(path_or_fileobj) as f:
        sr, total = int(f.samplerate), int(f.frames)
        start = min(max(int(round(start_s * sr)), 0), total)
        end = min(max(int(round(end_s * sr)), start), total)
        f.seek(start)
        data = f.read(end - start, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), sr


def effective_bandwidth_hz(
    samples: np.ndarray,
    sample_rate: int,
    energy_fraction: float = 0.99,
    max_frames: int = 1500,
) -> float:
    """Frequency below which `energy_fraction` of the spectral energy lies, over frames that
    carry signal (frames more than 50 dB below the loudest are ignored). Channels' power
    spectra are summed, so a quiet or silent channel does not pull the figure down. Long
    inputs are measured on `max_frames` evenly spread ~64 ms frames."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    n_fft = 1 << max(8, int(np.ceil(np.log2(0.064 * sample_rate))))
    hop = n_fft // 2
    if x.shape[1] < n_fft:
        x = np.pad(x, ((0, 0), (0, n_fft - x.shape[1])))
    n_frames = 1 + (x.shape[1] - n_fft) // hop
    starts = hop * np.unique(np.linspace(0, n_frames - 1, min(n_frames, max_frames)).astype(int))
    idx = starts[:, None] + np.arange(n_fft)[None, :]
    window = np.hanning(n_fft).astype(np.float32)
    total = np.zeros(n_fft // 2 + 1)
    for ch in x:
        frames = ch[idx]
        energy = np.sum(frames.astype(np.float64) ** 2, axis=1)
        peak = float(energy.max()) if energy.size else 0.0
        if peak <= 1e-12:
            continue
        active = frames[energy > peak * 1e-5]
        total += (np.abs(np.fft.rfft(active * window, axis=1)) ** 2).sum(axis=0)
    if total.sum() <= 0:
        return 0.0
    cum = np.cumsum(total) / total.sum()
    k = int(np.searchsorted(cum, energy_fraction))
    return float(min(k, len(total) - 1) * sample_rate / n_fft)
