"""Transcript text normalization for the LDC telephone corpora (CallHome, Fisher).

The normalized text is what was said, in words: transcriber markup is removed, words the
markup only decorates are kept. Conventions followed (CallHome English transcription spec,
LDC97T14 / LDC97S42 CH_ENG.TXT; Fisher English README, LDC2004T19):

    {text}            sound made by the talker ({laugh} {breath})      -> removed
    [text] [/text]    background/channel noise; Fisher [laughter]      -> removed
    [[text]]          transcriber comment                               -> removed
    (( ))             unintelligible, no guess                          -> removed
    ((text))          unintelligible, best guess                        -> text
    <Lang text>       other language (<English ...>, <? ...> unknown)   -> text
    #text#            simultaneous speech on the same channel           -> text
    //text//          aside to someone in the background                -> text
    +text+            mispronounced word                                -> text
    **text**          idiosyncratic word                                -> text
    %text             non-lexeme / hesitation (%um %uh %mm)             -> text ("um")
    &text             proper name or place name                         -> text
    text -- / -- text interrupted turn and its continuation             -> dashes removed
    absolu- / -tion   partial words                                     -> kept as written

Case and punctuation are the transcriber's (CallHome has both, Fisher neither) and are kept.
Text left without any word character (only noise marks) normalizes to "".
"""
from __future__ import annotations

import re

_COMMENT = re.compile(r"\[\[.*?\]\]", re.S)
_TALKER_NOISE = re.compile(r"\{[^{}]*\}")
_BACKGROUND = re.compile(r"\[[^\[\]]*\]")
_UNINTELLIGIBLE = re.compile(r"\(\(\s*\)\)")
# A language switch: "<" + language name or "?" + whitespace + the words spoken.
_LANG_SWITCH = re.compile(r"<\s*(?:[A-Za-z][\w-]*|\?)\s+([^<>]*)>")
_EMPTY_TAG = re.compile(r"<[^<>]*>")
_GUESS = re.compile(r"\(\(\s*(.*?)\s*\)\)", re.S)
_ASIDE = re.compile(r"//(.*?)//", re.S)
_SIMULTANEOUS = re.compile(r"#([^#]*)#")
_IDIOSYNCRATIC = re.compile(r"\*\*([^*]+?)\*\*")
_MISPRONOUNCED = re.compile(r"\+([^+]+?)\+")
_INTERRUPTION = re.compile(r"-{2,}")
# Word-prefix flags: & names, % non-lexemes (and ^ ~ @ * of sibling LDC specs).
_PREFIX_FLAG = re.compile(r"(?<!\S)[&%^~@*]+(?=\w)")
# Markup characters left over from unbalanced brackets (e.g. a "((" whose "))" never came).
_STRAY = re.compile(r"\(\(|\)\)|//|[{}\[\]<>#]|\*\*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_LEADING_PUNCT = re.compile(r"^[\s,.;:!?]+")
_REPEATED_COMMA = re.compile(r",(\s*,)+")
_WORD = re.compile(r"\w", re.UNICODE)


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def normalize_ldc_text(text: str) -> str:
    """Normalize one CallHome or Fisher utterance text (see the module docstring)."""
    s = text
    for pattern in (_COMMENT, _TALKER_NOISE, _BACKGROUND, _UNINTELLIGIBLE):
        s = pattern.sub(" ", s)
    while True:  # language switches may enclose other markup; unwrap innermost first
        unwrapped = _LANG_SWITCH.sub(r" \1 ", s)
        if unwrapped == s:
            break
        s = unwrapped
    s = _EMPTY_TAG.sub(" ", s)
    for pattern in (_GUESS, _ASIDE, _SIMULTANEOUS, _IDIOSYNCRATIC, _MISPRONOUNCED):
        s = pattern.sub(r" \1 ", s)
    s = _INTERRUPTION.sub(" ", s)
    s = _PREFIX_FLAG.sub("", s)
    s = _STRAY.sub(" ", s)
    s = collapse_whitespace(s)
    s = _SPACE_BEFORE_PUNCT.sub(r"\1", s)
    s = _REPEATED_COMMA.sub(",", s)
    s = _LEADING_PUNCT.sub("", s)
    if not _WORD.search(s):
        return ""
    return s


# Fisher's markup ([laughter], [noise], (( )), ((words)), partial words) is a subset of
# CallHome's, so both corpora share one normalizer; the names say which corpus a caller means.
normalize_callhome = normalize_ldc_text
normalize_fisher = normalize_ldc_text
