"""EBU R128 loudness normalization (ITU-R BS.1770 integrated loudness via pyloudnorm)."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pyloudnorm

from stages.errors import RejectError


def integrated_loudness(channel: np.ndarray, sample_rate: int) -> Optional[float]:
    """LUFS of one channel, or None when it is too short or too quiet to measure (below the
    absolute gate). A measurement that fails (an error, NaN) raises RejectError("loudness_failed"):
    passing it for silence would skip normalization without a word."""
    if channel.size < int(0.4 * sample_rate):
        return None
    try:
        lufs = pyloudnorm.Meter(sample_rate).integrated_loudness(channel.astype(np.float64, copy=False))
    except (ValueError, ArithmeticError) as e:
        raise RejectError("loudness_failed", f"{type(e).__name__}: {e}") from None
    if math.isnan(lufs) or lufs == math.inf:
        raise RejectError("loudness_failed", f"integrated loudness measured as {lufs}")
    if lufs == -math.inf:
        # Every block under the -70 LUFS gate: silence, unless the samples are not numbers
        # (a NaN gates every block out too).
        if not np.isfinite(channel).all():
            raise RejectError("loudness_failed", "integrated loudness -inf over non-finite samples")
        return None
    return float(lufs)


def gain_db_for(measured: Optional[float], target: float, max_gain_db: float) -> float:
    if measured is None:
        return 0.0
    return float(min(target - measured, max_gain_db))


def normalize_channels(samples: np.ndarray, sample_rate: int, target: float, max_gain_db: float) -> tuple[np.ndarray, list[Optional[float]]]:
    """Each channel to the target loudness (each LDC side is its own talker), then one common
    scale so that no channel clips. Returns the new samples and each channel's measured LUFS."""
    out = np.empty_like(samples, dtype=np.float32)
    measured = []
    for c in range(samples.shape[0]):
        lufs = integrated_loudness(samples[c], sample_rate)
        measured.append(lufs)
        out[c] = samples[c] * np.float32(10 ** (gain_db_for(lufs, target, max_gain_db) / 20))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out *= np.float32(0.99 / peak)
    return out, measured
