"""Sample payloads from synthetic audio: a 440 Hz tone on channel 0 (speaker A), 1000 Hz on
channel 1 (speaker B), so every decoded FLAC says whose signal it carries."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import webdataset

from catalog.schema import Pair, Recording, Speaker, Turn
from catalog.store import Store
from stages.config import RolePolicy, ShardConfig
from stages.corpus.samples import (
    codec_sample,
    estimate_sample_bytes,
    pair_audio_seconds,
    pair_sample,
    plan_codec_chunks,
    plan_windows,
    speaker_track,
    window_sample,
)
from stages.corpus.shards import write_tar_shard
from stages.errors import RejectError

SR = 24000
DUR = 10.0
F_A, F_B = 440.0, 1000.0
REC = "fisher-fe_03_00001"


def _tone(freq: float, seconds: float = DUR) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _stereo() -> np.ndarray:
    return np.stack([_tone(F_A), _tone(F_B)])


def _recording(duration: float = DUR) -> Recording:
    return Recording(
        recording_id=REC, source="fisher", origin_id="fe_03_00001", origin="/ldc/fe_03_00001.sph",
        license="LDC", lang="en", native_sample_rate=8000, num_channels=2, duration_s=duration,
        encoding="ulaw", audio_sha256="0" * 64, audio_path=f"recordings/{REC}.flac", sample_rate=SR,
        bandwidth="narrowband", effective_bandwidth_hz=3400.0,
    )


def _speakers(channels: tuple = (0, 1)) -> dict[str, Speaker]:
    return {
        f"{REC}-{lab}": Speaker(f"{REC}-{lab}", REC, "fisher", lab, channel=ch, role=role)
        for lab, ch, role in (("A", channels[0], "caller"), ("B", channels[1], "callee"))
    }


def _turn(i: int, label: str, start: float, end: float, backchannel: bool = False) -> Turn:
    return Turn(
        turn_id=f"{REC}-t{i:04d}", recording_id=REC, source="fisher", lang="en", index=i,
        speaker_id=f"{REC}-{label}", channel=None, start_s=start, end_s=end, duration_s=end - start,
        text="words", utterance_ids=[], is_backchannel=backchannel, is_floor_transfer=True,
        gap_s=0.2, is_interruption=False,
    )


TURNS = [
    _turn(0, "A", 0.5, 2.5),
    _turn(1, "B", 2.7, 4.7),
    _turn(2, "A", 5.0, 7.0),
    _turn(3, "B", 7.2, 9.0),
]


def _pair(context_start: float | None = 0.5) -> Pair:
    u, a = TURNS[2], TURNS[3]
    ctx = TURNS[:2] if context_start is not None else []
    return Pair(
        pair_id=f"{REC}-p0002", recording_id=REC, source="fisher", lang="en", license="LDC",
        bandwidth="narrowband", user_turn_id=u.turn_id, ai_turn_id=a.turn_id,
        user_speaker_id=u.speaker_id, ai_speaker_id=a.speaker_id, user_channel=0, ai_channel=1,
        user_start_s=u.start_s, user_end_s=u.end_s, ai_start_s=a.start_s, ai_end_s=a.end_s,
        user_duration_s=u.duration_s, ai_duration_s=a.duration_s, gap_s=0.2, is_interruption=False,
        user_text="words", ai_text="words", context_turn_ids=[t.turn_id for t in ctx],
        context_speaker_ids=[t.speaker_id for t in ctx], context_texts=[t.text for t in ctx],
        context_start_s=context_start,
    )


def _decode(flac: bytes) -> np.ndarray:
    data, sr = sf.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    assert sr == SR
    return data.T  # (channels, frames)


def _power_at(x: np.ndarray, freq: float) -> float:
    spec = np.abs(np.fft.rfft(x)) / max(1, x.size)
    k = int(round(freq * x.size / SR))
    return float(spec[max(0, k - 2): k + 3].max())


def _dominant(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x))
    return float(np.argmax(spec) * SR / x.size)


# --- tracks -----------------------------------------------------------------------------------


def test_speaker_track_uses_dedicated_channel():
    audio = _stereo()
    spk = _speakers()
    a = speaker_track(audio, SR, spk[f"{REC}-A"], TURNS)
    b = speaker_track(audio, SR, spk[f"{REC}-B"], TURNS, 1.0, 2.0)
    assert a.shape == (int(DUR * SR),) and np.array_equal(a, audio[0])
    assert b.shape == (SR,) and np.array_equal(b, audio[1, SR:2 * SR])


def test_masked_mono_track_is_zero_outside_turns_with_fades():
    mono = (_tone(F_A) + _tone(F_B))[None] / 2
    spk = _speakers(channels=(None, 5))  # channel 5 does not exist: falls back to the mask too
    for label in ("A", "B"):
        track = speaker_track(mono, SR, spk[f"{REC}-{label}"], TURNS)
        inside = np.zeros(track.size, dtype=bool)
        for t in TURNS:
            if t.speaker_id.endswith(label):
                inside[round(t.start_s * SR): round(t.end_s * SR)] = True
        assert np.all(track[~inside] == 0)
        # Away from the 10 ms fades the track is the mix itself.
        fade = int(0.010 * SR)
        core = inside.copy()
        for t in TURNS:
            s, e = round(t.start_s * SR), round(t.end_s * SR)
            core[s: s + fade] = False
            core[e - fade: e] = False
        assert np.allclose(track[core], mono[0][core])
        # The fade starts near zero and rises monotonically in gain.
        t0 = next(t for t in TURNS if t.speaker_id.endswith(label))
        s = round(t0.start_s * SR)
        gain = np.abs(track[s: s + fade]) / np.maximum(np.abs(mono[0][s: s + fade]), 1e-6)
        assert gain[0] < 0.01 and gain[-1] > 0.99


# --- pairs ------------------------------------------------------------------------------------


def test_pair_sample_members_carry_each_speaker():
    sample = pair_sample(_pair(), _stereo(), SR, _speakers(), TURNS, include_context=True)
    assert set(sample) == {"user.flac", "ai.flac", "context.flac", "json"}
    user, ai, ctx = (_decode(sample[k]) for k in ("user.flac", "ai.flac", "context.flac"))
    assert user.shape == (1, round(2.0 * SR)) and abs(_dominant(user[0]) - F_A) < 2
    assert ai.shape == (1, round(1.8 * SR)) and abs(_dominant(ai[0]) - F_B) < 2
    assert _power_at(user[0], F_B) < 0.01 * _power_at(user[0], F_A)
    assert _power_at(ai[0], F_A) < 0.01 * _power_at(ai[0], F_B)
    # Context: 0.5 s .. 5.0 s, both channels mixed.
    assert ctx.shape == (1, round(4.5 * SR))
    assert _power_at(ctx[0], F_A) > 0.05 and _power_at(ctx[0], F_B) > 0.05
    meta = json.loads(sample["json"])
    assert meta["pair_id"] == f"{REC}-p0002" and meta["shard"] is None
    assert meta["context_turn_ids"] == [TURNS[0].turn_id, TURNS[1].turn_id]
    # Same input, same bytes.
    again = pair_sample(_pair(), _stereo(), SR, _speakers(), TURNS, include_context=True)
    assert again == sample


def test_pair_sample_context_absent():
    no_ctx = pair_sample(_pair(), _stereo(), SR, _speakers(), TURNS, include_context=False)
    assert set(no_ctx) == {"user.flac", "ai.flac", "json"}
    first_pair = pair_sample(_pair(None), _stereo(), SR, _speakers(), TURNS, include_context=True)
    assert set(first_pair) == {"user.flac", "ai.flac", "json"}
    assert pair_audio_seconds(_pair(), True) == pytest.approx(2.0 + 1.8 + 4.5)
    assert pair_audio_seconds(_pair(), False) == pytest.approx(3.8)


def test_pair_sample_mono_mix_context_masks_to_turns():
    mono = _tone(F_A)[None]
    sample = pair_sample(_pair(), mono, SR, _speakers(channels=(None, None)), TURNS, True)
    ctx = _decode(sample["context.flac"])[0]
    # 0.5 .. 5.0 s: speech 0.5-2.5 and 2.7-4.7, silence 2.5-2.7 and 4.7-5.0.
    gap = ctx[round(2.0 * SR) + 10: round(2.2 * SR) - 10]
    tail = ctx[round(4.2 * SR) + 10:]
    assert np.all(gap == 0) and np.all(tail == 0)
    assert np.abs(ctx[: round(2.0 * SR) - 300]).max() > 0.25


def test_pair_outside_audio_is_rejected():
    short = _stereo()[:, : int(6.0 * SR)]  # ends before the AI turn
    with pytest.raises(RejectError) as e:
        pair_sample(_pair(), short, SR, _speakers(), TURNS, include_context=True)
    assert e.value.reason == "sample_outside_audio"


def test_pair_samples_in_a_shard_read_back(tmp_path):
    store = Store(str(tmp_path))
    pair = _pair()
    sample = pair_sample(pair, _stereo(), SR, _speakers(), TURNS, include_context=True)
    write_tar_shard(store, "shards/v1/pairs-000000.tar", [(pair.pair_id, sample)], "pairs", "v1")
    (got,) = list(webdataset.WebDataset(store.path("shards/v1/pairs-000000.tar"), shardshuffle=False))
    assert got["__key__"] == pair.pair_id
    assert abs(_dominant(_decode(got["user.flac"])[0]) - F_A) < 2
    assert json.loads(got["json"])["ai_turn_id"] == pair.ai_turn_id


# --- dialogue windows -------------------------------------------------------------------------


def test_windows_both_orientations():
    cfg = ShardConfig(window_s=5.0, window_min_speech_s=1.0)
    wins = plan_windows(_recording(), list(_speakers().values()), TURNS, cfg, RolePolicy())
    # Windows 0.5-5.5 (A 2.0 s, B 2.0 s) and 5.5-10.5 (A 1.5 s, B 1.8 s), each way round.
    assert [(w.start_s, w.end_s, w.ai_speaker_id[-1]) for w in wins] == [
        (0.5, 5.5, "A"), (0.5, 5.5, "B"), (5.5, 10.5, "A"), (5.5, 10.5, "B")
    ]
    assert [w.window_id for w in wins][:2] == [f"{REC}-w00000500-A", f"{REC}-w00000500-B"]
    assert all("." not in w.window_id for w in wins)
    w = wins[3]
    assert (w.user_speaker_id, w.user_speech_s, w.ai_speech_s) == (f"{REC}-A", 1.5, 1.8)
    assert (w.license, w.bandwidth, w.lang) == ("LDC", "narrowband", "en")


def test_windows_fixed_role_and_min_speech():
    cfg = ShardConfig(window_s=5.0, window_min_speech_s=1.0)
    spk = list(_speakers().values())
    fixed = plan_windows(_recording(), spk, TURNS, cfg, RolePolicy(mode="fixed", ai_role="callee"))
    assert [(w.start_s, w.ai_speaker_id, w.user_speaker_id) for w in fixed] == [
        (0.5, f"{REC}-B", f"{REC}-A"), (5.5, f"{REC}-B", f"{REC}-A")
    ]
    by_label = plan_windows(_recording(), spk, TURNS, cfg, RolePolicy(mode="fixed", ai_role="A"))
    assert {w.ai_speaker_id for w in by_label} == {f"{REC}-A"} and len(by_label) == 2
    assert plan_windows(_recording(), spk, TURNS, cfg, RolePolicy(mode="fixed", ai_role="host")) == []
    # A has only 1.5 s in the second window: with 1.6 s required it goes.
    strict = ShardConfig(window_s=5.0, window_min_speech_s=1.6)
    assert [w.start_s for w in plan_windows(_recording(), spk, TURNS, strict, RolePolicy())] == [0.5, 0.5]


def test_windows_with_three_speakers_use_the_two_most_talkative():
    spk = _speakers()
    spk[f"{REC}-C"] = Speaker(f"{REC}-C", REC, "fisher", "C", channel=None)
    turns = TURNS + [_turn(4, "C", 9.0, 9.5)]
    cfg = ShardConfig(window_s=5.0, window_min_speech_s=0.1)
    wins = plan_windows(_recording(), list(spk.values()), turns, cfg, RolePolicy())
    assert {w.ai_speaker_id for w in wins} | {w.user_speaker_id for w in wins} == {f"{REC}-A", f"{REC}-B"}


def test_window_sample_two_channels_padded():
    cfg = ShardConfig(window_s=5.0, window_min_speech_s=1.0)
    wins = plan_windows(_recording(), list(_speakers().values()), TURNS, cfg, RolePolicy())
    last = wins[3]  # 5.5-10.5 s, user A, AI B; the audio ends at 10.0 s
    sample = window_sample(last, _stereo(), SR, _speakers(), TURNS)
    assert set(sample) == {"flac", "json"}
    audio = _decode(sample["flac"])
    assert audio.shape == (2, 5 * SR)
    assert abs(_dominant(audio[0, : 4 * SR]) - F_A) < 2
    assert abs(_dominant(audio[1, : 4 * SR]) - F_B) < 2
    assert np.all(audio[:, round(4.5 * SR):] == 0)  # zero-padded past the audio's end
    assert json.loads(sample["json"])["window_id"] == last.window_id
    # The other orientation swaps the channels.
    swapped = _decode(window_sample(wins[2], _stereo(), SR, _speakers(), TURNS)["flac"])
    assert abs(_dominant(swapped[0, : 4 * SR]) - F_B) < 2


# --- codec chunks -----------------------------------------------------------------------------


def test_codec_chunks_split_evenly_and_drop_short():
    turns = [
        _turn(0, "A", 0.0, 25.0),  # 3 chunks of 8.333 s
        _turn(1, "B", 25.2, 25.7),  # 0.5 s < 1.0 s minimum: dropped
        _turn(2, "B", 26.0, 26.8, backchannel=True),  # backchannels never
        _turn(3, "B", 27.0, 32.0),  # one chunk of 5 s
        _turn(4, "A", 33.0, 40.0),  # clipped to the recording's 35 s
    ]
    chunks = plan_codec_chunks(_recording(35.0), turns, ShardConfig(codec_chunk_s=10.0, codec_min_chunk_s=1.0))
    spans = [x for c in chunks for x in (c.start_s, c.end_s)]
    assert spans == pytest.approx([0.0, 25 / 3, 25 / 3, 50 / 3, 50 / 3, 25.0, 27.0, 32.0, 33.0, 35.0])
    assert [c.speaker_id[-1] for c in chunks] == ["A", "A", "A", "B", "A"]
    assert chunks[0].chunk_id == f"{REC}-t0000-c000"
    assert len({c.chunk_id for c in chunks}) == 5 and all("." not in c.chunk_id for c in chunks)


def test_codec_sample_is_mono_speaker_track():
    chunk = plan_codec_chunks(_recording(), TURNS, ShardConfig(codec_chunk_s=1.0, codec_min_chunk_s=0.5))[2]
    assert chunk.speaker_id == f"{REC}-B" and chunk.end_s - chunk.start_s == pytest.approx(1.0)
    sample = codec_sample(chunk, _stereo(), SR, _speakers(), TURNS)
    audio = _decode(sample["flac"])
    assert audio.shape == (1, SR) and abs(_dominant(audio[0]) - F_B) < 2
    assert json.loads(sample["json"])["chunk_id"] == chunk.chunk_id


def test_estimate_sample_bytes():
    assert estimate_sample_bytes(10.0, 1, SR) == int(10 * SR * 2 * 0.6) + 4096
    assert estimate_sample_bytes(10.0, 2, SR) > estimate_sample_bytes(10.0, 1, SR)
    # Broadband noise is FLAC's worst case for speech-like levels; the estimate stays in range.
    noise = (np.random.default_rng(0).standard_normal((2, 5 * SR)) * 0.05).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, noise.T, SR, format="FLAC", subtype="PCM_16")
    actual = len(buf.getvalue())
    est = estimate_sample_bytes(5.0, 2, SR)
    assert 0.5 * actual < est < 2 * actual
