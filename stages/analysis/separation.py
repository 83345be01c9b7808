"""Speech separation: where two people truly talk at once on one track, a model splits the mix into
sources (Sommelier and pseudo-stereo corpora separate overlaps this way). Optional: the offline
default is masking others' speech out of a speaker's clip and flagging the overlap
(stages/corpus/samples.py); a separator only fills the overlapped stretches back in.

A model is found through a local path, never downloaded: a directory holding `separator.json`,

    {"format": "torch_export", "file": "model.pt2", "sample_rate": 8000, "num_sources": 2,
     "layout": "sources_first"}

and the model file it names: a `torch.export` program (`torch.export.save`, frames dimension
dynamic) or a TorchScript module ("format": "torchscript", `torch.jit.save`). The model maps a
(batch, frames) float32 mixture to (batch, sources, frames) ("sources_first", as Asteroid's
ConvTasNet/DPRNN) or (batch, frames, sources) ("sources_last", as SpeechBrain's SepFormer).
"""
from __future__ import annotations

import json
import os
from math import gcd
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from stages.config import StageConfig, resolve_device

SPEC_FILE = "separator.json"


@runtime_checkable
class Separator(Protocol):
    sample_rate: int
    num_sources: int

    def separate(self, mix: np.ndarray) -> np.ndarray:
        """(frames,) float32 at `sample_rate` → (num_sources, frames)."""
        ...


class SeparatorSpec(StageConfig):
    format: Literal["torch_export", "torchscript"] = "torch_export"
    file: str = Field(min_length=1, description="model file, relative to the spec's directory")
    sample_rate: int = Field(ge=8000, le=48000)
    num_sources: int = Field(2, ge=2, le=8)
    layout: Literal["sources_first", "sources_last"] = "sources_first"


class TorchSeparator:
    """A separation model saved with torch.export or TorchScript, loaded once."""

    def __init__(self, spec: SeparatorSpec, model_path: str, device: str = "cpu"):
        import torch

        self._torch = torch
        self.device = resolve_device(device)
        self.sample_rate = spec.sample_rate
        self.num_sources = spec.num_sources
        self.layout = spec.layout
        if spec.format == "torchscript":
            self.model = torch.jit.load(model_path, map_location=self.device).eval()
        else:
            self.model = torch.export.load(model_path).module().to(self.device)

    def separate(self, mix: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))[None].to(self.device)
        with torch.inference_mode():
            y = self.model(x)
        y = y[0]
        if self.layout == "sources_last":
            y = y.transpose(0, 1)
        out = y.float().cpu().numpy()
        if out.ndim != 2 or out.shape[0] != self.num_sources:
            raise ValueError(f"separator returned shape {tuple(out.shape)}, expected ({self.num_sources}, frames)")
        n = mix.shape[-1]
        if out.shape[1] < n:  # models with a hop may drop a few trailing frames
            out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        return out[:, :n].astype(np.float32)


def load_separator(path: str, device: str = "cpu") -> Separator:
    """The separator described by `path` (a directory with separator.json, or that file)."""
    if "://" in path:
        raise ValueError(f"separation model {path!r}: give a local path (nothing is downloaded)")
    spec_path = os.path.join(path, SPEC_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(spec_path):
        raise FileNotFoundError(f"separation model: no {SPEC_FILE} at {path}")
    with open(spec_path, encoding="utf-8") as f:
        spec = SeparatorSpec.model_validate(json.load(f))
    model_path = os.path.join(os.path.dirname(os.path.abspath(spec_path)), spec.file)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"separation model: {spec.file} named by {spec_path} does not exist")
    return TorchSeparator(spec, model_path, device)


def separate_at(separator: Separator, mix: np.ndarray, sr: int) -> np.ndarray:
    """Separate a mixture at any rate: resampled to the model's rate and back, same length."""
    from scipy.signal import resample_poly

    n = mix.shape[-1]
    if sr == separator.sample_rate:
        return separator.separate(mix.astype(np.float32))
    g = gcd(sr, separator.sample_rate)
    up, down = separator.sample_rate // g, sr // g
    sources = separator.separate(resample_poly(mix, up, down).astype(np.float32))
    back = resample_poly(sources, down, up, axis=1)
    if back.shape[1] < n:
        back = np.pad(back, ((0, 0), (0, n - back.shape[1])))
    return back[:, :n].astype(np.float32)
