"""EnCodec's multi-scale STFT discriminator: one 2D conv net per STFT resolution, reading the
complex spectrogram as real/imag channels laid out [B, 2C, time, freq]."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _pad2d(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTDiscriminator(nn.Module):
    def __init__(self, filters: int, n_fft: int, hop_length: int, win_length: int, channels: int = 1,
                 max_filters: int = 1024, dilations: Sequence[int] = (1, 2, 4), norm: bool = True):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        wn = weight_norm if norm else (lambda m: m)
        k, k2 = (3, 9), (3, 3)
        convs = [wn(nn.Conv2d(2 * channels, filters, k, padding=_pad2d(k)))]
        cin = min(filters, max_filters)
        for i, d in enumerate(dilations):
            cout = min(filters * 2 ** (i + 1), max_filters)
            convs.append(wn(nn.Conv2d(cin, cout, k, stride=(1, 2), dilation=(d, 1), padding=_pad2d(k, (d, 1)))))
            cin = cout
        cout = min(filters * 2 ** (len(dilations) + 1), max_filters)
        convs.append(wn(nn.Conv2d(cin, cout, k2, padding=_pad2d(k2))))
        self.convs = nn.ModuleList(convs)
        self.conv_post = wn(nn.Conv2d(cout, 1, k2, padding=_pad2d(k2)))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = wav.shape
        x = wav.reshape(b * c, t).float()
        if t < self.n_fft:
            x = nn.functional.pad(x, (0, self.n_fft - t))
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=False,
                          normalized=True, return_complex=True)  # [B*C, freq, time]
        spec = torch.view_as_real(spec).reshape(b, c, spec.shape[-2], spec.shape[-1], 2)
        z = spec.permute(0, 1, 4, 3, 2).reshape(b, 2 * c, spec.shape[3], spec.shape[2])  # [B, 2C, time, freq]
        fmaps = []
        for conv in self.convs:
            z = self.act(conv(z))
            fmaps.append(z)
        return self.conv_post(z), fmaps


class MultiScaleSTFTDiscriminator(nn.Module):
    """forward(wav [B, C, T]) → (logits per scale, feature maps per scale)."""

    def __init__(self, filters: int = 32, n_ffts: Sequence[int] = (1024, 2048, 512),
                 hop_lengths: Sequence[int] | None = None, win_lengths: Sequence[int] | None = None,
                 channels: int = 1, max_filters: int = 1024, norm: bool = True):
        super().__init__()
        hops = hop_lengths or [n // 4 for n in n_ffts]
        wins = win_lengths or list(n_ffts)
        if not len(n_ffts) == len(hops) == len(wins):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(filters, n, h, w, channels, max_filters, norm=norm) for n, h, w in zip(n_ffts, hops, wins)
        )

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, fmaps = [], []
        for d in self.discriminators:
            lg, fm = d(wav)
            logits.append(lg)
            fmaps.append(fm)
        return logits, fmaps
