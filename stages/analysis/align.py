"""Words to speakers: ASR segments × diarization turns → one speaker per piece of speech.

Word times first (`refine_word_times`): Whisper's word timings come from cross-attention, and a
word next to a pause often holds the pause too (mostly the silence before it: "I" spanning
11.93-13.21 s for speech at 13.1 s), which puts it in the wrong speaker's turn and stretches the
utterance over the silence. Each word is cut down to the speech Silero hears inside its span (a
word across a pause keeps the side after it, as stable-ts' silence suppression moves word starts
out of silence); a word Silero hears nothing in keeps its times.

Each word goes to the speaker whose turns cover most of its span; a tie (the word lies inside
two speakers' turns, as in overlapped speech) goes to the speaker whose turn started last,
i.e. the one who came in over the other. A word in no turn takes the nearest turn within
`NEAR_S`, else the majority speaker of its ASR segment. An ASR segment is split wherever the
word speaker changes. A word spoken while two or more speakers' turns are active at once is
kept and flagged ``overlap=True``. Segments without word timings go whole to the speaker
whose turns overlap them most.
"""
from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from catalog.schema import Recording, Speaker, Utterance, Word

if TYPE_CHECKING:
    from stages.analysis.asr import AsrSegment
    from stages.analysis.diarize.base import SpeakerTurn
    from stages.analysis.vad import SpeechActivity

NEAR_S = 0.5  # a word outside every turn joins a turn at most this far away
MIN_OVERLAP_S = 0.01  # simultaneous speech shorter than this (rounding at a boundary) is none
FALLBACK_SPEAKER = "SPEAKER_00"  # when diarization gave no turn at all
PAUSE_S = 0.1  # silence at least this long inside a word's span is not part of the word
MIN_WORD_S = 0.04  # a word keeps the speech after a pause inside it if that is at least this long
REACH_S = 0.4  # a word next to a pause stretches to it over at most this much speech no word holds
UTTERANCE_PAUSE_S = 0.5  # the analyzer's utterances end at pauses this long (within a collar's reach)


@dataclass
class AlignedSegment:
    speaker: str
    start_s: float
    end_s: float
    text: str
    words: list[Word] = field(default_factory=list)
    confidence: Optional[float] = None
    lang: str = ""
    overlap: bool = False  # some of it was spoken while another speaker talked


def align_words(segments: Sequence[AsrSegment], turns: Sequence[SpeakerTurn],
                split_pause_s: Optional[float] = None) -> list[AlignedSegment]:
    """Speaker-attributed pieces of the ASR segments, in time order; with `split_pause_s`, a
    piece is also split where its words pause that long (utterances are then inter-pausal
    units, whose spans hold no long silence)."""
    index = _TurnIndex(turns)
    out: list[AlignedSegment] = []
    for seg in segments:
        words = [w for w in (seg.words or []) if w.word.strip()]
        if not words:
            out.extend(_whole_segment(seg, index))
            continue
        speakers = [index.speaker_of(w.start_s, w.end_s) for w in words]
        majority = _majority([s for s in speakers if s is not None], words, speakers)
        if majority is None:
            majority = index.best_for_span(seg.start_s, seg.end_s)
        speakers = [s if s is not None else majority for s in speakers]
        aligned = [
            Word(
                word=w.word.strip(),
                start_s=w.start_s,
                end_s=w.end_s,
                confidence=getattr(w, "confidence", None),
                overlap=index.overlapped(w.start_s, w.end_s),
            )
            for w in words
        ]
        runs = _runs(speakers)
        if split_pause_s is not None:
            runs = [r for a, b in runs for r in _split_at_pauses(aligned, a, b, split_pause_s)]
        for a, b in runs:
            piece = aligned[a:b]
            text = seg.text.strip() if len(runs) == 1 else " ".join(w.word for w in piece)
            out.append(
                AlignedSegment(
                    speaker=speakers[a],
                    start_s=min(w.start_s for w in piece),
                    end_s=max(w.end_s for w in piece),
                    text=text,
                    words=piece,
                    confidence=seg.confidence,
                    lang=seg.lang,
                    overlap=any(w.overlap for w in piece),
                )
            )
    return sorted(out, key=lambda s: (s.start_s, s.end_s, s.speaker))


def refine_word_times(segments: Sequence[AsrSegment], activity: Optional[SpeechActivity],
                      pause_s: float = PAUSE_S, reach_s: float = REACH_S) -> list[AsrSegment]:
    """The segments with every word's span cut to the speech inside it, then stretched over the
    speech that touches it and no other word, up to `reach_s` (Whisper ends a word before a
    pause early and starts one after a pause late); each segment's span becomes its words'.
    Without `activity`, unchanged."""
    if activity is None:
        return list(segments)
    pauses = activity.pauses(pause_s)
    cut = [[_speech_part(w.start_s, w.end_s, pauses) for w in seg.words] for seg in segments]
    spans = sorted((a, b) for seg in cut for a, b in seg)
    starts, ends = [a for a, _ in spans], sorted(b for _, b in spans)
    out = []
    for seg, parts in zip(segments, cut):
        if not seg.words:
            out.append(seg)
            continue
        words = []
        for w, (a, b) in zip(seg.words, parts):
            a, b = _stretch(a, b, pauses, starts, ends, reach_s)
            words.append(replace(w, start_s=a, end_s=b))
        out.append(replace(seg, words=words, start_s=min(w.start_s for w in words),
                           end_s=max(w.end_s for w in words)))
    return out


def _stretch(a: float, b: float, pauses: np.ndarray, starts: list[float], ends: list[float],
             reach_s: float) -> tuple[float, float]:
    """[a, b] widened to the pause edges around it, when no other word lies in between and the
    edge is at most `reach_s` away."""
    if not len(pauses):
        return a, b
    i = int(np.searchsorted(pauses[:, 0], b - 1e-9))  # the first pause from b on
    if i < len(pauses) and pauses[i, 0] - b <= reach_s:
        k = bisect.bisect_right(starts, b - 1e-9)
        if k == len(starts) or starts[k] >= pauses[i, 0] - 1e-9:
            b = max(b, float(pauses[i, 0]))
    j = int(np.searchsorted(pauses[:, 1], a + 1e-9, side="right")) - 1  # last pause ending at or before a
    if j >= 0 and a - pauses[j, 1] <= reach_s:
        k = bisect.bisect_left(ends, a + 1e-9) - 1
        prev = ends[k] if k >= 0 else -np.inf
        if prev <= pauses[j, 1] + 1e-9:
            a = min(a, float(pauses[j, 1]))
    return round(a, 3), round(b, 3)


def _speech_part(start: float, end: float, pauses: np.ndarray) -> tuple[float, float]:
    """The part of [start, end] outside `pauses` that the word is: the last such part if it is
    at least MIN_WORD_S long, else the longest; [start, end] itself if all of it is pause."""
    if end <= start or not len(pauses):
        return start, end
    i = int(np.searchsorted(pauses[:, 1], start, side="right"))
    parts, at = [], start
    while i < len(pauses) and pauses[i, 0] < end:
        if pauses[i, 0] > at:
            parts.append((at, float(pauses[i, 0])))
        at = max(at, float(pauses[i, 1]))
        i += 1
    if at < end:
        parts.append((at, end))
    if not parts or (len(parts) == 1 and parts[0] == (start, end)):
        return start, end
    last = parts[-1]
    a, b = last if last[1] - last[0] >= MIN_WORD_S else max(parts, key=lambda p: p[1] - p[0])
    return round(a, 3), round(b, 3)


def to_utterances(recording: Recording, aligned: Sequence[AlignedSegment]) -> tuple[list[Speaker], list[Utterance]]:
    """Catalog records: one Speaker per label (f"{recording_id}-{label}"), one Utterance per
    non-empty aligned piece (f"{recording_id}-{i:05d}" in time order). Speakers of the
    channels backend ("CH<n>") keep their channel; diarized speakers of a mix have none."""
    rid = recording.recording_id
    pieces = sorted((a for a in aligned if a.text.strip()), key=lambda s: (s.start_s, s.end_s, s.speaker))
    speakers: dict[str, Speaker] = {}
    utterances: list[Utterance] = []
    for i, piece in enumerate(pieces):
        spk = speakers.get(piece.speaker)
        if spk is None:
            spk = Speaker(
                speaker_id=f"{rid}-{piece.speaker}",
                recording_id=rid,
                source=recording.source,
                label=piece.speaker,
                channel=_channel_of(piece.speaker, recording.num_channels),
                role=None,
            )
            speakers[piece.speaker] = spk
        utterances.append(
            Utterance(
                utterance_id=f"{rid}-{i:05d}",
                recording_id=rid,
                source=recording.source,
                speaker_id=spk.speaker_id,
                channel=spk.channel,
                start_s=float(piece.start_s),
                end_s=float(piece.end_s),
                text_raw=piece.text,
                text=" ".join(piece.text.split()),
                lang=piece.lang or recording.lang,
                confidence=piece.confidence,
                words=list(piece.words),
            )
        )
    return list(speakers.values()), utterances


class _TurnIndex:
    """Turns sorted by start, with the running maximum of their ends, so the turns touching a
    span are found by bisection and a short backward walk (hour-long episodes have thousands
    of words and turns)."""

    def __init__(self, turns: Sequence[SpeakerTurn]):
        self.turns = sorted(turns, key=lambda t: (t.start_s, t.end_s, t.speaker))
        self.starts = [t.start_s for t in self.turns]
        self.max_end: list[float] = []
        for t in self.turns:
            self.max_end.append(max(t.end_s, self.max_end[-1]) if self.max_end else t.end_s)

    def _touching(self, start: float, end: float) -> list[Any]:
        out = []
        i = bisect.bisect_left(self.starts, end) - 1
        while i >= 0 and self.max_end[i] > start:
            if self.turns[i].end_s > start:
                out.append(self.turns[i])
            i -= 1
        return out[::-1]

    def speaker_of(self, start: float, end: float) -> Optional[str]:
        """Most covered speaker of [start, end]; ties to the latest-starting turn; a word in
        no turn takes the nearest turn within NEAR_S; None if there is none."""
        start, end = _widen(start, end)
        cover: dict[str, tuple[float, float]] = {}
        for t in self._touching(start, end):
            ov = min(end, t.end_s) - max(start, t.start_s)
            total, latest = cover.get(t.speaker, (0.0, -1e18))
            cover[t.speaker] = (total + ov, max(latest, t.start_s))
        if cover:
            best = max(cover.values(), key=lambda v: v[0])[0]
            tied = [(latest, spk) for spk, (ov, latest) in cover.items() if ov >= best - 1e-6]
            return max(tied)[1]
        near = [(max(t.start_s - end, start - t.end_s), -t.start_s, t.speaker) for t in self.turns]
        near = [n for n in near if n[0] <= NEAR_S]
        return min(near)[2] if near else None

    def best_for_span(self, start: float, end: float) -> str:
        """Speaker whose turns overlap [start, end] most; else the nearest turn's."""
        cover: Counter[str] = Counter()
        for t in self._touching(start, end):
            cover[t.speaker] += min(end, t.end_s) - max(start, t.start_s)
        if cover:
            return cover.most_common(1)[0][0]
        if not self.turns:
            return FALLBACK_SPEAKER
        return min(self.turns, key=lambda t: (max(t.start_s - end, start - t.end_s), t.start_s)).speaker

    def overlapped(self, start: float, end: float) -> bool:
        """Whether two or more speakers talk at the same time somewhere in [start, end]."""
        start, end = _widen(start, end)
        touching = self._touching(start, end)
        for i, a in enumerate(touching):
            for b in touching[i + 1 :]:
                if a.speaker == b.speaker:
                    continue
                ov = min(end, a.end_s, b.end_s) - max(start, a.start_s, b.start_s)
                if ov >= MIN_OVERLAP_S:
                    return True
        return False


def _widen(start: float, end: float) -> tuple[float, float]:
    """A zero-length word (some ASR output has them) as a short span around its instant."""
    if end - start < 2 * MIN_OVERLAP_S:
        mid = (start + end) / 2
        return mid - MIN_OVERLAP_S, mid + MIN_OVERLAP_S
    return start, end


def _whole_segment(seg: Any, index: _TurnIndex) -> list[AlignedSegment]:
    if not seg.text.strip():
        return []
    return [
        AlignedSegment(
            speaker=index.best_for_span(seg.start_s, seg.end_s),
            start_s=seg.start_s,
            end_s=seg.end_s,
            text=seg.text.strip(),
            words=[],
            confidence=seg.confidence,
            lang=seg.lang,
            overlap=index.overlapped(seg.start_s, seg.end_s),
        )
    ]


def _majority(assigned: list[str], words: list[Any], speakers: list[Optional[str]]) -> Optional[str]:
    """The speaker with most word time in the segment (word count breaks ties)."""
    if not assigned:
        return None
    time: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for w, s in zip(words, speakers):
        if s is not None:
            time[s] += max(0.0, w.end_s - w.start_s)
            count[s] += 1
    return max(time, key=lambda s: (time[s], count[s]))


def _split_at_pauses(words: list[Word], a: int, b: int, pause_s: float) -> list[tuple[int, int]]:
    cuts = [i for i in range(a + 1, b) if words[i].start_s - words[i - 1].end_s >= pause_s]
    bounds = [a, *cuts, b]
    return list(zip(bounds, bounds[1:]))


def _runs(labels: list[str]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((start, i))
            start = i
    return runs


def _channel_of(label: str, num_channels: int) -> Optional[int]:
    m = re.fullmatch(r"CH(\d+)", label)
    if m and int(m.group(1)) < num_channels:
        return int(m.group(1))
    return None
