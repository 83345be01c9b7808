"""Prompts for LLM-written dialogues: hand-written few-shot dialogues per language and the
builders that turn a dialogue request into a completion prompt or chat messages.

A base model continues a pattern far better than it follows an instruction, so the completion
prompt is a run of example conversations (header + lines) in the target language that ends
with the header of a new conversation and its first speaker label.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

LANG_NAMES = {
    "en": "English",
    "hi": "Hindi, in Devanagari script",
    "te": "Telugu, in Telugu script",
    "hinglish": "Hinglish (Hindi and English mixed, written in Roman letters)",
}

# The model writes "<end>" after the last line, as the examples do; generation stops there or at
# the next example's header (finish reason "stop"). Blank lines do not stop it: small models put
# them between turns.
END_MARKER = "<end>"
HEADER_WORD = "Conversation"
STOP_SEQUENCES = [END_MARKER, f"\n{HEADER_WORD} "]
# Labels of the example header: a model that writes one of them is echoing the prompt.
HEADER_LABELS = ("language", "topic", "ai character", "user profile", "mood", "turns")

INSTRUCTION = (
    "You write short, natural spoken conversations between a USER and an AI voice assistant. "
    "Write only the conversation lines, each starting with USER: or AI:, alternating, starting "
    "with USER. Write every line in the requested language and script. No titles, notes, "
    "translations or explanations."
)


@dataclass(frozen=True)
class Example:
    topic: str
    ai_persona: str
    user_profile: str
    style: str
    turns: tuple[tuple[str, str], ...]  # (speaker, text)


_TRIP = ("planning a cheap weekend trip to the hills", "a cheerful travel buddy who loves mountains",
         "a college student on a tight budget", "excited")
_TRAIN = ("a late train and an important meeting", "a calm, patient assistant",
          "an office worker who is stressed", "anxious")
_DAL = ("cooking dal for the first time", "a warm, grandmotherly cook",
        "a young person living alone for the first time", "curious")


def _ex(meta: tuple[str, str, str, str], lines: list[str]) -> Example:
    turns = tuple(("USER" if i % 2 == 0 else "AI", t) for i, t in enumerate(lines))
    return Example(*meta, turns=turns)


EXAMPLES: dict[str, list[Example]] = {
    "en": [
        _ex(_TRIP, [
            "I've got three days off next week and almost no money. Any ideas?",
            "Oh, perfect timing! How about a bus to the hills? It's cheap and the views are amazing.",
            "Won't it be freezing up there?",
            "A little at night, sure. Pack a warm jacket and you'll be fine.",
            "And where would I even stay?",
            "Hostels cost about five hundred rupees a night. I can help you pick one.",
        ]),
        _ex(_TRAIN, [
            "My train is forty minutes late and I have a meeting at ten.",
            "That sounds stressful. Could you join the meeting by phone for now?",
            "Maybe, but my manager really doesn't like that.",
            "A short message right now, explaining the delay, usually helps a lot.",
            "Okay. What should I write?",
            "Keep it simple: train delayed, joining by phone, in the office by eleven.",
        ]),
        _ex(_DAL, [
            "I tried making dal yesterday and it came out all watery.",
            "Ah, that happens to everyone! Did you measure the water?",
            "Not really, I just poured some in.",
            "Use three cups of water for one cup of dal, and let it simmer a bit longer.",
            "Should I add the spices at the start?",
            "Turmeric and salt at the start, and the tadka right at the end.",
        ]),
    ],
    "hi": [
        _ex(_TRIP, [
            "अगले हफ़्ते मेरी तीन दिन की छुट्टी है, पर पैसे बहुत कम हैं। कोई आइडिया?",
            "अरे वाह, बढ़िया मौका है! पहाड़ों की बस ले लो, सस्ती भी है और नज़ारे भी शानदार।",
            "वहाँ तो बहुत ठंड होगी ना?",
            "रात में थोड़ी होगी। एक गरम जैकेट रख लेना, बस।",
            "और रुकूँगा कहाँ?",
            "हॉस्टल पाँच सौ रुपये रात में मिल जाते हैं। चलो, मैं एक ढूँढने में मदद करता हूँ।",
        ]),
        _ex(_TRAIN, [
            "मेरी ट्रेन चालीस मिनट लेट है और दस बजे मेरी मीटिंग है।",
            "ओह, यह तो परेशानी वाली बात है। क्या आप अभी फ़ोन से मीटिंग में जुड़ सकते हैं?",
            "शायद, पर मेरे मैनेजर को यह बिल्कुल पसंद नहीं।",
            "अभी एक छोटा सा मैसेज भेज दीजिए, देरी की वजह बताकर। इससे काफ़ी फ़र्क पड़ता है।",
            "ठीक है। क्या लिखूँ?",
            "बस इतना कि ट्रेन लेट है, फ़ोन से जुड़ रहा हूँ, ग्यारह बजे तक ऑफ़िस पहुँच जाऊँगा।",
        ]),
        _ex(_DAL, [
            "कल मैंने दाल बनाई थी, पर बहुत पतली बन गई।",
            "अरे, ऐसा सबके साथ होता है! पानी नापकर डाला था?",
            "नहीं, बस अंदाज़े से डाल दिया।",
            "एक कटोरी दाल में तीन कटोरी पानी डालो, और थोड़ी देर ज़्यादा पकने दो।",
            "मसाले शुरू में ही डाल दूँ?",
            "हल्दी और नमक शुरू में, और तड़का बिल्कुल आख़िर में।",
        ]),
    ],
    "te": [
        _ex(_TRIP, [
            "వచ్చే వారం నాకు మూడు రోజులు సెలవు ఉంది, కానీ డబ్బులు చాలా తక్కువ. ఏమైనా ఐడియా ఉందా?",
            "అరే, మంచి అవకాశం! కొండల వైపు బస్సులో వెళ్ళు. చవకగా ఉంటుంది, దృశ్యాలు కూడా అద్భుతంగా ఉంటాయి.",
            "అక్కడ చాలా చలిగా ఉంటుంది కదా?",
            "రాత్రి కొంచెం ఉంటుంది. ఒక వెచ్చని జాకెట్ తీసుకెళ్ళు, చాలు.",
            "మరి ఎక్కడ ఉండాలి?",
            "హాస్టల్స్ రాత్రికి ఐదు వందల రూపాయలకే దొరుకుతాయి. ఒకటి వెతకడంలో నేను సాయం చేస్తాను.",
        ]),
        _ex(_TRAIN, [
            "నా ట్రైన్ నలభై నిమిషాలు లేట్, పది గంటలకి నాకు మీటింగ్ ఉంది.",
            "అయ్యో, అది టెన్షన్ విషయమే. ఇప్పటికి ఫోన్ ద్వారా మీటింగ్‌లో చేరగలరా?",
            "చేరగలను, కానీ మా మేనేజర్‌కి అది అస్సలు నచ్చదు.",
            "ఆలస్యానికి కారణం చెబుతూ ఇప్పుడే ఒక చిన్న మెసేజ్ పంపండి. దానితో చాలా తేడా ఉంటుంది.",
            "సరే. ఏం రాయాలి?",
            "ఇంతే చాలు, ట్రైన్ లేట్ అయింది, ఫోన్‌లో చేరుతున్నాను, పదకొండు గంటలకల్లా ఆఫీసుకి వస్తాను.",
        ]),
        _ex(_DAL, [
            "నిన్న నేను పప్పు చేశాను, కానీ చాలా పలచగా వచ్చింది.",
            "అయ్యో, అలా అందరికీ జరుగుతుంది! నీళ్ళు కొలిచి పోశావా?",
            "లేదు, ఊరికే అంచనాతో పోశాను.",
            "ఒక గ్లాసు పప్పుకి మూడు గ్లాసుల నీళ్ళు పోసి, ఇంకొంచెం సేపు ఉడకనివ్వు.",
            "మసాలాలు మొదట్లోనే వేయాలా?",
            "పసుపు, ఉప్పు మొదట్లోనే వెయ్యి, తాలింపు మాత్రం చివర్లో పెట్టు.",
        ]),
    ],
    "hinglish": [
        _ex(_TRIP, [
            "Yaar, next week teen din ki chhutti hai but paise bilkul nahi hain. Koi idea?",
            "Arre, perfect timing! Pahadon ki bus le lo, sasti bhi hai aur views toh amazing hain.",
            "Wahan bahut thand hogi na?",
            "Raat ko thodi si. Ek warm jacket rakh lena, bas.",
            "Aur rukunga kahan?",
            "Hostels paanch sau rupaye per night mein mil jaate hain. Chalo, main dhoondhne mein help karta hoon.",
        ]),
        _ex(_TRAIN, [
            "Meri train forty minutes late hai aur das baje meeting hai.",
            "Oh no, yeh toh tension wali baat hai. Kya abhi phone se meeting join kar sakte ho?",
            "Kar sakta hoon, but mere manager ko yeh bilkul pasand nahi.",
            "Abhi ek chhota sa message bhej do, delay ka reason batake. Usse kaafi farak padta hai.",
            "Theek hai. Kya likhun?",
            "Bas itna ki train late hai, phone se join kar raha hoon, gyarah baje tak office pahunch jaunga.",
        ]),
        _ex(_DAL, [
            "Kal maine dal banayi thi, but bahut patli ban gayi.",
            "Arre, aisa sabke saath hota hai! Paani measure karke daala tha?",
            "Nahi, bas andaaze se daal diya.",
            "Ek katori dal mein teen katori paani daalo, aur thodi der zyada pakne do.",
            "Masale shuru mein hi daal doon?",
            "Haldi aur namak shuru mein, aur tadka bilkul end mein.",
        ]),
    ],
}


def header(lang: str, topic: str, ai_persona: str, user_profile: str, style: str, n_turns: int) -> str:
    """The description block above each conversation (labels in English, values as given)."""
    return (
        f"Language: {LANG_NAMES[lang]}\nTopic: {topic}\nAI character: {ai_persona}\n"
        f"User profile: {user_profile}\nMood: {style}\nTurns: {n_turns}"
    )


def _example_header(lang: str, ex: Example) -> str:
    return header(lang, ex.topic, ex.ai_persona, ex.user_profile, ex.style, len(ex.turns))


def _lines(turns: tuple[tuple[str, str], ...]) -> str:
    return "\n".join(f"{s}: {t}" for s, t in turns)


def completion_prompt(lang: str, topic: str, ai_persona: str, user_profile: str, style: str, n_turns: int) -> str:
    """Few-shot examples, then the new conversation's header; ends at its first `USER:`."""
    blocks = []
    for i, ex in enumerate(EXAMPLES[lang], start=1):
        blocks.append(f"{HEADER_WORD} {i}\n{_example_header(lang, ex)}\n\n{_lines(ex.turns)}\n{END_MARKER}\n")
    n = len(blocks) + 1
    blocks.append(f"{HEADER_WORD} {n}\n{header(lang, topic, ai_persona, user_profile, style, n_turns)}\n\nUSER:")
    return "\n".join(blocks)


def json_schema(min_turns: int, max_turns: int) -> dict[str, Any]:
    """The structured-output schema of a script: {"turns": [{"speaker", "text"}, ...]}."""
    return {
        "type": "object",
        "properties": {
            "turns": {
                "type": "array",
                "minItems": min_turns,
                "maxItems": max_turns,
                "items": {
                    "type": "object",
                    "properties": {
                        "speaker": {"type": "string", "enum": ["USER", "AI"]},
                        "text": {"type": "string"},
                    },
                    "required": ["speaker", "text"],
                },
            }
        },
        "required": ["turns"],
    }


def chat_messages(
    lang: str, topic: str, ai_persona: str, user_profile: str, style: str, n_turns: int, structured: bool
) -> list[dict[str, str]]:
    """Instruction, the examples as user/assistant exchanges, then the new request."""
    msgs = [{"role": "system", "content": INSTRUCTION + (" Answer in JSON." if structured else "")}]
    for ex in EXAMPLES[lang]:
        msgs.append({"role": "user", "content": _example_header(lang, ex)})
        if structured:
            body = json.dumps({"turns": [{"speaker": s, "text": t} for s, t in ex.turns]}, ensure_ascii=False)
        else:
            body = _lines(ex.turns)
        msgs.append({"role": "assistant", "content": body})
    msgs.append({"role": "user", "content": header(lang, topic, ai_persona, user_profile, style, n_turns)})
    return msgs


def example_texts(lang: str | None = None) -> list[list[str]]:
    """The example dialogues' turn texts (all languages when `lang` is None), for echo checks."""
    langs = [lang] if lang else list(EXAMPLES)
    return [[t for _, t in ex.turns] for lg in langs for ex in EXAMPLES[lg]]
