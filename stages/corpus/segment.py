"""Conversation → turns → pairs.

Turns: a speaker's consecutive utterances merged across short pauses. Who holds the floor is
decided by what the speakers do, not by their words alone:

- interjection: another speaker's utterance that starts inside the holder's speech and is over
  before the holder's speech ends (or before the holder resumes within the merge pause), whatever
  its words ("no way" over a story). It never takes the floor.
- backchannel: a short reactive utterance ("mm-hm", "yeah", "i know", "हाँ", "అవును") after which
  the floor goes on with someone else, or that overlaps the end of the holder's speech. In a panel
  a backchannel does not take the floor from the next real speaker.
- response: a short answer after a completed question takes the floor, yes and no alike
  ("do you have a dog at home" → "yes"), unless a third speaker is the one who answers.

Interjections and backchannels become turns of their own (`is_backchannel`; interjections also
`is_interjection`) and never break or start a floor. Every floor transfer between two speakers
records its gap from the end of the previous holder's speech (negative = overlap) and whether it
was an interruption, and gives a pair: the turn before it (user), the turn taking the floor (AI),
and up to N turns of context. A pair whose AI turn ends inside its user turn is never built.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Optional

from catalog.schema import Conversation, Pair, Reject, Speaker, Turn, Utterance
from stages.config import RolePolicy, SegmentConfig
from stages.corpus.clips import clip_bounds, others_spans, overlap_s, own_channel, speaker_spans

# Bump when a change alters the turns or pairs produced: cached segmentations are then redone.
# 2: floor-taking by overlap (interjections), responses to questions, panels, gaps from the
# holder's speech, the ai_inside_user_turn safety net, no_ai_speaker_for_policy, clip margins.
CODE_VERSION = 2

PAIR_STAGE = "pair_filter"
SEGMENT_STAGE = "segment"

# Whole-utterance phrases and single tokens that count as backchannels, across the corpus's
# languages (a code-switched "haan okay" is still a backchannel). An utterance is a backchannel
# by its words when it is a sequence of these ("yeah i know", "oh no no"). The spellings cover
# what Whisper writes ("Mm-hmm.", "Mm-hm", "Uh-huh", "Mhm", "Hmm") and LDC transcripts use
# ("um-hum", "uh-hum", "hm-mm", "huh-uh", "mm"); negative reactions count as much as positive ones.
BACKCHANNEL_PHRASES = {
    "uh huh", "mm hmm", "mm hm", "um hum", "uh hum", "i see", "oh i see", "i know", "oh i know",
    "i know right", "oh okay", "oh ok", "oh yeah", "oh yes", "oh really", "oh right", "oh no",
    "oh wow", "oh my god", "oh my gosh", "oh god", "oh man", "oh dear", "oh boy", "no way",
    "that's right", "that's true", "that's cool", "that's great", "that's good", "that's crazy",
    "that's funny", "that's interesting", "that makes sense", "makes sense", "got it", "i got it",
    "of course", "fair enough", "for sure", "you bet", "i bet", "me too", "same here", "good point",
    "ठीक है", "जी हाँ", "हाँ जी", "अच्छा जी", "जी नहीं", "अरे वाह", "సరే అండి", "అవును అండి",
}
BACKCHANNEL_TOKENS = {
    # English: Whisper and LDC spellings of the same few sounds
    "yeah", "yea", "yah", "ya", "yes", "yep", "yup", "no", "nope", "nah", "uh-huh", "uhhuh",
    "uh-hum", "uhhum", "um-hum", "umhum", "mm-hmm", "mmhmm", "mm-hm", "mmhm", "mhm", "mhmm", "mm",
    "mmm", "mmmm", "hm", "hmm", "hmmm", "hm-mm", "hmm-mm", "mm-mm", "uh-uh", "huh-uh", "nuh-uh",
    "uh", "um", "er", "erm", "ehm", "huh", "hum", "oh", "ooh", "ah", "ahh", "aha", "wow", "whoa",
    "right", "okay", "ok", "okey", "alright", "sure", "true", "really", "exactly", "absolutely",
    "definitely", "totally", "cool", "nice", "great", "awesome", "gotcha", "jeez", "geez", "gosh",
    # Hindi (Devanagari and the romanized forms ASR and Hinglish scripts produce)
    "हाँ", "हां", "हम्म", "हूँ", "हूं", "अच्छा", "ठीक", "जी", "सही", "बिल्कुल", "अरे", "ओह", "नहीं",
    "haan", "han", "accha", "achha", "theek", "ji", "nahi", "nahin",
    # Telugu
    "అవును", "ఊ", "ఊఁ", "హా", "సరే", "అలాగా", "ఓ", "ఓకే", "అవునా", "హమ్", "నిజమే", "అండి", "లేదు", "కాదు",
}
_DEHYPHENATED = {t.replace("-", "") for t in BACKCHANNEL_TOKENS}
_MAX_PHRASE_WORDS = max(len(p.split()) for p in BACKCHANNEL_PHRASES)

# Questions, for telling a response from a backchannel. Whisper writes "?"; LDC transcripts often
# do not, so an English sentence opening with a wh-word, or an auxiliary before its subject, counts.
_WH = {"what", "what's", "whats", "where", "where's", "when", "why", "who", "who's", "whom", "whose", "which",
       "how", "how's"}
# Hindi and Telugu put question words inside the sentence ("आप कहाँ रहते हैं", "నువ్వు ఎక్కడ ఉన్నావు").
_WH_ANYWHERE = {
    "क्या", "कौन", "कहाँ", "कहां", "कब", "कैसे", "क्यों", "kya", "kyaa", "kaun", "kahan", "kab", "kaise", "kyon",
    "kyun", "ఏమి", "ఏం", "ఎక్కడ", "ఎప్పుడు", "ఎందుకు", "ఎలా", "ఎవరు", "ఏది", "ఎంత",
}
_AUX = {
    "do", "does", "did", "are", "is", "was", "were", "have", "has", "had", "can", "could", "would",
    "will", "should", "shall", "may", "might", "don't", "doesn't", "didn't", "aren't", "isn't",
    "wasn't", "weren't", "haven't", "hasn't", "can't", "couldn't", "won't", "wouldn't", "shouldn't",
}
_SUBJECTS = {
    "you", "i", "we", "they", "he", "she", "it", "that", "this", "there", "your", "the", "a", "an",
    "anyone", "anybody", "someone", "somebody", "any", "those", "these", "ya", "y'all",
}
_LEAD_INS = {"so", "and", "but", "well", "okay", "ok", "oh", "um", "uh", "like", "then", "now", "hey", "anyway"}
_TAGS = ("isn't it", "aren't you", "don't you", "didn't you", "or not", "है ना", "कि नहीं", "కదా", "కదూ")
_SENTENCE_END = re.compile(r"[.!?।॥？؟]+")
_ENDS_WITH_QUESTION = re.compile(r"[?？؟][\s\"'”’)\]]*$")


def normalize_for_lexicon(text: str) -> str:
    # Drop punctuation and symbols by Unicode category: Indic vowel signs are combining marks
    # (category M), which a regex \w class would strip.
    text = unicodedata.normalize("NFC", text).lower()
    kept = (c if c in "'-" or not unicodedata.category(c).startswith(("P", "S")) else " " for c in text)
    return " ".join("".join(kept).split())


def _lexicon_token(tok: str) -> bool:
    return tok in BACKCHANNEL_TOKENS or tok.strip("-'") in BACKCHANNEL_TOKENS or tok.replace("-", "") in _DEHYPHENATED


def is_backchannel_text(text: str) -> bool:
    """Is the whole utterance a sequence of backchannel tokens and phrases?"""
    words = normalize_for_lexicon(text).split()
    if not words:
        return False
    # can[i]: words[i:] splits into lexicon units.
    can = [False] * len(words) + [True]
    for i in range(len(words) - 1, -1, -1):
        if _lexicon_token(words[i]) and can[i + 1]:
            can[i] = True
            continue
        for j in range(i + 2, min(len(words), i + _MAX_PHRASE_WORDS) + 1):
            if can[j] and " ".join(words[i:j]) in BACKCHANNEL_PHRASES:
                can[i] = True
                break
    return can[0]


def is_question(text: str) -> bool:
    """Does the text end with a question: a question mark, or a last sentence that opens like one
    ("so do you have a dog", "where do you live") or ends with a tag ("..., isn't it")?"""
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        return False
    if _ENDS_WITH_QUESTION.search(text):
        return True
    sentences = [x for x in _SENTENCE_END.split(text) if normalize_for_lexicon(x)]
    if not sentences:
        return False
    words = normalize_for_lexicon(sentences[-1]).split()
    while len(words) > 1 and words[0] in _LEAD_INS:
        words = words[1:]
    if words[0] in _WH or any(w in _WH_ANYWHERE for w in words):
        return True
    if words[0] in _AUX and len(words) > 1 and words[1] in _SUBJECTS:
        return True
    return " ".join(words).endswith(_TAGS)


@dataclass
class Segmentation:
    turns: list[Turn]
    pairs: list[Pair]
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class _OpenTurn:
    speaker_id: str
    channel: Optional[int]
    utterances: list[Utterance]
    is_backchannel: bool = False  # does not take the floor (backchannels and interjections)
    is_interjection: bool = False
    is_floor_transfer: bool = False
    gap_s: Optional[float] = None
    is_interruption: bool = False

    @property
    def start_s(self) -> float:
        return self.utterances[0].start_s

    @property
    def end_s(self) -> float:
        return max(u.end_s for u in self.utterances)

    @property
    def last(self) -> Utterance:
        return max(self.utterances, key=lambda u: (u.end_s, u.start_s))


_INTERJECTION = "interjection"
_BACKCHANNEL = "backchannel"


def _is_candidate(u: Utterance, cfg: SegmentConfig) -> bool:
    duration = u.end_s - u.start_s
    words = len(u.text.split())
    return duration <= cfg.backchannel_max_s and words <= cfg.backchannel_max_words and is_backchannel_text(u.text)


def _holder_end(utts: list[Utterance], i: int, holder: _OpenTurn, cfg: SegmentConfig) -> float:
    """Where the holder's speech ends if they keep the floor: their utterances after i joined
    while each starts within the merge pause of the previous one (others' speech in between
    does not count)."""
    end = holder.end_s
    for nxt in utts[i + 1:]:
        if nxt.start_s > end + cfg.merge_pause_s:
            break
        if nxt.speaker_id == holder.speaker_id:
            end = max(end, nxt.end_s)
    return end


def _next_speaker(utts: list[Utterance], i: int, cfg: SegmentConfig) -> Optional[str]:
    """Who speaks next, soon after the short utterance i: its own speaker going on (a turn
    opener, "yeah, so I think..."), another speaker (other backchannels skipped), or None when
    nobody speaks within the merge pause plus a backchannel's length."""
    u = utts[i]
    for nxt in utts[i + 1:]:
        if nxt.start_s - u.end_s > cfg.merge_pause_s + cfg.backchannel_max_s:
            return None
        if _is_candidate(nxt, cfg):
            continue
        if nxt.speaker_id == u.speaker_id:
            if nxt.start_s - u.end_s <= cfg.merge_pause_s:
                return u.speaker_id
            continue
        return nxt.speaker_id
    return None


def _side_kind(utts: list[Utterance], i: int, holder: _OpenTurn, cfg: SegmentConfig) -> Optional[str]:
    """Is utterance i (not the holder's) an interjection, a backchannel, or (None) a floor turn?"""
    u = utts[i]
    if u.start_s < holder.end_s and u.end_s <= _holder_end(utts, i, holder, cfg):
        return _INTERJECTION
    if not _is_candidate(u, cfg):
        return None
    follower = _next_speaker(utts, i, cfg)
    question = holder.last
    if is_question(question.text) and u.start_s >= question.end_s - cfg.interruption_min_overlap_s:
        # A short answer to a completed question takes the floor, unless someone else answers.
        return None if follower in (None, u.speaker_id, holder.speaker_id) else _BACKCHANNEL
    if follower == u.speaker_id and u.start_s >= holder.end_s:
        return None
    if u.start_s < holder.end_s or follower is not None:
        return _BACKCHANNEL
    return None


def build_turns(utterances: list[Utterance], cfg: SegmentConfig) -> list[_OpenTurn]:
    utts = sorted(
        (u for u in utterances if u.end_s > u.start_s and u.text.strip()),
        key=lambda u: (u.start_s, u.end_s, u.speaker_id),
    )
    floor: list[_OpenTurn] = []
    side: list[_OpenTurn] = []
    for i, u in enumerate(utts):
        current = floor[-1] if floor else None
        if current is None:
            floor.append(_OpenTurn(u.speaker_id, u.channel, [u]))
            continue
        if u.speaker_id == current.speaker_id:
            if u.start_s - current.end_s <= cfg.merge_pause_s:
                current.utterances.append(u)
            else:
                floor.append(_OpenTurn(u.speaker_id, u.channel, [u]))
            continue
        kind = _side_kind(utts, i, current, cfg)
        if kind is not None:
            side.append(_OpenTurn(u.speaker_id, u.channel, [u], is_backchannel=True,
                                  is_interjection=kind == _INTERJECTION))
            continue
        gap = u.start_s - current.end_s  # from the end of the holder's own speech
        floor.append(
            _OpenTurn(
                u.speaker_id,
                u.channel,
                [u],
                is_floor_transfer=True,
                gap_s=gap,
                is_interruption=gap < -cfg.interruption_min_overlap_s,
            )
        )
    return sorted(floor + side, key=lambda t: (t.start_s, t.end_s, t.speaker_id))


def _majority_lang(utts: list[Utterance], default: str) -> str:
    counts: dict[str, int] = {}
    for u in utts:
        counts[u.lang] = counts.get(u.lang, 0) + 1
    return max(counts, key=lambda k: (counts[k], k)) if counts else default


def _finalize(conv: Conversation, open_turns: list[_OpenTurn]) -> list[Turn]:
    rec = conv.recording
    turns = []
    for index, t in enumerate(open_turns):
        start, end = t.start_s, t.end_s
        turns.append(
            Turn(
                turn_id=f"{rec.recording_id}-t{index:05d}",
                recording_id=rec.recording_id,
                source=rec.source,
                lang=_majority_lang(t.utterances, rec.lang),
                index=index,
                speaker_id=t.speaker_id,
                channel=t.channel,
                start_s=round(start, 3),
                end_s=round(end, 3),
                duration_s=round(end - start, 3),
                text=" ".join(u.text.strip() for u in t.utterances if u.text.strip()),
                utterance_ids=[u.utterance_id for u in t.utterances],
                is_backchannel=t.is_backchannel,
                is_floor_transfer=t.is_floor_transfer,
                gap_s=None if t.gap_s is None else round(t.gap_s, 3),
                is_interruption=t.is_interruption,
                is_interjection=t.is_interjection,
            )
        )
    return turns


def _ai_allowed(speaker: Optional[Speaker], policy: RolePolicy) -> bool:
    if policy.mode == "both":
        return True
    return speaker is not None and policy.ai_role in (speaker.role, speaker.label)


def _policy_reject(conv: Conversation, turns: list[Turn], policy: RolePolicy) -> Optional[Reject]:
    """A fixed role policy that no speaker of the recording can play gives no pairs: say so."""
    if policy.mode != "fixed" or not any(t.is_floor_transfer for t in turns):
        return None
    if any(_ai_allowed(s, policy) for s in conv.speakers):
        return None
    rec = conv.recording
    roles = ", ".join(f"{s.label}={s.role}" for s in conv.speakers) or "none"
    return Reject(rec.source, SEGMENT_STAGE, rec.recording_id, "no_ai_speaker_for_policy",
                  f"role_policy fixed, ai_role {policy.ai_role!r}: no speaker has that role or label "
                  f"(speakers: {roles}); the recording gives no pairs")


def build_pairs(conv: Conversation, turns: list[Turn], cfg: SegmentConfig) -> tuple[list[Pair], list[Reject]]:
    rec = conv.recording
    speakers = {s.speaker_id: s for s in conv.speakers}
    policy_reject = _policy_reject(conv, turns, cfg.role_policy)
    if policy_reject is not None:
        return [], [policy_reject]
    floor = [t for t in turns if not t.is_backchannel]
    spans = speaker_spans(turns)
    pairs: list[Pair] = []
    rejects: list[Reject] = []
    for i in range(1, len(floor)):
        user, ai = floor[i - 1], floor[i]
        if not ai.is_floor_transfer or user.speaker_id == ai.speaker_id:
            continue
        if not _ai_allowed(speakers.get(ai.speaker_id), cfg.role_policy):
            continue
        pair_id = f"{rec.recording_id}-p{ai.index:05d}"
        reason = _filter_reason(user, ai, cfg)
        if reason:
            rejects.append(Reject(rec.source, PAIR_STAGE, pair_id, reason[0], reason[1]))
            continue
        context = floor[max(0, i - 1 - cfg.context_turns): i - 1]
        user_mixed = not own_channel(speakers.get(user.speaker_id), rec.num_channels)
        ai_mixed = not own_channel(speakers.get(ai.speaker_id), rec.num_channels)
        user_clip = clip_bounds(user.start_s, user.end_s, cfg.clip_pad_s, others_spans(spans, [user.speaker_id]),
                                user_mixed, rec.duration_s, stop_at=ai.start_s)
        ai_clip = clip_bounds(ai.start_s, ai.end_s, cfg.clip_pad_s, others_spans(spans, [ai.speaker_id]),
                              ai_mixed, rec.duration_s)
        pairs.append(
            Pair(
                pair_id=pair_id,
                recording_id=rec.recording_id,
                source=rec.source,
                lang=ai.lang,
                license=rec.license,
                bandwidth=rec.bandwidth,
                user_turn_id=user.turn_id,
                ai_turn_id=ai.turn_id,
                user_speaker_id=user.speaker_id,
                ai_speaker_id=ai.speaker_id,
                user_channel=user.channel,
                ai_channel=ai.channel,
                user_start_s=user.start_s,
                user_end_s=user.end_s,
                ai_start_s=ai.start_s,
                ai_end_s=ai.end_s,
                user_duration_s=user.duration_s,
                ai_duration_s=ai.duration_s,
                gap_s=ai.gap_s if ai.gap_s is not None else round(ai.start_s - user.end_s, 3),
                is_interruption=ai.is_interruption,
                user_text=user.text,
                ai_text=ai.text,
                context_turn_ids=[t.turn_id for t in context],
                context_speaker_ids=[t.speaker_id for t in context],
                context_texts=[t.text for t in context],
                context_start_s=context[0].start_s if context else None,
                overlap_s=overlap_s(spans, user.start_s, ai.end_s),
                mixed_source=user_mixed or ai_mixed,
                user_clip_start_s=user_clip[0],
                user_clip_end_s=user_clip[1],
                ai_clip_start_s=ai_clip[0],
                ai_clip_end_s=ai_clip[1],
            )
        )
    return pairs, rejects


def _filter_reason(user: Turn, ai: Turn, cfg: SegmentConfig) -> Optional[tuple[str, str]]:
    # The safety net: an AI turn over before its user turn is over is no answer to it (the floor
    # rules never build one; a pair that slipped through must not teach the model to answer early).
    if ai.end_s <= user.end_s:
        return "ai_inside_user_turn", (f"ai turn {ai.start_s:.2f}-{ai.end_s:.2f}s ends inside user turn "
                                       f"{user.start_s:.2f}-{user.end_s:.2f}s")
    for role, t in (("user", user), ("ai", ai)):
        if t.duration_s < cfg.min_turn_s:
            return f"{role}_turn_too_short", f"{t.duration_s:.2f}s < {cfg.min_turn_s}s"
        if t.duration_s > cfg.max_turn_s:
            return f"{role}_turn_too_long", f"{t.duration_s:.2f}s > {cfg.max_turn_s}s"
    if ai.gap_s is not None and ai.gap_s > cfg.max_gap_s:
        return "gap_too_long", f"{ai.gap_s:.2f}s > {cfg.max_gap_s}s"
    return None


def segment(conv: Conversation, cfg: SegmentConfig) -> Segmentation:
    turns = _finalize(conv, build_turns(conv.utterances, cfg))
    pairs, rejects = build_pairs(conv, turns, cfg)
    return Segmentation(turns=turns, pairs=pairs, rejects=rejects)
