"""Codec training losses: multi-scale mel/STFT reconstruction, hinge adversarial losses and
feature matching (EnCodec's recipe). Torch only; the mel filterbank is built here.

Generator objective per step (weights to tune in train/ configs; DAC uses mel 15, adv 1, feat 2,
commit 0.25 with its own mel-only recon): recon + 1 * adv + 2 * feat + commit_loss.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_WINDOWS = (64, 128, 256, 512, 1024, 2048)


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=64)
def _mel_fb_cpu(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    pts = _mel_to_hz(torch.linspace(_hz_to_mel(torch.tensor(f_min)), _hz_to_mel(torch.tensor(f_max)), n_mels + 2,
                                    dtype=torch.float64))
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (hi - lo))  # Slaney area normalisation
    return fb.float()  # [n_mels, n_fft // 2 + 1]


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangular HTK-scale mel filters [n_mels, n_fft // 2 + 1] with Slaney area normalisation."""
    fb = _mel_fb_cpu(int(sample_rate), int(n_fft), int(n_mels), float(f_min), float(f_max or sample_rate / 2))
    return fb.to(device)


def default_n_mels(n_fft: int) -> int:
    """Mel bands for a window: few for short windows (no empty filters), at most 80."""
    return int(min(80, max(5, n_fft // 8)))


def stft_magnitude(wav: torch.Tensor, n_fft: int, hop_length: int | None = None) -> torch.Tensor:
    """|STFT| of wav [..., T] (Hann, centred, normalised) → [N, freq, frames] in float32."""
    x = wav.reshape(-1, wav.shape[-1]).float()
    hop = hop_length or n_fft // 4
    if x.shape[-1] <= n_fft // 2:  # reflect padding needs T > n_fft / 2
        x = F.pad(x, (0, n_fft // 2 + 1 - x.shape[-1]))
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop, n_fft, window, center=True, normalized=True, return_complex=True)
    return torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)  # eps: finite gradient at 0


def log_mel(wav: torch.Tensor, sample_rate: int, n_fft: int, n_mels: int | None = None,
            hop_length: int | None = None) -> torch.Tensor:
    mag = stft_magnitude(wav, n_fft, hop_length)
    fb = mel_filterbank(sample_rate, n_fft, n_mels or default_n_mels(n_fft), device=mag.device)
    return torch.log(torch.clamp(fb @ mag, min=1e-5))


def multiscale_mel_stft_loss(pred: torch.Tensor, target: torch.Tensor, sample_rate: int,
                             windows: Sequence[int] = DEFAULT_WINDOWS, mel_weight: float = 1.0,
                             mag_l1_weight: float = 1.0, mag_l2_weight: float = 1.0) -> torch.Tensor:
    """Mean over window sizes of: L1 between log mels + L1 and L2 between linear magnitudes.
    pred/target [B, C, T] (same shape); returns a float32 scalar."""
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    total = pred.new_zeros((), dtype=torch.float32)
    for n_fft in windows:
        mp, mt = stft_magnitude(pred, n_fft), stft_magnitude(target, n_fft)
        fb = mel_filterbank(sample_rate, n_fft, default_n_mels(n_fft), device=mp.device)
        lp, lt = torch.log(torch.clamp(fb @ mp, min=1e-5)), torch.log(torch.clamp(fb @ mt, min=1e-5))
        total = total + mel_weight * F.l1_loss(lp, lt)
        total = total + mag_l1_weight * F.l1_loss(mp, mt) + mag_l2_weight * F.mse_loss(mp, mt)
    return total / len(windows)


def discriminator_hinge_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean_k [ mean relu(1 - D_k(x)) + mean relu(1 + D_k(G(z))) ]; pass fake audio detached."""
    losses = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    return torch.stack(losses).mean()


def generator_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean_k mean relu(1 - D_k(G(z))) (EnCodec's generator adversarial loss)."""
    return torch.stack([F.relu(1 - f).mean() for f in fake_logits]).mean()


def feature_matching_loss(real_fmaps: Sequence[Sequence[torch.Tensor]],
                          fake_fmaps: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Mean over scales and layers of |D(x) - D(G(z))|_1 / mean |D(x)| (real maps detached)."""
    losses = []
    for rs, fs in zip(real_fmaps, fake_fmaps):
        for r, f in zip(rs, fs):
            r = r.detach()
            losses.append(F.l1_loss(f, r) / (r.abs().mean() + 1e-8))
    if not losses:
        raise ValueError("no feature maps given")
    return torch.stack(losses).mean()

