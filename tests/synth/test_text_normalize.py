"""Text normalization before TTS: exact spellings per language."""
from __future__ import annotations

import re

import pytest

from stages.synth.text_normalize import (_HI_0_99, en_cardinal, en_ordinal, en_year, hi_cardinal, hi_hundreds,
                                   hi_ordinal, normalize_for_tts, resolve_lang, te_cardinal, te_hundreds,
                                   te_ordinal)


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (21, "twenty-one"), (99, "ninety-nine"),
    (100, "one hundred"), (101, "one hundred one"), (999, "nine hundred ninety-nine"),
    (1000, "one thousand"), (1234, "one thousand two hundred thirty-four"), (1000000, "one million"),
    (2500000, "two million five hundred thousand"), (-4, "minus four"),
])
def test_en_cardinal(n, words):
    assert en_cardinal(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
    (12, "twelfth"), (20, "twentieth"), (21, "twenty-first"), (42, "forty-second"),
    (100, "one hundredth"), (103, "one hundred third"),
])
def test_en_ordinal(n, words):
    assert en_ordinal(n) == words


@pytest.mark.parametrize("n, words", [
    (1999, "nineteen ninety-nine"), (1905, "nineteen oh five"), (1900, "nineteen hundred"),
    (2000, "two thousand"), (2005, "two thousand five"), (2010, "twenty ten"), (2024, "twenty twenty-four"),
])
def test_en_year(n, words):
    assert en_year(n) == words


@pytest.mark.parametrize("text, spoken", [
    ("Dr. Rao paid ₹1,500 on 12/03/2024 at 10:30.",
     "Doctor Rao paid one thousand five hundred rupees on the twelfth of March, twenty twenty-four at ten thirty."),
    ("It costs $5.50, about 45% more.", "It costs five dollars and fifty cents, about forty-five percent more."),
    ("Rs. 1 only", "one rupee only"),
    ("born in 1987, moved in 2010", "born in nineteen eighty-seven, moved in twenty ten"),
    ("we sold 2024 tickets", "we sold two thousand twenty-four tickets"),
    ("the 21st century, my 3rd try", "the twenty-first century, my third try"),
    ("at 7:05 pm or 9 AM", "at seven oh five p m or nine a m"),
    ("meet at 6:00", "meet at six o'clock"),
    ("pi is 3.14", "pi is three point one four"),
    ("it was -5 outside", "it was minus five outside"),
    ("5 km and 1 kg, 10-20 min", "five kilometers and one kilogram, ten to twenty minutes"),
    ("Mr. & Mrs. Smith", "Mister and Missus Smith"),
    ("call 9876543210", "call nine eight seven six five four three two one zero"),
    ("on 2024-03-12", "on the twelfth of March, twenty twenty-four"),
    ("fruit, e.g. apples etc.", "fruit, for example apples et cetera"),
    ("no digits here", "no digits here"),
])
def test_en_sentences(text, spoken):
    assert normalize_for_tts(text, "en") == spoken


def test_en_month_first_dates():
    assert normalize_for_tts("12/03/2024", "en", date_order="mdy") == "December third, twenty twenty-four"
    assert normalize_for_tts("31/12/2023", "en") == "the thirty-first of December, twenty twenty-three"


def test_hindi_table_is_complete_and_regular_where_it_should_be():
    assert len(_HI_0_99) == 100 and len(set(_HI_0_99)) == 100
    assert all(re.fullmatch(r"[\u0900-\u097F]+", w) for w in _HI_0_99)
    assert [_HI_0_99[t] for t in range(10, 100, 10)] == \
        "दस बीस तीस चालीस पचास साठ सत्तर अस्सी नब्बे".split()
    # x9 for x = 1..7 is "one less than the next ten": उन-
    assert all(_HI_0_99[n].startswith("उन") for n in (19, 29, 39, 49, 59, 69, 79))


@pytest.mark.parametrize("n, words", [
    (0, "शून्य"), (5, "पाँच"), (6, "छह"), (11, "ग्यारह"), (15, "पंद्रह"), (18, "अठारह"), (19, "उन्नीस"),
    (21, "इक्कीस"), (25, "पच्चीस"), (28, "अट्ठाईस"), (29, "उनतीस"), (35, "पैंतीस"), (38, "अड़तीस"),
    (42, "बयालीस"), (49, "उनचास"), (51, "इक्यावन"), (56, "छप्पन"), (59, "उनसठ"), (64, "चौंसठ"),
    (69, "उनहत्तर"), (72, "बहत्तर"), (75, "पचहत्तर"), (79, "उन्यासी"), (84, "चौरासी"), (89, "नवासी"),
    (98, "अट्ठानवे"), (99, "निन्यानवे"),
    (100, "एक सौ"), (250, "दो सौ पचास"), (1000, "एक हज़ार"), (2024, "दो हज़ार चौबीस"),
    (100000, "एक लाख"), (250000, "दो लाख पचास हज़ार"), (10000000, "एक करोड़"),
    (12345678, "एक करोड़ तेईस लाख पैंतालीस हज़ार छह सौ अठहत्तर"),
])
def test_hi_cardinal(n, words):
    assert hi_cardinal(n) == words


def test_hi_hundreds_and_ordinals():
    assert hi_hundreds(1999) == "उन्नीस सौ निन्यानवे"
    assert hi_hundreds(1500) == "पंद्रह सौ"
    assert [hi_ordinal(n) for n in (1, 2, 3, 4, 5, 6, 7, 9)] == \
        ["पहला", "दूसरा", "तीसरा", "चौथा", "पाँचवाँ", "छठा", "सातवाँ", "नौवाँ"]
    assert hi_ordinal(1, "ी") == "पहली" and hi_ordinal(21, "ी") == "इक्कीसवीं" and hi_ordinal(10, "े") == "दसवें"


@pytest.mark.parametrize("text, spoken", [
    ("मैंने ₹500 दिए।", "मैंने पाँच सौ रुपये दिए।"),
    ("सिर्फ़ ₹1", "सिर्फ़ एक रुपया"),
    ("50% छूट", "पचास प्रतिशत छूट"),
    ("12/03/2024 को", "बारह मार्च दो हज़ार चौबीस को"),
    ("1999 में", "उन्नीस सौ निन्यानवे में"),
    ("२०२४ में", "दो हज़ार चौबीस में"),
    ("डॉ. शर्मा", "डॉक्टर शर्मा"),
    ("5 km दूर", "पाँच किलोमीटर दूर"),
    ("21वीं सदी, 1ला दिन", "इक्कीसवीं सदी, पहला दिन"),
    ("10:30 पर", "दस बजकर तीस मिनट पर"),
    ("ठीक 6:00", "ठीक छह बजे"),
    ("2.5 लाख", "दो दशमलव पाँच लाख"),
    ("₹10.50", "दस रुपये पचास पैसे"),
    ("₹2,50,000", "दो लाख पचास हज़ार रुपये"),
])
def test_hi_sentences(text, spoken):
    assert normalize_for_tts(text, "hi") == spoken


@pytest.mark.parametrize("n, words", [
    (0, "సున్నా"), (1, "ఒకటి"), (5, "ఐదు"), (10, "పది"), (11, "పదకొండు"), (12, "పన్నెండు"),
    (15, "పదిహేను"), (18, "పద్దెనిమిది"), (20, "ఇరవై"), (21, "ఇరవై ఒకటి"), (30, "ముప్పై"),
    (45, "నలభై ఐదు"), (50, "యాభై"), (99, "తొంభై తొమ్మిది"), (100, "వంద"), (101, "నూట ఒకటి"),
    (200, "రెండు వందలు"), (250, "రెండు వందల యాభై"), (1000, "వెయ్యి"), (2000, "రెండు వేలు"),
    (2024, "రెండు వేల ఇరవై నాలుగు"), (100000, "ఒక లక్ష"), (200000, "రెండు లక్షలు"),
    (10000000, "ఒక కోటి"),
])
def test_te_cardinal(n, words):
    assert te_cardinal(n) == words


def test_te_attributive_hundreds_and_ordinals():
    assert te_cardinal(500, attributive=True) == "ఐదు వందల"
    assert te_cardinal(1, attributive=True) == "ఒక"
    assert te_hundreds(1999) == "పంతొమ్మిది వందల తొంభై తొమ్మిది"
    assert te_hundreds(1500) == "పదిహేను వందలు"
    assert [te_ordinal(n) for n in (2, 3, 6, 10, 20)] == ["రెండవ", "మూడవ", "ఆరవ", "పదవ", "ఇరవయ్యవ"]


@pytest.mark.parametrize("text, spoken", [
    ("₹100 ఇచ్చాను", "వంద రూపాయలు ఇచ్చాను"),
    ("₹500", "ఐదు వందల రూపాయలు"),
    ("₹1", "ఒక రూపాయి"),
    ("₹2000", "రెండు వేల రూపాయలు"),
    ("50% తగ్గింపు", "యాభై శాతం తగ్గింపు"),
    ("1999 లో", "పంతొమ్మిది వందల తొంభై తొమ్మిది లో"),
    ("౨౦౨౪ లో", "రెండు వేల ఇరవై నాలుగు లో"),
    ("2వ తరగతి", "రెండవ తరగతి"),
    ("10:30 కి", "పది గంటల ముప్పై నిమిషాలు కి"),
    ("డా. రావు", "డాక్టర్ రావు"),
    ("5 km", "ఐదు కిలోమీటర్లు"),
])
def test_te_sentences(text, spoken):
    assert normalize_for_tts(text, "te") == spoken


def test_code_mixed_reads_english_number_words():
    assert normalize_for_tts("Maine 500 rupees diye, 2 din pehle", "hinglish") == \
        "Maine five hundred rupees diye, two din pehle"
    assert resolve_lang("hi-en") == "en" and resolve_lang("tel") == "te"


def test_unknown_language_and_idempotence():
    with pytest.raises(ValueError, match="no text normalization rules"):
        normalize_for_tts("5", "xx")
    for lang, text in (("en", "On 12/03/2024 I paid $5 for 3 kg."), ("hi", "12/03/2024 को ₹5"),
                       ("te", "12/03/2024 న ₹5")):
        once = normalize_for_tts(text, lang)
        assert not re.search(r"\d", once)
        assert normalize_for_tts(once, lang) == once
