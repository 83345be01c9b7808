"""Text normalization before speech synthesis: digits, dates, times, percentages, currency and
common abbreviations become words of the turn's language (English words; Hindi in Devanagari;
Telugu in Telugu script). Code-mixed Hinglish/Tenglish get romanized English number words.

Conventions: Indian digit grouping ("1,00,000") and native digits (२०२४, ౨౦౨౪) are read; dates
are day-first unless `date_order="mdy"`; Hindi and Telugu read a bare four-digit number from
1100 to 1999 in hundreds, as speakers do for years and prices (उन्नीस सौ निन्यानवे); English does
that only for years (after "in", "since", ... or inside a date). Digit strings of ten or more
digits, or with a leading zero, are read digit by digit (phone numbers, PINs).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable, Literal

DateOrder = Literal["dmy", "mdy"]

# ------------------------------------------------------------------------------------------
# English

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_EN_ORD_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                     "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_EN_MONTHS = ("January February March April May June July August September October November "
              "December").split()


def _en_below_1000(n: int) -> str:
    words = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"]
        n %= 100
        if not n:
            return " ".join(words)
    if n < 20:
        words.append(_EN_ONES[n])
    else:
        words.append(_EN_TENS[n // 10] + (f"-{_EN_ONES[n % 10]}" if n % 10 else ""))
    return " ".join(words)


def en_cardinal(n: int) -> str:
    if n < 0:
        return "minus " + en_cardinal(-n)
    if n < 1000:
        return _en_below_1000(n)
    words = []
    for value, name in _EN_SCALES:
        if n >= value:
            words += [en_cardinal(n // value), name]
            n %= value
    if n:
        words.append(_en_below_1000(n))
    return " ".join(words)


def en_ordinal(n: int) -> str:
    words = en_cardinal(n)
    head, sep, last = words.rpartition(" ")
    pre, hyphen, unit = last.rpartition("-")
    if unit in _EN_ORD_IRREGULAR:
        unit = _EN_ORD_IRREGULAR[unit]
    elif unit.endswith("y"):
        unit = unit[:-1] + "ieth"
    else:
        unit += "th"
    return head + sep + pre + hyphen + unit


def en_year(n: int) -> str:
    """1999 → nineteen ninety-nine, 1905 → nineteen oh five, 2005 → two thousand five,
    2024 → twenty twenty-four."""
    if not 1000 <= n <= 9999 or 2000 <= n <= 2009 or n % 1000 == 0:
        return en_cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{en_cardinal(hi)} hundred"
    return f"{en_cardinal(hi)} {'oh ' + _EN_ONES[lo] if lo < 10 else en_cardinal(lo)}"


# ------------------------------------------------------------------------------------------
# Hindi: 0-99 are irregular and listed whole.

_HI_0_99 = (
    "शून्य एक दो तीन चार पाँच छह सात आठ नौ "
    "दस ग्यारह बारह तेरह चौदह पंद्रह सोलह सत्रह अठारह उन्नीस "
    "बीस इक्कीस बाईस तेईस चौबीस पच्चीस छब्बीस सत्ताईस अट्ठाईस उनतीस "
    "तीस इकतीस बत्तीस तैंतीस चौंतीस पैंतीस छत्तीस सैंतीस अड़तीस उनतालीस "
    "चालीस इकतालीस बयालीस तैंतालीस चौवालीस पैंतालीस छियालीस सैंतालीस अड़तालीस उनचास "
    "पचास इक्यावन बावन तिरपन चौवन पचपन छप्पन सत्तावन अट्ठावन उनसठ "
    "साठ इकसठ बासठ तिरसठ चौंसठ पैंसठ छियासठ सड़सठ अड़सठ उनहत्तर "
    "सत्तर इकहत्तर बहत्तर तिहत्तर चौहत्तर पचहत्तर छिहत्तर सतहत्तर अठहत्तर उन्यासी "
    "अस्सी इक्यासी बयासी तिरासी चौरासी पचासी छियासी सत्तासी अट्ठासी नवासी "
    "नब्बे इक्यानवे बानवे तिरानवे चौरानवे पचानवे छियानवे सत्तानवे अट्ठानवे निन्यानवे"
).split()
assert len(_HI_0_99) == 100
# Indian scales, largest first; 'अरब' (10^9) kept out: "सौ करोड़" is what most speakers say.
_HI_SCALES = ((10**7, "करोड़"), (10**5, "लाख"), (1000, "हज़ार"), (100, "सौ"))
_HI_MONTHS = "जनवरी फ़रवरी मार्च अप्रैल मई जून जुलाई अगस्त सितंबर अक्टूबर नवंबर दिसंबर".split()
_HI_ORD_STEMS = {1: "पहल", 2: "दूसर", 3: "तीसर", 4: "चौथ", 6: "छठ"}


def hi_cardinal(n: int) -> str:
    if n < 0:
        return "माइनस " + hi_cardinal(-n)
    if n < 100:
        return _HI_0_99[n]
    words = []
    for value, name in _HI_SCALES:
        if n >= value:
            words += [hi_cardinal(n // value), name]
            n %= value
    if n:
        words.append(_HI_0_99[n])
    return " ".join(words)


def hi_hundreds(n: int) -> str:
    """1100-1999 the way years and prices are said: 1999 → उन्नीस सौ निन्यानवे."""
    hi, lo = divmod(n, 100)
    return f"{_HI_0_99[hi]} सौ" + (f" {_HI_0_99[lo]}" if lo else "")


def hi_ordinal(n: int, ending: str = "ा") -> str:
    """`ending` is the gender/number vowel sign: ा (masc.), ी (fem.), े (oblique/plural):
    1 → पहला/पहली/पहले, 5 → पाँचवाँ/पाँचवीं/पाँचवें."""
    if n in _HI_ORD_STEMS:
        return _HI_ORD_STEMS[n] + ending
    return hi_cardinal(n) + {"ा": "वाँ", "ी": "वीं", "े": "वें"}[ending]


# ------------------------------------------------------------------------------------------
# Telugu: 0-19 listed, tens + units compose ("ఇరవై ఒకటి"). Before a noun (currency, units) the
# numeral takes its attributive form: ఒకటి → ఒక, వందలు → వందల, వేలు → వేల, లక్షలు → లక్షల.

_TE_0_19 = ("సున్నా ఒకటి రెండు మూడు నాలుగు ఐదు ఆరు ఏడు ఎనిమిది తొమ్మిది పది పదకొండు పన్నెండు "
            "పదమూడు పద్నాలుగు పదిహేను పదహారు పదిహేడు పద్దెనిమిది పంతొమ్మిది").split()
_TE_TENS = "_ _ ఇరవై ముప్పై నలభై యాభై అరవై డెబ్బై ఎనభై తొంభై".split()
_TE_MONTHS = ("జనవరి ఫిబ్రవరి మార్చి ఏప్రిల్ మే జూన్ జూలై ఆగస్టు సెప్టెంబర్ అక్టోబర్ నవంబర్ "
              "డిసెంబర్").split()


def _te_below_100(n: int) -> str:
    if n < 20:
        return _TE_0_19[n]
    return _TE_TENS[n // 10] + (f" {_TE_0_19[n % 10]}" if n % 10 else "")


def _te_attr(words: str) -> str:
    """Attributive form of a numeral's last word (before a noun or a larger unit)."""
    head, sep, last = words.rpartition(" ")
    last = {"ఒకటి": "ఒక", "వందలు": "వందల", "వేలు": "వేల", "లక్షలు": "లక్షల",
            "కోట్లు": "కోట్ల"}.get(last, last)
    return head + sep + last


def _te_unit(count: int, one: str, many: str, oblique: str, has_rest: bool) -> str:
    """'ఒక లక్ష', 'రెండు లక్షలు', 'రెండు లక్షల <rest>'."""
    if count == 1:
        return f"ఒక {one}"
    return f"{_te_attr(te_cardinal(count))} {oblique if has_rest else many}"


def te_cardinal(n: int, attributive: bool = False) -> str:
    if n < 0:
        return "మైనస్ " + te_cardinal(-n, attributive)
    words: list[str] = []
    rest = n
    crore, rest = divmod(rest, 10**7)
    if crore:
        words.append(_te_unit(crore, "కోటి", "కోట్లు", "కోట్ల", bool(rest)))
    lakh, rest = divmod(rest, 10**5)
    if lakh:
        words.append(_te_unit(lakh, "లక్ష", "లక్షలు", "లక్షల", bool(rest)))
    thousand, rest = divmod(rest, 1000)
    if thousand == 1:
        words.append("వెయ్యి")
    elif thousand:
        words.append(f"{_te_attr(te_cardinal(thousand))} {'వేల' if rest else 'వేలు'}")
    hundred, rest = divmod(rest, 100)
    if hundred == 1:
        words.append("నూట" if rest else "వంద")
    elif hundred:
        words.append(f"{_te_attr(_TE_0_19[hundred])} {'వందల' if rest else 'వందలు'}")
    if rest or not words:
        words.append(_te_below_100(rest))
    out = " ".join(words)
    return _te_attr(out) if attributive else out


def te_hundreds(n: int, attributive: bool = False) -> str:
    """1100-1999 in hundreds: 1999 → పంతొమ్మిది వందల తొంభై తొమ్మిది, 1500 → పదిహేను వందలు."""
    hi, lo = divmod(n, 100)
    out = f"{_te_below_100(hi)} {'వందల' if lo else 'వందలు'}" + (f" {_te_below_100(lo)}" if lo else "")
    return _te_attr(out) if attributive else out


def te_ordinal(n: int) -> str:
    """1వ → ఒకటవ, 2వ → రెండవ, 10వ → పదవ, 20వ → ఇరవయ్యవ (the form before a noun)."""
    words = te_cardinal(n)
    if words.endswith("ై"):
        return words[:-1] + "య్యవ"
    if words.endswith(("ు", "ి")):
        return words[:-1] + "వ"
    return words + "వ"


# ------------------------------------------------------------------------------------------
# Per-language vocabulary


class _Lang:
    def __init__(self, code: str, cardinal: Callable[[int], str], attr: Callable[[int], str],
                 hundreds: Callable[[int], str], words: dict[str, str]):
        self.code = code
        self.cardinal = cardinal  # standalone
        self.attr = attr  # before a noun (Telugu differs)
        self.hundreds = hundreds
        self.w = words


_EN_WORDS = dict(point="point", percent="percent", minus="minus", to="to", and_="and",
                 rupee="rupee", rupees="rupees", paisa="paisa", paise="paise", dollar="dollar",
                 dollars="dollars", cent="cent", cents="cents", am="a m", pm="p m")
_HI_WORDS = dict(point="दशमलव", percent="प्रतिशत", minus="माइनस", to="से", and_="और",
                 rupee="रुपया", rupees="रुपये", paisa="पैसा", paise="पैसे", dollar="डॉलर",
                 dollars="डॉलर", cent="सेंट", cents="सेंट", am="ए एम", pm="पी एम")
_TE_WORDS = dict(point="పాయింట్", percent="శాతం", minus="మైనస్", to="నుండి", and_="మరియు",
                 rupee="రూపాయి", rupees="రూపాయలు", paisa="పైసా", paise="పైసలు", dollar="డాలర్",
                 dollars="డాలర్లు", cent="సెంటు", cents="సెంట్లు", am="ఏ ఎం", pm="పీ ఎం")

_LANGS = {
    "en": _Lang("en", en_cardinal, en_cardinal, en_year, _EN_WORDS),
    "hi": _Lang("hi", hi_cardinal, hi_cardinal, hi_hundreds, _HI_WORDS),
    "te": _Lang("te", te_cardinal, lambda n: te_cardinal(n, attributive=True),
                lambda n: te_hundreds(n), _TE_WORDS),
}
# Code-mixed and romanized variants read numbers as English words.
_ALIASES = {"hinglish": "en", "tenglish": "en", "hi-en": "en", "hi_en": "en", "hi-latn": "en",
            "te-en": "en", "te_en": "en", "te-latn": "en", "en-us": "en", "en-gb": "en",
            "en-in": "en", "hin": "hi", "tel": "te", "eng": "en"}


def resolve_lang(lang: str) -> str:
    """'hi', 'te', 'en' (or an alias) → the rule set used; ValueError for languages without one."""
    key = lang.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _LANGS:
        raise ValueError(f"no text normalization rules for language {lang!r}")
    return key


# Units after a number: (pattern, en singular, en plural, hi, te).
_UNITS = (
    (r"km/h|kmph|km/hr", "kilometer per hour", "kilometers per hour", "किलोमीटर प्रति घंटा", "కిలోమీటర్ల వేగం"),
    (r"km|कि\.\s?मी\.?|కి\.\s?మీ\.?", "kilometer", "kilometers", "किलोमीटर", "కిలోమీటర్లు"),
    (r"kg|कि\.\s?ग्रा\.?|కి\.\s?గ్రా\.?", "kilogram", "kilograms", "किलोग्राम", "కిలోలు"),
    (r"cm", "centimeter", "centimeters", "सेंटीमीटर", "సెంటీమీటర్లు"),
    (r"mm", "millimeter", "millimeters", "मिलीमीटर", "మిల్లీమీటర్లు"),
    (r"mg", "milligram", "milligrams", "मिलीग्राम", "మిల్లీగ్రాములు"),
    (r"ml", "milliliter", "milliliters", "मिलीलीटर", "మిల్లీలీటర్లు"),
    (r"m", "meter", "meters", "मीटर", "మీటర్లు"),
    (r"hrs?", "hour", "hours", "घंटे", "గంటలు"),
    (r"mins?", "minute", "minutes", "मिनट", "నిమిషాలు"),
    (r"secs?", "second", "seconds", "सेकंड", "సెకన్లు"),
)

# Abbreviations (case-sensitive), as a pattern → word per language.
_ABBREVIATIONS = (
    (r"Dr\.|डॉ\.|డా\.", "Doctor", "डॉक्टर", "డాక్టర్"),
    (r"Mr\.", "Mister", "मिस्टर", "మిస్టర్"),
    (r"Mrs\.", "Missus", "मिसेज़", "మిసెస్"),
    (r"Ms\.", "Miss", "मिस", "మిస్"),
    (r"Prof\.|प्रो\.|ప్రొ\.", "Professor", "प्रोफ़ेसर", "ప్రొఫెసర్"),
    (r"Jr\.", "Junior", "जूनियर", "జూనియర్"),
    (r"Sr\.", "Senior", "सीनियर", "సీనియర్"),
    (r"Mt\.", "Mount", "माउंट", "మౌంట్"),
    (r"etc\.?", "et cetera", "वगैरह", "మొదలైనవి"),
    (r"e\.g\.", "for example", "उदाहरण के लिए", "ఉదాహరణకు"),
    (r"i\.e\.", "that is", "यानी", "అంటే"),
    (r"vs\.?", "versus", "बनाम", "వర్సెస్"),
    (r"approx\.", "approximately", "लगभग", "సుమారు"),
    (r"No\.(?=\s?\d)", "number", "नंबर", "నంబర్"),
)

_NUM = r"\d+(?:,\d{2,3})*(?:\.\d+)?"
_NATIVE_DIGITS = str.maketrans("०१२३४५६७८९౦౧౨౩౪౫౬౭౮౯", "01234567890123456789")
_YEAR_CONTEXT = re.compile(r"(?:\b(?:in|since|of|year|by|from|until|till|circa|before|after)\s+)$", re.I)


def _to_number(s: str) -> tuple[int, str]:
    """'1,00,000.50' → (100000, '50')."""
    whole, _, frac = s.replace(",", "").partition(".")
    return int(whole), frac


class _Normalizer:
    def __init__(self, lang: str, date_order: DateOrder):
        self.L = _LANGS[lang]
        self.date_order = date_order

    # -- numbers
    def digits(self, s: str) -> str:
        return " ".join(self.L.cardinal(int(c)) for c in s)

    def number(self, s: str, attributive: bool = False) -> str:
        raw = s.replace(",", "")
        whole, _, frac = raw.partition(".")
        if "," not in s and (len(whole) >= 10 or (len(whole) > 1 and whole.startswith("0"))):
            out = self.digits(whole)
        else:
            n = int(whole)
            out = (self.L.attr if attributive and not frac else self.L.cardinal)(n)
        if frac:
            out += f" {self.L.w['point']} {self.digits(frac)}"
        return out

    def bare_number(self, s: str, before: str) -> str:
        """A number with nothing telling what it counts: four-digit years read as years."""
        if re.fullmatch(r"\d{4}", s):
            n = int(s)
            if self.L.code == "en":
                if 1100 <= n <= 2099 and _YEAR_CONTEXT.search(before):
                    return en_year(n)
            elif 1100 <= n <= 1999:
                return self.L.hundreds(n)
        return self.number(s)

    def year(self, n: int) -> str:
        if self.L.code == "en":
            return en_year(n)
        return self.L.hundreds(n) if 1100 <= n <= 1999 else self.L.cardinal(n)

    # -- patterns
    def currency(self, m: re.Match) -> str:
        sym, amount = m.group("sym"), m.group("amt")
        whole, frac = _to_number(amount)
        rupee = sym != "$"
        w = self.L.w
        one, many = (w["rupee"], w["rupees"]) if rupee else (w["dollar"], w["dollars"])
        out = f"{self.L.attr(whole)} {one if whole == 1 else many}"
        if frac and len(frac) <= 2 and int(frac.ljust(2, "0")):
            sub = int(frac.ljust(2, "0"))
            s_one, s_many = (w["paisa"], w["paise"]) if rupee else (w["cent"], w["cents"])
            if self.L.code == "te":
                out = out.replace(w["rupees"], "రూపాయల").replace(w["dollars"], "డాలర్ల")
            joiner = " and " if self.L.code == "en" else " "
            out += f"{joiner}{self.L.attr(sub)} {s_one if sub == 1 else s_many}"
        elif frac and int(frac):
            out = f"{self.number(amount)} {many}"
        return out

    def date(self, d: int, mo: int, y: int) -> str:
        if not (1 <= mo <= 12 and 1 <= d <= 31):
            return ""
        if self.L.code == "en":
            if self.date_order == "mdy":
                return f"{_EN_MONTHS[mo - 1]} {en_ordinal(d)}, {en_year(y)}"
            return f"the {en_ordinal(d)} of {_EN_MONTHS[mo - 1]}, {en_year(y)}"
        months = _HI_MONTHS if self.L.code == "hi" else _TE_MONTHS
        return f"{self.L.cardinal(d)} {months[mo - 1]} {self.year(y)}"

    def time(self, h: int, mi: int, ampm: str) -> str:
        if not (0 <= h <= 24 and 0 <= mi <= 59):
            return ""
        w, code = self.L.w, self.L.code
        suffix = ""
        if ampm:
            suffix = " " + (w["am"] if ampm.lower().startswith("a") else w["pm"])
        if code == "en":
            if mi == 0:
                core = f"{en_cardinal(h)}" + ("" if ampm else " o'clock")
            elif mi < 10:
                core = f"{en_cardinal(h)} oh {en_cardinal(mi)}"
            else:
                core = f"{en_cardinal(h)} {en_cardinal(mi)}"
        elif code == "hi":
            core = f"{hi_cardinal(h)} बजे" if mi == 0 else f"{hi_cardinal(h)} बजकर {hi_cardinal(mi)} मिनट"
        else:
            hour = "ఒంటి గంట" if h == 1 else f"{te_cardinal(h, True)} {'గంటల' if mi else 'గంటలు'}"
            core = hour if mi == 0 else f"{hour} {te_cardinal(mi, True)} {'నిమిషం' if mi == 1 else 'నిమిషాలు'}"
        return core + suffix

    def ordinal(self, n: int, suffix: str) -> str:
        code = self.L.code
        if code == "en":
            return en_ordinal(n)
        if code == "hi":
            ending = "ा" if suffix in ("ला", "रा", "था", "ठा", "वाँ", "वां", "वा") else \
                     "ी" if suffix in ("ली", "री", "थी", "ठी", "वीं", "वी") else "े"
            return hi_ordinal(n, ending)
        return te_ordinal(n)

    def unit(self, amount: str, idx: int) -> str:
        _, one, many, hi, te = _UNITS[idx]
        if self.L.code == "en":
            return f"{self.number(amount)} {one if amount == '1' else many}"
        word = hi if self.L.code == "hi" else te
        return f"{self.number(amount, attributive=True)} {word}"


def normalize_for_tts(text: str, lang: str, *, date_order: DateOrder = "dmy") -> str:
    """Spell out numbers, dates, times, percentages, currency and abbreviations in `lang`'s words.

    >>> normalize_for_tts("Dr. Rao paid ₹1,500 on 12/03/2024 at 10:30.", "en")
    'Doctor Rao paid one thousand five hundred rupees on the twelfth of March, twenty twenty-four at ten thirty.'
    """
    code = resolve_lang(lang)
    nz = _Normalizer(code, date_order)
    L = nz.L
    text = unicodedata.normalize("NFC", text).translate(_NATIVE_DIGITS)
    ix = {"en": 1, "hi": 2, "te": 3}[code]

    for pattern, *words in _ABBREVIATIONS:
        text = re.sub(rf"(?<![\w.])(?:{pattern})(?!\w)", words[ix - 1], text)
    text = text.replace("&", f" {L.w['and_']} ")

    # currency: ₹500, Rs. 500, INR 500, $5.50
    text = re.sub(rf"(?P<sym>₹|\$|\bRs\.?|\bINR)\s?(?P<amt>{_NUM})", nz.currency, text)

    # dates: 12/03/2024, 12-03-2024, 12.03.2024, 2024-03-12
    def _dmy(m: re.Match) -> str:
        a, b, y = int(m.group(1)), int(m.group(2)), m.group(3)
        year = int(y) if len(y) == 4 else 2000 + int(y)
        d, mo = (b, a) if nz.date_order == "mdy" else (a, b)
        return nz.date(d, mo, year) or m.group(0).replace("/", " ")

    text = re.sub(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b",
                  lambda m: nz.date(int(m.group(3)), int(m.group(2)), int(m.group(1))) or m.group(0),
                  text)
    text = re.sub(r"\b(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})\b",
                  lambda m: _dmy(re.match(r"(\d+)\D(\d+)\D(\d+)", m.group(0))), text)

    # times: 10:30, 7:05 pm, 10 AM
    text = re.sub(r"\b(\d{1,2}):(\d{2})(?::\d{2})?(?:\s?([AaPp])\.?\s?[Mm]\.?(?![\w]))?",
                  lambda m: nz.time(int(m.group(1)), int(m.group(2)), m.group(3) or "") or m.group(0), text)
    text = re.sub(r"\b(\d{1,2})\s?([AaPp])\.?\s?[Mm]\.?(?!\w)",
                  lambda m: nz.time(int(m.group(1)), 0, m.group(2)) or m.group(0), text)

    # percentages
    text = re.sub(rf"({_NUM})\s?%", lambda m: f"{nz.number(m.group(1), True)} {L.w['percent']}", text)

    # ordinals: 21st, 5वीं, 3వ
    if code == "en":
        text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: nz.ordinal(int(m.group(1)), ""), text)
    elif code == "hi":
        text = re.sub(r"\b(\d+)(वाँ|वां|वीं|वें|वा|वी|वे|ला|ली|ले|रा|री|रे|था|थी|थे|ठा|ठी|ठे)(?![\u0900-\u097F])",
                      lambda m: nz.ordinal(int(m.group(1)), m.group(2)), text)
    else:
        text = re.sub(r"\b(\d+)\s?వ(?![\u0C00-\u0C7F])", lambda m: nz.ordinal(int(m.group(1)), ""), text)

    # ranges: 10-20 → 10 to 20
    text = re.sub(rf"(?<![\w.,])({_NUM})\s?[-–]\s?({_NUM})(?!\w|[.,]\d)",
                  lambda m: f"{m.group(1)} {L.w['to']} {m.group(2)}", text)
    # units after a number
    for i, (pattern, *_) in enumerate(_UNITS):
        text = re.sub(rf"({_NUM})\s?(?:{pattern})(?![\w])", lambda m, i=i: nz.unit(m.group(1), i), text)

    # negative numbers
    text = re.sub(rf"(?<![\w.,])[-−]({_NUM})", lambda m: f"{L.w['minus']} {m.group(1)}", text)
    # everything else that is a number
    text = re.sub(rf"(?<![\d,.]){_NUM}(?![\d])",
                  lambda m: nz.bare_number(m.group(0), m.string[: m.start()]), text)
    return " ".join(text.split())
