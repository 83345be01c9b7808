"""Clean clips from one microphone (issue 15), measured on tones: the user speaks a 440 Hz tone, the
AI 1000 Hz, a third panel speaker 700 Hz. Conversations go through segment() and the samples are
cut, FLAC-encoded and decoded as in a build, on a two-channel call (each speaker on their own
channel) and on the mono mix of the same call."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from catalog.schema import Conversation, Pair, Recording, Speaker, Utterance, from_dict, to_dict
from stages.config import RolePolicy, SegmentConfig, ShardConfig
from stages.corpus.samples import TIME_FIELDS, pair_sample, pair_span, plan_windows, window_sample
from stages.corpus.segment import segment
from tests.fixtures.tiny_separator import build_tiny_separator

SR = 24000
DUR = 12.0
FREQ = {"A": 440.0, "B": 1000.0, "C": 700.0}
LAYOUTS = ("two_channel", "mono")


def _call(lines, layout: str, labels: str = "AB"):
    """(conversation, audio, speakers by id): each utterance is its speaker's tone over its span."""
    mono = layout == "mono"
    t = np.arange(int(DUR * SR)) / SR
    tracks = np.zeros((len(labels), t.size), dtype=np.float32)
    for s, e, spk, _ in lines:
        a, b = round(s * SR), round(e * SR)
        tracks[labels.index(spk), a:b] = 0.3 * np.sin(2 * np.pi * FREQ[spk] * t[a:b])
    audio = tracks.sum(axis=0, keepdims=True) if mono else tracks
    rec = Recording(
        recording_id="t-1", source="t", origin_id="1", origin="x", license="L", lang="en", native_sample_rate=SR,
        num_channels=audio.shape[0], duration_s=DUR, encoding="pcm_s16le", audio_sha256="0", audio_path="a.flac",
        sample_rate=SR, bandwidth="wideband", effective_bandwidth_hz=SR / 2,
    )
    speakers = [Speaker(f"t-1-{lab}", "t-1", "t", lab, channel=None if mono else i) for i, lab in enumerate(labels)]
    utts = [Utterance(f"t-1-{i:05d}", "t-1", "t", f"t-1-{spk}", None if mono else labels.index(spk), s, e, text, text,
                      "en") for i, (s, e, spk, text) in enumerate(lines)]
    return Conversation(rec, speakers, utts), audio, {s.speaker_id: s for s in speakers}


def _decode(flac: bytes) -> np.ndarray:
    data, sr = sf.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    assert sr == SR
    return data.T


def _power_at(x: np.ndarray, freq: float) -> float:
    spec = np.abs(np.fft.rfft(x)) / max(1, x.size)
    k = int(round(freq * x.size / SR))
    return float(spec[max(0, k - 3): k + 4].max())


def _pairs(conv, cfg=SegmentConfig()):
    seg = segment(conv, cfg)
    return seg, seg.pairs


# The AI starts 0.5 s before the user is done: the case where a mono user clip used to end with the
# AI's first words.
OVERLAP = [
    (0.5, 4.0, "A", "so tell me what you think about the plan"),
    (3.5, 7.0, "B", "I think it could work if we start early"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_user_clip_holds_no_ai_speech_after_the_ai_starts(layout):
    conv, audio, speakers = _call(OVERLAP, layout)
    seg, (pair,) = _pairs(conv)
    sample = pair_sample(pair, audio, SR, speakers, seg.turns, include_context=False)
    user, ai = _decode(sample["user.flac"])[0], _decode(sample["ai.flac"])[0]
    # Spectral energy of the AI's 1000 Hz inside the user clip, and of the user's 440 Hz in the AI's.
    assert _power_at(user, FREQ["B"]) < 1e-3 * _power_at(user, FREQ["A"])
    assert _power_at(ai, FREQ["A"]) < 1e-3 * _power_at(ai, FREQ["B"])
    meta = json.loads(sample["json"])
    assert meta["overlap_s"] == 0.5 and meta["mixed_source"] is (layout == "mono")
    if layout == "mono":
        assert meta["user_clip_end_s"] == 3.5  # ends where the AI starts
        assert user.size == round((3.5 - 0.35) * SR)
    else:
        assert meta["user_clip_end_s"] == 4.15 and np.abs(user[round(3.6 * SR) - round(0.35 * SR):]).max() > 0.2


def test_mono_clip_masks_others_even_for_records_without_clip_bounds():
    """A pair from before clip bounds (its user clip is the whole turn): the AI's stretch inside it
    is silent, not the AI."""
    conv, audio, speakers = _call(OVERLAP, "mono")
    seg, (pair,) = _pairs(conv)
    old = from_dict(Pair, {k: v for k, v in to_dict(pair).items() if "clip" not in k})
    user = _decode(pair_sample(old, audio, SR, speakers, seg.turns, False)["user.flac"])[0]
    assert user.size == round(3.5 * SR)
    assert np.all(user[round(3.0 * SR):] == 0)  # 3.5 s .. 4.0 s of the recording
    assert _power_at(user, FREQ["B"]) < 1e-3 * _power_at(user, FREQ["A"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_interjection_inside_the_user_turn_stays_out_of_the_user_clip(layout):
    lines = [(0.5, 6.8, "A", "a long story about the store"), (2.7, 3.6, "B", "no way"),
             (7.3, 9.0, "B", "so what happened next")]
    conv, audio, speakers = _call(lines, layout)
    seg, (pair,) = _pairs(conv)
    user = _decode(pair_sample(pair, audio, SR, speakers, seg.turns, False)["user.flac"])[0]
    assert _power_at(user, FREQ["B"]) < 1e-3 * _power_at(user, FREQ["A"])
    start = pair.user_clip_start_s
    over = user[round((2.75 - start) * SR): round((3.55 - start) * SR)]
    if layout == "mono":
        assert np.all(over == 0) and pair.mixed_source  # masked, and flagged
    else:
        assert np.abs(over).max() > 0.25  # A's own channel: A goes on under the interjection


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clip_margins_with_fades_inside_them(layout):
    lines = [(1.0, 3.0, "A", "are you coming tonight"), (4.0, 6.0, "B", "yes I will be there by eight")]
    conv, audio, speakers = _call(lines, layout)
    seg, (pair,) = _pairs(conv, SegmentConfig(clip_pad_s=0.15))
    sample = pair_sample(pair, audio, SR, speakers, seg.turns, False)
    meta = json.loads(sample["json"])
    assert (meta["user_clip_start_s"], meta["user_clip_end_s"]) == (0.85, 3.15)
    assert (meta["ai_clip_start_s"], meta["ai_clip_end_s"]) == (3.85, 6.15)
    user = _decode(sample["user.flac"])[0]
    assert user.size == round(2.3 * SR)
    src = audio[0]
    pad = round(0.15 * SR)
    # The whole turn is there at full gain; the fade lies in the margin.
    assert np.allclose(user[pad: pad + round(2.0 * SR)], src[round(1.0 * SR): round(3.0 * SR)], atol=1e-4)
    assert abs(user[0]) < 1e-3
    assert pair_span(pair, include_context=False) == (0.85, 6.15)
    assert {"user_clip_start_s", "ai_clip_end_s", "context_start_s"} <= set(TIME_FIELDS)


def test_margins_stop_at_the_other_speaker_on_a_mono_source():
    lines = [(1.0, 3.0, "A", "are you coming tonight"), (3.05, 5.0, "B", "yes I will be there by eight"),
             (5.1, 7.0, "A", "great see you then")]
    conv, audio, speakers = _call(lines, "mono")
    seg, (p0, p1) = _pairs(conv, SegmentConfig(clip_pad_s=0.2))
    assert (p0.user_clip_start_s, p0.user_clip_end_s) == (0.8, 3.05)
    assert (p0.ai_clip_start_s, p0.ai_clip_end_s) == (3.0, 5.1)
    ai = _decode(pair_sample(p0, audio, SR, speakers, seg.turns, False)["ai.flac"])[0]
    assert _power_at(ai, FREQ["A"]) < 1e-3 * _power_at(ai, FREQ["B"])


# --- dialogue windows -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mono_windows_never_put_the_same_audio_on_both_channels(layout):
    conv, audio, speakers = _call(OVERLAP, layout)
    seg = segment(conv, SegmentConfig())
    cfg = ShardConfig(window_s=10.0, window_min_speech_s=1.0)
    wins = plan_windows(conv.recording, conv.speakers, seg.turns, cfg, RolePolicy())
    assert len(wins) == 2
    for w in wins:
        assert w.overlap_s == 0.5 and w.mixed_source is (layout == "mono")
        x = _decode(window_sample(w, audio, SR, speakers, seg.turns)["flac"])
        user_f, ai_f = FREQ[w.user_speaker_id[-1]], FREQ[w.ai_speaker_id[-1]]
        assert _power_at(x[0], ai_f) < 1e-3 * _power_at(x[0], user_f)
        assert _power_at(x[1], user_f) < 1e-3 * _power_at(x[1], ai_f)
        over = slice(round((3.5 - w.start_s) * SR), round((4.0 - w.start_s) * SR))
        rms = np.sqrt(np.mean(x[:, over] ** 2, axis=1))
        if layout == "mono":
            assert np.all(x[:, over] == 0)  # the overlap is silent on both channels, and flagged
            assert not ((x[0] != 0) & (x[1] != 0)).any()
        else:
            assert np.all(rms > 0.15)  # each channel keeps its own speaker through the overlap


@pytest.mark.parametrize("layout", LAYOUTS)
def test_panel_windows_carry_the_third_speaker_on_the_user_channel(layout):
    lines = [(0.5, 3.0, "A", "what do you both think"), (3.3, 6.0, "C", "I think it works"),
             (6.3, 9.0, "B", "for me it does not work at all")]
    conv, audio, speakers = _call(lines, layout, labels="ABC")
    seg = segment(conv, SegmentConfig())
    cfg = ShardConfig(window_s=10.0, window_min_speech_s=1.0)
    wins = [w for w in plan_windows(conv.recording, conv.speakers, seg.turns, cfg, RolePolicy())
            if w.ai_speaker_id.endswith("B")]
    (w,) = wins
    x = _decode(window_sample(w, audio, SR, speakers, seg.turns)["flac"])
    assert _power_at(x[0], FREQ["C"]) > 0.03 and _power_at(x[0], FREQ["A"]) > 0.03
    assert _power_at(x[0], FREQ["B"]) < 1e-3 * _power_at(x[0], FREQ["A"])
    assert _power_at(x[1], FREQ["C"]) < 1e-3 * _power_at(x[1], FREQ["B"])


# --- separation fills what masking leaves silent --------------------------------------------


def test_separator_restores_the_user_under_an_interjection(tmp_path):
    from stages.analysis.separation import load_separator

    lines = [(0.5, 6.8, "A", "a long story about the store"), (2.7, 3.6, "B", "no way"),
             (7.3, 9.0, "B", "so what happened next")]
    conv, audio, speakers = _call(lines, "mono")
    seg, (pair,) = _pairs(conv)
    sep = load_separator(build_tiny_separator(str(tmp_path / "sep")))
    masked = _decode(pair_sample(pair, audio, SR, speakers, seg.turns, False)["user.flac"])[0]
    separated = _decode(pair_sample(pair, audio, SR, speakers, seg.turns, False, separator=sep)["user.flac"])[0]
    start = pair.user_clip_start_s
    over = slice(round((2.8 - start) * SR), round((3.5 - start) * SR))
    assert np.all(masked[over] == 0)
    assert _power_at(separated[over], FREQ["A"]) > 0.1  # the user's voice under the interjection is back
    assert _power_at(separated[over], FREQ["B"]) < 0.01 * _power_at(separated[over], FREQ["A"])
    assert np.array_equal(masked[: over.start - SR // 10], separated[: over.start - SR // 10])
