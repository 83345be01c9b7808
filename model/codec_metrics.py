"""Reconstruction metrics for a codec on held-out audio: mel distance, SI-SDR, STOI (pystoi),
wideband PESQ (pesq, at 16 kHz after soxr resampling), and codebook usage/perplexity
accumulated over a whole evaluation set. Audio may be numpy or torch, 1-D or [1, T]/[1, 1, T]."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import soxr
import torch

from model.codec_losses import log_mel
from model.quantizer import usage_perplexity

PESQ_RATE = 16000
MEL_WINDOWS = (512, 1024, 2048)


def _mono(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim > 1:
        if x.size != x.shape[-1]:
            raise ValueError(f"expected mono audio, got shape {x.shape}")
        x = x.reshape(-1)
    return x


def _pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    r, e = _mono(ref), _mono(est)
    n = min(len(r), len(e))  # decoders may return a few padding samples more
    return r[:n], e[:n]


def mel_distance(ref, est, sample_rate: int, windows: Sequence[int] = MEL_WINDOWS) -> float:
    """Mean L1 between log mel spectrograms (80 bands) over several windows; 0 when identical."""
    r, e = _pair(ref, est)
    rt, et = torch.from_numpy(r).float(), torch.from_numpy(e).float()
    d = [float((log_mel(rt, sample_rate, n, 80) - log_mel(et, sample_rate, n, 80)).abs().mean()) for n in windows]
    return float(np.mean(d))


def si_sdr(ref, est, eps: float = 1e-10) -> float:
    """Scale-invariant SDR in dB (means removed)."""
    r, e = _pair(ref, est)
    r, e = r - r.mean(), e - e.mean()
    alpha = np.dot(e, r) / (np.dot(r, r) + eps)
    target = alpha * r
    noise = e - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def stoi(ref, est, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (pystoi; it resamples to 10 kHz itself)."""
    from pystoi import stoi as _stoi

    r, e = _pair(ref, est)
    return float(_stoi(r, e, sample_rate, extended=extended))


def pesq_wb(ref, est, sample_rate: int) -> tuple[Optional[float], Optional[str]]:
    """Wideband PESQ (ITU-T P.862.2) at 16 kHz → (score, None), or (None, reason) when PESQ
    refuses the input (silence: pesq_no_utterances, under ~0.25 s: pesq_too_short, ...)."""
    import pesq as _pesq

    r, e = _pair(ref, est)
    if not np.any(r):
        return None, "pesq_no_utterances"  # the library would divide by a zero peak first
    if sample_rate != PESQ_RATE:
        r = soxr.resample(r, sample_rate, PESQ_RATE, quality="HQ")
        e = soxr.resample(e, sample_rate, PESQ_RATE, quality="HQ")
    try:
        score = _pesq.pesq(PESQ_RATE, r.astype(np.float32), e.astype(np.float32), "wb",
                           on_error=_pesq.PesqError.RAISE_EXCEPTION)
    except _pesq.NoUtterancesError:
        return None, "pesq_no_utterances"
    except _pesq.BufferTooShortError:
        return None, "pesq_too_short"
    except Exception as ex:  # the C library's other refusals
        return None, f"pesq_error: {type(ex).__name__}: {ex}"
    return float(score), None


def reconstruction_metrics(ref, est, sample_rate: int, with_pesq: bool = True,
                           with_stoi: bool = True) -> dict:
    """All metrics for one (reference, reconstruction) pair; PESQ/STOI failures give None plus
    a `pesq_error` reason."""
    out: dict = {"mel_distance": mel_distance(ref, est, sample_rate), "si_sdr": si_sdr(ref, est)}
    if with_stoi:
        out["stoi"] = stoi(ref, est, sample_rate)
    if with_pesq:
        out["pesq"], reason = pesq_wb(ref, est, sample_rate)
        if reason:
            out["pesq_error"] = reason
    return out


class MetricAverager:
    """Mean of each metric over many items, skipping None values (counted per metric)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.missing: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def update(self, metrics: dict) -> None:
        for k, v in metrics.items():
            if k.endswith("_error"):
                self.errors[v.split(":")[0]] = self.errors.get(v.split(":")[0], 0) + 1
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                self.missing[k] = self.missing.get(k, 0) + 1
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1

    def summary(self) -> dict:
        out: dict = {k: self.sums[k] / self.counts[k] for k in self.sums}
        out.update({f"{k}_missing": n for k, n in self.missing.items()})
        if self.errors:
            out["errors"] = dict(self.errors)
        return out


class CodebookUsage:
    """Code histograms per codebook accumulated over an evaluation set."""

    def __init__(self, n_codebooks: int, codebook_size: int):
        self.counts = torch.zeros(n_codebooks, codebook_size, dtype=torch.float64)

    def update(self, codes: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        """codes [B, K, F]; mask [B, F] bool (True = real frame) excludes padding."""
        codes = codes.detach().long().cpu()
        k = codes.shape[1]
        if k > self.counts.shape[0]:
            raise ValueError(f"codes have {k} codebooks, accumulator has {self.counts.shape[0]}")
        weights = torch.ones(codes.shape[0], codes.shape[2], dtype=torch.float64)
        if mask is not None:
            weights = mask.detach().cpu().to(torch.float64)
        w = weights[:, None, :].expand(-1, k, -1).transpose(0, 1).reshape(k, -1)
        self.counts[:k].scatter_add_(1, codes.transpose(0, 1).reshape(k, -1), w)

    def all_reduce(self) -> None:
        """Sum the histograms over DDP ranks (no-op without torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = self.counts.cuda() if dist.get_backend() == "nccl" else self.counts.clone()
            dist.all_reduce(t)
            self.counts = t.cpu()

    def summary(self) -> dict:
        """usage (fraction of entries ever used) and perplexity per codebook, plus their means."""
        usage, ppl = usage_perplexity(self.counts)
        return {"usage": usage.tolist(), "perplexity": ppl.tolist(),
                "usage_mean": float(usage.mean()), "perplexity_mean": float(ppl.mean()),
                "frames": int(self.counts[0].sum())}
