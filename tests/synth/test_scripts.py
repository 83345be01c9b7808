"""Dialogue scripts: the validator against hand-written bad outputs, parsing tolerance, and
generation with the real Gemma 3 270M server (whose mistakes the validator must catch)."""
from __future__ import annotations

import json
import os

import pytest

from stages.synth import prompts
from stages.synth.scripts import (
    DialogueRequest,
    Script,
    ScriptConfig,
    ScriptTurn,
    build_messages,
    build_prompt,
    check_language,
    check_structure,
    generate_scripts,
    parse_script,
    reason_counts,
    validate,
)
from stages.synth.llm import LlmClient, LlmConfig
from stages.errors import RejectError
from tests.llm_server import Answer, FakeLlm, free_port, llm_server  # noqa: F401 - fixture

REASONS = {
    "script_unparseable", "script_repetitive", "script_not_alternating", "script_turn_count", "script_turn_length",
    "script_wrong_script", "script_prompt_echo", "script_near_duplicate",
}

HI_GOOD = (
    " मुझे नया फ़ोन लेना है, बजट दस हज़ार है।\n"
    "AI: दस हज़ार में कई अच्छे फ़ोन मिल जाते हैं। आपको कैमरा चाहिए या बैटरी?\n"
    "USER: बैटरी ज़्यादा ज़रूरी है, दिन भर बाहर रहता हूँ।\n"
    "AI: तो बड़ी बैटरी वाला फ़ोन लीजिए, पूरा दिन आराम से चलेगा।\n"
    "<end>\n"
)
TE_GOOD = (
    " ఈ రోజు వర్షం పడుతుందా?\n"
    "AI: అవును, సాయంత్రం భారీ వర్షం పడే అవకాశం ఉంది. గొడుగు తీసుకెళ్ళండి.\n"
    "USER: అయ్యో, నేను బైక్ మీద వెళ్ళాలి.\n"
    "AI: అయితే రెయిన్‌కోట్ వేసుకోండి, నెమ్మదిగా నడపండి.\n"
    "<end>\n"
)
EN_GOOD = (
    " Can you help me plan my mother's birthday dinner?\n"
    "AI: Of course! How many people are coming, and does she have a favourite dish?\n"
    "USER: About ten people. She loves paneer.\n"
    "AI: Then a paneer tikka starter and a simple dessert would be lovely.\n"
    "<end>\n"
)
HINGLISH_GOOD = (
    " Yaar, mujhe kal interview ke liye kya pehenna chahiye?\n"
    "AI: Simple rakho, ek light shirt aur formal trousers best rahenge.\n"
    "USER: Tie bhi lagani padegi kya?\n"
    "AI: Zaroori nahi hai, bas shirt achhe se iron kar lena.\n"
    "<end>\n"
)


def req(lang: str = "hi", **kw) -> DialogueRequest:
    base = dict(lang=lang, topic="buying a phone", ai_persona="a patient shop assistant",
                user_profile="a retired teacher", style="calm", turns=(4, 8), seed=3)
    base.update(kw)
    return DialogueRequest(**base)


def script(raw: str, r: DialogueRequest) -> Script:
    return Script(item_id="dialogue-0", lang=r.lang, topic=r.topic, turns=parse_script(raw, r), seed=r.seed,
                  attempts=1, raw=raw)


def turns_script(texts: list[str], r: DialogueRequest, speakers: list[str] | None = None) -> Script:
    speakers = speakers or ["USER" if i % 2 == 0 else "AI" for i in range(len(texts))]
    return Script(item_id="dialogue-0", lang=r.lang, topic=r.topic, seed=0, attempts=1,
                  turns=[ScriptTurn(s, t) for s, t in zip(speakers, texts)], raw="\n".join(texts))


def reason_of(raw: str, r: DialogueRequest, seen: list[str] | None = None) -> str | None:
    try:
        s = script(raw, r)
    except RejectError as e:
        return e.reason
    v = validate(s, r, seen or [])
    return v[0] if v else None


# ------------------------------------------------------------------------- good scripts


@pytest.mark.parametrize("lang,raw", [("hi", HI_GOOD), ("te", TE_GOOD), ("en", EN_GOOD), ("hinglish", HINGLISH_GOOD)])
def test_good_scripts_pass(lang, raw):
    r = req(lang)
    s = script(raw, r)
    assert [t.speaker for t in s.turns] == ["USER", "AI", "USER", "AI"]
    assert validate(s, r, []) is None


@pytest.mark.parametrize("lang", sorted(prompts.EXAMPLES))
def test_few_shot_examples_meet_every_rule_but_echo(lang):
    for ex in prompts.EXAMPLES[lang]:
        turns = [ScriptTurn(s, t) for s, t in ex.turns]
        r = req(lang, turns=(len(turns), len(turns)))
        assert check_structure(turns, r, ScriptConfig()) is None
        assert check_language(turns, lang, ScriptConfig()) is None
        # ...and copying one is caught.
        assert validate(turns_script([t.text for t in turns], r), r, [])[0] == "script_prompt_echo"


def test_completion_prompt_shape():
    r = req("te", turns=(4, 6), seed=5)
    p = build_prompt(r)
    assert p.endswith("\n\nUSER:")
    assert p.count(prompts.END_MARKER) == 3 and "Conversation 4\n" in p
    assert "Language: Telugu, in Telugu script\nTopic: buying a phone" in p
    assert "Turns: 6" in p  # 4 + 5 % 3
    assert prompts.EXAMPLES["te"][0].turns[0][1] in p and prompts.EXAMPLES["hi"][0].turns[0][1] not in p
    msgs = build_messages(r, structured=True)
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user" and len(msgs) == 8
    assert json.loads(msgs[2]["content"])["turns"][0]["speaker"] == "USER"


# ------------------------------------------------------------------------- bad scripts


@pytest.mark.parametrize(
    "lang,raw,reason",
    [
        # wrong script / language
        ("hi", " I want a new phone.\nAI: Sure, what is your budget?\nUSER: Ten thousand.\nAI: Good choice.\n<end>",
         "script_wrong_script"),
        ("te", HI_GOOD, "script_wrong_script"),  # Hindi asked for Telugu
        ("en", HI_GOOD, "script_wrong_script"),
        ("hi", HI_GOOD.replace("बैटरी ज़्यादा ज़रूरी है, दिन भर बाहर रहता हूँ।", "Battery is more important for me."),
         "script_wrong_script"),  # one turn in English is enough
        ("hinglish", EN_GOOD, "script_wrong_script"),  # plain English is not Hinglish
        ("hinglish", TE_GOOD, "script_wrong_script"),
        # echo of the few-shot examples, the instruction, the header; meta text
        ("hi", " " + "\n".join(f"{s}: {t}" for s, t in prompts.EXAMPLES["hi"][1].turns)[6:] + "\n<end>",
         "script_prompt_echo"),
        ("en", " Hello!\nAI: " + prompts.INSTRUCTION.split(". ")[0] + ".\nUSER: Okay then.\nAI: Good.\n<end>",
         "script_prompt_echo"),
        ("en", " Here is a dialogue about buying a phone.\nAI: Hi!\nUSER: Hello.\nAI: How can I help?\n<end>",
         "script_prompt_echo"),
        ("en", " I need a phone.\nAI: As an AI, I cannot buy things, but I can help you choose.\n"
               "USER: Thanks.\nAI: You are welcome.\n<end>", "script_prompt_echo"),
        ("en", EN_GOOD.replace("<end>", "Note: the AI is polite.\n<end>"), "script_prompt_echo"),
        ("hi", HI_GOOD.replace("<end>", "Topic: buying a phone\n<end>"), "script_prompt_echo"),
        ("en", " Hi, I am [Your Name].\nAI: Nice to meet you.\nUSER: Same here.\nAI: Great.\n<end>",
         "script_prompt_echo"),
        ("hi", HI_GOOD.replace("<end>", "(Translation: I want a new phone)\n<end>"), "script_prompt_echo"),
        ("en", " I want a phone.\nAI: a patient shop assistant\nUSER: What?\nAI: Okay, what budget?\n<end>",
         "script_prompt_echo"),  # the persona line said as a turn
        # structure
        (
            "en",
            " I want a phone.\nUSER: A cheap one.\nAI: Okay.\nAI: What budget?\nUSER: Ten.\nAI: Fine.\n<end>",
            "script_not_alternating",
        ),
        ("en", " I want a phone.\nAI: What budget?\n<end>", "script_turn_count"),
        ("hinglish", " Abhi kuch bhi kiya, toh mele kuch bhi kiya.\nAI: Ay? Badi kya hai?\n"
                     "USER: Yes, abhi hai aur mele kuch bhi kiya hoon.\nAI: Theek hai.\n<end>", "script_repetitive"),
        ("en", " " + "very " * 80 + "long.\nAI: Okay.\nUSER: Yes.\nAI: Fine.\n<end>", "script_turn_length"),
        ("en", " ...\nAI: Okay.\nUSER: Yes.\nAI: Fine.\n<end>", "script_turn_length"),
        # unparseable
        ("en", "", "script_unparseable"),
        ("en", " Hi.\nRavi: Hello.\nPriya: How are you?\n<end>", "script_unparseable"),
        ("en", '{"turns": [{"speaker": "USER", "text": "Hi"}, ', "script_unparseable"),
        ("en", '{"turns": [{"who": "USER", "said": "Hi"}]}', "script_unparseable"),
        ("en", "<end>", "script_unparseable"),
    ],
    ids=[
        "hi-in-english", "te-gets-hindi", "en-gets-hindi", "hi-one-english-turn", "hinglish-plain-english",
        "hinglish-telugu", "echo-example", "echo-instruction", "meta-here-is", "meta-as-an-ai", "meta-note",
        "echo-header", "placeholder", "meta-translation", "echo-persona", "not-alternating", "too-few-turns", "looping",
        "too-long-turn", "no-letters", "empty", "unknown-speakers", "truncated-json", "json-wrong-keys",
        "only-end-marker",
    ],
)
def test_bad_scripts_are_caught(lang, raw, reason):
    assert reason_of(raw, req(lang, turns=(4, 8))) == reason


def test_starting_with_ai_is_not_alternating():
    r = req("en")
    raw = json.dumps({"turns": [{"speaker": "AI", "text": "Hello, how can I help?"},
                                {"speaker": "USER", "text": "I want a phone."},
                                {"speaker": "AI", "text": "Sure, what budget?"},
                                {"speaker": "USER", "text": "Ten thousand."},
                                {"speaker": "AI", "text": "Good, let me show you some."}]})
    assert validate(script(raw, r), r, [])[0] == "script_not_alternating"


def test_near_duplicates_are_caught_and_different_scripts_pass():
    r = req("hi")
    first = script(HI_GOOD, r)
    seen = [first.text]
    # The same dialogue with a few words changed.
    variant = HI_GOOD.replace("दस हज़ार", "बारह हज़ार").replace("पूरा दिन", "सारा दिन")
    v = validate(script(variant, r), r, seen)
    assert v[0] == "script_near_duplicate" and "accepted script 1" in v[1]
    other = (" आज शाम को क्या बनाऊँ?\nAI: कुछ हल्का बनाइए, जैसे खिचड़ी और दही।\n"
             "USER: बच्चों को खिचड़ी पसंद नहीं।\nAI: तो वेज पुलाव बना लीजिए, सबको अच्छा लगेगा।\n<end>")
    assert validate(script(other, r), r, seen) is None


# ------------------------------------------------------------------------- parsing tolerance


def test_parse_tolerates_markdown_labels_inline_turns_and_trailing_text():
    r = req("en", turns=(4, 6))
    raw = (" Hi, I need a phone.\n**AI:** Sure! What budget? USER: About ten thousand.\n"
           "Assistant: Then look at the mid-range models,\nthey have good batteries.\n"
           "User: Thanks!\nAI: You're welcome.\n<end>\n\nConversation 5\nLanguage: English")
    turns = parse_script(raw, r)
    assert [(t.speaker, t.text) for t in turns] == [
        ("USER", "Hi, I need a phone."),
        ("AI", "Sure! What budget?"),
        ("USER", "About ten thousand."),
        ("AI", "Then look at the mid-range models, they have good batteries."),
        ("USER", "Thanks!"),
        ("AI", "You're welcome."),
    ]


def test_parse_trims_runaway_dialogues_and_cut_turns():
    r = req("en", turns=(2, 4))
    lines = [f"{'USER' if i % 2 == 0 else 'AI'}: Line number {i}." for i in range(1, 12)]
    raw = " Hello there.\n" + "\n".join(lines)
    turns = parse_script(raw, r)
    assert len(turns) == 4 and turns[-1].speaker == "AI"  # first max turns, ending on an answer
    # No end marker and the last turn cut mid-sentence (token limit): it is dropped.
    cut = " Hello.\nAI: Hi, how can I help?\nUSER: I want to know about the\n"
    assert [t.text for t in parse_script(cut, req("en", turns=(2, 4)))] == ["Hello.", "Hi, how can I help?"]
    # A blank line then prose: the dialogue ended before it.
    tail = " Hello.\nAI: Hi!\nUSER: Bye.\nAI: Bye!\n\nThe conversation shows politeness."
    assert len(parse_script(tail, r)) == 4


def test_parse_json_script():
    r = req("te", turns=(2, 4))
    raw = '```json\n{"turns": [{"speaker": "USER", "text": "నమస్తే"}, {"speaker": "AI", "text": "నమస్తే, చెప్పండి."}]}\n```'
    assert [(t.speaker, t.text) for t in parse_script(raw, r)] == [("USER", "నమస్తే"), ("AI", "నమస్తే, చెప్పండి.")]


def test_request_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DialogueRequest(lang="ta", topic="x")  # unsupported language: clear error before any work
    with pytest.raises(ValidationError):
        DialogueRequest(lang="hi", topic="x", turns=(6, 4))
    with pytest.raises(ValidationError):
        DialogueRequest(lang="hi", topic="x", voice="y")


# ------------------------------------------------------------------------- generation, fake server


def test_generation_retries_with_new_seeds_then_rejects():
    bad = " Here is a dialogue.\nAI: ok\n<end>"
    with FakeLlm(lambda i, rq: Answer(text=HI_GOOD if rq["seed"] == 2003 else bad)) as fake:
        client = LlmClient(LlmConfig(base_url=fake.base_url, model="m", max_concurrency=2, retries=0))
        reqs = [req("hi", seed=3), req("hi", seed=4)]
        scripts, rejects = generate_scripts(client, reqs, max_attempts=3)
    seeds = sorted(r["seed"] for r in fake.requests)
    assert seeds == [3, 4, 1003, 1004, 2003, 2004]  # seed + attempt * 1000
    assert [s.item_id for s in scripts] == ["dialogue-0"] and scripts[0].attempts == 3 and scripts[0].seed == 2003
    assert [f[0] for f in scripts[0].failures] == ["script_prompt_echo", "script_prompt_echo"]
    assert [(r.item_id, r.source, r.stage, r.reason) for r in rejects] == [
        ("dialogue-1", "synthetic", "script", "script_prompt_echo")]
    assert "attempt 3, seed 2004" in rejects[0].detail
    assert reason_counts(scripts, rejects) == {"script_prompt_echo": 5}
    assert all(r["prompt"].endswith("USER:") and r["stop"] == prompts.STOP_SEQUENCES for r in fake.requests)


def test_generation_with_server_down_rejects_every_request():
    client = LlmClient(LlmConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", retries=1, backoff_s=0.01))
    scripts, rejects = generate_scripts(client, [req("en", seed=1), req("te", seed=2)], max_attempts=3)
    assert scripts == []
    assert [(r.item_id, r.reason) for r in rejects] == [("dialogue-0", "llm_unavailable"), ("dialogue-1", "llm_unavailable")]


def test_generation_duplicate_of_an_earlier_request_is_retried():
    # Both requests first get the same dialogue: the second is a near-duplicate and asks again.
    with FakeLlm(lambda i, rq: Answer(text=TE_GOOD if rq["seed"] < 1000 else HI_GOOD)) as fake:
        client = LlmClient(LlmConfig(base_url=fake.base_url, model="m", retries=0))
        scripts, rejects = generate_scripts(client, [req("te", seed=1), req("te", seed=2)], max_attempts=2)
    assert [s.item_id for s in scripts] == ["dialogue-0"]
    assert rejects[0].item_id == "dialogue-1" and rejects[0].reason == "script_wrong_script"
    assert "earlier: script_near_duplicate" in rejects[0].detail


EN_MORE = [
    (" The wifi at home keeps dropping every evening.\nAI: That is annoying. Have you tried restarting the router?\n"
     "USER: Twice already, it did not help.\nAI: Then call your provider, the line itself may be faulty.\n<end>"),
    (" Which plant can survive on a dark balcony?\nAI: A snake plant or a money plant, both need little light.\n"
     "USER: How often do I water them?\nAI: Once a week is plenty, less in winter.\n<end>"),
    (" My son has his board exams next month.\nAI: That is a big moment! How is he feeling?\n"
     "USER: Nervous, he barely sleeps.\nAI: Short breaks and a fixed bedtime will help him more than extra hours.\n<end>"),
]


def test_generation_is_deterministic_whatever_the_timing():
    import random

    texts = [EN_GOOD] + EN_MORE

    def answer(i, rq):  # depends only on the request, never on timing
        return Answer(text=texts[(rq["seed"] % 1000 + rq["seed"] // 1000) % len(texts)], delay_s=random.random() / 20)

    reqs = [req("en", seed=s) for s in (0, 1, 4, 5, 2, 8)]  # several first tries collide
    runs = []
    for concurrency in (4, 1, 3):
        with FakeLlm(answer) as fake:
            client = LlmClient(LlmConfig(base_url=fake.base_url, model="m", max_concurrency=concurrency, retries=0))
            scripts, rejects = generate_scripts(client, reqs, max_attempts=3)
        runs.append(([(s.item_id, s.seed, s.attempts, s.text) for s in scripts], [(r.item_id, r.reason, r.detail) for r in rejects]))
        if concurrency > 1:
            assert fake.max_active > 1  # really ran concurrently
    assert runs[0] == runs[1] == runs[2]
    assert any(f[0] == "script_near_duplicate" for s in scripts for f in s.failures) or any(
        r.reason == "script_near_duplicate" for r in rejects)
    assert len({t for _, _, _, t in runs[0][0]}) == len(runs[0][0])  # accepted scripts are all different


# ------------------------------------------------------------------------- turn by turn, fake server

HI_TURNS = ["मुझे नया फ़ोन लेना है, बजट दस हज़ार है।", "आपको कैमरा चाहिए या बैटरी?",
            "बैटरी ज़्यादा ज़रूरी है, दिन भर बाहर रहता हूँ।", "तो बड़ी बैटरी वाला फ़ोन लीजिए, पूरा दिन चलेगा।"]


def _turn_of(prompt: str, base: str) -> int:
    """Which turn a turn-by-turn request asks for: the labels after the base prompt."""
    assert prompt.startswith(base)
    tail = prompt[len(base):]
    return tail.count("\nAI:") + tail.count("\nUSER:")


def _finish(text: str, reason: str) -> bytes:
    return json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
                       "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}}).encode()


def test_turn_by_turn_asks_one_turn_per_request_and_samples_bad_turns_again():
    r = req("hi", turns=(4, 4), seed=3)
    base = build_prompt(r)

    def answer(i, rq):
        t, j = _turn_of(rq["prompt"], base), (rq["seed"] - r.seed - 1) % 10
        if t == 1 and j == 0:
            return Answer(text=" Sure, what is your budget?")  # English in a Hindi dialogue
        if t == 2 and j == 0:
            return Answer(text=" " + HI_TURNS[0])  # says exactly what turn 1 said
        if t == 3 and j == 0:
            return Answer(body=_finish(" तो बड़ी बैटरी वाला फ़ोन", "length"))  # cut by max_tokens
        return Answer(text=f" {HI_TURNS[t]}  ")

    with FakeLlm(answer) as fake:
        client = LlmClient(LlmConfig(base_url=fake.base_url, model="m", retries=0))
        cfg = ScriptConfig(turn_by_turn=True, turn_attempts=3, turn_max_tokens=50)
        scripts, rejects = generate_scripts(client, [r], cfg=cfg)
    assert rejects == []
    (s,) = scripts
    assert [(t.speaker, t.text) for t in s.turns] == list(zip(["USER", "AI", "USER", "AI"], HI_TURNS))
    assert validate(s, r, []) is None and s.seed == r.seed and s.attempts == 1
    # One request per sample: turn 1, turn 2 twice, turn 3 twice, turn 4 twice; seeds step per sample.
    assert [r_["seed"] - r.seed for r_ in fake.requests] == [1, 11, 12, 21, 22, 31, 32]
    assert all(r_["stop"] == ["\n", "<end>"] and r_["max_tokens"] == 50 for r_ in fake.requests)
    # Each prompt is the base prompt, the accepted turns so far and the next speaker's label.
    assert fake.requests[0]["prompt"] == base and base.endswith("USER:")
    assert fake.requests[-1]["prompt"] == base + f" {HI_TURNS[0]}\nAI: {HI_TURNS[1]}\nUSER: {HI_TURNS[2]}\nAI:"


def test_turn_by_turn_rejects_with_the_reason_when_a_turn_never_works():
    r = req("te", turns=(4, 4), seed=5)
    with FakeLlm(lambda i, rq: Answer(text=" Okay, I can help with that." if "\nAI:" in rq["prompt"][-4:] else
                                      " నాకు ఒక కొత్త ఫోన్ కావాలి.")) as fake:
        client = LlmClient(LlmConfig(base_url=fake.base_url, model="m", retries=0))
        scripts, rejects = generate_scripts(client, [r], cfg=ScriptConfig(turn_by_turn=True, turn_attempts=2, max_attempts=2))
    assert scripts == []
    (rj,) = rejects
    assert rj.reason == "script_wrong_script" and "turn 2 after 2 samples" in rj.detail
    assert "attempt 2, seed 1005" in rj.detail and "earlier: script_wrong_script" in rj.detail
    assert len(fake.requests) == 2 * (1 + 2)  # per attempt: turn 1, then turn 2 twice


def test_turn_by_turn_keeps_each_dialogue_on_one_server():
    lines = {2: " Is the morning train to Pune on time today?", 12: " Yes, it leaves at seven sharp.",
             3: " Where can I buy fresh mangoes near the station?", 13: " The fruit market behind platform two has them."}

    def answer(i, rq):
        return Answer(text=lines[rq["seed"]])

    with FakeLlm(answer) as a, FakeLlm(answer) as b:
        client = LlmClient(LlmConfig(base_urls=[a.base_url, b.base_url], model="m", retries=0, max_concurrency=2))
        reqs = [req("en", turns=(2, 2), seed=1), req("en", turns=(2, 2), seed=2)]
        scripts, rejects = generate_scripts(client, reqs, cfg=ScriptConfig(turn_by_turn=True))
    assert len(scripts) == 2 and rejects == []
    # Each dialogue (seeds 1 and 2: turn seeds +1, +11) on a server of its own, never interleaved.
    assert sorted([sorted(q["seed"] for q in a.requests), sorted(q["seed"] for q in b.requests)]) == [[2, 12], [3, 13]]


# ------------------------------------------------------------------------- the real model

_RECORD: dict = {}


def _record(key: str, scripts, rejects) -> None:
    """Keep what the real model wrote, for the report (LLM_RECORD=path)."""
    _RECORD[key] = {
        "accepted": [{"item": s.item_id, "lang": s.lang, "seed": s.seed, "attempts": s.attempts,
                      "failures": s.failures, "turns": [[t.speaker, t.text] for t in s.turns], "raw": s.raw}
                     for s in scripts],
        "rejects": [{"item": r.item_id, "reason": r.reason, "detail": r.detail} for r in rejects],
        "reasons": reason_counts(scripts, rejects),
    }
    path = os.environ.get("LLM_RECORD")
    if path:
        with open(path, "w") as f:
            json.dump(_RECORD, f, ensure_ascii=False, indent=1)


def test_real_model_scripts_are_valid_or_rejected_with_a_reason(llm_server):  # noqa: F811 - fixture
    cfg = LlmConfig(base_url=llm_server.base_url, model=llm_server.model, max_tokens=200, temperature=0.8,
                    max_concurrency=2, timeout_s=300)
    reqs = [
        DialogueRequest(lang=lang, topic=topic, ai_persona="a warm, witty assistant", user_profile="a busy parent",
                        style="cheerful", turns=(2, 6), seed=11)
        for lang, topic in [("en", "ordering food for a party"), ("hi", "a broken phone screen"),
                            ("te", "choosing a gift for a friend"), ("hinglish", "ordering food for a party")]
    ]
    scripts, rejects = generate_scripts(LlmClient(cfg), reqs, max_attempts=2)
    _record("completion", scripts, rejects)
    assert len(scripts) + len(rejects) == len(reqs)
    assert {s.item_id for s in scripts}.isdisjoint({r.item_id for r in rejects})
    seen: list[str] = []
    for s in scripts:
        r = reqs[int(s.item_id.split("-")[1])]
        assert s.lang == r.lang and s.seed == r.seed + (s.attempts - 1) * 1000
        assert validate(s, r, seen) is None  # accepted: passes every rule
        seen.append(s.text)
        assert all(reason in REASONS for reason, _ in s.failures)
    for rj in rejects:
        assert rj.source == "synthetic" and rj.stage == "script" and rj.reason in REASONS and rj.detail
    assert any(s.lang == "en" for s in scripts)  # the model does manage English


def test_real_model_chat_structured(llm_server):  # noqa: F811 - fixture
    cfg = LlmConfig(base_url=llm_server.base_url, model=llm_server.model, mode="chat", structured=True,
                    max_tokens=160, temperature=0.7, timeout_s=300)
    reqs = [DialogueRequest(lang="en", topic="a rainy day", turns=(2, 4), seed=5)]
    scripts, rejects = generate_scripts(LlmClient(cfg), reqs, max_attempts=1)
    _record("chat_structured", scripts, rejects)
    assert len(scripts) + len(rejects) == 1
    for s in scripts:
        json.loads(s.raw)  # the schema-constrained answer is JSON
        assert validate(s, reqs[0], []) is None
    for rj in rejects:
        assert rj.reason in REASONS


def test_real_model_turn_by_turn_meets_the_validator_in_hindi_telugu_and_english(llm_server):  # noqa: F811 - fixture
    # The demo's settings: one turn per request, a turn that already breaks a rule sampled again;
    # one request at a time, so each evaluates only its new tokens (two dialogues interleaved on
    # one llama.cpp server make every request evaluate its whole prompt again).
    cfg = LlmConfig(base_url=llm_server.base_url, model=llm_server.model, temperature=0.8, timeout_s=300,
                    max_concurrency=1)
    reqs = [DialogueRequest(lang=lang, topic=topic, ai_persona="Asha, a friendly voice assistant",
                            user_profile="a college student", style="curious", turns=(4, 5), seed=21)
            for lang, topic in [("hi", "a broken phone screen"), ("te", "choosing a gift for a friend"),
                                ("en", "ordering food for a party")]]
    scripts, rejects = generate_scripts(LlmClient(cfg), reqs, cfg=ScriptConfig(turn_by_turn=True, turn_attempts=6, max_attempts=3))
    _record("turn_by_turn", scripts, rejects)
    assert [s.lang for s in scripts] == ["hi", "te", "en"], [(r.item_id, r.reason, r.detail) for r in rejects]
    seen: list[str] = []
    for s, r in zip(scripts, reqs):
        assert validate(s, r, seen) is None  # the full validator, unchanged
        seen.append(s.text)
        assert len(s.turns) == r.target_turns and [t.speaker for t in s.turns][:2] == ["USER", "AI"]
