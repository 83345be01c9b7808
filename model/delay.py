"""MusicGen-style delay pattern over K codebooks.

Codebook k is shifted right by k steps, so one decoder step predicts codebook 0 of frame t,
codebook 1 of frame t-1, ... codebook K-1 of frame t-K+1: the finer codebooks of a frame are
predicted after (conditioned on) its coarser ones without a second, per-frame model.

    codes   [B, K, T]  ->  delayed [B, K, T + K - 1],  delayed[:, k, k + t] = codes[:, k, t]

Positions no code lands on (k steps at the start of codebook k, K-1-k at its end) hold `fill`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def apply_delay(codes: Tensor, fill: int) -> Tensor:
    """[B, K, T] -> [B, K, T + K - 1]; codebook k starts at step k, the rest is `fill`."""
    B, K, T = codes.shape
    out = codes.new_full((B, K, T + K - 1), fill)
    for k in range(K):
        out[:, k, k:k + T] = codes[:, k]
    return out


def revert_delay(delayed: Tensor) -> Tensor:
    """[B, K, S] -> [B, K, S - K + 1]: the inverse of :func:`apply_delay`."""
    B, K, S = delayed.shape
    T = S - K + 1
    if T < 0:
        raise ValueError(f"delayed length {S} is shorter than the {K - 1} delay steps")
    return torch.stack([delayed[:, k, k:k + T] for k in range(K)], dim=1)


def delay_mask(mask: Tensor, n_codebooks: int) -> Tensor:
    """Frame mask [B, T] (True = real frame) -> [B, K, T + K - 1], True where a delayed
    position holds a real code (False on delay filler and on padding)."""
    return apply_delay(mask[:, None, :].expand(-1, n_codebooks, -1), False)


# Short names matching the brief (apply / revert).
apply = apply_delay
revert = revert_delay
