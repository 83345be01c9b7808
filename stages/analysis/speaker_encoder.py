"""resemblyzer's speaker encoder (GE2E LSTM, 256-d unit embeddings), rebuilt here and loaded from
the weights file the package ships rather than imported: `import resemblyzer` pulls in webrtcvad,
whose module imports `pkg_resources`, which current setuptools no longer provides. Network,
features and weights are resemblyzer's (tests/analysis/test_diarize.py checks the features against
librosa, and the embeddings against resemblyzer's VoiceEncoder where it imports).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import numpy as np

SAMPLE_RATE = 16000

# resemblyzer's hyper-parameters (resemblyzer/hparams.py)
MEL_N_FFT = 400  # 25 ms
MEL_HOP = 160  # 10 ms
MEL_CHANNELS = 40
HIDDEN = 256
LAYERS = 3
EMBED = 256
TARGET_DBFS = -30.0  # resemblyzer normalizes utterances to this level before embedding

FRAME_S = MEL_HOP / SAMPLE_RATE


def resemblyzer_weights() -> str:
    """Path of the pretrained.pt that the resemblyzer package ships (without importing it)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the offline diarizer needs the resemblyzer package (pip install resemblyzer)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "pretrained.pt")
    if not os.path.exists(path):
        raise RuntimeError(f"resemblyzer's pretrained weights are missing: {path}")
    return path


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder: 40-channel mel frames → LSTM(3×256) → ReLU(linear) → L2 norm."""

    def __init__(self, device: str = "cpu", weights: Optional[str] = None, threads: int = 1):
        import torch

        self.torch = torch
        self.threads = threads
        self.device = torch.device(device)
        self.lstm = torch.nn.LSTM(MEL_CHANNELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = torch.nn.Linear(HIDDEN, EMBED)
        state = torch.load(weights or resemblyzer_weights(), map_location="cpu", weights_only=False)["model_state"]
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        for m in (self.lstm, self.linear):
            m.to(self.device).eval()

    @staticmethod
    def mel(wav: np.ndarray) -> np.ndarray:
        """(frames, 40) mel power spectrogram exactly as resemblyzer computes it through librosa
        (centred, zero-padded frames, periodic Hann window, Slaney mel filters; not log), in
        numpy: librosa's first call costs seconds of just-in-time compilation."""
        x = np.pad(np.asarray(wav, dtype=np.float32), (MEL_N_FFT // 2, MEL_N_FFT // 2))
        n = 1 + max(0, len(x) - MEL_N_FFT) // MEL_HOP
        frames = np.lib.stride_tricks.sliding_window_view(x, MEL_N_FFT)[:: MEL_HOP][:n]
        spec = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
        return (spec @ _mel_filters().T).astype(np.float32)

    def embed_mels(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) → (batch, 256) unit embeddings."""
        torch = self.torch
        saved = torch.get_num_threads()
        if self.threads > 0:
            # Process-wide setting, so restored after: a small LSTM gains nothing from more
            # threads, and oversubscribed OpenMP threads run it ten times slower.
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)).to(self.device)
                _, (hidden, _) = self.lstm(x)
                e = torch.relu(self.linear(hidden[-1]))
                e = e / torch.clamp(torch.norm(e, dim=1, keepdim=True), min=1e-8)
                return e.cpu().numpy()
        finally:
            torch.set_num_threads(saved)

    def embed(self, mels: list[np.ndarray], batch: int = 64) -> np.ndarray:
        """One embedding per (frames, 40) mel excerpt; excerpts of equal length run batched."""
        out = np.zeros((len(mels), EMBED), dtype=np.float32)
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(len(m), []).append(i)
        for idx in by_len.values():
            for j in range(0, len(idx), batch):
                part = idx[j : j + batch]
                out[part] = self.embed_mels(np.stack([mels[i] for i in part]))
        return out


_CACHE: dict[str, np.ndarray] = {}


def _hann() -> np.ndarray:
    if "hann" not in _CACHE:
        _CACHE["hann"] = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_N_FFT) / MEL_N_FFT)).astype(np.float32)
    return _CACHE["hann"]


def _mel_filters() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney scale, Slaney area norm."""
    if "mel" not in _CACHE:
        f_sp, min_log_hz = 200.0 / 3, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

        def hz_to_mel(f: float) -> float:
            return f / f_sp if f < min_log_hz else min_log_mel + np.log(f / min_log_hz) / logstep

        m = np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), MEL_CHANNELS + 2)
        hz = np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)
        fft_hz = np.fft.rfftfreq(MEL_N_FFT, 1 / SAMPLE_RATE)
        ramps = hz[:, None] - fft_hz[None, :]
        fdiff = np.diff(hz)[:, None]
        w = np.maximum(0, np.minimum(-ramps[:-2] / fdiff[:-1], ramps[2:] / fdiff[1:]))
        w *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
        _CACHE["mel"] = w.astype(np.float32)
    return _CACHE["mel"]




def level_gain(mono: np.ndarray, regions: list[tuple[int, int]]) -> float:
    """The gain that puts the speech (10 ms frame `regions`) at resemblyzer's -30 dBFS: its mel
    features are not log, so the level matters. Read region by region (a memory map stays on
    disk)."""
    total, count = 0.0, 0
    for a, b in regions:
        x = np.nan_to_num(np.asarray(mono[a * MEL_HOP: b * MEL_HOP], dtype=np.float64))
        total += float(np.sum(x**2))
        count += len(x)
    rms = float(np.sqrt(total / count)) if count else 0.0
    return 1.0 if rms <= 1e-6 else float(10 ** (TARGET_DBFS / 20) / rms)
