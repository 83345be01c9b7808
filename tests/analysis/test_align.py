"""Word → speaker alignment and the catalog records it yields, on hand-built ASR segments and
diarization turns whose right answers are known."""
from __future__ import annotations

import random

import pytest

from catalog.schema import Recording, Word
from stages.analysis.align import AlignedSegment, _TurnIndex, align_words, to_utterances
from stages.analysis.asr import AsrSegment
from stages.analysis.diarize.base import SpeakerTurn as T


def seg(words: list[tuple[str, float, float]], text: str | None = None, *, lang: str = "en", conf: float = 0.8) -> AsrSegment:
    ws = [Word(w, s, e, 0.9) for w, s, e in words]
    return AsrSegment(
        start_s=words[0][1] - 0.1 if words else 0.0,
        end_s=words[-1][2] + 0.1 if words else 0.0,
        text=text if text is not None else " " + " ".join(w for w, _, _ in words),
        words=ws,
        confidence=conf,
        no_speech_prob=0.01,
        lang=lang,
    )


def bare(start: float, end: float, text: str) -> AsrSegment:
    return AsrSegment(start, end, text, [], 0.7, 0.02, "hi")


def summary(aligned: list[AlignedSegment]) -> list[tuple[str, str, bool]]:
    return [(a.speaker, a.text, a.overlap) for a in aligned]


def test_segment_split_where_the_speaker_changes():
    turns = [T(0.0, 1.0, "A"), T(1.0, 3.0, "B")]
    s = seg([("hello", 0.1, 0.4), ("there.", 0.45, 0.8), ("how", 1.1, 1.3), ("are", 1.35, 1.5), ("you?", 1.55, 1.9)], conf=0.75)
    out = align_words([s], turns)
    assert summary(out) == [("A", "hello there.", False), ("B", "how are you?", False)]
    a, b = out
    assert (a.start_s, a.end_s, b.start_s, b.end_s) == (0.1, 0.8, 1.1, 1.9)
    assert [w.word for w in b.words] == ["how", "are", "you?"]
    assert a.confidence == b.confidence == 0.75 and a.lang == b.lang == "en"
    assert all(w.confidence == 0.9 and not w.overlap for w in a.words + b.words)


def test_unsplit_segment_keeps_the_asr_text():
    turns = [T(0.0, 5.0, "SPEAKER_01")]
    s = seg([("Hello,", 0.5, 0.9), ("world!", 1.0, 1.4)], text="  Hello,   world! ")
    (out,) = align_words([s], turns)
    assert (out.speaker, out.text, out.start_s, out.end_s) == ("SPEAKER_01", "Hello,   world!", 0.5, 1.4)


def test_overlapped_words_are_kept_and_flagged():
    # B says "yeah" (2.0-2.6) inside A's long turn.
    turns = [T(0.0, 4.0, "A"), T(2.0, 2.6, "B")]
    s = seg([("so", 1.0, 1.2), ("then", 1.3, 1.6), ("yeah", 2.1, 2.4), ("we", 2.5, 2.9), ("left", 3.0, 3.4)])
    out = align_words([s], turns)
    # "yeah" lies wholly in both turns: the tie goes to the turn that started last (B's);
    # "we" is mostly A's (0.4 s against 0.1 s) but still spoken during B's turn.
    assert summary(out) == [("A", "so then", False), ("B", "yeah", True), ("A", "we left", True)]
    assert [w.overlap for w in out[2].words] == [True, False]


def test_touching_turns_are_not_overlap():
    turns = [T(0.0, 1.0, "A"), T(1.0, 2.0, "B")]
    out = align_words([seg([("across", 0.8, 1.1), ("mine", 1.3, 1.6)])], turns)
    assert summary(out) == [("A", "across", False), ("B", "mine", False)]
    # A speaker's own overlapping turns (a backend may emit them) are not overlap either.
    out = align_words([seg([("solo", 0.5, 0.9)])], [T(0.0, 1.0, "A"), T(0.4, 1.2, "A")])
    assert summary(out) == [("A", "solo", False)]


def test_words_outside_every_turn():
    turns = [T(0.0, 1.0, "A"), T(3.0, 4.0, "B")]
    s = seg([("one", 0.2, 0.5), ("two", 0.6, 0.9), ("near", 1.3, 1.5), ("far", 2.0, 2.2)])
    out = align_words([s], turns)
    # "near" is 0.3 s after A's turn; "far" is more than 0.5 s from both turns and takes the
    # segment's majority speaker, A.
    assert summary(out) == [("A", "one two near far", False)]
    # A segment with no word near any turn goes to the speaker overlapping it most, else the
    # nearest turn's.
    out = align_words([seg([("lost", 5.0, 5.3), ("words", 5.4, 5.8)])], turns)
    assert summary(out) == [("B", "lost words", False)]
    # Majority is by word time: the long word outweighs two short ones.
    out = align_words([seg([("a", 0.1, 0.2), ("b", 0.3, 0.4), ("x", 2.0, 2.1), ("looooong", 3.0, 3.9)])], turns)
    assert summary(out) == [("A", "a b", False), ("B", "x looooong", False)]


def test_segments_without_word_timings_go_whole():
    turns = [T(0.0, 3.0, "A"), T(3.0, 6.0, "B"), T(5.0, 5.5, "A")]
    out = align_words([bare(2.5, 4.5, " नमस्ते दोस्तों "), bare(4.8, 5.8, "ok"), bare(8.0, 9.0, "late"), bare(1.0, 2.0, "  ")], turns)
    assert summary(out) == [("B", "नमस्ते दोस्तों", False), ("B", "ok", True), ("B", "late", False)]
    assert out[0].words == [] and out[0].lang == "hi" and (out[0].start_s, out[0].end_s) == (2.5, 4.5)


def test_zero_length_words_and_no_turns():
    turns = [T(0.0, 2.0, "A"), T(2.0, 4.0, "B")]
    out = align_words([seg([("tick", 1.0, 1.0), ("tock", 3.0, 3.0)])], turns)
    assert summary(out) == [("A", "tick", False), ("B", "tock", False)]
    out = align_words([seg([("alone", 0.1, 0.5)]), bare(1.0, 2.0, "also")], [])
    assert [a.speaker for a in out] == ["SPEAKER_00", "SPEAKER_00"]


def test_output_in_time_order_across_segments():
    turns = [T(0.0, 2.0, "A"), T(2.0, 4.0, "B")]
    late = seg([("second", 2.5, 2.9)])
    early = seg([("first", 0.5, 0.9), ("then", 2.1, 2.3)])
    out = align_words([late, early], turns)
    assert [(a.speaker, a.text) for a in out] == [("A", "first"), ("B", "then"), ("B", "second")]


def test_turn_index_finds_exactly_the_touching_turns():
    rng = random.Random(3)
    turns = []
    for _ in range(400):
        s = rng.uniform(0, 600)
        turns.append(T(round(s, 3), round(s + rng.choice([0.2, 1.0, 5.0, 40.0]) * rng.random() + 0.01, 3), f"S{rng.randint(0, 3)}"))
    index = _TurnIndex(turns)
    for _ in range(500):
        a = rng.uniform(-5, 650)
        b = a + rng.uniform(0, 3)
        brute = sorted((t for t in turns if t.start_s < b and t.end_s > a), key=lambda t: (t.start_s, t.end_s, t.speaker))
        assert index._touching(a, b) == brute


def _recording(num_channels: int = 1) -> Recording:
    return Recording(
        recording_id="podcasts-ep1", source="podcasts", origin_id="ep1", origin="http://127.0.0.1/ep1.mp3",
        license="cc-by", lang="en", native_sample_rate=44100, num_channels=num_channels, duration_s=60.0,
        encoding="mp3", audio_sha256="0" * 64, audio_path="recordings/podcasts/podcasts-ep1.flac",
        sample_rate=24000, bandwidth="wideband", effective_bandwidth_hz=11000.0,
    )


def test_to_utterances_builds_speakers_and_utterances():
    turns = [T(0.0, 4.0, "SPEAKER_01"), T(2.0, 2.6, "SPEAKER_00"), T(5.0, 8.0, "SPEAKER_00")]
    segments = [
        seg([("we", 5.2, 5.4), ("agree", 5.5, 6.0)], lang=""),
        seg([("so", 1.0, 1.2), ("then", 1.3, 1.6), ("yeah", 2.1, 2.4), ("we", 2.5, 2.9), ("left", 3.0, 3.4)], conf=0.6),
        bare(6.5, 7.5, "  and\n then   more "),
    ]
    speakers, utts = to_utterances(_recording(), align_words(segments, turns))
    assert [(s.speaker_id, s.label, s.channel, s.role, s.recording_id, s.source) for s in speakers] == [
        ("podcasts-ep1-SPEAKER_01", "SPEAKER_01", None, None, "podcasts-ep1", "podcasts"),
        ("podcasts-ep1-SPEAKER_00", "SPEAKER_00", None, None, "podcasts-ep1", "podcasts"),
    ]
    assert [u.utterance_id for u in utts] == [f"podcasts-ep1-{i:05d}" for i in range(5)]
    assert [(u.speaker_id[-2:], u.text, u.start_s) for u in utts] == [
        ("01", "so then", 1.0), ("00", "yeah", 2.1), ("01", "we left", 2.5), ("00", "we agree", 5.2), ("00", "and then more", 6.5),
    ]
    assert utts[4].text_raw == "and\n then   more"
    assert [u.lang for u in utts] == ["en", "en", "en", "en", "hi"]  # "" falls back to the recording's
    assert [u.confidence for u in utts] == [0.6, 0.6, 0.6, 0.8, 0.7]
    assert all(u.channel is None and u.recording_id == "podcasts-ep1" and u.source == "podcasts" for u in utts)
    assert [w.overlap for w in utts[1].words] == [True] and utts[1].words[0].word == "yeah"
    assert utts[4].words == []
    assert to_utterances(_recording(), []) == ([], [])


def test_to_utterances_keeps_channel_speakers_channels():
    turns = [T(0.0, 1.0, "CH0"), T(1.0, 2.0, "CH1")]
    speakers, utts = to_utterances(_recording(2), align_words([seg([("hi", 0.2, 0.5), ("hey", 1.2, 1.5)])], turns))
    assert [(s.label, s.channel) for s in speakers] == [("CH0", 0), ("CH1", 1)]
    assert [u.channel for u in utts] == [0, 1]
    # On a mono recording a "CH1" label names no channel.
    speakers, _ = to_utterances(_recording(1), align_words([seg([("hey", 1.2, 1.5)])], turns))
    assert speakers[0].channel is None


@pytest.mark.parametrize("gap,expected", [(0.49, [("A", "x"), ("B", "y z")]), (0.51, [("B", "x y z")])])
def test_near_turn_limit(gap, expected):
    turns = [T(0.0, 1.0, "A"), T(3.0, 4.0, "B")]
    # "x" starts `gap` after A's turn: within 0.5 s it joins A, beyond it takes the segment's
    # majority speaker, B.
    out = align_words([seg([("x", 1.0 + gap, 1.1 + gap), ("y", 3.1, 3.5), ("z", 3.6, 3.9)])], turns)
    assert [(a.speaker, a.text) for a in out] == expected
