"""Offline diarization from models that packages carry: Silero VAD (faster-whisper) for speech,
resemblyzer's speaker encoder for voice embeddings, clustering for the speaker count.

1. Speech regions (given, or Silero VAD on the mix), cut into pieces at pauses of at least
   `split_pause_s` (VAD regions bridge the short gaps of quick turn-taking).
2. Windows of `window_s` every `hop_s` inside each piece (a shorter piece is one window).
3. One embedding per window: resemblyzer's pretrained LSTM encoder on the window's mel frames.
4. Agglomerative clustering (average linkage, cosine distance) of the windows of at least
   `cluster_window_s`, cut at `distance_threshold`; clusters of fewer than
   `min_cluster_windows` join their nearest neighbour; the count is bounded by
   min/max_speakers; a few k-means steps refine the centroids, and every window (short ones
   too) takes its nearest centroid.
5. Every 10 ms frame of speech takes the label its covering windows vote for (weighted towards
   window centres), a majority filter of `median_s` removes flicker, and runs become turns.

No overlapped-speech detection: each instant of speech gets exactly one speaker, so turns from
this backend never overlap (the pyannote backend is overlap-aware). Speaker changes are placed
to within about half a window. Voices closer than the threshold merge: on espeak-ng voices
the cosine distance between two speakers' windows is 0.2-0.55 and within one speaker about
0.16, so similar voices (two low male voices) can come out as one speaker.

resemblyzer's network is rebuilt here and loaded from the weights file the package ships, rather
than imported: `import resemblyzer` pulls in webrtcvad, whose module imports `pkg_resources`,
which current setuptools no longer provides. Network, features and weights are resemblyzer's
(tests/test_diarize.py checks the features against librosa, and the embeddings against
resemblyzer's VoiceEncoder where it imports).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import numpy as np

from stages.config import DiarizeConfig, VadConfig
from stages.diarize import SAMPLE_RATE, SpeakerTurn, mono_16k, resolve_device, sort_turns
from stages.vad import SpeechSegment

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


class OfflineDiarizer:
    """Diarizer backend "offline". Load once, call per recording."""

    def __init__(
        self,
        cfg: DiarizeConfig,
        vad_cfg: Optional[VadConfig] = None,
        *,
        window_s: float = 1.5,
        hop_s: float = 0.75,
        min_window_s: float = 0.4,
        distance_threshold: float = 0.35,
        median_s: float = 0.3,
        cluster_window_s: float = 1.0,
        min_cluster_windows: int = 3,
        split_pause_s: float = 0.08,
        max_cluster_windows: int = 4000,
        threads: int = 1,
    ):
        self.cfg = cfg
        self.vad_cfg = vad_cfg or VadConfig()
        self.window_s = window_s
        self.hop_s = hop_s
        self.min_window_s = min_window_s
        self.distance_threshold = distance_threshold
        self.median_s = median_s
        self.cluster_window_s = cluster_window_s
        self.min_cluster_windows = int(min_cluster_windows)
        self.split_pause_s = split_pause_s
        self.max_cluster_windows = max_cluster_windows
        self.encoder = SpeakerEncoder(resolve_device(cfg.device), threads=threads)
        self._vad = None

    def vad(self):
        if self._vad is None:
            from stages.vad import SileroVAD

            self._vad = SileroVAD(self.vad_cfg)
        return self._vad

    def __call__(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None
    ) -> list[SpeakerTurn]:
        mono = mono_16k(audio, sample_rate)
        if speech is None:
            speech = self.vad()(mono, SAMPLE_RATE)
        # Regions on the 10 ms frame grid of the mel features.
        total = len(mono) // MEL_HOP
        regions = [(max(0, int(s.start_s / FRAME_S)), min(total, int(np.ceil(s.end_s / FRAME_S)))) for s in speech]
        regions = [(a, b) for a, b in regions if b - a >= 5]
        if not regions:
            return []
        pieces = self._split_at_pauses(mono, regions)
        mono = _normalize(mono, regions)
        windows: list[tuple[int, int]] = []  # (start, end) frames
        mels: list[np.ndarray] = []
        for a, b in pieces:
            mel = self.encoder.mel(mono[a * MEL_HOP : b * MEL_HOP])[: b - a]
            for s, e in self._windows(b - a):
                windows.append((a + s, a + e))
                mels.append(mel[s:e])
        if not windows:
            return []
        labels = self._cluster(self.encoder.embed(mels), np.array([len(m) for m in mels]))
        return self._turns(regions, windows, labels)

    def _split_at_pauses(self, mono: np.ndarray, regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Cut speech regions at pauses of `split_pause_s` or more (Silero's probability below
        its off threshold), so that fewer windows straddle a change of speaker: VAD regions
        bridge the short gaps of quick turn-taking. The pauses still get a speaker (the nearest
        piece's) when turns are made."""
        if self.split_pause_s <= 0:
            return regions
        probs = self.vad().frame_probabilities(mono)
        per_frame = np.interp(
            np.arange(len(mono) // MEL_HOP) * FRAME_S, (np.arange(len(probs)) + 0.5) * 512 / SAMPLE_RATE, probs
        )
        quiet = per_frame < max(self.vad_cfg.threshold - 0.15, 0.01)
        min_run = int(round(self.split_pause_s / FRAME_S))
        out: list[tuple[int, int]] = []
        for a, b in regions:
            start = a
            q = quiet[a:b]
            edges = np.diff(np.concatenate([[0], q.astype(np.int8), [0]]))
            for qs, qe in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]):
                if qe - qs >= min_run and qs > 0 and qe < b - a:
                    out.append((start, a + qs))
                    start = a + qe
            out.append((start, b))
        return [(x, y) for x, y in out if y > x]

    def _windows(self, n: int) -> list[tuple[int, int]]:
        """Windows (frame offsets) over a region of n frames."""
        win = int(round(self.window_s / FRAME_S))
        hop = int(round(self.hop_s / FRAME_S))
        if n <= win:
            return [(0, n)] if n >= int(round(self.min_window_s / FRAME_S)) else []
        starts = list(range(0, n - win + 1, hop))
        if starts[-1] + win < n:
            starts.append(n - win)  # the region's tail gets a window of its own
        return [(s, s + win) for s in starts]

    def _cluster(self, emb: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Speaker label per window, 0..k-1 numbered by first appearance.

        Only windows of at least `cluster_window_s` shape the clusters (a 0.4 s "yeah" gives a
        noisy embedding that would found a speaker of its own); clusters of fewer than
        `min_cluster_windows` windows join their nearest neighbour; then every window, short
        ones included, takes the nearest centroid."""
        n = len(emb)
        reliable = lengths >= int(round(self.cluster_window_s / FRAME_S))
        if reliable.sum() < 2:
            reliable = np.ones(n, dtype=bool)
        x = emb[reliable]
        if len(x) > self.max_cluster_windows:
            # Average linkage needs all pairwise distances (n² memory): long episodes cluster an
            # evenly spaced sample of their windows, and every window then joins a centroid.
            x = x[np.linspace(0, len(x) - 1, self.max_cluster_windows).round().astype(int)]
        lo = min(self.cfg.min_speakers or 1, len(x))
        hi = min(self.cfg.max_speakers or len(x), len(x))
        if len(x) == 1:
            return np.zeros(n, dtype=int)
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import pdist

        z = linkage(pdist(x, metric="cosine"), method="average")
        labels = fcluster(z, t=self.distance_threshold, criterion="distance") - 1
        labels = _merge_small(x, labels, self.min_cluster_windows, lo)
        k = int(labels.max()) + 1
        if k < lo or k > hi:
            labels = fcluster(z, t=min(max(k, lo), hi), criterion="maxclust") - 1
        cent = _centroids(x, _refine(x, labels))
        labels = np.argmax(emb @ cent.T, axis=1)
        order: dict[int, int] = {}
        for lab in labels.tolist():
            order.setdefault(lab, len(order))
        return np.array([order[lab] for lab in labels.tolist()])

    def _turns(
        self, regions: list[tuple[int, int]], windows: list[tuple[int, int]], labels: np.ndarray
    ) -> list[SpeakerTurn]:
        k = int(labels.max()) + 1
        votes = np.zeros((max(b for _, b in regions), k), dtype=np.float32)
        for (a, b), lab in zip(windows, labels.tolist()):
            # Triangular weight: a window speaks most surely for its centre.
            votes[a:b, lab] += 1.0 - 0.9 * np.abs(np.linspace(-1.0, 1.0, b - a))
        centres = np.array([(a + b) / 2 for a, b in windows])
        med = max(1, int(round(self.median_s / FRAME_S))) | 1
        turns: list[SpeakerTurn] = []
        for a, b in regions:
            v = votes[a:b]
            if not v.any():
                # A region too short for a window of its own: the nearest window's speaker.
                seq = np.full(b - a, labels[int(np.argmin(np.abs(centres - (a + b) / 2)))])
            else:
                seq = _median_labels(_fill_unvoted(v), med, k)
            turns.extend(_runs(seq, a))
        return sort_turns(_merge(turns))


def _normalize(mono: np.ndarray, regions: list[tuple[int, int]]) -> np.ndarray:
    """Scale so the speech is at resemblyzer's -30 dBFS (its mel features are not log)."""
    speech = np.concatenate([mono[a * MEL_HOP : b * MEL_HOP] for a, b in regions]).astype(np.float64)
    rms = float(np.sqrt(np.mean(speech**2))) if len(speech) else 0.0
    if rms <= 1e-6:
        return mono
    return (mono * (10 ** (TARGET_DBFS / 20) / rms)).astype(np.float32)


def _centroids(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    cent = np.stack([emb[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)])
    return cent / (np.linalg.norm(cent, axis=1, keepdims=True) + 1e-8)


def _merge_small(emb: np.ndarray, labels: np.ndarray, min_size: int, min_k: int) -> np.ndarray:
    """Fold clusters smaller than `min_size` into the nearest other cluster, smallest first,
    while more than `min_k` clusters remain. Labels come back as 0..k-1."""
    labels = labels.copy()
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if len(ids) <= max(1, min_k) or counts.min() >= min_size:
            break
        small = ids[np.argmin(counts)]
        cent = {c: emb[labels == c].mean(axis=0) for c in ids}
        others = [c for c in ids if c != small]
        sims = [float(cent[small] @ cent[c] / (np.linalg.norm(cent[small]) * np.linalg.norm(cent[c]) + 1e-8)) for c in others]
        labels[labels == small] = others[int(np.argmax(sims))]
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def _refine(emb: np.ndarray, labels: np.ndarray, iters: int = 5) -> np.ndarray:
    """Reassign each window to the most similar cluster centroid (a few k-means steps on the
    sphere); clusters never vanish, so the speaker count stays."""
    labels = labels.copy()
    k = int(labels.max()) + 1
    if k == 1:
        return labels
    for _ in range(iters):
        new = np.argmax(emb @ _centroids(emb, labels).T, axis=1)
        if len(set(new.tolist())) < k or np.array_equal(new, labels):
            break
        labels = new
    return labels


def _fill_unvoted(v: np.ndarray) -> np.ndarray:
    """argmax per frame; frames no window covers take the nearest voted frame's label."""
    lab = np.argmax(v, axis=1)
    voted = v.sum(axis=1) > 0
    if voted.all():
        return lab
    idx = np.nonzero(voted)[0]
    pos = np.searchsorted(idx, np.arange(len(v)))
    left = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    right = idx[np.clip(pos, 0, len(idx) - 1)]
    near = np.where(np.abs(np.arange(len(v)) - left) <= np.abs(right - np.arange(len(v))), left, right)
    return lab[near]


def _median_labels(lab: np.ndarray, width: int, k: int) -> np.ndarray:
    """Majority label in a sliding window (a median filter for categorical labels)."""
    if len(lab) <= 2 or k == 1:
        return lab
    onehot = np.eye(k, dtype=np.float32)[lab]
    kernel = np.ones(width, dtype=np.float32)
    counts = np.stack([np.convolve(onehot[:, c], kernel, mode="same") for c in range(k)], axis=1)
    return np.argmax(counts, axis=1)


def _runs(seq: np.ndarray, offset: int) -> list[SpeakerTurn]:
    """Runs of equal labels (frames from `offset`) → turns."""
    out: list[SpeakerTurn] = []
    bounds = [0, *(np.nonzero(np.diff(seq))[0] + 1).tolist(), len(seq)]
    for i in range(len(bounds) - 1):
        s, e = (offset + bounds[i]) * FRAME_S, (offset + bounds[i + 1]) * FRAME_S
        out.append(SpeakerTurn(round(s, 3), round(e, 3), f"SPEAKER_{int(seq[bounds[i]]):02d}"))
    return out


def _merge(turns: list[SpeakerTurn], max_gap_s: float = 0.0) -> list[SpeakerTurn]:
    """Join consecutive turns of one speaker that touch (split only by a region boundary)."""
    out: list[SpeakerTurn] = []
    for t in sorted(turns, key=lambda t: t.start_s):
        if out and out[-1].speaker == t.speaker and t.start_s - out[-1].end_s <= max_gap_s:
            out[-1] = SpeakerTurn(out[-1].start_s, max(out[-1].end_s, t.end_s), t.speaker)
        else:
            out.append(t)
    return out
