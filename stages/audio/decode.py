"""Generic audio I/O: decode anything ffmpeg decodes, resample, FLAC in and out, bandwidth.

Samples are float32 arrays shaped (channels, frames) in [-1, 1] throughout.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Sequence, Union

import numpy as np
import soundfile as sf
import soxr

from stages.errors import RejectError, TransientError

PathOrFile = Union[str, os.PathLike, BinaryIO]


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, (channels, frames), [-1, 1]
    sample_rate: int
    encoding: str  # "pcm_s16le", "ulaw", "shorten", "flac", "mp3", ...
    sha256: str  # of the source file's bytes
    repair: "SampleRepair | None" = None  # NaN/Inf/denormal samples found (and zeroed) at decoding

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
    if proc.returncode < 0:  # killed (out of memory, a timeout): the machine's doing, not the file's
        raise TransientError("subprocess_killed", f"ffmpeg ended by signal {-proc.returncode}: {_last_line(proc.stderr)}")
    if proc.returncode != 0:
        raise RejectError("audio_decode_failed", f"ffmpeg: {_last_line(proc.stderr)}")
    data = np.frombuffer(proc.stdout, dtype="<f4")
    usable = (data.size // channels) * channels
    return np.array(data[:usable].reshape(-1, channels).T, dtype=np.float32)  # a writable copy


def _probe(path: str) -> dict:
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_name,sample_rate,channels,sample_fmt,channel_layout", "-of", "json", path],
        capture_output=True, stdin=subprocess.DEVNULL,
    )
    if proc.returncode < 0:
        raise TransientError("subprocess_killed", f"ffprobe ended by signal {-proc.returncode}: {_last_line(proc.stderr)}")
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


# --- sample sanity ---------------------------------------------------------------------------

# NaN/Inf samples up to this share of all samples are repaired (set to 0) and the share
# recorded; more and the recording is rejected `audio_invalid_samples`. Denormals (nonzero
# magnitudes under float32's smallest normal, 1.2e-38: inaudible, slow to compute with) are
# always flushed to 0 and counted, never a reject.
MAX_INVALID_SHARE = 0.001
_EXP = np.uint32(0x7F800000)
_MANT = np.uint32(0x007FFFFF)
FLOAT_SAMPLE_FORMATS = ("flt", "fltp", "dbl", "dblp")  # ffprobe sample_fmt of decoders that can carry NaN
_BLOCK = 1 << 20


@dataclass
class SampleRepair:
    total: int  # samples looked at (frames x channels)
    invalid: int  # NaN or +-Inf, set to 0
    denormal: int  # flushed to 0

    @property
    def invalid_share(self) -> float:
        return self.invalid / self.total if self.total else 0.0

    def __bool__(self) -> bool:
        return bool(self.invalid or self.denormal)

    def add(self, other: "SampleRepair | None") -> "SampleRepair":
        if other is None:
            return self
        return SampleRepair(self.total, self.invalid + other.invalid, self.denormal + other.denormal)

    def metadata(self) -> dict:
        """What goes into the recording's metadata when anything was repaired."""
        return {"invalid_samples": self.invalid, "invalid_sample_share": round(self.invalid_share, 9),
                "denormal_samples": self.denormal} if self else {}

    def check(self, what: str) -> None:
        """RejectError("audio_invalid_samples") when too many samples were NaN/Inf to repair."""
        if self.invalid_share > MAX_INVALID_SHARE:
            raise RejectError("audio_invalid_samples", f"{what}: {self.invalid} of {self.total} samples are NaN or "
                              f"infinite ({self.invalid_share:.3%}; at most {MAX_INVALID_SHARE:.1%} are repaired)")


def _count_block(bits: np.ndarray) -> tuple[int, int]:
    exp = bits & _EXP
    invalid = int(np.count_nonzero(exp == _EXP))
    denormal = int(np.count_nonzero((exp == 0) & ((bits & _MANT) != 0)))
    return invalid, denormal


def _rows(samples: np.ndarray) -> np.ndarray:
    return samples.reshape(1, -1) if samples.ndim == 1 else samples


def count_bad_samples(samples: np.ndarray) -> SampleRepair:
    """NaN/Inf and denormal float32 samples, counted on the bit patterns block by block (no
    array-sized temporaries)."""
    x = np.asarray(samples)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    invalid = denormal = 0
    for row in _rows(x):
        bits = row.view(np.uint32)
        for i in range(0, bits.size, _BLOCK):
            n_inv, n_den = _count_block(bits[i:i + _BLOCK])
            invalid, denormal = invalid + n_inv, denormal + n_den
    return SampleRepair(int(x.size), invalid, denormal)


def repair_samples(samples: np.ndarray, what: str) -> "SampleRepair | None":
    """Zero NaN/Inf and denormal samples of a float32 array in place; raises
    RejectError("audio_invalid_samples") when the NaN/Inf share is above MAX_INVALID_SHARE.
    Returns what was found (None when the audio was clean)."""
    if samples.dtype != np.float32 or not samples.flags.writeable:
        raise ValueError("repair_samples needs a writable float32 array")
    found = count_bad_samples(samples)
    if not found:
        return None
    found.check(what)
    for row in _rows(samples):
        bits = row.view(np.uint32)
        for i in range(0, bits.size, _BLOCK):
            block = bits[i:i + _BLOCK]
            exp = block & _EXP
            row[i:i + _BLOCK][(exp == _EXP) | ((exp == 0) & ((block & _MANT) != 0))] = 0.0
    return found


def scan_file_samples(path: str, channels: int, also: Sequence[str] = ()) -> tuple[SampleRepair, bytes]:
    """count_bad_samples of a whole file, streamed through ffmpeg at its native rate (Python
    holds one block at a time). `also`: another ffmpeg output fed by the same decode (a
    loudness measurement); its log (ffmpeg's stderr, at info level then) is returned."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "info" if also else "error", "-nostats", "-i", path,
           *also, "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    frame = 4 * max(1, channels)
    total = invalid = denormal = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        rest = b""
        try:
            while True:
                chunk = proc.stdout.read(_BLOCK * 4)
                if not chunk:
                    break
                data = rest + chunk if rest else chunk
                usable = len(data) - len(data) % frame
                rest = data[usable:]
                bits = np.frombuffer(data, dtype="<u4", count=usable // 4)
                n_inv, n_den = _count_block(bits)
                total, invalid, denormal = total + bits.size, invalid + n_inv, denormal + n_den
        finally:
            proc.stdout.close()
            code = proc.wait()
        err.seek(0)
        log = err.read()
    if code < 0:
        raise TransientError("subprocess_killed", f"ffmpeg (reading samples) ended by signal {-code}: {_last_line(log)}")
    if code != 0:
        raise RejectError("audio_decode_failed", f"ffmpeg: {_last_line(log)}")
    return SampleRepair(total, invalid, denormal), log


def repair_filter(channels: int, layout: str | None = None) -> str:
    """An ffmpeg filter setting NaN/Inf and denormal samples to 0 (what repair_samples does),
    for the streamed path; exact for every other sample. The channel layout is named (the
    stream's, else a default): aeval passing on an unknown one stops the filter graph."""
    expr = "if(isnan(val({c}))+isinf(val({c}))+lt(abs(val({c})),1.1754944e-38),0,val({c}))"
    if not layout or layout == "unknown":
        layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    return "aeval=exprs='" + "|".join(expr.format(c=c) for c in range(channels)) + f"':c={layout}"
