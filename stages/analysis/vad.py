"""Voice activity detection with the Silero VAD ONNX model that ships inside faster-whisper.

The model runs on 32 ms windows (512 samples at 16 kHz, with 64 samples of left context) and
carries an LSTM state from window to window. Feeding it chunk by chunk with that state (and the
last 64 samples as context) gives exactly the probabilities of one pass over the whole audio, so
`segments_stream` holds one chunk at a time however long the recording. The segmentation rules
(threshold/neg-threshold hysteresis, minimum silence, maximum segment length split at the last
pause, padding) are faster-whisper's `get_speech_timestamps`, made incremental.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from stages.config import VadConfig

SAMPLE_RATE = 16000
WINDOW = 512
CONTEXT = 64
ROWS_PER_RUN = 10000  # windows per ONNX call (320 s), as faster-whisper batches them
CHUNK_SAMPLES = WINDOW * ROWS_PER_RUN
DEFAULT_MAX_SPEECH_S = 30.0  # one Whisper window; longer speech is split at its last pause


@dataclass(frozen=True)
class SpeechSegment:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SpeechActivity:
    """Silero's speech probability per 32 ms window of a whole recording (an hour: 450 kB), for
    the stages that need finer edges than the padded, bridged `SpeechSegment`s: the diarizer's
    pauses and the aligner's word times. A window is speech by the VAD's own hysteresis: from a
    probability of `threshold` on, while it stays above `threshold - 0.15`."""

    probs: np.ndarray
    threshold: float = 0.5
    hop_s: float = WINDOW / SAMPLE_RATE

    @property
    def off_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)

    def speech_mask(self) -> np.ndarray:
        """Per window: speech (True) or not, with the hysteresis of the segmenter."""
        above = self.probs >= self.off_threshold
        if not above.any():
            return above
        # A run above the off threshold is speech only if it reaches the onset threshold somewhere.
        edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        peak = np.maximum.reduceat(self.probs, starts) if len(starts) else np.zeros(0)
        mask = np.zeros(len(self.probs), dtype=bool)
        for a, b, top in zip(starts, ends, peak):
            if top >= self.threshold:
                mask[a:b] = True
        return mask

    def pauses(self, min_s: float) -> np.ndarray:
        """(n, 2) start and end times of the runs of non-speech at least `min_s` long (the audio
        before the first and after the last speech included)."""
        quiet = ~self.speech_mask()
        edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        keep = (ends - starts) * self.hop_s >= min_s - 1e-9
        return np.stack([starts[keep], ends[keep]], axis=1).astype(np.float64) * self.hop_s if keep.any() \
            else np.zeros((0, 2))


class _ProbStream:
    """Silero speech probability per 512-sample window, fed arbitrary chunks, state carried."""

    def __init__(self, session):
        self.session = session
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.rest = np.zeros(0, dtype=np.float32)

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        x = np.concatenate([self.rest, chunk]) if len(self.rest) else chunk
        n = len(x) // WINDOW * WINDOW
        self.rest = np.array(x[n:], dtype=np.float32)
        outs = [self._run(x[i : min(n, i + CHUNK_SAMPLES)]) for i in range(0, n, CHUNK_SAMPLES)]
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        if not len(self.rest):
            return np.zeros(0, dtype=np.float32)
        x = np.pad(self.rest, (0, WINDOW - len(self.rest)))
        self.rest = np.zeros(0, dtype=np.float32)
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        frames = x.reshape(-1, WINDOW)
        left = np.concatenate([self.context[None, :], frames[:-1, -CONTEXT:]], axis=0)
        self.context = frames[-1, -CONTEXT:].copy()
        batch = np.ascontiguousarray(np.concatenate([left, frames], axis=1), dtype=np.float32)
        out, self.h, self.c = self.session.run(None, {"input": batch, "h": self.h, "c": self.c})
        return np.asarray(out, dtype=np.float32).reshape(-1)


class _Segmenter:
    """faster-whisper's get_speech_timestamps state machine, one probability at a time.
    Emits unpadded (start, end) sample positions."""

    def __init__(self, cfg: VadConfig, max_speech_s: float, sr: int = SAMPLE_RATE):
        self.thr = cfg.threshold
        self.neg = max(cfg.threshold - 0.15, 0.01)
        self.min_speech = sr * cfg.min_speech_s
        self.min_silence = sr * cfg.min_silence_s
        pad = sr * cfg.speech_pad_s
        self.max_speech = sr * max_speech_s - WINDOW - 2 * pad
        self.min_silence_at_max = sr * 98 / 1000
        self.i = 0
        self.triggered = False
        self.start = 0
        self.temp_end = self.prev_end = self.next_start = 0

    def feed(self, probs: np.ndarray) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for p in probs.tolist():
            self._step(p, WINDOW * self.i, out)
            self.i += 1
        return out

    def _step(self, p: float, pos: int, out: list[tuple[int, int]]) -> None:
        if p >= self.thr and self.temp_end:
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = pos
        if p >= self.thr and not self.triggered:
            self.triggered, self.start = True, pos
            return
        if self.triggered and pos - self.start > self.max_speech:
            if self.prev_end:
                out.append((self.start, self.prev_end))
                if self.next_start < self.prev_end:
                    self.triggered = False
                else:
                    self.start = self.next_start
                self.prev_end = self.next_start = self.temp_end = 0
            else:
                out.append((self.start, pos))
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
                return
        if p < self.neg and self.triggered:
            if not self.temp_end:
                self.temp_end = pos
            if pos - self.temp_end > self.min_silence_at_max:
                self.prev_end = self.temp_end
            if pos - self.temp_end < self.min_silence:
                return
            if self.temp_end - self.start > self.min_speech:
                out.append((self.start, self.temp_end))
            self.prev_end = self.next_start = self.temp_end = 0
            self.triggered = False

    def finish(self, total: int) -> list[tuple[int, int]]:
        if self.triggered and total - self.start > self.min_speech:
            self.triggered = False
            return [(self.start, total)]
        return []


class SileroVAD:
    """Speech regions of 16 kHz mono audio. Loads the ONNX model once; not thread-safe per
    instance (each call keeps its own model state, but share an instance across calls only
    sequentially)."""

    def __init__(self, cfg: VadConfig, max_speech_s: float = DEFAULT_MAX_SPEECH_S, threads: int = 1):
        import onnxruntime
        from faster_whisper.utils import get_assets_path

        self.cfg = cfg
        self.max_speech_s = max_speech_s
        path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)

    def __call__(self, audio16k: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[SpeechSegment]:
        """All speech segments of `audio16k` (1-D; a memory map is read one chunk at a time)."""
        return list(self.segments_stream(_chunks(_mono(audio16k)), sample_rate))

    def analyse(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[list[SpeechSegment], SpeechActivity]:
        """The speech segments and the window probabilities behind them, from one pass."""
        kept: list[np.ndarray] = []
        segments = list(self.segments_stream(_chunks(_mono(audio)), sample_rate, kept))
        probs = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
        return segments, SpeechActivity(probs, self.cfg.threshold)

    def segments_stream(
        self, chunks: Iterable[np.ndarray], sample_rate: int = SAMPLE_RATE,
        keep_probs: Optional[list[np.ndarray]] = None,
    ) -> Iterator[SpeechSegment]:
        """Speech segments of consecutive mono chunks, yielded as soon as they are final.
        `keep_probs`: a list that collects the window probabilities as they are computed."""
        probs = _ProbStream(self.session)
        seg = _Segmenter(self.cfg, self.max_speech_s)
        pad = int(SAMPLE_RATE * self.cfg.speech_pad_s)
        pending: Optional[list[int]] = None
        total = 0
        for chunk in _at_16k(chunks, sample_rate):
            total += len(chunk)
            p = probs.feed(chunk)
            if keep_probs is not None:
                keep_probs.append(p)
            for start, end in seg.feed(p):
                pending, done = _pad_next(pending, start, end, pad)
                if done is not None:
                    yield done
        tail = probs.flush()
        if keep_probs is not None:
            keep_probs.append(tail)
        raw = seg.feed(tail) + seg.finish(total)
        for start, end in raw:
            pending, done = _pad_next(pending, start, end, pad)
            if done is not None:
                yield done
        if pending is not None:
            yield _segment(pending[0], min(total, pending[1] + pad))

    def frame_probabilities(self, audio16k: np.ndarray) -> np.ndarray:
        """Speech probability of every 32 ms window."""
        stream = _ProbStream(self.session)
        parts = [stream.feed(c) for c in _chunks(_mono(audio16k))] + [stream.flush()]
        return np.concatenate(parts)


def _pad_next(pending: Optional[list[int]], start: int, end: int, pad: int):
    """Pad segments as get_speech_timestamps does; a segment is final once the next is known."""
    if pending is None:
        return [max(0, start - pad), end], None
    silence = start - pending[1]
    if silence < 2 * pad:
        pending[1] += silence // 2
        start = max(0, start - silence // 2)
    else:
        pending[1] += pad
        start = max(0, start - pad)
    return [start, end], _segment(pending[0], pending[1])


def _segment(start: int, end: int) -> SpeechSegment:
    return SpeechSegment(round(start / SAMPLE_RATE, 4), round(end / SAMPLE_RATE, 4))


def _mono(audio: np.ndarray) -> np.ndarray:
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"VAD needs mono audio, got shape {audio.shape}")
    return audio


def _chunks(audio: np.ndarray) -> Iterator[np.ndarray]:
    for i in range(0, len(audio), CHUNK_SAMPLES):
        yield audio[i : i + CHUNK_SAMPLES]


def _at_16k(chunks: Iterable[np.ndarray], sample_rate: int) -> Iterator[np.ndarray]:
    resampler = None
    if sample_rate != SAMPLE_RATE:
        import soxr

        resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    for chunk in chunks:
        x = np.nan_to_num(np.asarray(chunk, dtype=np.float32).reshape(-1))
        if resampler is not None:
            x = resampler.resample_chunk(x)
        if len(x):
            yield x
    if resampler is not None:
        x = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(x):
            yield x
