"""Conversation → turns → pairs.

Turns: a speaker's consecutive utterances merged across short pauses. Backchannels (short
reactive utterances such as "yeah", "mm-hmm", "हाँ", "అవును" that do not take the floor) become
turns of their own, marked, and never break or start a floor. Every floor transfer between two
speakers records its gap (negative = overlap) and whether it was an interruption, and gives a
pair: the turn before it (user), the turn taking the floor (AI), and up to N turns of context.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Optional

from catalog.schema import Conversation, Pair, Reject, Speaker, Turn, Utterance
from stages.config import RolePolicy, SegmentConfig

# Whole-utterance phrases and single tokens that count as backchannels, across the corpus's
# languages (a code-switched "haan okay" is still a backchannel).
BACKCHANNEL_PHRASES = {
    "uh huh", "mm hmm", "i see", "oh okay", "oh yeah", "oh really", "that's right", "oh wow",
    "ठीक है", "जी हाँ", "हाँ जी", "अच्छा जी", "సరే అండి", "అవును అండి",
}
BACKCHANNEL_TOKENS = {
    # English
    "yeah", "yes", "yep", "yup", "uh-huh", "uhhuh", "uh", "huh", "mhm", "mm-hmm", "mmhmm", "mm",
    "hmm", "hm", "um-hum", "right", "okay", "ok", "oh", "ah", "wow", "really", "sure", "true",
    "exactly", "cool", "nice", "gotcha", "alright",
    # Hindi (Devanagari and the romanized forms ASR and Hinglish scripts produce)
    "हाँ", "हां", "हम्म", "हूँ", "हूं", "अच्छा", "ठीक", "जी", "सही", "बिल्कुल", "अरे", "ओह",
    "haan", "han", "accha", "achha", "theek", "ji", "hmm",
    # Telugu
    "అవును", "ఊ", "ఊఁ", "హా", "సరే", "అలాగా", "ఓ", "ఓకే", "అవునా", "హమ్", "నిజమే", "అండి",
}


def normalize_for_lexicon(text: str) -> str:
    # Drop punctuation and symbols by Unicode category: Indic vowel signs are combining marks
    # (category M), which a regex \w class would strip.
    text = unicodedata.normalize("NFC", text).lower()
    kept = (c if c in "'-" or not unicodedata.category(c).startswith(("P", "S")) else " " for c in text)
    return " ".join("".join(kept).split())


def is_backchannel_text(text: str) -> bool:
    norm = normalize_for_lexicon(text)
    if not norm:
        return False
    if norm in BACKCHANNEL_PHRASES:
        return True
    return all(tok.strip("-'") in BACKCHANNEL_TOKENS or tok in BACKCHANNEL_TOKENS for tok in norm.split())


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
    is_backchannel: bool = False
    is_floor_transfer: bool = False
    gap_s: Optional[float] = None
    is_interruption: bool = False

    @property
    def start_s(self) -> float:
        return self.utterances[0].start_s

    @property
    def end_s(self) -> float:
        return max(u.end_s for u in self.utterances)


def _is_candidate(u: Utterance, cfg: SegmentConfig) -> bool:
    duration = u.end_s - u.start_s
    words = len(u.text.split())
    return duration <= cfg.backchannel_max_s and words <= cfg.backchannel_max_words and is_backchannel_text(u.text)


def _holder_resumes(utts: list[Utterance], i: int, holder: str, cfg: SegmentConfig) -> bool:
    """Does the floor holder speak again right after utterance i, before anyone else takes over?"""
    u = utts[i]
    for nxt in utts[i + 1:]:
        if nxt.speaker_id == u.speaker_id:
            # The candidate's own speaker goes on: a turn opener ("yeah, so I think..."), unless
            # that next utterance is itself only a backchannel.
            if nxt.start_s - u.end_s <= cfg.merge_pause_s and not _is_candidate(nxt, cfg):
                return False
            continue
        return nxt.speaker_id == holder and nxt.start_s - u.end_s <= cfg.merge_pause_s + cfg.backchannel_max_s
    return False


def build_turns(utterances: list[Utterance], cfg: SegmentConfig) -> list[_OpenTurn]:
    utts = sorted(
        (u for u in utterances if u.end_s > u.start_s and u.text.strip()),
        key=lambda u: (u.start_s, u.end_s, u.speaker_id),
    )
    floor: list[_OpenTurn] = []
    backchannels: list[_OpenTurn] = []
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
        if _is_candidate(u, cfg) and (
            u.start_s < current.end_s or _holder_resumes(utts, i, current.speaker_id, cfg)
        ):
            backchannels.append(_OpenTurn(u.speaker_id, u.channel, [u], is_backchannel=True))
            continue
        gap = u.start_s - current.end_s
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
    return sorted(floor + backchannels, key=lambda t: (t.start_s, t.end_s, t.speaker_id))


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
            )
        )
    return turns


def _ai_allowed(speaker: Speaker, policy: RolePolicy) -> bool:
    if policy.mode == "both":
        return True
    return policy.ai_role in (speaker.role, speaker.label)


def build_pairs(conv: Conversation, turns: list[Turn], cfg: SegmentConfig) -> tuple[list[Pair], list[Reject]]:
    rec = conv.recording
    speakers = {s.speaker_id: s for s in conv.speakers}
    floor = [t for t in turns if not t.is_backchannel]
    pairs: list[Pair] = []
    rejects: list[Reject] = []
    for i in range(1, len(floor)):
        user, ai = floor[i - 1], floor[i]
        if not ai.is_floor_transfer or user.speaker_id == ai.speaker_id:
            continue
        ai_speaker = speakers.get(ai.speaker_id)
        if ai_speaker is not None and not _ai_allowed(ai_speaker, cfg.role_policy):
            continue
        pair_id = f"{rec.recording_id}-p{ai.index:05d}"
        reason = _filter_reason(user, ai, cfg)
        if reason:
            rejects.append(Reject(rec.source, "pair_filter", pair_id, reason[0], reason[1]))
            continue
        context = floor[max(0, i - 1 - cfg.context_turns): i - 1]
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
            )
        )
    return pairs, rejects


def _filter_reason(user: Turn, ai: Turn, cfg: SegmentConfig) -> Optional[tuple[str, str]]:
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
