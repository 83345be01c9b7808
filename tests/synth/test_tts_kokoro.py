"""The kokoro backend for real: Kokoro-82M from the PyPI parts, espeak-ng phonemes, the
project's Whisper stage reading its English back, and resemblyzer's encoder telling its voices
apart. No mocks; the model loads once for the module."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import soxr

from stages.config import AsrConfig
from stages.metrics import normalize_text
from stages.errors import RejectError
from stages.synth.tts.base import TtsConfig, assign_voices
from stages.synth.tts import make_tts
from stages.synth.tts.kokoro import (MAX_TOKENS, STYLE_NAMES, KokoroTts, assemble_model, packaged_files,
                               split_phonemes)

EN = "Could you book me a train ticket to Mumbai for next Friday morning?"
SPEAKER_SENTENCES = [EN, "Please remind me to call my mother this evening."]
HI = "नमस्ते, आप कैसे हैं? आज मौसम बहुत अच्छा है।"
# Two styles resemblyzer puts far apart (~0.4 against ~0.12-0.15 within either, measured by
# benchmarks/bench_kokoro.py), and their 50/50 blend.
STYLE_A, STYLE_B, BLEND = "kokoro:en:jf_alpha", "kokoro:en:jf_tebukuro", "kokoro:en:jf_alpha+jf_tebukuro@0.5"


@pytest.fixture(scope="module")
def kokoro() -> KokoroTts:
    tts = make_tts(TtsConfig(backend="kokoro"))
    tts.prepare(["en", "hi"])
    return tts


@pytest.fixture(scope="module")
def whisper():
    from stages.analysis.asr import WhisperASR

    return WhisperASR(AsrConfig())


@pytest.fixture(scope="module")
def encoder():
    try:
        from stages.analysis.diarize.offline import SpeakerEncoder
    except ImportError:  # the encoder's own module, where diarization moved it
        from stages.analysis.speaker_encoder import SpeakerEncoder
    return SpeakerEncoder("cpu")


@pytest.fixture(scope="module")
def clips(kokoro):
    """(voice id, sentence index or text) → audio at 24 kHz, synthesized once for the module."""
    cache: dict = {}

    def get(voice_id: str, k) -> np.ndarray:
        text = SPEAKER_SENTENCES[k] if isinstance(k, int) else k
        if (voice_id, text) not in cache:
            cache[voice_id, text] = kokoro.synthesize(text, kokoro.voice(voice_id))[0]
        return cache[voice_id, text]

    return get


def transcribe(whisper, audio: np.ndarray, sr: int, lang: str = "en") -> str:
    from stages.analysis.vad import SpeechSegment

    a16 = np.pad(soxr.resample(audio, sr, 16000).astype(np.float32), 1600)
    res = whisper.transcribe(a16, speech=[SpeechSegment(0.0, len(a16) / 16000)], lang_hint=lang)
    return " ".join(s.text for s in res.segments)


def wer(ref: str, hyp: str) -> float:
    import jiwer

    return jiwer.wer(normalize_text(ref), normalize_text(hyp))


def embed(encoder, audio: np.ndarray, sr: int = 24000) -> np.ndarray:
    """resemblyzer's embedding of a whole utterance (16 kHz, normalized to -30 dBFS as it does)."""
    x = soxr.resample(audio, sr, 16000).astype(np.float32)
    x = x * (10 ** (-30 / 20) / max(np.sqrt(np.mean(x ** 2)), 1e-8))
    return encoder.embed([encoder.mel(x)])[0]


def cos_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_english_reads_back_through_whisper(kokoro, whisper, clips):
    audio = clips(STYLE_A, 0)
    sr = 24000
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.all(np.isfinite(audio))
    assert 2.0 < len(audio) / sr < 8.0
    edge = sr // 50  # trimmed: sound right at both ends
    assert np.max(np.abs(audio[:edge])) > 0.003 and np.max(np.abs(audio[-edge:])) > 0.003
    hyp = transcribe(whisper, audio, sr)
    assert wer(EN, hyp) <= 0.2, hyp  # measured 0-0.09 over the five styles


def test_hindi_speaks(kokoro):
    voice = kokoro.voices("hi")[0]
    audio, sr = kokoro.synthesize(HI, voice)
    dur = len(audio) / sr
    assert 2.0 < dur < 8.0, dur  # 9 words, two sentences
    assert np.sqrt(np.mean(audio ** 2)) > 0.02
    ps = kokoro.phonemize(HI, "hi")
    assert ps.count(".") == 1 and ps.count("?") == 1 and ps.count(",") == 1  # the danda a full stop


def test_styles_differ_and_a_blend_lies_between(encoder, clips):
    ea, eb, em = ([embed(encoder, clips(v, k)) for k in range(2)] for v in (STYLE_A, STYLE_B, BLEND))
    within = [cos_dist(*ea), cos_dist(*eb)]  # one style, two sentences
    across = [cos_dist(x, y) for x in ea for y in eb]
    assert max(within) < min(across) and np.mean(within) + 0.15 < np.mean(across), (within, across)
    # the blend, sentence by sentence: nearer each parent than the parents are to each other
    for k in range(2):
        d_ab, d_ma, d_mb = cos_dist(ea[k], eb[k]), cos_dist(em[k], ea[k]), cos_dist(em[k], eb[k])
        assert d_ma < d_ab and d_mb < d_ab, (k, d_ab, d_ma, d_mb)


def test_voices_parse_and_are_deterministic(kokoro):
    for lang in ("en", "hi"):
        voices = kokoro.voices(lang)
        assert len(voices) >= 6 and len({v.voice_id for v in voices}) == len(voices)
        assert {v.params["style"] for v in voices} == set(STYLE_NAMES)
        assert all(v.lang == lang and v.backend == "kokoro" for v in voices)
    v = kokoro.voice("kokoro:hi:jf_nezumi+jm_kumo@0.35:s1.1")
    assert v.params == {"style": "jf_nezumi", "blend": "jm_kumo", "weight": 0.35, "speed": 1.1}
    style = kokoro.style(v)
    assert style.shape == (510, 256)
    assert np.allclose(style, 0.65 * kokoro.styles["jf_nezumi"] + 0.35 * kokoro.styles["jm_kumo"], atol=1e-6)
    picks = {tuple(x.voice_id for x in assign_voices("en", 2, seed=s, backend=kokoro)) for s in range(20)}
    assert len(picks) > 3 and all(len(set(p)) == 2 for p in picks)
    once, _ = kokoro.synthesize("Thank you.", kokoro.voice(STYLE_A))  # no sampling: the same audio
    again, _ = kokoro.synthesize("Thank you.", kokoro.voice(STYLE_A))
    assert once.tobytes() == again.tobytes()


def test_unknown_voice_and_language(kokoro):
    for bad in ("kokoro:en:nosuch", "kokoro:te:jf_alpha", "kokoro:en:jf_alpha+jf_alpha@0.5",
                "kokoro:en:jf_alpha+jm_kumo@1.5", "kokoro:en:jf_alpha+jm_kumo", "kokoro:en:jf_alpha:s3",
                "kokoro:en:jf_alpha:p0.9", "espeak:en+f3:p50", "jf_alpha"):
        with pytest.raises(RejectError) as e:
            kokoro.voice(bad)
        assert e.value.reason == "tts_unknown_voice", bad
    with pytest.raises(RejectError) as e:
        kokoro.voices("te")
    assert e.value.reason == "tts_unsupported_language"
    with pytest.raises(RejectError) as e:  # a Hindi voice configured for English
        make_tts(TtsConfig(backend="kokoro", voices={"en": ["kokoro:hi:jf_alpha"]})).voices("en")
    assert e.value.reason == "tts_unknown_voice"
    with pytest.raises(RejectError) as e:  # nothing to say
        kokoro.synthesize("...", kokoro.voice("kokoro:en:jf_alpha"))
    assert e.value.reason == "tts_silent_output"


def test_long_paragraph_is_chunked_and_fully_spoken(kokoro, whisper):
    sentence = ("We walked along the river in the morning, talked about the week ahead, "
                "and stopped for tea at the little shop near the bridge. ")
    long_ps = kokoro.phonemize(sentence * 6, "en")
    assert len(long_ps) > MAX_TOKENS
    chunks = split_phonemes(long_ps, MAX_TOKENS)
    assert len(chunks) >= 2 and all(0 < len(c) <= MAX_TOKENS for c in chunks)
    assert " ".join(chunks) == long_ps and all(c.endswith(".") for c in chunks)  # at sentence ends
    # one sentence longer than the limit splits at its clauses, a clause at its words
    assert all(len(c) <= 60 for c in split_phonemes(kokoro.phonemize(sentence, "en"), 60))
    assert split_phonemes("ab cd ef", 2) == ["ab", "cd", "ef"]
    # synthesis over chunks, with a small limit (a 510-token text takes ~30 s of audio)
    text = "The train was late again. I waited on the platform for an hour. Then we took a taxi."
    assert len(split_phonemes(kokoro.phonemize(text, "en"), 40)) >= 3
    kokoro.max_tokens = 40
    try:
        audio, sr = kokoro.synthesize(text, kokoro.voice("kokoro:en:jm_kumo"))
    finally:
        kokoro.max_tokens = MAX_TOKENS
    assert 3.5 < len(audio) / sr < 9.0  # 17 words, two pauses between chunks
    hyp = transcribe(whisper, audio, sr)
    assert wer(text, hyp) <= 0.2, hyp


def test_model_assembly_checks_sha256(tmp_path):
    parts = []
    for i, blob in enumerate((b"kokoro part one ", b"and part two")):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(blob)
        parts.append(str(p))
    good = hashlib.sha256(b"kokoro part one and part two").hexdigest()
    cache = tmp_path / "cache"
    path = assemble_model(parts, good, str(cache))
    assert open(path, "rb").read() == b"kokoro part one and part two" and good[:16] in path
    assert assemble_model(parts, good, str(cache)) == path  # cached
    (tmp_path / "part1.bin").write_bytes(b"and part 2!!")  # corrupted: same size, other bytes
    with pytest.raises(RuntimeError, match="sha256"):
        assemble_model(parts, good, str(tmp_path / "other"))
    assert os.listdir(tmp_path / "other" / "kokoro-82m") == []  # nothing half-written left
    with pytest.raises(RuntimeError, match="sha256"):
        assemble_model(parts, "0" * 64, str(tmp_path / "third"))
    # the packages name four parts and the sha256 they must join to
    files = packaged_files()
    assert len(files["parts"]) == 4 and len(files["sha256"]) == 64
