"""Who holds the floor, decided by what speakers do (issue 15): interjections, backchannels,
responses, panels, gaps from the holder's speech, the ai_inside_user_turn safety net, the fixed
role policy's reject. Every case runs on a two-channel call (Fisher layout: each speaker on their
own channel) and on a one-microphone mix (no speaker has a channel)."""
from __future__ import annotations

import pytest

from catalog.schema import Conversation, Recording, Speaker, Turn, Utterance, from_dict, to_dict
from stages.config import RolePolicy, SegmentConfig
from stages.corpus.segment import CODE_VERSION, build_pairs, is_backchannel_text, is_question, segment

LAYOUTS = ("two_channel", "mono")
STORY = "so I went to the store yesterday and they had closed the whole place without telling anyone"


def _conv(lines, layout: str, labels: str = "AB", roles: dict | None = None) -> Conversation:
    """lines: (start, end, speaker label, text). Two-channel: speaker i on channel i."""
    mono = layout == "mono"
    rec = Recording(
        recording_id="t-1", source="t", origin_id="1", origin="x", license="L", lang="en",
        native_sample_rate=8000, num_channels=1 if mono else len(labels), duration_s=100.0, encoding="ulaw",
        audio_sha256="0", audio_path="a.flac", sample_rate=24000, bandwidth="narrowband",
        effective_bandwidth_hz=3400.0,
    )
    roles = roles or {}
    speakers = [Speaker(f"t-1-{lab}", "t-1", "t", lab, channel=None if mono else i, role=roles.get(lab))
                for i, lab in enumerate(labels)]
    utts = [
        Utterance(f"t-1-{i:05d}", "t-1", "t", f"t-1-{spk}", None if mono else labels.index(spk), s, e, text, text, "en")
        for i, (s, e, spk, text) in enumerate(lines)
    ]
    return Conversation(rec, speakers, utts)


def _who(seg) -> list[tuple[str, str]]:
    return [(p.user_speaker_id[-1], p.ai_speaker_id[-1]) for p in seg.pairs]


def test_code_version_is_bumped():
    assert CODE_VERSION == 2


# --- interjections --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("words", ["no way", "mm-hm", "Mm-hmm.", "i know", "oh no", "um", "Oh, I see.",
                                   "wait that is completely crazy"])
def test_interjection_over_a_story_never_takes_the_floor(layout, words):
    lines = [
        (0.5, 6.8, "A", STORY),
        (2.7, 3.6, "B", words),  # over A, over before A is
        (7.3, 9.0, "B", "so what happened next"),
    ]
    seg = segment(_conv(lines, layout), SegmentConfig())
    side = [t for t in seg.turns if t.is_backchannel]
    assert [(t.text, t.is_interjection, t.is_floor_transfer) for t in side] == [(words, True, False)]
    # The one pair is the story and its real reply, the gap measured from the end of A's speech.
    assert [(p.user_text, p.ai_text) for p in seg.pairs] == [(STORY, "so what happened next")]
    assert seg.pairs[0].gap_s == 0.5
    reply = next(t for t in seg.turns if t.text == "so what happened next")
    assert reply.is_floor_transfer and reply.gap_s == 0.5  # the figure the turn statistics read
    assert all(p.ai_end_s > p.user_end_s for p in seg.pairs)
    assert seg.rejects == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gaps_after_an_interjection_are_measured_from_the_holder(layout):
    for silence in (0.5, 2.0):
        lines = [(0.5, 6.8, "A", STORY), (2.7, 3.6, "B", "no way"),
                 (6.8 + silence, 9.0 + silence, "B", "so what happened next")]
        seg = segment(_conv(lines, layout), SegmentConfig(max_gap_s=5.0))
        assert [p.gap_s for p in seg.pairs] == [silence]  # not 4.0 / 5.5 s from the interjection
        assert not any(r.reason == "gap_too_long" for r in seg.rejects)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_interjection_in_a_pause_the_holder_resumes_from(layout):
    # B starts while A speaks, A pauses 0.7 s and goes on after B is done: A keeps the floor.
    lines = [
        (0.0, 3.0, "A", "we drove up there on friday"),
        (2.8, 3.5, "B", "no way really"),
        (3.7, 7.0, "A", "and the whole road was closed for the race"),
        (7.4, 9.0, "B", "that sounds awful"),
    ]
    seg = segment(_conv(lines, layout), SegmentConfig())
    floor = [t for t in seg.turns if not t.is_backchannel]
    assert [(t.speaker_id[-1], t.start_s, t.end_s) for t in floor] == [("A", 0.0, 7.0), ("B", 7.4, 9.0)]
    assert _who(seg) == [("A", "B")] and seg.pairs[0].gap_s == pytest.approx(0.4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_overlapping_reply_that_outlasts_the_holder_takes_the_floor(layout):
    lines = [(0.0, 4.0, "A", "and that was the whole story really"),
             (3.6, 6.0, "B", "well I would have called the police")]
    seg = segment(_conv(lines, layout), SegmentConfig())
    assert _who(seg) == [("A", "B")] and seg.pairs[0].gap_s == pytest.approx(-0.4)


# --- backchannels and responses: yes and no alike ------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("question", ["do you have a {} at home", "Do you have a {} at home?",
                                      "so where do you keep the {}"])
def test_short_answers_to_a_question_are_responses_yes_and_no_alike(layout, question):
    for animal, answer in (("dog", "yes"), ("cat", "no"), ("fish", "Yeah."), ("bird", "Nope."),
                           ("frog", "mm-hm"), ("rat", "hm-mm")):
        # A goes on after the answer: the case where "yes" used to count as a backchannel.
        lines = [(0.0, 2.0, "A", question.format(animal)), (2.3, 2.8, "B", answer),
                 (3.4, 5.0, "A", "I see tell me more about it")]
        seg = segment(_conv(lines, layout), SegmentConfig())
        assert [(p.user_text, p.ai_text) for p in seg.pairs][0] == (question.format(animal), answer), answer
        assert not any(t.is_backchannel for t in seg.turns)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_answer_then_follow_up_question(layout):
    for answer in ("yes", "no"):
        lines = [
            (0.0, 2.0, "A", "do you have a dog at home"),
            (2.3, 2.8, "B", answer),
            (3.3, 5.0, "A", "oh what kind of dog is it"),
        ]
        seg = segment(_conv(lines, layout), SegmentConfig())
        assert [(p.user_text, p.ai_text) for p in seg.pairs] == [
            ("do you have a dog at home", answer), (answer, "oh what kind of dog is it")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reactions_without_a_question_are_backchannels_yes_and_no_alike(layout):
    for word in ("yes", "no", "yeah", "nope"):
        lines = [
            (0.0, 3.0, "A", "we moved there in the spring"),
            (3.2, 3.6, "B", word),  # in A's pause; A goes on
            (4.0, 7.0, "A", "and the house was still empty"),
            (7.5, 9.0, "B", "how did you find it"),
        ]
        seg = segment(_conv(lines, layout), SegmentConfig())
        side = [t for t in seg.turns if t.is_backchannel]
        assert [(t.text, t.is_interjection) for t in side] == [(word, False)], word
        assert _who(seg) == [("A", "B")] and seg.pairs[0].user_end_s == 7.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mm_hm_over_a_long_turn_never_becomes_an_ai_turn(layout):
    lines = [(0.0, 20.0, "A", "a long explanation " * 12)]
    lines += [(t, t + 0.4, "B", w) for t, w in ((3.0, "mm-hm"), (8.0, "uh-hum"), (12.0, "no way"), (16.0, "yeah"))]
    lines += [(20.6, 23.0, "B", "that makes a lot of sense to me")]
    seg = segment(_conv(lines, layout), SegmentConfig())
    assert _who(seg) == [("A", "B")]
    assert seg.pairs[0].ai_text == "that makes a lot of sense to me" and seg.pairs[0].gap_s == pytest.approx(0.6)
    assert sum(t.is_interjection for t in seg.turns) == 4


# --- panels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("opener", ["what do you both think about working from home",
                                    "I have been working from home for a year now"])
def test_panel_backchannel_does_not_take_the_floor_from_the_next_speaker(layout, opener):
    lines = [
        (0.0, 2.5, "A", opener),
        (2.7, 3.0, "B", "yeah"),
        (3.3, 6.0, "C", "I think it works well for me"),
    ]
    seg = segment(_conv(lines, layout, labels="ABC"), SegmentConfig())
    assert _who(seg) == [("A", "C")]
    assert seg.pairs[0].gap_s == pytest.approx(0.8)  # from A's end, not from B's "yeah"
    assert [t.text for t in seg.turns if t.is_backchannel] == ["yeah"]


# --- the safety net and the role policy -----------------------------------------------------


def _turn(i: int, label: str, start: float, end: float, gap: float | None) -> Turn:
    return Turn(turn_id=f"t-1-t{i:05d}", recording_id="t-1", source="t", lang="en", index=i,
                speaker_id=f"t-1-{label}", channel=None, start_s=start, end_s=end, duration_s=end - start,
                text="some words here", utterance_ids=[], is_backchannel=False, is_floor_transfer=gap is not None,
                gap_s=gap, is_interruption=False)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pair_with_the_ai_turn_inside_the_user_turn_is_rejected(layout):
    conv = _conv([], layout)
    turns = [_turn(0, "A", 0.5, 6.8, None), _turn(1, "B", 2.7, 6.0, -4.1), _turn(2, "A", 7.0, 9.0, 1.0)]
    pairs, rejects = build_pairs(conv, turns, SegmentConfig())
    assert [(r.reason, r.stage, r.item_id) for r in rejects] == [("ai_inside_user_turn", "pair_filter", "t-1-p00001")]
    assert [(p.user_turn_id, p.ai_turn_id) for p in pairs] == [("t-1-t00001", "t-1-t00002")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fixed_role_policy_without_the_role_is_a_reject_not_silence(layout):
    lines = [(0.0, 2.0, "A", "so what brings you here today"), (2.4, 5.0, "B", "I wanted to talk about my book")]
    cfg = SegmentConfig(role_policy=RolePolicy(mode="fixed", ai_role="guest"))
    seg = segment(_conv(lines, layout), cfg)  # speakers carry no roles (a page entry without `roles`)
    assert seg.pairs == [] and len(seg.turns) == 2
    assert [(r.stage, r.item_id, r.reason) for r in seg.rejects] == [("segment", "t-1", "no_ai_speaker_for_policy")]
    assert "guest" in seg.rejects[0].detail
    with_roles = segment(_conv(lines, layout, roles={"A": "host", "B": "guest"}), cfg)
    assert _who(with_roles) == [("A", "B")] and with_roles.rejects == []


# --- what the pairs record ------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pairs_record_overlap_source_kind_and_clip_margins(layout):
    lines = [
        (0.1, 3.0, "A", "tell me about your first job"),
        (2.0, 2.4, "B", "mm"),  # an interjection: 0.4 s of overlap
        (2.8, 6.0, "B", "I worked at a bakery in town"),  # starts 0.2 s before A ends
        (6.1, 8.0, "A", "did you like it there"),
    ]
    seg = segment(_conv(lines, layout), SegmentConfig(clip_pad_s=0.15))
    p0, p1 = seg.pairs
    # Seconds from the user turn's start to the AI turn's end with two speakers at once.
    assert p0.overlap_s == pytest.approx(0.6) and p1.overlap_s == pytest.approx(0.2)
    mono = layout == "mono"
    assert p0.mixed_source is mono and p1.mixed_source is mono
    if mono:
        # The user clip stops where the AI starts; a margin never enters another speaker's speech.
        assert (p0.user_clip_start_s, p0.user_clip_end_s) == (0.0, 2.8)
        assert (p0.ai_clip_start_s, p0.ai_clip_end_s) == (2.8, 6.1)
        assert (p1.user_clip_start_s, p1.user_clip_end_s) == (2.8, 6.1)
        assert (p1.ai_clip_start_s, p1.ai_clip_end_s) == (6.0, 8.15)
    else:
        assert (p0.user_clip_start_s, p0.user_clip_end_s) == (0.0, 3.15)
        assert (p0.ai_clip_start_s, p0.ai_clip_end_s) == (2.65, 6.15)
        assert (p1.ai_clip_start_s, p1.ai_clip_end_s) == (5.95, 8.15)
    # Records from before these fields still load.
    old = {k: v for k, v in to_dict(p0).items()
           if k not in ("overlap_s", "mixed_source", "user_clip_start_s", "user_clip_end_s",
                        "ai_clip_start_s", "ai_clip_end_s")}
    back = from_dict(type(p0), old)
    assert back.overlap_s == 0.0 and back.mixed_source is False and back.user_clip_start_s is None


# --- the lexicon ----------------------------------------------------------------------------

# Backchannels as Whisper writes them and as LDC (Fisher, CallHome) transcripts spell them.
WHISPER_SPELLINGS = [
    "Mm-hmm.", "Mm-hm.", "Mhm.", "Hmm.", "Mm.", "Uh-huh.", "Uh-hum.", "Yeah.", "Yeah, yeah.", "Yes.", "No.",
    "Nope.", "Okay.", "Oh, okay.", "Oh, I see.", "I see.", "I know.", "Oh no.", "Oh, wow.", "No way.", "Right.",
    "Exactly.", "Oh my God.", "Really?", "Oh, really?", "Sure.", "Um.", "Uh.", "Ah.", "Got it.", "That's true.",
    "Yeah, I know.", "Of course.", "Hm-mm.", "Mm-mm.", "Uh-uh.",
]
LDC_SPELLINGS = [
    "mm-hm", "um-hum", "uh-hum", "uh-huh", "uh huh", "mhm", "hm", "hmm", "mm", "um", "uh", "hm-mm", "huh-uh",
    "yeah", "yep", "yes", "no", "right", "okay", "oh", "oh i see", "i know", "oh no", "oh really", "no way",
    "huh", "ah", "oh okay", "yeah yeah yeah", "mm-hm mm-hm", "oh yeah",
]


@pytest.mark.parametrize("text", WHISPER_SPELLINGS + LDC_SPELLINGS)
def test_backchannel_spellings(text):
    assert is_backchannel_text(text)


@pytest.mark.parametrize("text", ["yeah I think so", "no I have never been there", "what", "I know the place",
                                  "so what happened next", "[laughter]", "", "oh no the car broke down"])
def test_not_backchannels(text):
    assert not is_backchannel_text(text)


def test_questions():
    for text in ["do you have a dog at home", "Do you have a dog?", "so where do you live", "and how was it",
                 "I went there. Did you?", "it was cold isn't it", "क्या आप आएंगे", "నువ్వు ఎక్కడ ఉన్నావు"]:
        assert is_question(text), text
    for text in ["I have a dog", "we do it every day", "we went there. it was cold.", "", "yeah"]:
        assert not is_question(text), text
