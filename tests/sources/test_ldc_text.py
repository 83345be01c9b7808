"""Transcript normalization (CallHome and Fisher markup) and the LDC transcript line parser."""
from __future__ import annotations

import pytest

from stages.sources.ldc import parse_transcript, read_text_file
from stages.errors import RejectError
from stages.sources.ldc_text import normalize_callhome, normalize_fisher

CALLHOME_CASES = [
    # hesitations (non-lexemes) stay as plain words
    ("%um I don't know", "um I don't know"),
    ("That's were, that's where I guess, they would, %um, they", "That's were, that's where I guess, they would, um, they"),
    ("%uh %mm yeah", "uh mm yeah"),
    # talker noises and background noise go
    ("{laugh} yeah", "yeah"),
    ("yeah {laugh}.", "yeah."),
    ("so {laugh}, anyway", "so, anyway"),
    ("{laugh}, %uh, right", "uh, right"),
    ("[distortion] hello [/distortion]", "hello"),
    ("hello [background noise] there", "hello there"),
    # comments go
    ("[[previous word lengthened]] so", "so"),
    ("well [[speaker is singing]] la la", "well la la"),
    # unintelligible: guesses kept, empty ones removed
    ("((coffee klatch)) was fun", "coffee klatch was fun"),
    ("and then (( )) we left", "and then we left"),
    ("and then (()) we left", "and then we left"),
    # language switches keep the words
    ("<English going to California>", "going to California"),
    ("I said <Spanish ((hola)) amigo> to him", "I said hola amigo to him"),
    ("<? ayo canoli>", "ayo canoli"),
    ("<? (( ))>", ""),
    # names, mispronounced, idiosyncratic, simultaneous, aside
    ("I saw &Joe at &Joe's &Grill", "I saw Joe at Joe's Grill"),
    ("it was +probably+ fine", "it was probably fine"),
    ("a **poodle-ish** dog", "a poodle-ish dog"),
    ("#yeah right# okay", "yeah right okay"),
    ("//quit it, I'm talking to your sister!//", "quit it, I'm talking to your sister!"),
    # interrupted turns: the dashes go, partial words stay
    ("I saw &Joe yesterday coming out of --", "I saw Joe yesterday coming out of"),
    ("-- the music store on &Seventeenth and &Chestnut.", "the music store on Seventeenth and Chestnut."),
    ("absolu- absolutely, -tion", "absolu- absolutely, -tion"),
    # noise only -> empty
    ("{breath} (( )) {laugh}", ""),
    ("{laugh}.", ""),
    ("[[long pause]]", ""),
    # whitespace collapsed, unbalanced markup stripped
    ("  well\t\tyou   know  ", "well you know"),
    ("((maybe he went", "maybe he went"),
    ("mm-hmm", "mm-hmm"),
    ("'cause I said so", "'cause I said so"),
]

FISHER_CASES = [
    ("and i generally prefer ", "and i generally prefer"),
    ("who turned me onto this he works for (( )) and he", "who turned me onto this he works for and he"),
    ("(( oh yeah ))", "oh yeah"),
    ("((mhm))", "mhm"),
    ("[laughter] yeah [noise]", "yeah"),
    ("[lipsmack] uh i think [sigh] so", "uh i think so"),
    ("an- so the topic is", "an- so the topic is"),
    ("wh- what do you think", "wh- what do you think"),
    ("[laughter]", ""),
    ("[mn] [noise]", ""),
    ("(( ))", ""),
    ("t. v. shows", "t. v. shows"),
]


@pytest.mark.parametrize("raw,expected", CALLHOME_CASES)
def test_normalize_callhome(raw: str, expected: str) -> None:
    assert normalize_callhome(raw) == expected


@pytest.mark.parametrize("raw,expected", FISHER_CASES)
def test_normalize_fisher(raw: str, expected: str) -> None:
    assert normalize_fisher(raw) == expected


FISHER_TEXT = """# fe_03_00001.sph
# Transcribed at the LDC

3.76 5.54 A: and i generally prefer 

5.82 6.48 A: eating at home 

7.92 9.52 B: hi my name is andy 
bad 9.9 A: not a number
10.0 9.0 B: ends before it starts
11.0 12.0 C: who is this
12.0 13.0 A no colon here
14.0
15.0 16.5 b: lower case label is fine
"""


def test_parse_fisher_lines_and_malformed() -> None:
    lines, malformed = parse_transcript(FISHER_TEXT)
    assert [(ln.lineno, ln.start_s, ln.end_s, ln.label, ln.channel) for ln in lines] == [
        (4, 3.76, 5.54, "A", 0),
        (6, 5.82, 6.48, "A", 0),
        (8, 7.92, 9.52, "B", 1),
        (14, 15.0, 16.5, "B", 1),
    ]
    assert lines[0].text == "and i generally prefer"
    assert [(n, why) for n, _, why in malformed] == [
        (9, "bad_number"),
        (10, "end_not_after_start"),
        (11, "unknown_speaker_label"),
        (12, "missing_colon"),
        (13, "missing_fields"),
    ]
    assert malformed[0][1] == "bad 9.9 A: not a number"


CALLHOME_TEXT = """
462.58 468.59 B: That's were, that's where I guess, they would, %um, they
get involved in initial public offering, stock offerings
470.01 471.20 A1: {laugh} yeah
1990s were great
"""


def test_parse_callhome_continuation_and_numbered_labels() -> None:
    lines, malformed = parse_transcript(CALLHOME_TEXT, continuation=True)
    assert len(lines) == 2 and malformed == []
    assert lines[0].text == (
        "That's were, that's where I guess, they would, %um, they "
        "get involved in initial public offering, stock offerings"
    )
    assert (lines[1].label, lines[1].channel, lines[1].text) == ("A1", 0, "{laugh} yeah 1990s were great")


def test_continuation_lines_without_a_good_line_are_malformed() -> None:
    text = "no time stamp yet\n1.0 2.0 A: fine\nx 2.5 A: broken\ncontinues the broken one\n"
    lines, malformed = parse_transcript(text, continuation=True)
    assert [ln.text for ln in lines] == ["fine"]
    assert [(n, why) for n, _, why in malformed] == [
        (1, "continuation_without_utterance"),
        (3, "bad_number"),
        (4, "continues_malformed_line"),
    ]
    # Without continuation (Fisher), an untimed line is simply malformed.
    _, malformed = parse_transcript("just three words\njust words\n", continuation=False)
    assert [why for _, _, why in malformed] == ["bad_number", "missing_fields"]


def test_read_text_file_encodings(tmp_path) -> None:
    utf8 = tmp_path / "a.txt"
    utf8.write_bytes("\ufeff1.0 2.0 A: caf\u00e9\n".encode("utf-8"))
    latin = tmp_path / "b.txt"
    latin.write_bytes("1.0 2.0 A: caf\u00e9\n".encode("latin-1"))
    assert read_text_file(str(utf8)) == "1.0 2.0 A: caf\u00e9\n"
    assert read_text_file(str(latin)) == "1.0 2.0 A: caf\u00e9\n"
    with pytest.raises(RejectError) as e:
        read_text_file(str(tmp_path / "missing.txt"))
    assert e.value.reason == "transcript_unreadable"
