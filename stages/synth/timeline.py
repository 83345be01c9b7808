"""Turns of synthesized speech placed on one timeline with human-like timing: floor-transfer
gaps and overlaps drawn from a GapDistribution, optional backchannels in the listener's channel
during the other's long turns, rendered as one channel per speaker and a mono mix.

Rules: a turn starts `gap` after the previous turn ends (negative = overlap); an overlap is never
longer than half of either turn, so the floor order stays the script's order; a turn never starts
before its own speaker's previous turn (or backchannel) has ended, so a channel carries one
voice at a time. Everything is decided by the `rng` given, so a seed gives the same timeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from stages.synth.turn_stats import GapDistribution

LEAD_S = 0.3  # silence before the first turn and after the last
SAME_SPEAKER_PAUSE_S = 0.3  # a speaker's consecutive turns (not a floor transfer)
MAX_OVERLAP_FRACTION = 0.5  # of either turn
BC_MIN_TURN_S = 3.0  # backchannels only during turns at least this long
BC_MARGIN_S = 0.8  # not this close to the turn's start or end, nor to another backchannel
BC_MAX_S = 1.2  # longer clips are not backchannels (the segmenter's backchannel_max_s)
MIX_PEAK = 0.99
BC_TRIES = 5


@dataclass(frozen=True)
class Placement:
    speaker: int  # index into the dialogue's speakers = channel of the two-channel audio
    start_s: float
    end_s: float
    text: str
    is_backchannel: bool = False
    turn_index: Optional[int] = None  # index into the input turns; None for a backchannel

    def to_dict(self) -> dict:
        return {"speaker": self.speaker, "start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4),
                "text": self.text, "is_backchannel": self.is_backchannel, "turn_index": self.turn_index}


@dataclass
class Timeline:
    placements: list[Placement]  # in start order
    two_channel: np.ndarray  # (speakers, n) float32, speaker i on channel i
    mono: np.ndarray  # (n,) float32: the channels' sum, scaled by mix_gain
    sr: int
    mix_gain: float = 1.0  # ≤ 1; applied to the mono mix only, so it never clips

    @property
    def duration_s(self) -> float:
        return self.two_channel.shape[1] / self.sr

    def gaps(self) -> list[float]:
        """Floor-transfer offsets as placed (next turn start minus previous turn end)."""
        turns = [p for p in self.placements if not p.is_backchannel]
        return [b.start_s - a.end_s for a, b in zip(turns, turns[1:]) if a.speaker != b.speaker]


Turn = Union[tuple[int, np.ndarray], tuple[int, np.ndarray, str]]
Backchannel = Union[np.ndarray, tuple[np.ndarray, str]]


def _clip(item: Backchannel) -> tuple[np.ndarray, str]:
    return (item[0], item[1]) if isinstance(item, tuple) else (item, "")


def assemble(
    turn_audios: Sequence[Turn],
    sr: int,
    gaps: GapDistribution,
    rng: np.random.Generator,
    backchannels: Optional[Sequence[Sequence[Backchannel]]] = None,
    bc_rate: Optional[float] = None,
) -> Timeline:
    """Place turns `(speaker, mono float audio[, text])` in order. `backchannels[s]`: clips
    (audio or (audio, text)) speaker s may say while another speaker holds a long turn;
    `bc_rate` per minute of that turn (default: `gaps.backchannel_per_min`; 0: none)."""
    if not turn_audios:
        raise ValueError("no turns to assemble")
    turns = []
    for item in turn_audios:
        spk, audio = int(item[0]), np.asarray(item[1], dtype=np.float32).reshape(-1)
        if spk < 0 or len(audio) == 0:
            raise ValueError(f"bad turn: speaker {spk}, {len(audio)} samples")
        turns.append((spk, audio, item[2] if len(item) > 2 else ""))
    n_speakers = max(2, max(s for s, _, _ in turns) + 1)
    lead = int(round(LEAD_S * sr))

    # Floor turns, in sample positions.
    spans: list[tuple[int, int, int]] = []  # (speaker, start, end)
    last_end = [0] * n_speakers
    for i, (spk, audio, _) in enumerate(turns):
        n = len(audio)
        if not spans:
            start = lead
        else:
            prev_spk, prev_start, prev_end = spans[-1]
            if prev_spk == spk:
                start = prev_end + int(round(SAME_SPEAKER_PAUSE_S * sr))
            else:
                gap = int(round(gaps.sample(rng) * sr))
                max_overlap = int(MAX_OVERLAP_FRACTION * min(n, prev_end - prev_start))
                start = prev_end + max(gap, -max_overlap)
            start = max(start, last_end[spk])
        spans.append((spk, start, start + n))
        last_end[spk] = start + n

    placements = [Placement(s, a / sr, b / sr, turns[i][2], False, i) for i, (s, a, b) in enumerate(spans)]
    bc_spans = _place_backchannels(spans, sr, rng, backchannels, gaps.backchannel_per_min if bc_rate is None else bc_rate)

    total = max(b for _, _, b in spans + [(s, a, b) for s, a, b, _ in bc_spans]) + lead
    two = np.zeros((n_speakers, total), dtype=np.float32)
    for (spk, a, b), (_, audio, _) in zip(spans, turns):
        two[spk, a:b] += audio
    for spk, a, b, (audio, text) in bc_spans:
        two[spk, a:b] += audio
        placements.append(Placement(spk, a / sr, b / sr, text, True, None))
    placements.sort(key=lambda p: (p.start_s, p.speaker))
    mono = two.sum(axis=0)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    gain = min(1.0, MIX_PEAK / peak) if peak > 0 else 1.0
    return Timeline(placements, two, (mono * gain).astype(np.float32), sr, gain)


def _place_backchannels(
    spans: list[tuple[int, int, int]],
    sr: int,
    rng: np.random.Generator,
    clips: Optional[Sequence[Sequence[Backchannel]]],
    rate_per_min: float,
) -> list[tuple[int, int, int, tuple[np.ndarray, str]]]:
    """Backchannels inside long turns, on a listener's channel while that listener is silent."""
    if not clips or rate_per_min <= 0:
        return []
    usable = [[(np.asarray(a, dtype=np.float32).reshape(-1), t) for a, t in map(_clip, cs)] for cs in clips]
    usable = [[(a, t) for a, t in cs if 0 < len(a) <= BC_MAX_S * sr] for cs in usable]
    margin = int(BC_MARGIN_S * sr)
    busy: dict[int, list[tuple[int, int]]] = {}
    for spk, a, b in spans:
        busy.setdefault(spk, []).append((a, b))
    out = []
    for k, (spk, a, b) in enumerate(spans):
        if (b - a) < BC_MIN_TURN_S * sr:
            continue
        # The listener: the speaker of the turn before (or after) this one, if it is another.
        neighbours = [spans[j][0] for j in (k - 1, k + 1) if 0 <= j < len(spans) and spans[j][0] != spk]
        others = [s for s in range(len(usable)) if s != spk and usable[s]]
        listener = next((s for s in neighbours if s in others), others[0] if others else None)
        if listener is None:
            continue
        count = int(rng.poisson(rate_per_min * (b - a) / sr / 60.0))
        for _ in range(count):
            audio, text = usable[listener][int(rng.integers(len(usable[listener])))]
            lo, hi = a + margin, b - margin - len(audio)
            if hi <= lo:
                break
            # Keep a margin from the listener's own speech and earlier backchannels (a clip
            # inside the listener's own turn would merge into it); a few tries for a free spot.
            for _ in range(BC_TRIES):
                start = int(rng.integers(lo, hi))
                end = start + len(audio)
                if not any(start < y + margin and end > x - margin for x, y in busy.get(listener, [])):
                    busy.setdefault(listener, []).append((start, end))
                    out.append((listener, start, end, (audio, text)))
                    break
    return out
