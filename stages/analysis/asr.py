"""Speech recognition with faster-whisper: batched, word timestamps, language identification
restricted to the configured languages, per-segment and per-word confidence.

Our VAD drives segmentation: speech regions are packed into clips of at most one Whisper window
(30 s; regions further apart than `MAX_CLIP_GAP_S` start a new clip) that the batched pipeline
decodes together, and the words that come back are grouped into one `AsrSegment` per speech
region. No speech (no region, or nothing but discarded hallucinations) gives a result with no
segments; the caller decides what that means (stages/analysis/analyzer.py rejects it as `no_speech`).

Language: Whisper's language probabilities are averaged over up to `LANG_WINDOWS` 30 s windows
of speech spread over the recording (one per ten clips), then `choose_language` picks among the
allowed languages. Reason code: `unsupported_language` (a disallowed language dominates).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from catalog.schema import Word
from stages.config import AsrConfig, VadConfig
from stages.errors import RejectError
from stages.analysis.vad import SpeechSegment
from stages.analysis.whisper_model import resolve_whisper_model

SAMPLE_RATE = 16000
CLIP_S = 30.0  # one Whisper window
MAX_CLIP_GAP_S = 3.0  # longer silences are not packed into a clip (they waste its 30 s)
MIN_REGION_S = 0.05
LANG_WINDOWS = 3  # at most; one per 10 clips of speech
# Decisions on Whisper's language probabilities (see choose_language).
DOMINANT_PROB = 0.5  # a disallowed language this likely...
REJECT_RATIO = 0.1  # ...with the allowed ones below this fraction of it → unsupported_language
HINT_OVERRIDE_PROB = 0.5  # another allowed language beats the declared one only when this sure
CODE_SWITCH_PROB = 0.1  # the partner language this likely → code-switched
# Whisper labels spoken Hindi as Urdu often (the spoken languages are nearly one).
KIN = {"hi": ("ur",), "ur": ("hi",)}
# Matrix language → the language mixed into it (Hinglish, Tenglish).
CODE_SWITCH_PARTNERS = {"hi": "en", "te": "en"}
# Whisper's usual failure signs (as in its own temperature fallback, which batching skips).
MAX_COMPRESSION_RATIO = 2.4
RETRY_REPETITION_PENALTY = 1.3
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0

SCRIPTS = {
    "hi": re.compile(r"[\u0900-\u097F]"),
    "te": re.compile(r"[\u0C00-\u0C7F]"),
    "en": re.compile(r"[A-Za-z]"),
}


@dataclass
class AsrSegment:
    start_s: float
    end_s: float
    text: str
    words: list[Word]
    confidence: float  # geometric mean of word probabilities (exp(avg_logprob) without words)
    no_speech_prob: float
    lang: str


@dataclass
class AsrResult:
    lang: str  # "" when there was no speech to identify
    lang_prob: float  # Whisper's probability of `lang` (kin included)
    segments: list[AsrSegment]
    code_switched: bool
    lang_probs: dict[str, float] = field(default_factory=dict)  # the allowed and the top few


def choose_language(
    probs: dict[str, float], allowed: Sequence[str], hint: Optional[str] = None
) -> tuple[str, float, bool]:
    """(language, its probability, code-switch suspected) from Whisper's language probabilities.

    The most probable allowed language wins (Urdu counts for Hindi); a declared language `hint`
    wins unless another allowed one is at least HINT_OVERRIDE_PROB likely. Raises
    `RejectError("unsupported_language")` only when a disallowed language is dominant and the
    allowed ones (with English for a Hindi or Telugu matrix, so code-switched speech survives)
    together reach less than REJECT_RATIO of it. Uncertainty alone never rejects."""
    if not allowed:
        raise ValueError("no allowed languages configured")

    def score(lang: str) -> float:
        return probs.get(lang, 0.0) + sum(probs.get(k, 0.0) for k in KIN.get(lang, ()) if k not in allowed)

    scores = {lang: score(lang) for lang in allowed}
    best = max(allowed, key=lambda lang: scores[lang])
    if hint in scores and best != hint and scores[best] < HINT_OVERRIDE_PROB:
        best = hint
    covered = set(allowed)
    for lang in allowed:
        covered.update(KIN.get(lang, ()))
        if lang in CODE_SWITCH_PARTNERS:
            covered.add(CODE_SWITCH_PARTNERS[lang])
    outside = {k: v for k, v in probs.items() if k not in covered}
    top_out = max(outside, key=outside.get) if outside else None
    support = sum(v for k, v in probs.items() if k in covered)
    if top_out is not None and outside[top_out] >= DOMINANT_PROB and support < REJECT_RATIO * outside[top_out]:
        shown = ", ".join(f"{k}={probs.get(k, 0.0):.3f}" for k in [top_out, *allowed])
        raise RejectError(
            "unsupported_language",
            f"detected {top_out} ({outside[top_out]:.2f}); allowed {list(allowed)}: {shown}",
        )
    switched = False
    for matrix, partner in CODE_SWITCH_PARTNERS.items():
        if best in (matrix, partner):
            other = partner if best == matrix else matrix
            if (other in allowed or best == matrix) and score(other) >= CODE_SWITCH_PROB:
                switched = True
    return best, scores[best], switched


def script_counts(text: str) -> dict[str, int]:
    """Words per script (Devanagari → hi, Telugu → te, Latin → en)."""
    counts = {lang: 0 for lang in SCRIPTS}
    for token in text.split():
        for lang, pattern in SCRIPTS.items():
            if pattern.search(token):
                counts[lang] += 1
                break
    return counts


def mixes_scripts(text: str, min_words: int = 2) -> bool:
    """Latin words alongside Devanagari or Telugu ones: Hinglish/Tenglish written as spoken."""
    c = script_counts(text)
    return c["en"] >= min_words and max(c["hi"], c["te"]) >= min_words


class WhisperASR:
    """Loads Whisper once; `transcribe` one recording at a time (not thread-safe)."""

    def __init__(self, cfg: AsrConfig, cache_dir: Optional[str] = None):
        import ctranslate2
        from faster_whisper import BatchedInferencePipeline, WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        unknown = [lang for lang in cfg.languages if lang not in _LANGUAGE_CODES]
        if unknown or not cfg.languages:
            raise ValueError(f"asr.languages must be Whisper language codes, got {cfg.languages}")
        self.cfg = cfg
        device = cfg.device
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = cfg.compute_type
        if compute_type == "default":
            compute_type = "float16" if device == "cuda" else "int8"
        self.device, self.compute_type = device, compute_type
        self.model_path = resolve_whisper_model(cfg.model, cache_dir)
        self.model = WhisperModel(
            self.model_path, device=device, compute_type=compute_type, cpu_threads=cfg.cpu_threads
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        self._vad = None

    def transcribe(
        self,
        audio16k: np.ndarray,
        speech: Optional[list[SpeechSegment]] = None,
        lang_hint: Optional[str] = None,
    ) -> AsrResult:
        """Transcribe 16 kHz mono audio, in `speech` regions (our Silero VAD's when None).
        `lang_hint`: the language the source declares (a feed's, `--lang`), preferred when
        it is allowed and the audio does not clearly say otherwise."""
        audio = audio16k.reshape(-1) if audio16k.ndim == 2 and 1 in audio16k.shape else audio16k
        if audio.ndim != 1:
            raise ValueError(f"ASR needs mono audio, got shape {audio16k.shape}")
        duration = len(audio) / SAMPLE_RATE
        if speech is None:
            speech = self._default_vad()(audio)
        regions = [
            (max(0.0, s.start_s), min(duration, s.end_s))
            for s in sorted(speech, key=lambda s: s.start_s)
            if min(duration, s.end_s) - max(0.0, s.start_s) >= MIN_REGION_S
        ]
        if not regions:
            return AsrResult("", 0.0, [], False)
        probs = self.language_probs(audio, regions)
        lang, lang_prob, switched = choose_language(probs, self.cfg.languages, lang_hint)
        shown = {k: round(v, 4) for k, v in sorted(probs.items(), key=lambda kv: -kv[1])[:5]}
        shown.update({k: round(probs.get(k, 0.0), 4) for k in self.cfg.languages})
        segments = self._decode(audio, regions, lang)
        switched = switched or any(mixes_scripts(s.text) for s in segments)
        return AsrResult(lang, float(lang_prob), segments, switched, shown)

    def language_probs(self, audio: np.ndarray, regions: list[tuple[float, float]]) -> dict[str, float]:
        """Whisper's language probabilities, averaged over windows of speech across the audio."""
        if not self.multilingual:
            return {"en": 1.0}
        total: dict[str, float] = {}
        # More windows for longer recordings only: each costs an encoder pass, as a clip does.
        n = min(LANG_WINDOWS, 1 + len(pack_clips(regions)) // 10)
        windows = _speech_windows(audio, regions, n, CLIP_S)
        for win in windows:
            _, _, all_probs = self.model.detect_language(audio=win)
            for lang, p in all_probs:
                total[lang] = total.get(lang, 0.0) + p / len(windows)
        return total

    def _default_vad(self):
        if self._vad is None:
            from stages.analysis.vad import SileroVAD

            self._vad = SileroVAD(VadConfig())
        return self._vad

    def _decode(self, audio: np.ndarray, regions: list[tuple[float, float]], lang: str) -> list[AsrSegment]:
        clips = pack_clips(regions)
        per_call = max(1, self.cfg.batch_size * 4)  # bounds the features held at once
        duration = len(audio) / SAMPLE_RATE
        segments: list[AsrSegment] = []
        for g in range(0, len(clips), per_call):
            group = clips[g : g + per_call]
            results = self._run(audio, group, lang)
            # Batched decoding has no temperature fallback: retry repetition loops once with a
            # repetition penalty instead.
            loops = [i for i, segs in results.items() if any(_looping(seg) for seg, _ in segs)]
            if loops:
                again = self._run(audio, [group[i] for i in loops], lang, RETRY_REPETITION_PENALTY)
                for j, i in enumerate(loops):
                    results[i] = again.get(j, [])
            for i in sorted(results):
                for seg, offset in results[i]:
                    if _failed(seg):
                        continue
                    if self.cfg.word_timestamps:
                        words = _words(seg, offset, duration)
                        segments.extend(self._by_region(words, group[i][2], seg, lang))
                    else:
                        segments.append(
                            AsrSegment(
                                round(float(seg.start) + offset, 3), round(float(seg.end) + offset, 3),
                                seg.text.strip(), [], round(math.exp(seg.avg_logprob), 4),
                                round(float(seg.no_speech_prob), 4),
                                _segment_lang(seg.text, lang, self.cfg.languages),
                            )
                        )
        segments.sort(key=lambda s: s.start_s)
        return segments

    def _run(self, audio: np.ndarray, clips, lang: str, repetition_penalty: float = 1.0) -> dict[int, list]:
        """Decode clips in one batched call: {clip index: [(faster-whisper segment, offset)]}."""
        s0 = int(clips[0][0] * SAMPLE_RATE)
        s1 = int(math.ceil(clips[-1][1] * SAMPLE_RATE))
        chunk = np.ascontiguousarray(audio[s0:s1], dtype=np.float32)
        offset = s0 / SAMPLE_RATE
        # The pipeline keeps this across calls (a faster-whisper quirk): each call starts at 0.
        self.pipeline.last_speech_timestamp = 0.0
        out, _ = self.pipeline.transcribe(
            chunk,
            language=lang if self.multilingual else None,
            task="transcribe",
            beam_size=self.cfg.beam_size,
            batch_size=self.cfg.batch_size,
            repetition_penalty=repetition_penalty,
            word_timestamps=self.cfg.word_timestamps,
            without_timestamps=self.cfg.word_timestamps,
            vad_filter=False,
            clip_timestamps=[{"start": a - offset, "end": b - offset} for a, b, _ in clips],
        )
        starts = [a - offset for a, _, _ in clips]
        fps = float(self.model.frames_per_second)
        results: dict[int, list] = {i: [] for i in range(len(clips))}
        for seg in out:
            # A segment's seek is its clip's start in feature frames.
            i = min(range(len(starts)), key=lambda k: abs(starts[k] - seg.seek / fps))
            results[i].append((seg, offset))
        return results

    def _by_region(self, words: list[tuple[str, Word]], regions, seg, lang: str) -> list[AsrSegment]:
        """One AsrSegment per VAD region of the clip, holding the words whose middle is in it."""
        buckets: dict[int, list[tuple[str, Word]]] = {}
        for raw, w in words:
            mid = (w.start_s + w.end_s) / 2
            i = min(range(len(regions)), key=lambda k: _distance(mid, regions[k]))
            buckets.setdefault(i, []).append((raw, w))
        out = []
        for i in sorted(buckets):
            # faster-whisper's words carry their leading space where the language has one
            text = "".join(raw for raw, _ in buckets[i]).strip()
            ws = [w for _, w in buckets[i]]
            logp = [math.log(max(w.confidence or 0.0, 1e-6)) for w in ws]
            if not text or (seg.no_speech_prob > NO_SPEECH_PROB and sum(logp) / len(logp) < LOW_LOGPROB):
                continue  # Whisper's no-speech rule on this region's words ("you" over silence)
            out.append(
                AsrSegment(
                    start_s=ws[0].start_s,
                    end_s=max(w.end_s for w in ws),
                    text=re.sub(r"\s+", " ", text),
                    words=ws,
                    confidence=round(math.exp(sum(logp) / len(logp)), 4),
                    no_speech_prob=round(float(seg.no_speech_prob), 4),
                    lang=_segment_lang(text, lang, self.cfg.languages),
                )
            )
        return out


def pack_clips(regions: list[tuple[float, float]]) -> list[tuple[float, float, list[tuple[float, float]]]]:
    """Group sorted regions into clips of at most CLIP_S (longer regions are cut into pieces)."""
    pieces: list[tuple[float, float]] = []
    for a, b in regions:
        while b - a > CLIP_S:
            pieces.append((a, a + CLIP_S))
            a += CLIP_S
        pieces.append((a, b))
    clips: list[tuple[float, float, list[tuple[float, float]]]] = []
    for a, b in pieces:
        if clips and b - clips[-1][0] <= CLIP_S and a - clips[-1][1] <= MAX_CLIP_GAP_S:
            start, _, members = clips[-1]
            clips[-1] = (start, b, members + [(a, b)])
        else:
            clips.append((a, b, [(a, b)]))
    return clips


def _speech_windows(audio: np.ndarray, regions, n: int, window_s: float) -> list[np.ndarray]:
    """Up to `n` windows of concatenated speech (each at most `window_s`), spread over it."""
    total = sum(b - a for a, b in regions)
    step = max(window_s, total / n)
    windows = []
    for k in range(n):
        start = k * step
        if start >= total or (k and total - start < 1.0):
            break
        parts, t, need = [], 0.0, window_s
        for a, b in regions:
            d = b - a
            if t + d > start and need > 0:
                off = max(0.0, start - t)
                take = min(d - off, need)
                s0 = int((a + off) * SAMPLE_RATE)
                parts.append(np.asarray(audio[s0 : s0 + int(take * SAMPLE_RATE)], dtype=np.float32))
                need -= take
            t += d
        if parts:
            windows.append(np.concatenate(parts))
    return windows


def _looping(seg) -> bool:
    return seg.compression_ratio > MAX_COMPRESSION_RATIO


def _failed(seg) -> bool:
    if not seg.text.strip() or _looping(seg):
        return True
    return seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB


def _words(seg, offset: float, duration: float) -> list[tuple[str, Word]]:
    """(word as decoded, Word with absolute, monotonic, in-audio times)."""
    out: list[tuple[str, Word]] = []
    last = 0.0
    for w in seg.words or []:
        if not w.word.strip():
            continue
        start = min(max(round(float(w.start) + offset, 3), last), duration)
        end = min(max(round(float(w.end) + offset, 3), start), duration)
        out.append((w.word, Word(w.word.strip(), start, end, round(float(w.probability), 4))))
        last = start
    return out


def _distance(t: float, region: tuple[float, float]) -> float:
    a, b = region
    return 0.0 if a <= t <= b else min(abs(t - a), abs(t - b))


def _segment_lang(text: str, lang: str, allowed: Sequence[str]) -> str:
    """The recording's language, unless the text is written in another allowed language's
    script (an English stretch in a Hindi conversation)."""
    c = script_counts(text)
    top = max(c, key=c.get)
    if c[top] and top != lang and top in allowed and c[top] > sum(c.values()) / 2:
        # Latin script says little when the recording's language is not one of ours.
        if top != "en" or lang in SCRIPTS:
            return top
    return lang
