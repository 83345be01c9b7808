"""Sample payloads for the shards, cut from a conversation's standardized audio.

Three kinds: ``pairs`` (user.flac, ai.flac, optional context.flac, json), ``dialogues``
(two-channel windows, user on channel 0 and AI on channel 1, for full-duplex training) and
``codec`` (mono chunks of one speaker's speech). Audio is ``(channels, frames)`` float32.

A speaker's signal is their own channel when they have one (telephone calls), otherwise the
mono mix masked to their turns (podcasts), so the other side is silent between their turns.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np

from catalog.schema import CodecChunk, DialogueWindow, Pair, Recording, Speaker, Turn, to_json
from stages.audio.decode import encode_flac
from stages.config import RolePolicy, ShardConfig
from stages.corpus.shards import safe_key
from stages.errors import RejectError

FADE_S = 0.010
# FLAC of speech at 16 bits comes out at roughly 0.5-0.7 of raw PCM; telephone audio upsampled
# to 24 kHz compresses better still, so 0.6 errs on the large side. Per-sample overhead covers
# tar headers and padding (512-byte blocks) and FLAC headers and JSON.
FLAC_RATIO = 0.6
SAMPLE_OVERHEAD_BYTES = 4096



# --- time and tracks --------------------------------------------------------------------------


def _frame(t: float, sr: int) -> int:
    return int(round(t * sr))


def _usable_channel(audio: np.ndarray, speaker: Speaker) -> Optional[int]:
    ch = speaker.channel
    return ch if ch is not None and 0 <= ch < audio.shape[0] else None


def _mix(audio: np.ndarray, a: int, b: int) -> np.ndarray:
    seg = audio[:, a:b]
    return seg[0].copy() if seg.shape[0] == 1 else seg.mean(axis=0, dtype=np.float32)


def _envelope(sr: int, spans: Iterable[tuple[float, float]], a: int, b: int) -> np.ndarray:
    """Gain over frames [a, b): 1 inside the spans, 0 outside, raised-cosine fades of FADE_S
    inside each span's edges (so the gain is exactly 0 outside every span)."""
    env = np.zeros(b - a, dtype=np.float32)
    fade = max(1, _frame(FADE_S, sr))
    for start_s, end_s in spans:
        s, e = _frame(start_s, sr), _frame(end_s, sr)
        if e <= a or s >= b or e <= s:
            continue
        n = e - s
        g = np.ones(n, dtype=np.float32)
        f = min(fade, n // 2)
        if f > 0:
            ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(f, dtype=np.float32) + 0.5) / f)).astype(
                np.float32
            )
            g[:f] = ramp
            g[n - f :] = ramp[::-1]
        lo, hi = max(s, a), min(e, b)
        np.maximum(env[lo - a : hi - a], g[lo - s : hi - s], out=env[lo - a : hi - a])
    return env


def _speaker_spans(speaker_ids: set[str], turns: list[Turn]) -> list[tuple[float, float]]:
    return [(t.start_s, t.end_s) for t in turns if t.speaker_id in speaker_ids]


def speaker_track(
    audio: np.ndarray,
    sr: int,
    speaker: Speaker,
    turns: list[Turn],
    start_s: float = 0.0,
    end_s: Optional[float] = None,
) -> np.ndarray:
    """The speaker's own signal over [start_s, end_s) (default: the whole audio), shape (frames,).

    Their dedicated channel when ``speaker.channel`` exists in ``audio``; otherwise the mono mix
    masked to their turns with 10 ms raised-cosine fades. The span is clipped to the audio.
    """
    n = audio.shape[1]
    a = min(max(_frame(start_s, sr), 0), n)
    b = n if end_s is None else min(max(_frame(end_s, sr), a), n)
    ch = _usable_channel(audio, speaker)
    if ch is not None:
        return np.array(audio[ch, a:b], dtype=np.float32)
    env = _envelope(sr, _speaker_spans({speaker.speaker_id}, turns), a, b)
    return _mix(audio, a, b) * env


def _mixed_track(
    audio: np.ndarray, sr: int, speakers: list[Speaker], turns: list[Turn], start_s: float, end_s: float
) -> np.ndarray:
    """Several speakers heard together over a span: their channels summed, or the mono mix
    masked to the union of their turns (summing masked copies would double overlapped speech)."""
    n = audio.shape[1]
    a = min(max(_frame(start_s, sr), 0), n)
    b = min(max(_frame(end_s, sr), a), n)
    with_channel = [s for s in speakers if _usable_channel(audio, s) is not None]
    without = [s for s in speakers if _usable_channel(audio, s) is None]
    out = np.zeros(b - a, dtype=np.float32)
    for ch in sorted({_usable_channel(audio, s) for s in with_channel}):
        out += audio[ch, a:b]
    if without:
        env = _envelope(sr, _speaker_spans({s.speaker_id for s in without}, turns), a, b)
        out += _mix(audio, a, b) * env
    return np.clip(out, -1.0, 1.0)


def _span_frames(audio: np.ndarray, sr: int, start_s: float, end_s: float, what: str, item: str) -> None:
    """Reject spans that hold no audio at all (times past the audio's end, or reversed)."""
    n = audio.shape[1]
    a, b = _frame(start_s, sr), _frame(end_s, sr)
    if b <= a or a >= n or b <= 0:
        raise RejectError(
            "sample_outside_audio",
            f"{item}: {what} span {start_s:.3f}-{end_s:.3f}s outside audio of {n / sr:.3f}s",
        )


def _speaker(speakers: dict[str, Speaker], speaker_id: str, item: str) -> Speaker:
    try:
        return speakers[speaker_id]
    except KeyError:
        raise RejectError("sample_unknown_speaker", f"{item}: no speaker {speaker_id}") from None


# --- pairs ------------------------------------------------------------------------------------


def pair_audio_seconds(pair: Pair, include_context: bool) -> float:
    """Seconds of audio a pair sample holds (for size estimates)."""
    total = pair.user_duration_s + pair.ai_duration_s
    if include_context and pair.context_start_s is not None:
        total += max(0.0, pair.user_start_s - pair.context_start_s)
    return total


def pair_sample(
    pair: Pair,
    audio: np.ndarray,
    sr: int,
    speakers: dict[str, Speaker],
    turns: list[Turn],
    include_context: bool,
) -> dict[str, bytes]:
    """``user.flac``, ``ai.flac``, ``context.flac`` (if wanted and the pair has context), ``json``.

    The context is the mix of the pair's two speakers and any other context speakers, from the
    first context turn's start to the user turn's start.
    """
    user = _speaker(speakers, pair.user_speaker_id, pair.pair_id)
    ai = _speaker(speakers, pair.ai_speaker_id, pair.pair_id)
    _span_frames(audio, sr, pair.user_start_s, pair.user_end_s, "user turn", pair.pair_id)
    _span_frames(audio, sr, pair.ai_start_s, pair.ai_end_s, "ai turn", pair.pair_id)
    user_track = speaker_track(audio, sr, user, turns, pair.user_start_s, pair.user_end_s)
    ai_track = speaker_track(audio, sr, ai, turns, pair.ai_start_s, pair.ai_end_s)
    out = {"user.flac": encode_flac(user_track, sr), "ai.flac": encode_flac(ai_track, sr)}
    if include_context and pair.context_start_s is not None and pair.context_start_s < pair.user_start_s:
        ids = [pair.user_speaker_id, pair.ai_speaker_id]
        ids += [s for s in pair.context_speaker_ids if s not in ids and s in speakers]
        ctx_speakers = [speakers[s] for s in ids]
        ctx = _mixed_track(audio, sr, ctx_speakers, turns, pair.context_start_s, pair.user_start_s)
        if ctx.size:
            out["context.flac"] = encode_flac(ctx, sr)
    out["json"] = to_json(pair).encode("utf-8")
    return out


# --- dialogue windows -------------------------------------------------------------------------


def _speech_s(spans: list[tuple[float, float]], start_s: float, end_s: float) -> float:
    """Seconds of [start_s, end_s) covered by the union of the spans."""
    clipped = sorted((max(s, start_s), min(e, end_s)) for s, e in spans if e > start_s and s < end_s)
    total, cur_s, cur_e = 0.0, None, None
    for s, e in clipped:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def _plays_ai(speaker: Speaker, policy: RolePolicy) -> bool:
    return policy.mode == "both" or policy.ai_role in (speaker.role, speaker.label)


def _orientations(
    speakers: list[Speaker], turns: list[Turn], policy: RolePolicy
) -> list[tuple[Speaker, Speaker]]:
    """(user, ai) speaker pairs to cut windows for.

    Windows are two-channel, so only two speakers take part: the two with the most speech (ties
    by id). In "fixed" mode the AI is the speaker with most speech among those the policy allows
    and the user the one with most speech among the rest, so a podcast's guest is never crowded
    out by a co-host.
    """
    speech: dict[str, float] = {}
    for t in turns:
        speech[t.speaker_id] = speech.get(t.speaker_id, 0.0) + max(0.0, t.end_s - t.start_s)
    ranked = sorted((s for s in speakers if speech.get(s.speaker_id, 0.0) > 0),
                    key=lambda s: (-speech[s.speaker_id], s.speaker_id))
    if len(ranked) < 2:
        return []
    if policy.mode == "both":
        a, b = sorted(ranked[:2], key=lambda s: s.speaker_id)
        return [(b, a), (a, b)]
    ais = [s for s in ranked if _plays_ai(s, policy)]
    if not ais:
        return []
    ai = ais[0]
    others = [s for s in ranked if s.speaker_id != ai.speaker_id]
    return [(others[0], ai)]


def plan_windows(
    recording: Recording,
    speakers: list[Speaker],
    turns: list[Turn],
    cfg: ShardConfig,
    role_policy: RolePolicy,
) -> list[DialogueWindow]:
    """Back-to-back windows of ``cfg.window_s`` from the first turn's start to the last turn's
    end, one per allowed (user, AI) orientation, kept where each side has at least
    ``cfg.window_min_speech_s`` of speech. Ordered by start, then AI speaker."""
    if not turns:
        return []
    first = min(t.start_s for t in turns)
    last = max(t.end_s for t in turns)
    n_windows = max(1, math.ceil((last - first) / cfg.window_s - 1e-9))
    spans = {s.speaker_id: _speaker_spans({s.speaker_id}, turns) for s in speakers}
    orientations = _orientations(speakers, turns, role_policy)
    windows = []
    for k in range(n_windows):
        start = round(first + k * cfg.window_s, 3)
        end = round(start + cfg.window_s, 3)
        for user, ai in orientations:
            user_speech = _speech_s(spans[user.speaker_id], start, end)
            ai_speech = _speech_s(spans[ai.speaker_id], start, end)
            if user_speech < cfg.window_min_speech_s or ai_speech < cfg.window_min_speech_s:
                continue
            start_ms = int(round(start * 1000))
            windows.append(
                DialogueWindow(
                    window_id=safe_key(f"{recording.recording_id}-w{start_ms:08d}-{ai.label}"),
                    recording_id=recording.recording_id,
                    source=recording.source,
                    lang=recording.lang,
                    license=recording.license,
                    bandwidth=recording.bandwidth,
                    user_speaker_id=user.speaker_id,
                    ai_speaker_id=ai.speaker_id,
                    start_s=start,
                    end_s=end,
                    user_speech_s=round(user_speech, 3),
                    ai_speech_s=round(ai_speech, 3),
                )
            )
    return windows


def window_sample(
    window: DialogueWindow,
    audio: np.ndarray,
    sr: int,
    speakers: dict[str, Speaker],
    turns: list[Turn],
) -> dict[str, bytes]:
    """``flac`` (2 channels: user on 0, AI on 1, exactly the window's length, zero-padded past
    the audio's end) and ``json``."""
    user = _speaker(speakers, window.user_speaker_id, window.window_id)
    ai = _speaker(speakers, window.ai_speaker_id, window.window_id)
    _span_frames(audio, sr, window.start_s, window.end_s, "window", window.window_id)
    length = _frame(window.end_s, sr) - _frame(window.start_s, sr)
    out = np.zeros((2, length), dtype=np.float32)
    for ch, spk in ((0, user), (1, ai)):
        track = speaker_track(audio, sr, spk, turns, window.start_s, window.end_s)
        out[ch, : track.size] = track[:length]
    return {"flac": encode_flac(out, sr), "json": to_json(window).encode("utf-8")}


# --- codec chunks -----------------------------------------------------------------------------


def plan_codec_chunks(recording: Recording, turns: list[Turn], cfg: ShardConfig) -> list[CodecChunk]:
    """Each non-backchannel turn split evenly into chunks of at most ``cfg.codec_chunk_s``;
    chunks shorter than ``cfg.codec_min_chunk_s`` are dropped. Turns are clipped to the
    recording's duration."""
    chunks = []
    for turn in sorted(turns, key=lambda t: (t.start_s, t.turn_id)):
        if turn.is_backchannel:
            continue
        start = max(0.0, turn.start_s)
        end = min(turn.end_s, recording.duration_s) if recording.duration_s > 0 else turn.end_s
        duration = end - start
        if duration <= 0:
            continue
        n = max(1, math.ceil(duration / cfg.codec_chunk_s - 1e-9))
        piece = duration / n
        if piece < cfg.codec_min_chunk_s:
            continue
        for k in range(n):
            chunks.append(
                CodecChunk(
                    chunk_id=safe_key(f"{turn.turn_id}-c{k:03d}"),
                    recording_id=recording.recording_id,
                    source=recording.source,
                    lang=recording.lang,
                    bandwidth=recording.bandwidth,
                    speaker_id=turn.speaker_id,
                    start_s=round(start + k * piece, 6),
                    end_s=round(end if k == n - 1 else start + (k + 1) * piece, 6),
                )
            )
    return chunks


def codec_sample(
    chunk: CodecChunk,
    audio: np.ndarray,
    sr: int,
    speakers: dict[str, Speaker],
    turns: list[Turn],
) -> dict[str, bytes]:
    """``flac`` (mono, the chunk's speaker track) and ``json``."""
    spk = _speaker(speakers, chunk.speaker_id, chunk.chunk_id)
    _span_frames(audio, sr, chunk.start_s, chunk.end_s, "chunk", chunk.chunk_id)
    track = speaker_track(audio, sr, spk, turns, chunk.start_s, chunk.end_s)
    return {"flac": encode_flac(track, sr), "json": to_json(chunk).encode("utf-8")}


def estimate_sample_bytes(duration_s: float, channels: int, sr: int) -> int:
    """Rough bytes of a sample's FLAC audio in a tar: 16-bit PCM x FLAC_RATIO + overhead."""
    return int(max(0.0, duration_s) * sr * channels * 2 * FLAC_RATIO) + SAMPLE_OVERHEAD_BYTES
