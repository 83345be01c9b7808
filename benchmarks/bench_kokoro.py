"""Kokoro-82M voices (`stages.synth.tts.kokoro`): how far apart resemblyzer puts its five styles, how
far one style's utterances are from each other, where blends fall, what Whisper base reads back
of its English, and its realtime factor on this machine.

    .venv/bin/python -m benchmarks.bench_kokoro [--threads 2] [--sentences 4]

Every style speaks the same `--sentences` English sentences; each utterance is embedded whole
(16 kHz, -30 dBFS, resemblyzer's encoder as the offline diarizer runs it). "between" is the
cosine distance of two styles' embeddings of the same sentence (mean over sentences), "within"
that of one style's different sentences (mean over pairs). Whisper base (the project's ASR
stage, default settings) transcribes the first style's utterances plus the other styles'; WER
after `stages.metrics.normalize_text`.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import soxr

SENTENCES = [
    "Could you book me a train ticket to Mumbai for next Friday morning?",
    "I think we should cook rice and vegetables with what is left in the fridge.",
    "My grandmother bought a new phone, but she cannot find the camera button.",
    "The museum opens early, so we should leave the hotel and take the bus.",
    "Please remind me to call my brother when I get back from the office.",
    "It rained all week, and the garden finally looks green again.",
]
BLENDS = ["jf_alpha+jf_tebukuro@0.5", "jm_kumo+jf_tebukuro@0.3", "jf_alpha+jm_kumo@0.5"]


def embed(encoder, audio: np.ndarray, sr: int) -> np.ndarray:
    x = soxr.resample(audio, sr, 16000).astype(np.float32)
    x = x * (10 ** (-30 / 20) / max(float(np.sqrt(np.mean(x ** 2))), 1e-8))
    return encoder.embed([encoder.mel(x)])[0]


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sentences", type=int, default=4)
    args = ap.parse_args(argv)

    import jiwer

    from stages.analysis.asr import WhisperASR
    from stages.config import AsrConfig
    from stages.metrics import normalize_text
    from stages.synth.tts.base import TtsConfig
    from stages.synth.tts.kokoro import STYLE_NAMES, KokoroTts
    from stages.analysis.vad import SpeechSegment
    try:
        from stages.analysis.diarize.offline import SpeakerEncoder
    except ImportError:
        from stages.analysis.speaker_encoder import SpeakerEncoder

    tts = KokoroTts(TtsConfig(backend="kokoro"), threads=args.threads)
    tts.load()
    encoder, whisper = SpeakerEncoder("cpu"), WhisperASR(AsrConfig())
    sentences = SENTENCES[: args.sentences]
    styles = list(STYLE_NAMES) + BLENDS
    emb: dict[str, list[np.ndarray]] = {}
    hyps: dict[str, list[str]] = {}
    synth_s = audio_s = 0.0
    for style in styles:
        voice = tts.voice(f"kokoro:en:{style}")
        emb[style], hyps[style] = [], []
        for text in sentences:
            t0 = time.perf_counter()
            audio, sr = tts.synthesize(text, voice)
            synth_s += time.perf_counter() - t0
            audio_s += len(audio) / sr
            emb[style].append(embed(encoder, audio, sr))
            a16 = np.pad(soxr.resample(audio, sr, 16000).astype(np.float32), 1600)
            res = whisper.transcribe(a16, speech=[SpeechSegment(0.0, len(a16) / 16000)], lang_hint="en")
            hyps[style].append(" ".join(s.text for s in res.segments))

    print(f"\nresemblyzer cosine distance, {len(sentences)} English sentences per style "
          "(off-diagonal: between styles, same sentence; diagonal: within the style, different sentences)")
    names = list(STYLE_NAMES)
    print(" " * 15 + "".join(f"{n:>15}" for n in names))
    for a in names:
        row = []
        for b in names:
            if a == b:
                d = np.mean([cos(x, y) for x, y in itertools.combinations(emb[a], 2)])
            else:
                d = np.mean([cos(x, y) for x, y in zip(emb[a], emb[b])])
            row.append(f"{d:15.3f}")
        print(f"{a:>15}" + "".join(row))
    print("\nblends: distance to each parent (same sentence), and the parents' distance")
    for blend in BLENDS:
        a, rest = blend.split("+")
        b = rest.split("@")[0]
        d = lambda u, v: np.mean([cos(x, y) for x, y in zip(emb[u], emb[v])])  # noqa: E731
        within = np.mean([cos(x, y) for x, y in itertools.combinations(emb[blend], 2)])
        print(f"  {blend:>28}: to {a} {d(blend, a):.3f}, to {b} {d(blend, b):.3f}, "
              f"{a}-{b} {d(a, b):.3f}, within {within:.3f}")
    print("\nWhisper base WER (English)")
    for style in styles:
        w = jiwer.wer([normalize_text(s) for s in sentences], [normalize_text(h) for h in hyps[style]])
        print(f"  {style:>28}: {w:.3f}")
        for s, h in zip(sentences, hyps[style]):
            if normalize_text(s) != normalize_text(h):
                print(f"  {'':>28}  heard {h!r}")
    print(f"\nrealtime factor {synth_s / audio_s:.2f} ({audio_s:.0f} s of audio, {tts.threads} threads)")


if __name__ == "__main__":
    main()
