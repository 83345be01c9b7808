"""Generic audio: ffmpeg decoding of common formats, FLAC in/out, resampling, bandwidth."""
from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stages.audio.load import decode_file
from stages.audio.decode import (
    effective_bandwidth_hz,
    encode_flac,
    read_audio_range,
    read_flac,
    resample,
    sha256_file,
)
from stages.errors import RejectError


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * sr / x.size)


def reason(fn, *args) -> str:
    with pytest.raises(RejectError) as info:
        fn(*args)
    return info.value.reason


@pytest.mark.parametrize("ext,codec,encoding", [("wav", "pcm_s16le", "pcm_s16le"),
                                                 ("flac", "flac", "flac"),
                                                 ("mp3", "libmp3lame", "mp3"),
                                                 ("ogg", "libvorbis", "vorbis")])
def test_decode_file_common_formats(tmp_path: Path, ext: str, codec: str, encoding: str):
    path = tmp_path / f"sine.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=16000:duration=1", "-ac", "2",
                    "-c:a", codec, str(path)], check=True)
    d = decode_file(str(path))
    assert d.sample_rate == 16000 and d.num_channels == 2 and d.encoding == encoding
    assert d.samples.dtype == np.float32 and np.abs(d.samples).max() <= 1.0
    assert d.duration_s == pytest.approx(1.0, abs=0.06)  # lossy codecs pad a little
    assert abs(dominant_hz(d.samples[0], 16000) - 440) < 3
    assert 0.05 < np.abs(d.samples).max() < 0.2  # ffmpeg's sine source is 1/8 full scale
    assert d.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(str(path))


def test_decode_file_bad_inputs(tmp_path: Path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 100)
    with pytest.raises(RejectError) as info:
        decode_file(str(text))
    assert info.value.reason == "audio_decode_failed" and info.value.detail  # ffmpeg's words
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert reason(decode_file, str(empty)) == "audio_empty"
    assert reason(decode_file, str(tmp_path / "missing.flac")) == "audio_not_found"


def test_decode_file_zero_frames(tmp_path: Path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 8000, subtype="PCM_16")
    assert path.stat().st_size > 0
    assert reason(decode_file, str(path)) == "audio_empty"


def test_encode_flac_is_deterministic_and_lossless_to_16_bit():
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1.2, 1.2, (2, 24000))).astype(np.float32)
    a, b = encode_flac(x, 24000), encode_flac(x.copy(), 24000)
    assert a == b and a[:4] == b"fLaC"
    y, sr = read_flac(io.BytesIO(a))
    assert sr == 24000 and y.shape == (2, 24000) and y.dtype == np.float32
    clipped = np.clip(x, -1, 1)
    assert np.abs(y - clipped).max() <= 1.0 / 32768 + 1e-7
    assert y.max() == pytest.approx(32767 / 32768) and y.min() == -1.0


def test_read_audio_range(tmp_path: Path):
    sr = 16000
    ramp = (np.arange(3 * sr) % 20000 - 10000).astype(np.float32) / 32768
    x = np.stack([ramp, -ramp])
    path = tmp_path / "r.flac"
    path.write_bytes(encode_flac(x, sr))
    y, got_sr = read_audio_range(str(path), 1.0, 1.5)
    assert got_sr == sr and y.shape == (2, sr // 2)
    assert np.allclose(y, x[:, sr: sr + sr // 2], atol=1 / 32768)
    whole, _ = read_audio_range(io.BytesIO(path.read_bytes()), -2.0, 99.0)  # clamped
    assert whole.shape == (2, 3 * sr)
    tail, _ = read_audio_range(str(path), 2.9, 10.0)
    assert tail.shape == (2, int(0.1 * sr))
    past, _ = read_audio_range(str(path), 5.0, 6.0)
    assert past.shape == (2, 0)


def test_resample_length_and_frequency():
    t = np.arange(8000) / 8000
    x = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 300 * t)]).astype(np.float32)
    y = resample(x, 8000, 24000)
    assert y.shape == (2, 24000) and y.dtype == np.float32
    assert abs(dominant_hz(y[0], 24000) - 1000) < 2 and abs(dominant_hz(y[1], 24000) - 300) < 2
    assert np.abs(y[0, 1000:-1000]).max() == pytest.approx(1.0, abs=0.01)
    down = resample(y, 24000, 16000)
    assert down.shape == (2, 16000) and abs(dominant_hz(down[0], 16000) - 1000) < 2
    assert resample(x, 8000, 8000) is not None and np.array_equal(resample(x, 8000, 8000), x)


def speechlike_noise(sr: int, seconds: float, seed: int) -> np.ndarray:
    """Noise with a falling spectrum, syllable-rate bursts and real pauses."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    white = rng.normal(0, 1, n)
    spec = np.fft.rfft(white) / np.sqrt(1 + np.fft.rfftfreq(n, 1 / sr) / 500.0)
    noise = np.fft.irfft(spec, n)
    t = np.arange(n) / sr
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.25 * t) > 0)
    return (0.3 * noise / np.abs(noise).max() * envelope).astype(np.float32)


def test_effective_bandwidth_narrowband_vs_wideband():
    narrow = resample(speechlike_noise(8000, 4.0, 1)[None, :], 8000, 24000)
    bw_narrow = effective_bandwidth_hz(narrow, 24000)
    assert 2000 < bw_narrow < 4500
    rng = np.random.default_rng(2)
    white = (0.3 * rng.normal(0, 1, (2, 24000 * 2))).astype(np.float32)
    white[:, : 24000] = 0  # silence is ignored, not counted as low-frequency content
    white[1] = 0  # a silent channel does not drag the figure down
    assert effective_bandwidth_hz(white, 24000) > 10000
    assert effective_bandwidth_hz(np.zeros((1, 24000), np.float32), 24000) == 0.0
