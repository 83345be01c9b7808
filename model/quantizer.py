"""Residual vector quantization with EMA codebooks (SoundStream / EnCodec style).

Codebooks get no gradient: each training forward moves them by exponential moving averages of
the cluster sizes and sums of the vectors assigned to them (Laplace-smoothed), initialises them
from random vectors of the first batch, and restarts codes whose EMA usage fell below
`dead_code_threshold` times the uniform share (EMA vectors per step / codebook_size; relative,
so it holds for any batch size or world size — EnCodec's absolute 2 at its batch is ~0.05-0.4)
with random vectors of the current batch. The encoder gets the
straight-through gradient and the commitment loss. When torch.distributed is initialised the
EMA statistics are all-reduced and random draws (init, restarts) come from rank 0, so every
replica holds the same codebooks without relying on DDP's buffer broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.broadcast(t, src=0)
    return t


def _sample_vectors(x: torch.Tensor, n: int) -> torch.Tensor:
    """n random rows of x [M, D] (with replacement only when M < n)."""
    m = x.shape[0]
    if m >= n:
        idx = torch.randperm(m, device=x.device)[:n]
    else:
        idx = torch.randint(0, m, (n,), device=x.device)
    return x[idx]


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-codebook usage fraction (share of entries used at least once) and perplexity
    (exp of the entropy of the code histogram) of codes [B, K, F] → two float tensors [K]."""
    k = codes.shape[1]
    flat = codes.transpose(0, 1).reshape(k, -1)
    counts = torch.zeros(k, codebook_size, device=codes.device, dtype=torch.float32)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    return usage_perplexity(counts)


def usage_perplexity(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Usage fraction and perplexity from code counts [K, N]."""
    usage = (counts > 0).float().mean(dim=1)
    p = counts / counts.sum(dim=1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1)
    return usage, torch.exp(entropy)


class EMACodebook(nn.Module):
    """One codebook [N, D] updated by EMA; no parameters."""

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_threshold: float = 0.1):
        super().__init__()
        self.codebook_size = codebook_size
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        embed = torch.randn(codebook_size, dim)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", embed.clone())

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code indices of x [M, D] → [M]."""
        e = self.embed
        dist_ = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(1)[None, :]
        return dist_.argmin(dim=1)

    def dequantize(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.embed)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Codes = random vectors of x (rank 0's draw in DDP); each starts with the uniform share
        of the batch's (global) vector count."""
        embed = _broadcast(_sample_vectors(x, self.codebook_size).contiguous())
        total = _all_reduce(torch.tensor(float(x.shape[0]), device=x.device))
        share = (total / self.codebook_size).clamp_min(self.eps)
        self.embed.copy_(embed)
        self.cluster_size.copy_(share.expand_as(self.cluster_size))
        self.embed_sum.copy_(embed * share)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, x: torch.Tensor, idx: torch.Tensor) -> int:
        """EMA step with vectors x [M, D] assigned to idx [M]; then restart dead codes.
        Returns how many codes were restarted."""
        onehot = F.one_hot(idx, self.codebook_size).type(x.dtype)
        counts = _all_reduce(onehot.sum(0))
        sums = _all_reduce(onehot.t() @ x)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        return self.restart_dead(x)

    @torch.no_grad()
    def restart_dead(self, x: torch.Tensor) -> int:
        """Replace codes whose EMA count is under `dead_code_threshold` x the uniform share
        (EMA total / codebook_size) by random vectors of x. A restarted code starts exactly at
        the threshold: unused next step, it is drawn again; used, it stays."""
        if self.dead_code_threshold <= 0:
            return 0
        limit = self.dead_code_threshold * self.cluster_size.sum() / self.codebook_size
        dead = self.cluster_size < limit
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        # Same-shape draw on every rank, rank 0's wins: replicas stay identical.
        fresh = _broadcast(_sample_vectors(x, self.codebook_size).contiguous())
        size = limit.clamp_min(self.eps)
        self.embed[dead] = fresh[dead]
        self.embed_sum[dead] = fresh[dead] * size
        self.cluster_size[dead] = size
        return n_dead


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, D, F], straight-through to the input
    codes: torch.Tensor  # [B, K, F] long
    commit_loss: torch.Tensor  # scalar, already times commitment_weight
    stats: dict  # usage [K], perplexity [K], n_restarted int, n_q [B]


class ResidualVectorQuantizer(nn.Module):
    """K EMA codebooks applied to successive residuals of latents [B, dim, F].

    `quantizer_dropout` (0..1) is the share of batch items that, in training, are rebuilt from
    a random number 1..K of codebooks (SoundStream, per item as in DAC) so one model serves
    any bitrate. All codebooks are still computed and updated every step, which keeps DDP's
    all-reduce calls identical on every rank.
    """

    def __init__(self, dim: int, n_codebooks: int = 8, codebook_size: int = 1024,
                 codebook_dim: Optional[int] = None, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_threshold: float = 0.1, commitment_weight: float = 1.0,
                 quantizer_dropout: float = 0.0):
        super().__init__()
        cdim = codebook_dim or dim
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.commitment_weight = commitment_weight
        self.quantizer_dropout = quantizer_dropout
        self.project_in = nn.Conv1d(dim, cdim, 1) if cdim != dim else nn.Identity()
        self.project_out = nn.Conv1d(cdim, dim, 1) if cdim != dim else nn.Identity()
        self.codebooks = nn.ModuleList(
            EMACodebook(cdim, codebook_size, decay, eps, dead_code_threshold) for _ in range(n_codebooks)
        )

    def _n_q(self, batch: int, device: torch.device) -> torch.Tensor:
        n_q = torch.full((batch,), self.n_codebooks, device=device, dtype=torch.long)
        if self.training and self.quantizer_dropout > 0:
            drop = torch.rand(batch, device=device) < self.quantizer_dropout
            rand_n = torch.randint(1, self.n_codebooks + 1, (batch,), device=device)
            n_q = torch.where(drop, rand_n, n_q)
        return n_q

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        # EMA and distances in float32 whatever the autocast context.
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._forward(z.float())

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        x = self.project_in(z)  # [B, C, F]
        b, c, f = x.shape
        n_q = self._n_q(b, x.device)
        residual = x.detach()
        x_flat_grad = x.transpose(1, 2)  # [B, F, C], carries the encoder's gradient
        q_sum = torch.zeros_like(residual)
        q_used = torch.zeros_like(residual)
        codes, losses, weights = [], [], []
        n_restarted = 0
        for k, cb in enumerate(self.codebooks):
            flat = residual.transpose(1, 2).reshape(-1, c)
            if self.training and not bool(cb.initialized):
                cb.init_from(flat)
            idx = cb.quantize(flat)
            q = cb.dequantize(idx).view(b, f, c).transpose(1, 2)
            active = (k < n_q).to(x.dtype)  # [B]
            # Commitment: pull this stage's residual (as a function of the encoder) to its code.
            target = (x_flat_grad - q_sum.transpose(1, 2)) - q.transpose(1, 2)
            per_item = target.pow(2).mean(dim=(1, 2))
            losses.append((per_item * active).sum())
            weights.append(active.sum())
            if self.training:
                n_restarted += cb.update(flat, idx)
            q_sum = q_sum + q
            q_used = q_used + q * active[:, None, None]
            residual = residual - q
            codes.append(idx.view(b, f))
        commit = torch.stack(losses).sum() / torch.stack(weights).sum().clamp_min(1.0)
        quantized = x + (q_used - x).detach()
        codes_t = torch.stack(codes, dim=1)
        usage, perplexity = codebook_stats(codes_t, self.codebook_size)
        stats = {"usage": usage, "perplexity": perplexity, "n_restarted": n_restarted, "n_q": n_q}
        return QuantizerOutput(self.project_out(quantized), codes_t, commit * self.commitment_weight, stats)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, n_q: Optional[int] = None) -> torch.Tensor:
        """Latents [B, dim, F] → codes [B, n_q or K, F] (no EMA update)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self.project_in(z.float())
            b, c, f = x.shape
            residual = x
            codes = []
            for cb in self.codebooks[: n_q or self.n_codebooks]:
                idx = cb.quantize(residual.transpose(1, 2).reshape(-1, c))
                residual = residual - cb.dequantize(idx).view(b, f, c).transpose(1, 2)
                codes.append(idx.view(b, f))
            return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, k<=K, F] → latents [B, dim, F] (sum of the first k codebooks' entries)."""
        if codes.shape[1] > self.n_codebooks:
            raise ValueError(f"{codes.shape[1]} codebooks given, the quantizer has {self.n_codebooks}")
        q = None
        for k in range(codes.shape[1]):
            e = self.codebooks[k].dequantize(codes[:, k])  # [B, F, C]
            q = e if q is None else q + e
        return self.project_out(q.transpose(1, 2))
