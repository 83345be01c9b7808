"""Time spans of speech and the bounds of a speaker's clip, shared by segmentation (which records
them in pairs and windows) and the sample cutter (which cuts and masks by them).

On a mixed source (speakers without a channel of their own: one microphone, a podcast's mix) a
speaker's clip must not hold anyone else's voice: its margins stop where another speaker's
speech begins or ends, and the cutter masks other speakers' spans inside it.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from catalog.schema import Speaker, Turn

Span = tuple[float, float]


def own_channel(speaker: Optional[Speaker], num_channels: int) -> bool:
    """Does the speaker have a channel of their own (a telephone call's side)?"""
    return speaker is not None and speaker.channel is not None and 0 <= speaker.channel < num_channels


def merge(spans: Iterable[Span]) -> list[Span]:
    """The union of spans as sorted, disjoint spans (empty ones dropped)."""
    out: list[list[float]] = []
    for s, e in sorted((s, e) for s, e in spans if e > s):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def subtract(spans: Iterable[Span], minus: Iterable[Span]) -> list[Span]:
    """What of `spans` lies outside every span of `minus`."""
    cut = merge(minus)
    out: list[Span] = []
    j = 0
    for s, e in merge(spans):
        while j < len(cut) and cut[j][1] <= s:
            j += 1
        cur, k = s, j
        while k < len(cut) and cut[k][0] < e:
            if cut[k][0] > cur:
                out.append((cur, cut[k][0]))
            cur = max(cur, cut[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def intersect(spans: Iterable[Span], other: Iterable[Span]) -> list[Span]:
    """What of `spans` lies inside some span of `other`."""
    a, b = merge(spans), merge(other)
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            out.append((lo, hi))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return out


def total(spans: Iterable[Span], start: float = float("-inf"), end: float = float("inf")) -> float:
    """Seconds of [start, end) that the union of the spans covers."""
    return sum(min(e, end) - max(s, start) for s, e in merge(spans) if e > start and s < end)


def speaker_spans(turns: Sequence[Turn]) -> dict[str, list[Span]]:
    """Each speaker's speech as the spans of their turns (floor, backchannel and interjection alike)."""
    out: dict[str, list[Span]] = {}
    for t in turns:
        if t.end_s > t.start_s:
            out.setdefault(t.speaker_id, []).append((t.start_s, t.end_s))
    return {k: merge(v) for k, v in out.items()}


def others_spans(spans: dict[str, list[Span]], speaker_ids: Iterable[str]) -> list[Span]:
    """The speech of every speaker not in `speaker_ids`."""
    keep = set(speaker_ids)
    return merge(s for sid, ss in spans.items() if sid not in keep for s in ss)


def overlap_s(spans: dict[str, list[Span]], start: float, end: float) -> float:
    """Seconds of [start, end) in which two or more speakers speak at once."""
    events: list[tuple[float, int]] = []
    for ss in spans.values():
        for s, e in ss:
            s, e = max(s, start), min(e, end)
            if e > s:
                events += [(s, 1), (e, -1)]
    events.sort(key=lambda x: (x[0], x[1]))  # ends before starts at the same instant
    out, active, last = 0.0, 0, start
    for t, d in events:
        if active >= 2:
            out += t - last
        active += d
        last = t
    return round(out, 3)


def clip_bounds(
    start: float,
    end: float,
    pad_s: float,
    others: Sequence[Span],
    mixed: bool,
    duration_s: Optional[float] = None,
    stop_at: Optional[float] = None,
) -> Span:
    """A turn's clip: [start - pad, end + pad], clamped to [0, duration]. On a mixed source the
    margins never enter another speaker's speech (a side whose edge lies inside someone else's
    speech gets no margin), and the clip ends at `stop_at` at the latest (a user clip stops where
    the AI starts)."""
    lo, hi = start - pad_s, end + pad_s
    if mixed:
        for s, e in others:
            if s < start < e or s == start:
                lo = start
            elif lo < e <= start:
                lo = e
            if s < end < e or e == end:
                hi = end
            elif end <= s < hi:
                hi = s
        if stop_at is not None:
            hi = min(hi, stop_at)
    lo = max(lo, 0.0)
    if duration_s is not None and duration_s > 0:
        hi = min(hi, duration_s)
    return round(lo, 3), round(max(hi, lo), 3)
