"""Sample payloads for the shards, cut from a conversation's standardized audio.

Three kinds: ``pairs`` (user.flac, ai.flac, optional context.flac, json), ``dialogues``
(two-channel windows, the AI on channel 1 and everyone else on channel 0, for full-duplex
training) and ``codec`` (mono chunks of one speaker's speech). Audio is ``(channels, frames)``
float32.

A speaker's signal is their own channel when they have one (telephone calls). On a mixed source
(a podcast's mix, one microphone) it is the mix masked to the speaker's speech minus every other
speaker's: others' speech is silent in it (10 ms fades inside what is kept), so a user clip
never holds the AI and two window channels are never the same audio. Overlapped speech is thus
lost on mixed sources unless a separator (stages/analysis/separation.py) is given, which fills
the speaker's overlapped stretches from the separated source that matches their solo speech;
pairs and windows record ``overlap_s`` and ``mixed_source`` either way.

Pair clips have margins (``Pair.*_clip_*_s``, set by segmentation) with their fades inside the
margin, so the first phone and last consonant survive timestamps that are a little off.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np

from catalog.schema import CodecChunk, DialogueWindow, Pair, Recording, Speaker, Turn, to_json
from stages.analysis.separation import Separator, separate_at
from stages.audio.decode import encode_flac
from stages.config import RolePolicy, ShardConfig
from stages.corpus.clips import (
    Span, intersect, merge, others_spans, overlap_s, own_channel, speaker_spans, subtract, total,
)
from stages.corpus.shards import safe_key
from stages.errors import RejectError

# Bump when a change alters planned windows or codec chunks, or the samples cut for them.
# 2: others' speech masked out on mixed sources, clip margins, windows' channel 0 = all but the AI.
CODE_VERSION = 2

# Time fields of the sample records, for code that moves records onto a stretch of the audio.
TIME_FIELDS = ("start_s", "end_s", "user_start_s", "user_end_s", "ai_start_s", "ai_end_s", "context_start_s",
               "user_clip_start_s", "user_clip_end_s", "ai_clip_start_s", "ai_clip_end_s")

FADE_S = 0.010
EDGE_FADE_S = 0.050  # a clip's outer fades, inside its margin when it has one
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


def _frames(audio: np.ndarray, sr: int, start_s: float, end_s: Optional[float]) -> tuple[int, int]:
    n = audio.shape[1]
    a = min(max(_frame(start_s, sr), 0), n)
    b = n if end_s is None else min(max(_frame(end_s, sr), a), n)
    return a, b


def _mix(audio: np.ndarray, a: int, b: int) -> np.ndarray:
    seg = audio[:, a:b]
    return seg[0].copy() if seg.shape[0] == 1 else seg.mean(axis=0, dtype=np.float32)


def _ramp(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n)).astype(np.float32)


def _envelope(
    sr: int, spans: Iterable[Span], a: int, b: int, edges: Optional[tuple[float, float, float, float]] = None
) -> np.ndarray:
    """Gain over frames [a, b): 1 inside the spans, 0 outside, raised-cosine fades inside each
    span's edges (so the gain is exactly 0 outside every span): FADE_S long, or, for a span edge
    at a clip's outer edge ``edges = (clip_start_s, clip_end_s, fade_in_s, fade_out_s)``, that
    edge's own fade."""
    env = np.zeros(b - a, dtype=np.float32)
    fade = max(1, _frame(FADE_S, sr))
    for start_s, end_s in spans:
        s, e = _frame(start_s, sr), _frame(end_s, sr)
        if e <= a or s >= b or e <= s:
            continue
        n = e - s
        g = np.ones(n, dtype=np.float32)
        f_in = f_out = fade
        if edges is not None:
            if start_s == edges[0]:
                f_in = max(1, _frame(edges[2], sr))
            if end_s == edges[1]:
                f_out = max(1, _frame(edges[3], sr))
        f_in, f_out = min(f_in, n // 2), min(f_out, n // 2)
        if f_in > 0:
            g[:f_in] = _ramp(f_in)
        if f_out > 0:
            g[n - f_out:] = np.minimum(g[n - f_out:], _ramp(f_out)[::-1])
        lo, hi = max(s, a), min(e, b)
        np.maximum(env[lo - a : hi - a], g[lo - s : hi - s], out=env[lo - a : hi - a])
    return env


def _speaker_spans(speaker_ids: set[str], turns: list[Turn]) -> list[Span]:
    return merge((t.start_s, t.end_s) for t in turns if t.speaker_id in speaker_ids and t.end_s > t.start_s)


def _masked_mix(
    audio: np.ndarray,
    sr: int,
    keep: Sequence[Span],
    minus: Sequence[Span],
    a: int,
    b: int,
    separator: Optional[Separator] = None,
    edges: Optional[tuple[float, float, float, float]] = None,
) -> np.ndarray:
    """The mix over frames [a, b) kept where `keep` and no span of `minus` is (others' speech
    silent). With a separator, the stretches of `keep` that `minus` overlaps are filled from the
    separated source most like the kept solo speech."""
    mix = _mix(audio, a, b)
    # Only what lies near [a, b) matters (a recording's spans are many, a clip is short).
    lo, hi = a / sr - 1.0, b / sr + 1.0
    keep = [x for x in keep if x[1] > lo and x[0] < hi]
    minus = [x for x in minus if x[1] > lo and x[0] < hi]
    solo = subtract(keep, minus)
    out = mix * _envelope(sr, solo, a, b, edges)
    if separator is None:
        return out
    both = intersect(keep, minus)
    both_env = _envelope(sr, both, a, b)
    if not both_env.any() or not out.any():
        return out  # nothing overlapped, or no solo speech to tell which source is the speaker
    sources = separate_at(separator, mix, sr)
    solo_env = out != 0
    scores = [abs(float(np.dot(src[solo_env], out[solo_env]))) / (float(np.linalg.norm(src[solo_env])) + 1e-9)
              for src in sources]
    return out + sources[int(np.argmax(scores))] * both_env


def speaker_track(
    audio: np.ndarray,
    sr: int,
    speaker: Speaker,
    turns: list[Turn],
    start_s: float = 0.0,
    end_s: Optional[float] = None,
    separator: Optional[Separator] = None,
) -> np.ndarray:
    """The speaker's own signal over [start_s, end_s) (default: the whole audio), shape (frames,).

    Their dedicated channel when ``speaker.channel`` exists in ``audio``; otherwise the mono mix
    masked to their turns minus every other speaker's turns, with 10 ms raised-cosine fades. The
    span is clipped to the audio.
    """
    a, b = _frames(audio, sr, start_s, end_s)
    ch = _usable_channel(audio, speaker)
    if ch is not None:
        return np.array(audio[ch, a:b], dtype=np.float32)
    spans = speaker_spans(turns)
    own = spans.get(speaker.speaker_id, [])
    return _masked_mix(audio, sr, own, others_spans(spans, [speaker.speaker_id]), a, b, separator)


def clip_track(
    audio: np.ndarray,
    sr: int,
    speaker: Speaker,
    turns: list[Turn],
    turn: Span,
    clip: Span,
    separator: Optional[Separator] = None,
) -> np.ndarray:
    """A turn's clip [clip start, clip end), margins included, with fades at its edges (inside
    the margin where there is one): the speaker's channel, or on a mixed source the mix over the
    clip minus every other speaker's speech."""
    a, b = _frames(audio, sr, clip[0], clip[1])
    fade_in = min(EDGE_FADE_S, max(FADE_S, turn[0] - clip[0]))
    fade_out = min(EDGE_FADE_S, max(FADE_S, clip[1] - turn[1]))
    edges = (clip[0], clip[1], fade_in, fade_out)
    ch = _usable_channel(audio, speaker)
    if ch is not None:
        return audio[ch, a:b].astype(np.float32) * _envelope(sr, [clip], a, b, edges)
    others = others_spans(speaker_spans(turns), [speaker.speaker_id])
    return _masked_mix(audio, sr, [clip], others, a, b, separator, edges)


def _group_track(
    audio: np.ndarray,
    sr: int,
    group: Sequence[Speaker],
    turns: list[Turn],
    a: int,
    b: int,
    separator: Optional[Separator] = None,
) -> np.ndarray:
    """Several speakers heard together over frames [a, b): their channels summed, and the mix
    masked to the speech of those without a channel minus everyone else's."""
    spans = speaker_spans(turns)
    with_channel = sorted({c for c in (_usable_channel(audio, s) for s in group) if c is not None})
    without = [s.speaker_id for s in group if _usable_channel(audio, s) is None]
    out = np.zeros(b - a, dtype=np.float32)
    for ch in with_channel:
        out += audio[ch, a:b]
    if without:
        keep = merge(x for sid in without for x in spans.get(sid, []))
        out += _masked_mix(audio, sr, keep, others_spans(spans, without), a, b, separator)
    return np.clip(out, -1.0, 1.0)


def _mixed_track(
    audio: np.ndarray, sr: int, speakers: list[Speaker], turns: list[Turn], start_s: float, end_s: float
) -> np.ndarray:
    """Several speakers heard together over a span (a pair's context, overlaps included): their
    channels summed, or the mono mix masked to the union of their turns (summing masked copies
    would double overlapped speech)."""
    a, b = _frames(audio, sr, start_s, end_s)
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


def pair_clips(pair: Pair) -> tuple[Span, Span]:
    """The user and AI clips' bounds: the recorded margins, or (older records) the turns."""
    def pick(value: Optional[float], default: float) -> float:
        return default if value is None else value

    user = (pick(pair.user_clip_start_s, pair.user_start_s), pick(pair.user_clip_end_s, pair.user_end_s))
    ai = (pick(pair.ai_clip_start_s, pair.ai_start_s), pick(pair.ai_clip_end_s, pair.ai_end_s))
    return user, ai


def pair_audio_seconds(pair: Pair, include_context: bool) -> float:
    """Seconds of audio a pair sample holds (for size estimates)."""
    user, ai = pair_clips(pair)
    total = (user[1] - user[0]) + (ai[1] - ai[0])
    if include_context and pair.context_start_s is not None:
        total += max(0.0, pair.user_start_s - pair.context_start_s)
    return total


def pair_span(pair: Pair, include_context: bool) -> Span:
    """The stretch of audio a pair sample is cut from: context, clips and margins."""
    user, ai = pair_clips(pair)
    start = min(user[0], ai[0], pair.user_start_s)
    if include_context and pair.context_start_s is not None:
        start = min(start, pair.context_start_s)
    return start, max(user[1], ai[1], pair.user_end_s, pair.ai_end_s)


def pair_sample(
    pair: Pair,
    audio: np.ndarray,
    sr: int,
    speakers: dict[str, Speaker],
    turns: list[Turn],
    include_context: bool,
    separator: Optional[Separator] = None,
) -> dict[str, bytes]:
    """``user.flac``, ``ai.flac``, ``context.flac`` (if wanted and the pair has context), ``json``.

    The clips span the pair's recorded clip bounds (the turns with their margins). The context is
    the mix of the pair's two speakers and any other context speakers, from the first context
    turn's start to the user turn's start.
    """
    user = _speaker(speakers, pair.user_speaker_id, pair.pair_id)
    ai = _speaker(speakers, pair.ai_speaker_id, pair.pair_id)
    user_clip, ai_clip = pair_clips(pair)
    _span_frames(audio, sr, *user_clip, "user turn", pair.pair_id)
    _span_frames(audio, sr, *ai_clip, "ai turn", pair.pair_id)
    user_track = clip_track(audio, sr, user, turns, (pair.user_start_s, pair.user_end_s), user_clip, separator)
    ai_track = clip_track(audio, sr, ai, turns, (pair.ai_start_s, pair.ai_end_s), ai_clip, separator)
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


def _speech_s(spans: list[Span], start_s: float, end_s: float) -> float:
    """Seconds of [start_s, end_s) covered by the union of the spans."""
    return total(spans, start_s, end_s)


def _plays_ai(speaker: Speaker, policy: RolePolicy) -> bool:
    return policy.mode == "both" or policy.ai_role in (speaker.role, speaker.label)


def _orientations(
    speakers: list[Speaker], turns: list[Turn], policy: RolePolicy
) -> list[tuple[Speaker, Speaker]]:
    """(user, ai) speaker pairs to cut windows for.

    The AI is one speaker (channel 1); channel 0 holds everyone else, and the user is the one of
    them with most speech (the window's ``user_speaker_id``). In "both" mode the two speakers
    with most speech (ties by id) each play the AI; in "fixed" mode the AI is the speaker with
    most speech among those the policy allows, so a podcast's guest is never crowded out by a
    co-host.
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
    end, one per allowed (user, AI) orientation, kept where the user and the AI each have at
    least ``cfg.window_min_speech_s`` of speech. Ordered by start, then AI speaker."""
    if not turns:
        return []
    first = min(t.start_s for t in turns)
    last = max(t.end_s for t in turns)
    n_windows = max(1, math.ceil((last - first) / cfg.window_s - 1e-9))
    spans = speaker_spans(turns)
    orientations = _orientations(speakers, turns, role_policy)
    windows = []
    for k in range(n_windows):
        start = round(first + k * cfg.window_s, 3)
        end = round(start + cfg.window_s, 3)
        for user, ai in orientations:
            user_speech = _speech_s(spans.get(user.speaker_id, []), start, end)
            ai_speech = _speech_s(spans.get(ai.speaker_id, []), start, end)
            if user_speech < cfg.window_min_speech_s or ai_speech < cfg.window_min_speech_s:
                continue
            talking = [s for s in speakers if _speech_s(spans.get(s.speaker_id, []), start, end) > 0]
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
                    overlap_s=overlap_s(spans, start, end),
                    mixed_source=any(not own_channel(s, recording.num_channels) for s in talking),
                )
            )
    return windows


def window_sample(
    window: DialogueWindow,
    audio: np.ndarray,
    sr: int,
    speakers: dict[str, Speaker],
    turns: list[Turn],
    separator: Optional[Separator] = None,
) -> dict[str, bytes]:
    """``flac`` (2 channels, exactly the window's length, zero-padded past the audio's end: every
    speaker but the AI on 0, as the AI hears them, the AI on 1) and ``json``."""
    _speaker(speakers, window.user_speaker_id, window.window_id)
    ai = _speaker(speakers, window.ai_speaker_id, window.window_id)
    _span_frames(audio, sr, window.start_s, window.end_s, "window", window.window_id)
    length = _frame(window.end_s, sr) - _frame(window.start_s, sr)
    a, b = _frames(audio, sr, window.start_s, window.end_s)
    rest = [s for sid, s in sorted(speakers.items()) if sid != ai.speaker_id]
    out = np.zeros((2, length), dtype=np.float32)
    for ch, track in ((0, _group_track(audio, sr, rest, turns, a, b, separator)),
                      (1, speaker_track(audio, sr, ai, turns, window.start_s, window.end_s, separator))):
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
