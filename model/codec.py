"""A streaming-capable convolutional audio codec: SEANet encoder/decoder around an EMA residual
vector quantizer (the EnCodec / SoundStream recipe, without the LSTM).

Causal mode pads convolutions on the left only and trims transposed convolutions on the right,
so frame i of the codes depends on samples < (i + 1) * hop and decoded sample t on codes of
frames <= t // hop: the same network can run chunk by chunk. Weight norm is optional. There is
no normalisation over time (it would leak the future).

Presets (parameter counts: encoder + decoder + quantizer projections; codebooks are buffers):
  tiny    hop 120 (200 Hz), 8 x 64 codes, 24.4 k params; for CPU tests.
  50hz    hop 480 (50 Hz), 8 x 1024 codes (4 kbps), 25.1 M params (= CodecConfig() defaults
          but for quantizer_dropout). 12.5 M encoder, 12.5 M decoder.
  12.5hz  hop 1920 (12.5 Hz), 8 x 2048 codes (1.1 kbps), latent 512 quantized in 256-d, 62.6 M
          params (the fifth stride stage runs at 1024 channels).
          Mimi-like in rate and code shape only: Mimi adds 8-layer transformers in encoder and
          decoder, trains 32 codebooks (Moshi uses 8), and distills WavLM into codebook 0 so
          it carries semantics. None of that is here; expect lower quality per bit.
"""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from model.quantizer import ResidualVectorQuantizer

CHECKPOINT_NAME = "codec.pt"  # a single exported codec (a token corpus keeps its codec under this name)
LATEST_EXPORT = "codec.json"  # in a training run: {"path": <the latest export>, "sha256", "id", "step"}


@dataclass
class CodecConfig:
    sample_rate: int = 24000
    channels: int = 1
    base_channels: int = 32
    max_channels: int = 1024
    strides: tuple[int, ...] = (3, 4, 5, 8)  # encoder order; product = hop
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    residual_layers: int = 1  # residual units per stage, dilations dilation_base**j
    dilation_base: int = 2
    compress: int = 2  # residual unit hidden = channels // compress
    latent_dim: int = 128
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_dim: Optional[int] = None  # None = latent_dim; else 1x1 projections around the RVQ
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    # A code is restarted when its EMA count falls under this fraction of the uniform share
    # (vectors per step over all DDP ranks / codebook_size); 0 disables restarts.
    dead_code_threshold: float = 0.1
    commitment_weight: float = 1.0
    quantizer_dropout: float = 0.0  # share of items trained with a random 1..K codebooks
    causal: bool = True
    weight_norm: bool = True

    def __post_init__(self) -> None:
        self.strides = tuple(int(s) for s in self.strides)
        if not self.strides or any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be positive, got {self.strides}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown codec config keys: {sorted(unknown)}")
        return cls(**d)


CODEC_PRESETS: dict[str, CodecConfig] = {
    "tiny": CodecConfig(base_channels=4, max_channels=32, strides=(4, 5, 6), latent_dim=16,
                        n_codebooks=8, codebook_size=64, residual_layers=1),
    "50hz": CodecConfig(base_channels=64, strides=(3, 4, 5, 8), latent_dim=256, residual_layers=1,
                        quantizer_dropout=0.5),
    "12.5hz": CodecConfig(base_channels=64, strides=(2, 4, 5, 6, 8), latent_dim=512, codebook_dim=256,
                          codebook_size=2048, residual_layers=1, quantizer_dropout=0.5),
}


def codec_config(preset: str, **overrides) -> CodecConfig:
    """A copy of a preset with fields overridden (e.g. n_codebooks=4)."""
    if preset not in CODEC_PRESETS:
        raise KeyError(f"unknown codec preset {preset!r}; choose from {sorted(CODEC_PRESETS)}")
    return replace(CODEC_PRESETS[preset], **overrides)


def _wn(module: nn.Module, enabled: bool) -> nn.Module:
    return weight_norm(module) if enabled else module


class SConv1d(nn.Module):
    """Conv1d padded so that output length = ceil(T / stride): all padding on the left when
    causal, split when not."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 causal: bool = True, norm: bool = True):
        super().__init__()
        self.conv = _wn(nn.Conv1d(cin, cout, kernel, stride, dilation=dilation), norm)
        self.causal = causal
        self.stride = stride
        self.pad = (kernel - 1) * dilation - (stride - 1)
        self.k_eff = (kernel - 1) * dilation + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        n_frames = -(-(length - self.k_eff + self.pad) // self.stride) + 1
        # Extra right zeros so the last (partial) window is computed, as EnCodec does.
        extra = (n_frames - 1) * self.stride + (self.k_eff - self.pad) - length
        if self.causal:
            left, right = self.pad, extra
        else:
            right = self.pad // 2
            left = self.pad - right
            right += extra
        return self.conv(nn.functional.pad(x, (left, right)))


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d with output length T * stride: the overhang is trimmed on the right
    when causal (so no output depends on a later input), split when not."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, causal: bool = True,
                 norm: bool = True):
        super().__init__()
        self.conv = _wn(nn.ConvTranspose1d(cin, cout, kernel, stride), norm)
        self.causal = causal
        self.trim = kernel - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.causal:
            left, right = 0, self.trim
        else:
            right = self.trim // 2
            left = self.trim - right
        return y[..., left : y.shape[-1] - right]


class ResidualUnit(nn.Module):
    def __init__(self, ch: int, kernel: int, dilation: int, compress: int, causal: bool, norm: bool):
        super().__init__()
        hidden = max(1, ch // compress)
        self.block = nn.Sequential(
            nn.ELU(), SConv1d(ch, hidden, kernel, dilation=dilation, causal=causal, norm=norm),
            nn.ELU(), SConv1d(hidden, ch, 1, causal=causal, norm=norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _channels(cfg: CodecConfig, stage: int) -> int:
    return min(cfg.base_channels * 2**stage, cfg.max_channels)


def _residuals(cfg: CodecConfig, ch: int) -> list[nn.Module]:
    return [ResidualUnit(ch, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress, cfg.causal,
                         cfg.weight_norm) for j in range(cfg.residual_layers)]


class SEANetEncoder(nn.Module):
    """wav [B, C, T] → latents [B, latent_dim, ceil(T / hop)]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c, n = cfg.causal, cfg.weight_norm
        layers: list[nn.Module] = [SConv1d(cfg.channels, _channels(cfg, 0), cfg.kernel_size, causal=c, norm=n)]
        for i, s in enumerate(cfg.strides):
            ch = _channels(cfg, i)
            layers += _residuals(cfg, ch)
            layers += [nn.ELU(), SConv1d(ch, _channels(cfg, i + 1), 2 * s, stride=s, causal=c, norm=n)]
        layers += [nn.ELU(), SConv1d(_channels(cfg, len(cfg.strides)), cfg.latent_dim, cfg.last_kernel_size,
                                     causal=c, norm=n)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """latents [B, latent_dim, F] → wav [B, C, F * hop]."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c, n = cfg.causal, cfg.weight_norm
        top = len(cfg.strides)
        layers: list[nn.Module] = [SConv1d(cfg.latent_dim, _channels(cfg, top), cfg.kernel_size, causal=c, norm=n)]
        for i in reversed(range(top)):
            s = cfg.strides[i]
            ch = _channels(cfg, i)
            layers += [nn.ELU(), SConvTranspose1d(_channels(cfg, i + 1), ch, 2 * s, s, causal=c, norm=n)]
            layers += _residuals(cfg, ch)
        layers += [nn.ELU(), SConv1d(_channels(cfg, 0), cfg.channels, cfg.last_kernel_size, causal=c, norm=n)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


@dataclass
class CodecOutput:
    audio: torch.Tensor  # [B, C, T] reconstruction, trimmed to the input length
    codes: torch.Tensor  # [B, K, F] long
    commit_loss: torch.Tensor  # scalar
    quantizer_stats: dict = field(default_factory=dict)  # usage [K], perplexity [K], n_restarted, n_q


class Codec(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.quantizer = ResidualVectorQuantizer(
            cfg.latent_dim, cfg.n_codebooks, cfg.codebook_size, cfg.codebook_dim, cfg.ema_decay,
            cfg.ema_eps, cfg.dead_code_threshold, cfg.commitment_weight, cfg.quantizer_dropout,
        )
        self.decoder = SEANetDecoder(cfg)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    def num_frames(self, num_samples: int) -> int:
        return -(-int(num_samples) // self.hop_length)

    def _check(self, wav: torch.Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != self.cfg.channels:
            raise ValueError(f"expected wav [B, {self.cfg.channels}, T], got {tuple(wav.shape)}")

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Encode, quantize (EMA updates in training mode) and decode wav [B, C, T]."""
        self._check(wav)
        q = self.quantizer(self.encoder(wav))
        audio = self.decoder(q.quantized.to(wav.dtype))
        return CodecOutput(audio[..., : wav.shape[-1]], q.codes, q.commit_loss, q.stats)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, n_q: Optional[int] = None) -> torch.Tensor:
        """wav [B, C, T] → codes LongTensor [B, n_q or K, num_frames(T)]."""
        self._check(wav)
        return self.quantizer.encode(self.encoder(wav), n_q)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, k<=K, F] → wav [B, C, F * hop]."""
        if codes.dim() != 3:
            raise ValueError(f"expected codes [B, K, F], got {tuple(codes.shape)}")
        return self.decoder(self.quantizer.decode(codes.long()))

    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["strides"] = list(d["strides"])
        return d

    def checkpoint(self) -> dict:
        return {"config": self.config_dict(), "model": self.state_dict()}

    def save(self, path: str) -> None:
        """Write {"config", "model"} to a local path or fsspec URL (atomically for local paths)."""
        import fsspec

        buf = io.BytesIO()
        torch.save(self.checkpoint(), buf)
        if "://" not in path:
            import os

            tmp = f"{path}.tmp"
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
            os.replace(tmp, path)
            return
        with fsspec.open(path, "wb") as f:
            f.write(buf.getvalue())


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resolve_checkpoint(path_or_dir: str) -> str:
    """The codec file a path names: a file as it is; a training run folder's latest export
    (``codec.json`` points at ``exports/codec-step-N.pt``, a file never rewritten); else a
    folder's ``codec.pt``. Raises FileNotFoundError when there is none."""
    import json

    import fsspec

    fs, path = fsspec.core.url_to_fs(str(path_or_dir))
    if fs.isdir(path):
        base = path.rstrip("/")
        pointer = f"{base}/{LATEST_EXPORT}"
        if fs.exists(pointer):
            with fs.open(pointer, "rb") as f:
                path = f"{base}/{json.load(f)['path']}"
        else:
            path = f"{base}/{CHECKPOINT_NAME}"
    if not fs.exists(path):
        raise FileNotFoundError(f"codec checkpoint not found: {path_or_dir} (looked for {path})")
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def load_codec(path_or_dir: str, map_location: str | torch.device = "cpu") -> Codec:
    """A Codec in eval mode from a checkpoint file, or a folder (``resolve_checkpoint``), local
    or fsspec URL. Raises FileNotFoundError when missing, ValueError when not a codec checkpoint."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(resolve_checkpoint(path_or_dir))
    with fs.open(path, "rb") as f:
        raw = f.read()
    try:
        ckpt = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a torch file, pickled objects...
        raise ValueError(f"corrupt codec checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not a codec checkpoint (needs 'config' and 'model' keys)")
    codec = Codec(CodecConfig.from_dict(dict(ckpt["config"])))
    try:
        codec.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"codec checkpoint {path} does not match its config: {e}") from e
    return codec.to(map_location).eval()
