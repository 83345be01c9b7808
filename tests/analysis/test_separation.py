"""The separation interface with a real TorchScript model the test builds and loads from disk."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stages.analysis.separation import Separator, load_separator, separate_at
from tests.fixtures.tiny_separator import build_tiny_separator

SR = 24000


def _tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _power_at(x: np.ndarray, freq: float, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x)) / max(1, x.size)
    k = int(round(freq * x.size / sr))
    return float(spec[max(0, k - 2): k + 3].max())


@pytest.mark.parametrize("fmt", ["torch_export", "torchscript"])
def test_loads_a_local_model_and_separates_two_sources(tmp_path, fmt):
    sep = load_separator(build_tiny_separator(str(tmp_path / "sep"), fmt=fmt))
    assert isinstance(sep, Separator) and (sep.sample_rate, sep.num_sources) == (8000, 2)
    mix = _tone(440, 1.0) + _tone(1000, 1.0)
    out = separate_at(sep, mix, SR)  # resampled to the model's 8 kHz and back
    assert out.shape == (2, mix.size) and out.dtype == np.float32
    low, high = out
    assert _power_at(low, 440) > 0.1 and _power_at(low, 1000) < 0.01 * _power_at(low, 440)
    assert _power_at(high, 1000) > 0.1 and _power_at(high, 440) < 0.01 * _power_at(high, 1000)
    # At the model's own rate no resampling happens.
    assert sep.separate(_tone(440, 0.5, 8000)).shape == (2, 4000)
    assert sep.separate(_tone(440, 0.3331, 8000)).shape == (2, 2664)  # any length


def test_bad_model_paths(tmp_path):
    with pytest.raises(ValueError, match="local path"):
        load_separator("hf://someone/sepformer")
    with pytest.raises(FileNotFoundError):
        load_separator(str(tmp_path / "missing"))
    d = tmp_path / "spec_only"
    d.mkdir()
    (d / "separator.json").write_text(json.dumps({"file": "absent.pt", "sample_rate": 8000}))
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_separator(str(d))
    (d / "separator.json").write_text(json.dumps({"file": "absent.pt", "sample_rate": 8000, "format": "keras"}))
    with pytest.raises(ValueError):
        load_separator(str(d))
