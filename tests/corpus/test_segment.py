from catalog.schema import Conversation, Recording, Speaker, Utterance
from stages.config import RolePolicy, SegmentConfig
from stages.corpus.segment import is_backchannel_text, segment


def _conv(lines, roles=None):
    rec = Recording(
        recording_id="t-1", source="t", origin_id="1", origin="x", license="L", lang="en",
        native_sample_rate=8000, num_channels=2, duration_s=100.0, encoding="ulaw", audio_sha256="0",
        audio_path="a.flac", sample_rate=24000, bandwidth="narrowband", effective_bandwidth_hz=3400.0,
    )
    roles = roles or {}
    speakers = [Speaker(f"t-1-{l}", "t-1", "t", l, channel=i, role=roles.get(l, l)) for i, l in enumerate("AB")]
    utts = [
        Utterance(f"t-1-{i:05d}", "t-1", "t", f"t-1-{spk}", "AB".index(spk), s, e, text, text, "en")
        for i, (s, e, spk, text) in enumerate(lines)
    ]
    return Conversation(rec, speakers, utts)


DIALOGUE = [
    (0.0, 2.0, "A", "so do you have any pets at home"),
    (2.3, 4.0, "A", "we have two cats and a dog"),  # same speaker, short pause: merged
    (3.0, 3.4, "B", "uh huh"),  # backchannel overlapping A
    (4.5, 7.0, "B", "we have a dog too he is very old"),  # floor transfer, gap 0.5
    (6.2, 9.0, "A", "oh how old is he now exactly"),  # interruption: starts 0.8 s before B ends
    (9.2, 9.6, "B", "yeah"),  # short, but B goes on: not a backchannel
    (9.7, 12.0, "B", "about fourteen years I think"),
]


def test_turns_merge_backchannels_and_gaps():
    seg = segment(_conv(DIALOGUE), SegmentConfig(interruption_min_overlap_s=0.5))
    floor = [t for t in seg.turns if not t.is_backchannel]
    bcs = [t for t in seg.turns if t.is_backchannel]
    assert [t.speaker_id[-1] for t in floor] == ["A", "B", "A", "B"]
    assert floor[0].text == "so do you have any pets at home we have two cats and a dog"
    assert floor[0].end_s == 4.0 and len(floor[0].utterance_ids) == 2
    assert len(bcs) == 1 and bcs[0].text == "uh huh" and bcs[0].gap_s is None
    assert floor[1].gap_s == 0.5 and not floor[1].is_interruption
    assert floor[2].gap_s == -0.8 and floor[2].is_interruption
    assert floor[3].text == "yeah about fourteen years I think"
    assert [t.index for t in seg.turns] == list(range(len(seg.turns)))


def test_pairs_with_context_both_orientations():
    seg = segment(_conv(DIALOGUE), SegmentConfig(context_turns=1))
    assert len(seg.pairs) == 3
    p = seg.pairs[1]
    assert p.user_speaker_id == "t-1-B" and p.ai_speaker_id == "t-1-A"
    assert p.user_text.startswith("we have a dog") and p.ai_text.startswith("oh how old")
    assert p.gap_s == -0.8 and p.is_interruption
    assert p.context_texts == [seg.pairs[0].user_text] and p.context_start_s == 0.0
    assert seg.pairs[0].context_turn_ids == []
    assert len({p.pair_id for p in seg.pairs}) == 3


def test_fixed_role_policy_keeps_only_ai_side():
    cfg = SegmentConfig(role_policy=RolePolicy(mode="fixed", ai_role="guest"))
    seg = segment(_conv(DIALOGUE, roles={"A": "host", "B": "guest"}), cfg)
    assert seg.pairs and all(p.ai_speaker_id == "t-1-B" for p in seg.pairs)
    assert len(seg.pairs) == 2


def test_pair_filters_become_rejects_with_reasons():
    lines = [
        (0.0, 2.0, "A", "hello there how are you"),
        (9.0, 11.0, "B", "sorry I was away for a moment"),  # 7 s gap
        (11.5, 60.0, "A", "long monologue " * 20),  # 48.5 s turn
    ]
    seg = segment(_conv(lines), SegmentConfig(max_gap_s=5.0, max_turn_s=30.0))
    assert seg.pairs == []
    assert sorted(r.reason for r in seg.rejects) == ["ai_turn_too_long", "gap_too_long"]
    assert all(r.stage == "pair_filter" for r in seg.rejects)


def test_backchannel_lexicon_across_languages():
    for text in ["Uh-huh.", "mm-hmm", "yeah yeah", "हाँ", "हाँ जी", "అవును", "ఊ", "haan okay", "oh really?"]:
        assert is_backchannel_text(text), text
    for text in ["yeah I think so", "what", "मैं घर जा रहा हूँ", "", "[laughter]"]:
        assert not is_backchannel_text(text), text


def test_empty_and_degenerate_utterances():
    seg = segment(_conv([(1.0, 1.0, "A", "zero length"), (2.0, 3.0, "B", "   ")]), SegmentConfig())
    assert seg.turns == [] and seg.pairs == []
