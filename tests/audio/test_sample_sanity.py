"""NaN/Inf and denormal samples, through the real decode paths: float32 WAVs written by
soundfile, decoded by ffmpeg in memory (decode_file → standardize, what sources' read_audio
feed) and streamed (standardize_file, what local and podcast recordings go through)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from stages.audio.decode import MAX_INVALID_SHARE, count_bad_samples, read_flac
from stages.audio.load import decode_file
from stages.audio.loudness import integrated_loudness, normalize_channels
from stages.audio.standardize import standardize
from stages.audio.standardize_stream import _parse_loudnorm, measure_loudness, standardize_file
from stages.config import StandardizeConfig
from stages.errors import RejectError

SR = 16000
BAD = [4000, 12000, 20000, 33333]  # sample positions of the bad values


def _speechlike(seconds: float = 4.0, channels: int = 1) -> np.ndarray:
    """A steady tone at about -20 dBFS RMS (loud enough to measure, quiet enough to need gain)."""
    t = np.arange(int(seconds * SR)) / SR
    x = 0.1 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.stack([x] * channels).astype(np.float32)


def _write(path, samples: np.ndarray) -> str:
    sf.write(str(path), samples.T, SR, subtype="FLOAT")
    return str(path)


def _few_bad(channels: int = 1) -> np.ndarray:
    x = _speechlike(channels=channels)
    x[0, BAD[0]], x[0, BAD[1]], x[-1, BAD[2]], x[-1, BAD[3]] = np.nan, np.inf, -np.inf, np.nan
    return x


def test_the_fixture_really_holds_nan_and_inf(tmp_path):
    data, _ = sf.read(_write(tmp_path / "bad.wav", _few_bad()), dtype="float32", always_2d=True)
    assert np.isnan(data).sum() == 2 and np.isinf(data).sum() == 2


def test_decode_repairs_a_few_bad_samples_before_clipping(tmp_path):
    x = _few_bad(channels=2)
    decoded = decode_file(_write(tmp_path / "bad.wav", x))
    assert np.isfinite(decoded.samples).all()
    assert decoded.samples[0, BAD[1]] == 0.0 and decoded.samples[1, BAD[2]] == 0.0  # not +-1: no full-scale click
    assert float(np.max(np.abs(decoded.samples))) <= 0.11
    r = decoded.repair
    assert r is not None and (r.invalid, r.denormal, r.total) == (4, 0, x.size)
    assert r.metadata() == {"invalid_samples": 4, "invalid_sample_share": round(4 / x.size, 9), "denormal_samples": 0}
    # standardize keeps the repair for the recording's metadata and normalizes the loudness
    std = standardize(decoded, StandardizeConfig(sample_rate=24000, loudness_lufs=-23.0))
    assert std.repair is not None and std.repair.invalid == 4
    assert np.isfinite(std.samples).all() and float(np.max(np.abs(std.samples))) < 0.99
    for channel in std.samples:
        assert integrated_loudness(channel, 24000) == pytest.approx(-23.0, abs=0.5)


def test_decode_rejects_many_bad_samples(tmp_path):
    x = _speechlike()
    bad = np.random.default_rng(0).choice(x.shape[1], size=int(x.shape[1] * MAX_INVALID_SHARE * 5), replace=False)
    x[0, bad] = np.nan
    with pytest.raises(RejectError) as e:
        decode_file(_write(tmp_path / "nan.wav", x))
    assert e.value.reason == "audio_invalid_samples" and "NaN or infinite" in e.value.detail


def test_denormals_are_flushed_and_counted_never_rejected(tmp_path):
    x = _speechlike()
    x[0, :SR] = 1e-40  # a whole second of denormals: 25 % of the file
    decoded = decode_file(_write(tmp_path / "den.wav", x))
    assert decoded.repair.denormal == SR and decoded.repair.invalid == 0
    assert count_bad_samples(decoded.samples).denormal == 0 and not decoded.samples[0, :SR].any()


def test_standardize_checks_audio_from_any_source():
    from stages.audio.decode import DecodedAudio

    x = _few_bad()
    std = standardize(DecodedAudio(x, SR, "tts", "0" * 64), StandardizeConfig(sample_rate=16000))
    assert np.isfinite(std.samples).all() and std.repair.invalid == 4
    assert np.isnan(x).sum() == 2  # the caller's array is left as it was
    many = _speechlike()
    many[0, ::100] = np.inf
    with pytest.raises(RejectError) as e:
        standardize(DecodedAudio(many, SR, "tts", "0" * 64), StandardizeConfig())
    assert e.value.reason == "audio_invalid_samples"


def test_streamed_path_repairs_a_few_bad_samples(tmp_path):
    src = _write(tmp_path / "bad.wav", _few_bad())
    cfg = StandardizeConfig(sample_rate=24000, loudness_lufs=-23.0)
    out = standardize_file(src, cfg, 16000, str(tmp_path / "w"))
    assert out.repair is not None and out.repair.invalid == 4
    assert out.loudness_lufs is not None and out.gain_db > 3  # measured and normalized, not skipped
    assert out.effective_bandwidth_hz > 100
    flac, sr = read_flac(out.flac_path)
    assert sr == 24000 and float(np.max(np.abs(flac))) < 0.95  # no full-scale click where the Inf was
    assert integrated_loudness(flac[0], sr) == pytest.approx(-23.0, abs=0.7)
    analysis, _ = sf.read(out.analysis_path, dtype="float32")
    assert np.isfinite(analysis).all() and float(np.max(np.abs(analysis))) < 0.95
    # what a clean copy of the same audio gives, sample for sample: the repair is just zeros
    clean = _few_bad()
    clean[~np.isfinite(clean)] = 0.0
    ref = standardize_file(_write(tmp_path / "clean.wav", clean), cfg, 16000, str(tmp_path / "c"))
    assert ref.repair is None and ref.gain_db == out.gain_db
    np.testing.assert_array_equal(read_flac(ref.flac_path)[0], flac)
    # and so does what VAD, diarization and ASR read: they see the speech, not a poisoned window
    np.testing.assert_array_equal(sf.read(ref.analysis_path, dtype="float32")[0], analysis)


def test_streamed_path_rejects_many_bad_samples(tmp_path):
    x = _speechlike()
    x[0, ::200] = np.nan  # 0.5 %
    with pytest.raises(RejectError) as e:
        standardize_file(_write(tmp_path / "nan.wav", x), StandardizeConfig(), 16000, str(tmp_path / "w"))
    assert e.value.reason == "audio_invalid_samples"
    # also with loudness normalization off (the samples are counted in a pass of their own then)
    with pytest.raises(RejectError) as e:
        standardize_file(str(tmp_path / "nan.wav"), StandardizeConfig(loudness_lufs=None), 16000, str(tmp_path / "v"))
    assert e.value.reason == "audio_invalid_samples"


def test_streamed_path_is_unchanged_for_clean_and_integer_files(tmp_path):
    x = _speechlike()
    sf.write(str(tmp_path / "int.wav"), x.T, SR, subtype="PCM_16")
    out = standardize_file(str(tmp_path / "int.wav"), StandardizeConfig(), 16000, str(tmp_path / "w"))
    assert out.repair is None and out.loudness_lufs is not None
    assert measure_loudness(str(tmp_path / "int.wav"), 24000)[0] == out.loudness_lufs


def test_loudness_that_fails_is_a_reason_not_silence():
    x = _few_bad()
    with pytest.raises(RejectError) as e:
        normalize_channels(x, SR, -23.0, 30.0)
    assert e.value.reason == "loudness_failed"
    # silence and too-short audio are not failures: their levels are kept
    silent, measured = normalize_channels(np.zeros((1, SR * 2), np.float32), SR, -23.0, 30.0)
    assert measured == [None] and not silent.any()
    assert integrated_loudness(np.ones(100, np.float32), SR) is None


def test_loudnorm_without_a_measurement_is_loudness_failed(tmp_path):
    src = _write(tmp_path / "tone.wav", _speechlike())
    # a real ffmpeg log with no loudnorm report in it
    log = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", src, "-f", "null", "-"], capture_output=True).stderr
    with pytest.raises(RejectError) as e:
        _parse_loudnorm(log, src)
    assert e.value.reason == "loudness_failed"
    with pytest.raises(RejectError) as e:
        _parse_loudnorm(b'{\n"input_i" : "nan",\n"input_tp" : "-3.0"\n}', src)
    assert e.value.reason == "loudness_failed"
    assert _parse_loudnorm(b'{\n"input_i" : "-inf",\n"input_tp" : "-inf"\n}', src) == (None, None)  # silence
