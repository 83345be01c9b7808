"""Standardization: loudness, rates, bandwidth, and the streamed path for long files."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from stages.audio.decode import DecodedAudio
from stages.config import StandardizeConfig
from stages.audio.loudness import integrated_loudness
from stages.errors import RejectError
from stages.audio.standardize import standardize
from stages.audio.standardize_stream import measure_loudness, open_analysis_audio, standardize_file

SR = 8000


def _speechlike(seconds: float, sr: int, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    carrier = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t) + 0.1 * rng.standard_normal(t.size)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2  # syllable-rate modulation
    return (level * carrier * envelope).astype(np.float32)


def test_in_memory_standardize_normalizes_each_channel_and_resamples():
    loud, quiet = _speechlike(10, SR, 0.5), _speechlike(10, SR, 0.02, seed=1)
    decoded = DecodedAudio(np.stack([loud, quiet]), SR, "ulaw", "0" * 64)
    std = standardize(decoded, StandardizeConfig(loudness_lufs=-23.0))
    assert std.sample_rate == 24000 and std.native_sample_rate == SR
    assert std.samples.shape == (2, 10 * 24000)
    assert std.bandwidth == "narrowband" and std.effective_bandwidth_hz <= 4000
    levels = [integrated_loudness(std.samples[c], 24000) for c in range(2)]
    assert all(abs(level - -23.0) < 1.0 for level in levels), levels
    assert np.max(np.abs(std.samples)) <= 0.99


def test_loudness_off_keeps_levels_and_silence_is_not_amplified():
    signal = _speechlike(5, SR, 0.2)
    decoded = DecodedAudio(np.stack([signal, np.zeros(5 * SR, np.float32)]), SR, "pcm", "0" * 64)
    kept = standardize(decoded, StandardizeConfig(loudness_lufs=None))
    normalized = standardize(decoded, StandardizeConfig())
    assert np.max(np.abs(normalized.samples[1])) == 0.0
    ratio = np.max(np.abs(kept.samples[0])) / np.max(np.abs(signal))
    assert 0.9 < ratio < 1.1


def _write_long_mp3(path, seconds: int, noise: float = 0.02, bitrate: str = "32k") -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=f=300:d={seconds}:sample_rate=44100",
         "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:a={noise}:sample_rate=44100",
         "-filter_complex", "[0][1]amix=inputs=2,volume=0.3", "-ac", "1", "-b:a", bitrate, str(path)],
        check=True,
    )


def test_streamed_standardize_outputs_and_loudness(tmp_path):
    src = tmp_path / "episode.mp3"
    _write_long_mp3(src, 30, noise=0.5, bitrate="128k")
    out = standardize_file(str(src), StandardizeConfig(loudness_lufs=-20.0), 16000, str(tmp_path / "w"))
    assert out.native_sample_rate == 44100 and out.num_channels == 1 and out.encoding == "mp3"
    assert abs(out.duration_s - 30.0) < 0.1
    assert out.bandwidth == "wideband"
    flac = sf.info(out.flac_path)
    assert flac.samplerate == 24000 and flac.subtype == "PCM_16"
    audio, sr = open_analysis_audio(out.analysis_path)
    assert sr == 16000 and audio.shape[0] == 1 and isinstance(audio, np.memmap)
    measured, peak = measure_loudness(out.flac_path)
    assert abs(measured - (out.loudness_lufs + out.gain_db)) < 1.0  # the gain applied is what we said
    assert peak <= -0.5  # loud input: the gain stopped at the true-peak ceiling, not at clipping

    quiet = tmp_path / "quiet.mp3"
    _write_long_mp3(quiet, 20)
    out = standardize_file(str(quiet), StandardizeConfig(loudness_lufs=-20.0), 16000, str(tmp_path / "q"))
    measured, _ = measure_loudness(out.flac_path)
    assert out.gain_db > 0 and abs(measured - -20.0) < 1.0


def test_streamed_standardize_rejects_bad_files(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    with pytest.raises(RejectError) as e:
        standardize_file(str(empty), StandardizeConfig(), 16000, str(tmp_path / "a"))
    assert e.value.reason == "audio_empty"
    with pytest.raises(RejectError) as e:
        standardize_file(str(text), StandardizeConfig(), 16000, str(tmp_path / "b"))
    assert e.value.reason == "audio_decode_failed"


def test_a_long_episode_is_streamed_not_loaded(tmp_path):
    """An hour of 44.1 kHz audio (decoded: 635 MB of float32): standardizing it keeps the
    process's peak memory far below that (measured in a child, so the figure is its own)."""
    src = tmp_path / "long.flac"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=d=3600:a=0.1:sample_rate=44100:color=pink",
         "-c:a", "flac", "-compression_level", "0", str(src)],
        check=True,
    )
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large pytest
    # process would report the parent's size.
    code = f"""
import re
from stages.config import StandardizeConfig
from stages.audio.standardize_stream import standardize_file, open_analysis_audio
out = standardize_file({str(src)!r}, StandardizeConfig(), 16000, {str(tmp_path / 'w')!r})
audio, sr = open_analysis_audio(out.analysis_path)
hwm_mb = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
print(out.duration_s, hwm_mb, type(audio).__name__, audio.shape[1])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    duration, peak_mb, kind, frames = proc.stdout.split()
    assert abs(float(duration) - 3600) < 1 and int(frames) == 3600 * 16000
    assert kind == "memmap"
    assert int(peak_mb) < 300, f"peak RSS {peak_mb} MB"  # decoded whole it would be 635 MB
