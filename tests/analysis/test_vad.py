"""Silero VAD (the ONNX model inside faster-whisper) on real espeak-ng speech, silence, noise
and tones; streaming equals one pass; the port matches faster-whisper's own segmentation."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
import soxr

from stages.config import VadConfig
from stages.audio.signal import trim_silence
from stages.analysis.vad import SileroVAD, SpeechSegment

SR = 16000
SENTENCE_A = "The weather was pleasant this morning, so we walked to the market."
SENTENCE_B = "Then everyone went home and had dinner together with their families."


def espeak(text: str, tmp_path, voice: str = "en-us") -> np.ndarray:
    wav = os.path.join(tmp_path, "say.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", wav, text], check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32")
    clip = trim_silence(soxr.resample(audio, sr, SR).astype(np.float32), SR)
    return (clip / np.abs(clip).max() * 0.5).astype(np.float32)


def silence(seconds: float, level: float = 0.0005, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(SR * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD(VadConfig())


@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory):
    """1 s silence, sentence A, 1.5 s silence, sentence B, 1 s silence; with the true bounds."""
    d = tmp_path_factory.mktemp("vad")
    a, b = espeak(SENTENCE_A, d), espeak(SENTENCE_B, d, "en-us+f2")
    audio = np.concatenate([silence(1.0), a, silence(1.5, seed=1), b, silence(1.0, seed=2)])
    a0 = 1.0
    a1 = a0 + len(a) / SR
    b0 = a1 + 1.5
    b1 = b0 + len(b) / SR
    return audio, [(a0, a1), (b0, b1)]


def test_two_regions_found_with_accurate_bounds(vad, two_sentences):
    audio, truth = two_sentences
    segs = vad(audio)
    assert len(segs) == 2
    for seg, (t0, t1) in zip(segs, truth):
        assert isinstance(seg, SpeechSegment)
        assert abs(seg.start_s - t0) < 0.3, (seg, t0)
        assert abs(seg.end_s - t1) < 0.3, (seg, t1)
    # nothing in the silence between them or around them
    assert segs[0].end_s < truth[1][0] and segs[1].start_s > truth[0][1]


def test_stream_in_odd_chunks_equals_one_pass(vad, two_sentences):
    audio, _ = two_sentences
    chunks = (audio[i : i + 7777] for i in range(0, len(audio), 7777))
    assert list(vad.segments_stream(chunks)) == vad(audio)


def test_matches_faster_whisper_reference(vad, two_sentences):
    """The incremental port gives faster-whisper's get_speech_timestamps, split rule included."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio, _ = two_sentences
    cfg = VadConfig()
    short = SileroVAD(cfg, max_speech_s=2.0)  # forces splits at pauses inside the sentences
    for v, max_s in ((vad, 30.0), (short, 2.0)):
        ref = get_speech_timestamps(
            audio,
            VadOptions(
                threshold=cfg.threshold,
                min_speech_duration_ms=int(cfg.min_speech_s * 1000),
                min_silence_duration_ms=int(cfg.min_silence_s * 1000),
                speech_pad_ms=int(cfg.speech_pad_s * 1000),
                max_speech_duration_s=max_s,
            ),
        )
        mine = v(audio)
        assert [(round(s.start_s * SR), round(s.end_s * SR)) for s in mine] == [(r["start"], r["end"]) for r in ref]
    assert len(short(audio)) > 2
    assert all(s.duration_s <= 2.0 for s in short(audio))


def test_long_audio_streams_from_a_generator(vad, two_sentences):
    """Five minutes fed as a generator of one-second chunks: nothing is held whole."""
    audio, truth = two_sentences
    period = len(audio) / SR
    reps = int(300 // period) + 1

    def chunks():
        for _ in range(reps):
            for i in range(0, len(audio), SR):
                yield audio[i : i + SR]

    segs = list(vad.segments_stream(chunks()))
    assert len(segs) == 2 * reps
    starts = [s.start_s for s in segs]
    assert starts == sorted(starts) and all(s.end_s > s.start_s for s in segs)
    last = segs[-1]
    assert abs(last.end_s - ((reps - 1) * period + truth[1][1])) < 0.3


def test_other_sample_rates_are_resampled(vad, two_sentences):
    audio, truth = two_sentences
    at8k = soxr.resample(audio, SR, 8000).astype(np.float32)
    segs = vad(at8k, 8000)
    assert len(segs) == 2
    for seg, (t0, t1) in zip(segs, truth):
        assert abs(seg.start_s - t0) < 0.3 and abs(seg.end_s - t1) < 0.3


def test_no_speech_in_silence_noise_or_tones(vad):
    t = np.arange(SR * 6) / SR
    chord = (sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 6).astype(np.float32)
    notes = [(261.63, 329.63, 392.0), (220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (196.0, 246.94, 293.66)]
    decay = np.minimum(1.0, np.linspace(4, 0, SR))
    melody = np.concatenate(
        [sum(np.sin(2 * np.pi * f * t[:SR]) for f in ch) / 6 * decay for ch in notes * 2]
    ).astype(np.float32)
    white = (0.1 * np.random.default_rng(3).standard_normal(SR * 6)).astype(np.float32)
    for name, x in [("digital silence", np.zeros(SR * 5, np.float32)), ("room tone", silence(5.0)),
                    ("white noise", white), ("sine chord", chord), ("chord melody", melody)]:
        assert vad(x) == [], name
        # Silero's own verdict, not an artefact of min-duration rules: every 32 ms window is
        # below the threshold (measured maxima: tones ~0.05, white noise ~0.3)
        assert float(vad.frame_probabilities(x).max()) < 0.4, name
    assert vad(np.zeros(0, np.float32)) == []


def test_rejects_non_mono_input(vad):
    with pytest.raises(ValueError):
        vad(np.zeros((2, SR), np.float32))
    assert vad(np.zeros((1, SR), np.float32)) == []
