"""Conformer encoder and the attention pieces the S2S decoder shares.

Block (Gulati et al. 2020, pre-norm): x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm.
- Attention: rotary position embedding (RoPE) on queries/keys, which makes attention scores
  depend on relative offsets only; `F.scaled_dot_product_attention` (flash / memory-efficient
  kernels on GPU, plain math on CPU).
- Conv module: pointwise -> GLU -> depthwise conv -> LayerNorm -> SiLU -> pointwise. LayerNorm
  instead of the paper's BatchNorm: batch statistics would mix padded frames and other samples
  into a sample's output. Padded frames are zeroed before the depthwise conv so that they never
  leak into real neighbours.
Masks are bool, True = real frame.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

Rope = tuple[Tensor, Tensor]


class RotaryEmbedding(nn.Module):
    # No buffers (computed per call, it is tiny): nothing to re-initialize after meta-device
    # (FSDP) construction.
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError("rotary embedding needs an even head dimension")
        self.head_dim, self.base = head_dim, base

    def forward(self, positions: Tensor) -> Rope:
        """positions [T] -> (cos, sin), each [T, head_dim / 2] in float32."""
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=positions.device) / self.head_dim
        inv_freq = 1.0 / (self.base ** exponent)
        freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
        return freqs.cos(), freqs.sin()


def apply_rotary(x: Tensor, rope: Rope) -> Tensor:
    """Rotate x [B, H, T, head_dim] (half-split layout); computed in float32 for bf16 safety."""
    cos, sin = rope
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class KVCache:
    """Keys/values of one self-attention layer for incremental decoding, one step at a time."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: Optional[Tensor] = None
        self.v: Optional[Tensor] = None
        self.pos = 0

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        T = k.shape[2]
        if self.k is None:
            B, H, _, D = k.shape
            self.k = k.new_zeros(B, H, self.max_len, D)
            self.v = v.new_zeros(B, H, self.max_len, D)
        if self.pos + T > self.max_len:
            raise ValueError(f"KV cache full ({self.max_len} positions)")
        self.k[:, :, self.pos:self.pos + T] = k
        self.v[:, :, self.pos:self.pos + T] = v
        self.pos += T
        return self.k[:, :, :self.pos], self.v[:, :, :self.pos]


def _heads(x: Tensor, n_heads: int) -> Tensor:
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)


def _merge(y: Tensor) -> Tensor:
    B, H, T, Dh = y.shape
    return y.transpose(1, 2).reshape(B, T, H * Dh)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, rope: Optional[Rope] = None, key_mask: Optional[Tensor] = None,
                causal: bool = False, cache: Optional[KVCache] = None) -> Tensor:
        """x [B, T, D]; key_mask [B, T] (True = attend); causal and key_mask are exclusive
        (causal attention over right-padded sequences needs no mask for its real queries).
        With a cache, x is the next step(s) and attends to everything cached before it."""
        q, k, v = (_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        if rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        if cache is not None:
            if x.shape[1] != 1:
                raise ValueError("the KV cache decodes one step at a time")
            k, v = cache.update(k, v)
            causal = False
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge(y))


class CrossAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys/values of the encoder output, computed once per utterance when generating."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return _heads(k, self.n_heads), _heads(v, self.n_heads)

    def forward(self, x: Tensor, memory_mask: Tensor, memory: Optional[Tensor] = None,
                kv: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
        k, v = kv if kv is not None else self.memory_kv(memory)
        q = _heads(self.q(x), self.n_heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge(y))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(d_model, mult * d_model)
        self.down = nn.Linear(mult * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.down(self.drop(F.silu(self.up(x)))))


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"conv kernel must be odd (centred), got {kernel}")
        self.pw_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pw_out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        x = F.glu(self.pw_in(x), dim=-1)
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.drop(self.pw_out(F.silu(self.norm(x))))
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        return x


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ff_mult: int = 4, conv_kernel: int = 31,
                 dropout: float = 0.0):
        super().__init__()
        self.ff1_norm, self.ff1 = nn.LayerNorm(d_model), FeedForward(d_model, ff_mult, dropout)
        self.attn_norm, self.attn = nn.LayerNorm(d_model), SelfAttention(d_model, n_heads, dropout)
        self.conv_norm, self.conv = nn.LayerNorm(d_model), ConvModule(d_model, conv_kernel, dropout)
        self.ff2_norm, self.ff2 = nn.LayerNorm(d_model), FeedForward(d_model, ff_mult, dropout)
        self.out_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, rope: Optional[Rope], mask: Optional[Tensor]) -> Tensor:
        x = x + 0.5 * self.ff1(self.ff1_norm(x))
        x = x + self.drop(self.attn(self.attn_norm(x), rope=rope, key_mask=mask))
        x = x + self.conv(self.conv_norm(x), mask)
        x = x + 0.5 * self.ff2(self.ff2_norm(x))
        return self.out_norm(x)


class ConformerEncoder(nn.Module):
    """A stack of Conformer blocks over [B, T, D] with a padding mask [B, T]."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, ff_mult: int = 4,
                 conv_kernel: int = 31, dropout: float = 0.0, rope_base: float = 10000.0,
                 grad_checkpoint: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(ConformerBlock(d_model, n_heads, ff_mult, conv_kernel, dropout)
                                    for _ in range(n_layers))
        self.rope = RotaryEmbedding(d_model // n_heads, rope_base)
        self.grad_checkpoint = grad_checkpoint

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        rope = self.rope(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            if self.grad_checkpoint and self.training:
                x = checkpoint(block, x, rope, mask, use_reentrant=False)
            else:
                x = block(x, rope, mask)
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        return x
