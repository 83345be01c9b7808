"""LLM-written dialogue scripts: prompt, parse, validate, retry with new seeds, reject.

Small models get a lot wrong (wrong script, echoed examples, notes about the dialogue, one
speaker twice, endless turns); every script is validated and a failed one is asked for again
with a new seed, up to a limit, then rejected with the reason of its last attempt.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

from pydantic import Field, model_validator

from catalog.schema import Reject
from stages.synth import prompts
from stages.config import StageConfig
from stages.synth.llm import LlmClient
from stages.errors import RejectError

Lang = Literal["en", "hi", "te", "hinglish"]
Speaker = Literal["USER", "AI"]
SEED_STRIDE = 1000  # attempt k of a request uses seed + k * SEED_STRIDE
TURN_SEED_STRIDE = 10  # turn_by_turn: sample j of turn t uses attempt seed + 1 + t * TURN_SEED_STRIDE + j


class DialogueRequest(StageConfig):
    lang: Lang
    topic: str = Field(min_length=1)
    ai_persona: str = Field("a friendly, helpful voice assistant", description="the AI's character and personality")
    user_profile: str = Field("an ordinary person", description="who the user is")
    style: str = Field("friendly", description="emotion / speaking style of the conversation")
    turns: tuple[int, int] = Field((4, 8), description="(min, max) turns")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _turn_range(self) -> "DialogueRequest":
        lo, hi = self.turns
        if not 2 <= lo <= hi:
            raise ValueError(f"turns must be (min, max) with 2 <= min <= max, got {self.turns}")
        return self

    @property
    def target_turns(self) -> int:
        """The turn count the prompt asks for: varies with the seed within (min, max)."""
        lo, hi = self.turns
        return lo + self.seed % (hi - lo + 1)


class ScriptConfig(StageConfig):
    max_attempts: int = Field(4, ge=1, description="tries per dialogue, each with a new seed")
    min_turn_chars: int = Field(2, ge=1)
    max_turn_chars: int = Field(400, ge=1)
    max_turn_words: int = Field(60, ge=1)
    min_script_fraction: float = Field(
        0.9, gt=0, le=1, description="share of a turn's letters that must be in the language's script"
    )
    hinglish_min_marked_turns: float = Field(
        0.5, ge=0, le=1, description="share of Hinglish turns with a Hindi word (romanized or Devanagari)"
    )
    near_duplicate_threshold: float = Field(0.5, gt=0, le=1, description="character 5-gram Jaccard")
    repeat_threshold: float = Field(
        0.6, gt=0, le=1, description="share of a turn's 5-grams found in another turn of the same script"
    )
    echo_threshold: float = Field(
        0.8, gt=0, le=1, description="share of a turn's 5-grams found in one example turn or the instruction"
    )
    max_tokens: Optional[int] = Field(None, ge=1, description="per request; None: the LLM config's")
    turn_by_turn: bool = Field(
        False,
        description="completion mode: ask for one turn per request (the speaker label is ours), so the "
        "turn count is the requested one; a turn that already breaks a rule is sampled again",
    )
    turn_attempts: int = Field(4, ge=1, le=TURN_SEED_STRIDE, description="turn_by_turn: samples per turn")
    turn_max_tokens: int = Field(80, ge=1, description="turn_by_turn: per turn; a turn cut by it is sampled again")


@dataclass(frozen=True)
class ScriptTurn:
    speaker: Speaker
    text: str


@dataclass
class Script:
    item_id: str
    lang: str
    topic: str
    turns: list[ScriptTurn]
    seed: int  # the seed of the attempt that produced it
    attempts: int
    raw: str  # the model output of that attempt
    failures: list[tuple[str, str]] = field(default_factory=list)  # earlier attempts' (reason, detail)

    @property
    def text(self) -> str:
        return "\n".join(t.text for t in self.turns)


# ---------------------------------------------------------------- prompting


def build_prompt(req: DialogueRequest) -> str:
    """Completion-mode prompt: few-shot dialogues in the target language, then the new header."""
    return prompts.completion_prompt(
        req.lang, req.topic, req.ai_persona, req.user_profile, req.style, req.target_turns
    )


def build_messages(req: DialogueRequest, structured: bool = False) -> list[dict[str, str]]:
    """Chat-mode messages: instruction, examples as exchanges, the request."""
    return prompts.chat_messages(
        req.lang, req.topic, req.ai_persona, req.user_profile, req.style, req.target_turns, structured
    )


# ---------------------------------------------------------------- parsing

_LABELS = {
    "user": "USER", "human": "USER", "you": "USER", "customer": "USER", "q": "USER",
    "ai": "AI", "a.i.": "AI", "assistant": "AI", "bot": "AI", "model": "AI", "a": "AI",
    "यूज़र": "USER", "यूजर": "USER", "उपयोगकर्ता": "USER", "యూజర్": "USER",
    "एआई": "AI", "ఏఐ": "AI",
}
_META_LABELS = set(prompts.HEADER_LABELS) | {
    "note", "notes", "translation", "explanation", "summary", "example", "instruction", "instructions",
    "conversation", "dialogue", "output", "answer", "response", "title", "context",
}
# A speaker label at the start of a line, tolerating markdown (**USER:**, - AI:).
_LABEL_RE = re.compile(r"^[\s*_#>\-(\[]*([^\s:：*][^:：*]{0,24}?)\s*\**\s*[:：]\s*\**\s*(.*)$")
# Two turns on one line: "... AI: ..." (uppercase labels only, to spare ordinary prose).
_INLINE_RE = re.compile(r"\s(USER|AI)\s*:\s")
# Where a script ends: the end marker (or tokens like it), the next example's header, ###.
_END_RE = re.compile(
    r"<\s*/?\s*(?:end|eos|end_of_turn|start_of_turn)\b[^>]*>|^\s*" + prompts.HEADER_WORD + r"\s+\d|^\s*###",
    re.IGNORECASE | re.MULTILINE,
)
_SENTENCE_END = tuple(".?!।॥…\"'”’)")


def _dialogue_part(raw: str) -> tuple[str, bool]:
    """Raw output up to where the script ends; True when an end mark was found."""
    m = _END_RE.search(raw)
    return (raw[: m.start()], True) if m else (raw, False)


def parse_script(raw: str, req: DialogueRequest, finished: Optional[bool] = None) -> list[ScriptTurn]:
    """Turns from a model's output: `USER:`/`AI:` lines (the first line may continue the
    prompt's `USER:`) or JSON. `finished`: the server ended the text itself (finish reason
    "stop"), False when max_tokens cut it, None when unknown (then only an end marker tells).
    Raises RejectError(script_unparseable | script_prompt_echo)."""
    text = raw.strip()
    if text.startswith("```"):
        text = re.sub(r"^```\w*\s*|\s*```\s*$", "", text)
    if text[:1] in "{[":
        turns = _parse_json(text)
        ended = True
    else:
        body, ended = _dialogue_part(raw)
        ended = ended or bool(finished)
        turns = _parse_lines(body)
    if not turns:
        raise RejectError("script_unparseable", f"no turns in {_excerpt(raw)!r}")
    if not ended and turns and not turns[-1].text.endswith(_SENTENCE_END):
        turns = turns[:-1]  # the token limit cut the last turn mid-sentence
    lo, hi = req.turns
    # A base model talks on past a natural end: the first turns are a whole dialogue.
    turns = turns[:hi]
    if turns and turns[-1].speaker == "USER" and len(turns) - 1 >= lo:
        turns = turns[:-1]  # end on an answer
    return turns


def _parse_lines(body: str) -> list[ScriptTurn]:
    turns: list[list[str]] = []  # [speaker, text]
    blank_before = False
    for line in body.splitlines():
        if not line.strip():
            blank_before = bool(turns)
            continue
        for piece in _split_inline(line):
            m = _LABEL_RE.match(piece)
            label = m.group(1).strip().lower() if m else None
            if label is not None and label in _LABELS:
                turns.append([_LABELS[label], m.group(2).strip()])
            elif label is not None and label in _META_LABELS:
                raise RejectError("script_prompt_echo", f"meta line {_excerpt(piece)!r}")
            elif not turns:
                turns.append(["USER", piece.strip()])  # continues the prompt's final "USER:"
            elif blank_before:
                return _finish(turns)  # text after a blank line is no longer the dialogue
            elif label is not None and len(label.split()) <= 2 and not re.search(r"[,.!?।]", label):
                # "Ravi: ...", "Speaker 1: ...": a speaker we cannot map to USER/AI.
                raise RejectError("script_unparseable", f"unknown speaker label in {_excerpt(piece)!r}")
            else:
                turns[-1][1] = f"{turns[-1][1]} {piece.strip()}".strip()
        blank_before = False
    return _finish(turns)


def _split_inline(line: str) -> list[str]:
    parts, last = [], 0
    for m in _INLINE_RE.finditer(line):
        if line[last:m.start()].strip():
            parts.append(line[last:m.start()])
        last = m.start() + 1
    parts.append(line[last:])
    return parts


def _finish(turns: list[list[str]]) -> list[ScriptTurn]:
    return [ScriptTurn(s, _clean_text(t)) for s, t in turns]


def _clean_text(text: str) -> str:
    text = re.sub(r"[*_`]+", "", text)  # markdown emphasis
    return re.sub(r"\s+", " ", text).strip().strip('"“”')


def _parse_json(text: str) -> list[ScriptTurn]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RejectError("script_unparseable", f"invalid JSON ({e.msg} at {e.pos}): {_excerpt(text)!r}") from None
    if isinstance(data, dict):
        data = next((v for k, v in data.items() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise RejectError("script_unparseable", f"JSON without a list of turns: {_excerpt(text)!r}")
    turns = []
    for item in data:
        if not isinstance(item, dict):
            raise RejectError("script_unparseable", f"JSON turn is not an object: {item!r:.80}")
        who = str(item.get("speaker") or item.get("role") or item.get("name") or "").strip().lower()
        said = item.get("text") or item.get("content") or item.get("line")
        if who not in _LABELS or not isinstance(said, str):
            raise RejectError("script_unparseable", f"JSON turn without speaker/text: {item!r:.80}")
        turns.append(ScriptTurn(_LABELS[who], _clean_text(said)))
    return turns


# ---------------------------------------------------------------- validation

_META_RE = re.compile(
    "|".join([
        r"\bhere (?:is|are|'s)\b[^.\n]{0,40}\b(?:dialogue|conversation|script|example|exchange)",
        r"\bas an ai\b", r"\b(?:large )?language model\b", r"\bi(?: am|'m) an ai\b",
        r"\b(?:sure|certainly|of course)[,!.]\s*here\b",
        r"\bi (?:can ?not|can't|am unable to) (?:help|assist|write|create|generate)",
        r"\b(?:this|the) (?:dialogue|conversation) (?:is|was|ends|shows|continues)\b",
        r"\b(?:user|ai) (?:says|said|replies|responds)\b",
        r"\((?:translation|in english|english)\b", r"\btranslat(?:ion|ed)\s*:",
        r"^\s*(?:note|notes|explanation|summary|instructions?)\s*:",
        r"\[[^\]\n]{1,30}\]",  # placeholders such as [Your Name]
        r"\bturns?\s*:\s*\d",
        r"\b(?:ai character|user profile)\b",
    ]),
    re.IGNORECASE | re.MULTILINE,
)

_HINDI_ROMAN = frozenset(
    "hai hain nahi nahin kya kyun kyon toh bhi yaar yar mein mujhe mera meri mere tera tumhara "
    "tum aap hum kar karo karna karke raha rahi rahe tha thi the hoon hun ho hota hoti ka ki ke ko "
    "se aur bas accha acha achha theek thik chalo arre arey abhi kuch kaise kaisa kaisi wala wali "
    "haan han matlab lekin phir kab kahan yahan wahan sab bahut bohot zyada thoda thodi kal aaj "
    "jaldi batao bolo dekho suno chahiye sakta sakti sakte".split()
)


def _script_of(ch: str) -> Optional[str]:
    """Writing system of a letter or combining mark; None for anything else."""
    cat = unicodedata.category(ch)
    if not (cat.startswith("L") or cat.startswith("M")):
        return None
    cp = ord(ch)
    if 0x0900 <= cp <= 0x097F or 0xA8E0 <= cp <= 0xA8FF:
        return "deva"
    if 0x0C00 <= cp <= 0x0C7F:
        return "telu"
    if cp < 0x0250 or 0x1E00 <= cp <= 0x1EFF or 0x0300 <= cp <= 0x036F:
        return "latn"
    return "other"


def script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in text:
        s = _script_of(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    return counts


_ALLOWED = {"en": {"latn"}, "hi": {"deva"}, "te": {"telu"}, "hinglish": {"latn", "deva"}}


def normalize_for_similarity(text: str) -> str:
    """Lower-case letters, marks and digits separated by single spaces."""
    kept = "".join(
        ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in unicodedata.normalize("NFC", text.lower())
    )
    return " ".join(kept.split())


def ngrams(text: str, n: int = 5) -> set[str]:
    t = normalize_for_similarity(text)
    return {t[i : i + n] for i in range(max(len(t) - n + 1, 1))} if t else set()


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _echo_sources(req: DialogueRequest) -> list[str]:
    texts = [t for ex in prompts.example_texts() for t in ex]
    texts += [s.strip() for s in re.split(r"(?<=\.)\s+", prompts.INSTRUCTION) if s.strip()]
    texts += [req.topic, req.ai_persona, req.user_profile]
    return texts


def validate(
    script: Script, req: DialogueRequest, seen: Sequence[str], cfg: Optional[ScriptConfig] = None
) -> Optional[tuple[str, str]]:
    """None if the script is usable, else (reason_code, detail); checks run cheapest-first."""
    cfg = cfg or ScriptConfig()
    if not script.turns:
        return "script_unparseable", "no turns"
    return (
        check_echo(script, req, cfg)
        or check_structure(script.turns, req, cfg)
        or check_language(script.turns, req.lang, cfg)
        or check_repetition(script.turns, cfg)
        or check_duplicate(script, seen, cfg)
    )


def check_echo(script: Script, req: DialogueRequest, cfg: ScriptConfig) -> Optional[tuple[str, str]]:
    """Meta text, or turns/dialogues repeating the few-shot examples, instruction or header."""
    body, _ = _dialogue_part(script.raw)
    for where in [t.text for t in script.turns] + [body]:
        m = _META_RE.search(where)
        if m:
            return "script_prompt_echo", f"meta text {m.group(0)!r} in {_excerpt(where)!r}"
    sources = [(s, ngrams(s)) for s in _echo_sources(req)]
    for i, t in enumerate(script.turns):
        if len(normalize_for_similarity(t.text)) < 20:
            continue  # short replies ("Okay.") may match by chance
        grams = ngrams(t.text)
        for src, sg in sources:
            if len(grams & sg) / len(grams) >= cfg.echo_threshold:
                return "script_prompt_echo", f"turn {i + 1} repeats the prompt: {_excerpt(src)!r}"
    whole = ngrams(script.text)
    for ex in prompts.example_texts():
        sim = jaccard(whole, ngrams("\n".join(ex)))
        if sim >= cfg.near_duplicate_threshold:
            return "script_prompt_echo", f"dialogue repeats a few-shot example (5-gram Jaccard {sim:.2f})"
    return None


def check_structure(turns: Sequence[ScriptTurn], req: DialogueRequest, cfg: ScriptConfig) -> Optional[tuple[str, str]]:
    """Alternating speakers from USER, turn count and per-turn length."""
    for i, t in enumerate(turns):
        want = "USER" if i % 2 == 0 else "AI"
        if t.speaker != want:
            return "script_not_alternating", f"turn {i + 1} is {t.speaker}, expected {want}"
    lo, hi = req.turns
    if not lo <= len(turns) <= hi:
        return "script_turn_count", f"{len(turns)} turns, expected {lo}..{hi}"
    for i, t in enumerate(turns):
        letters = sum(script_counts(t.text).values())
        words = len(t.text.split())
        if letters < cfg.min_turn_chars or len(t.text) > cfg.max_turn_chars or words > cfg.max_turn_words:
            return "script_turn_length", (
                f"turn {i + 1}: {len(t.text)} chars, {letters} letters, {words} words "
                f"(allowed {cfg.min_turn_chars}..{cfg.max_turn_chars} chars, <= {cfg.max_turn_words} words)"
            )
    return None


def check_language(turns: Sequence[ScriptTurn], lang: str, cfg: ScriptConfig) -> Optional[tuple[str, str]]:
    """Each turn's letters in the language's writing system; Hinglish needs Hindi words."""
    allowed = _ALLOWED[lang]
    for i, t in enumerate(turns):
        counts = script_counts(t.text)
        total = sum(counts.values())
        share = sum(counts.get(s, 0) for s in allowed) / total if total else 0.0
        if share < cfg.min_script_fraction:
            found = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no letters"
            return "script_wrong_script", (
                f"turn {i + 1}: {share:.0%} of letters in {'/'.join(sorted(allowed))} ({found})"
            )
    if lang == "hinglish":
        marked = sum(1 for t in turns if _has_hindi(t.text))
        if marked < cfg.hinglish_min_marked_turns * len(turns):
            return "script_wrong_script", f"only {marked} of {len(turns)} turns have Hindi words: not Hinglish"
    return None


def check_repetition(turns: Sequence[ScriptTurn], cfg: ScriptConfig) -> Optional[tuple[str, str]]:
    """A turn that mostly repeats an earlier one, or says exactly what one said (small models loop)."""
    grams = [(ngrams(t.text), len(normalize_for_similarity(t.text))) for t in turns]
    for j in range(len(turns)):
        for i in range(j):
            if normalize_for_similarity(turns[i].text) == normalize_for_similarity(turns[j].text):
                return "script_repetitive", f"turn {j + 1} says exactly what turn {i + 1} said"
            (a, la), (b, lb) = grams[i], grams[j]
            if min(la, lb) < 20:
                continue  # short replies ("Okay.", "Yes, sure.") may repeat naturally
            share = len(a & b) / min(len(a), len(b))
            if share >= cfg.repeat_threshold:
                return "script_repetitive", f"turn {j + 1} repeats turn {i + 1} ({share:.0%} of 5-grams)"
    return None


def check_duplicate(script: Script, seen: Sequence[str], cfg: ScriptConfig) -> Optional[tuple[str, str]]:
    """Near-duplicate (character 5-gram Jaccard) of a script accepted earlier."""
    whole = ngrams(script.text)
    for j, prev in enumerate(seen):
        sim = jaccard(whole, ngrams(prev))
        if sim >= cfg.near_duplicate_threshold:
            return "script_near_duplicate", f"5-gram Jaccard {sim:.2f} with accepted script {j + 1}"
    return None


def _has_hindi(text: str) -> bool:
    if script_counts(text).get("deva"):
        return True
    return any(w in _HINDI_ROMAN for w in normalize_for_similarity(text).split())


def _excerpt(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------- generation


def attempt_script(
    client: LlmClient, req: DialogueRequest, seed: int, cfg: ScriptConfig, item_id: str = "",
    route: Optional[int] = None,
) -> Script:
    """One LLM call and parse (or, with `turn_by_turn`, one call per turn). Raises RejectError for
    parse failures and LLM errors (llm_*). `route` keeps a dialogue's calls on one server."""
    if client.cfg.mode == "completion" and cfg.turn_by_turn:
        return _attempt_turn_by_turn(client, req, seed, cfg, item_id, route)
    if client.cfg.mode == "completion":
        out = client.complete_full(build_prompt(req), seed=seed, stop=prompts.STOP_SEQUENCES, max_tokens=cfg.max_tokens,
                                   route=route)
    else:
        fmt = None
        if client.cfg.structured:
            fmt = {"type": "json_object", "schema": prompts.json_schema(*req.turns)}
        out = client.chat_full(
            build_messages(req, client.cfg.structured), seed=seed, response_format=fmt, max_tokens=cfg.max_tokens,
            route=route,
        )
    script = Script(item_id=item_id, lang=req.lang, topic=req.topic, turns=[], seed=seed, attempts=1, raw=out.text)
    script.turns = parse_script(out.text, req, finished=out.finish_reason == "stop")
    return script


_TURN_STOP = ["\n", prompts.END_MARKER]


def _attempt_turn_by_turn(
    client: LlmClient, req: DialogueRequest, seed: int, cfg: ScriptConfig, item_id: str, route: Optional[int]
) -> Script:
    """The dialogue one turn at a time: the prompt plus the turns so far, ending in the next
    speaker's label; the model writes that turn's line (stop at the newline). A sample that
    already breaks a rule of the whole-script validator (empty, cut by the token limit, too long,
    wrong script, repeating a turn or the prompt) is drawn again with the next seed, up to
    `turn_attempts`; then the attempt fails with that rule's reason. The finished script still
    goes through `validate` like any other. Prompt prefixes repeat, so a server with a prompt
    cache (llama.cpp `--cache`, vLLM prefix caching) evaluates only the new turn."""
    prompt = build_prompt(req)  # ends with "USER:"
    n = req.target_turns
    turns: list[ScriptTurn] = []
    raw = ""
    for t in range(n):
        speaker: Speaker = "USER" if t % 2 == 0 else "AI"
        label = "" if t == 0 else f"\n{speaker}:"
        problem: tuple[str, str] = ("script_unparseable", "no sample")
        for j in range(cfg.turn_attempts):
            out = client.complete_full(prompt + raw + label, seed=seed + 1 + t * TURN_SEED_STRIDE + j,
                                       stop=_TURN_STOP, max_tokens=cfg.turn_max_tokens, route=route)
            text = _clean_text(_split_inline(out.text.strip())[0]) if out.text.strip() else ""
            problem = _turn_problem(text, out.finish_reason, turns, speaker, req, cfg)
            if problem is None:
                break
        if problem is not None:
            reason, detail = problem
            raise RejectError(reason, f"turn {t + 1} after {cfg.turn_attempts} samples: {detail}")
        turns.append(ScriptTurn(speaker, text))
        raw += f"{label} {text}"
    script = Script(item_id=item_id, lang=req.lang, topic=req.topic, turns=turns, seed=seed, attempts=1,
                    raw=raw + f"\n{prompts.END_MARKER}\n")
    return script


def _turn_problem(
    text: str, finish_reason: Optional[str], turns: list[ScriptTurn], speaker: Speaker, req: DialogueRequest,
    cfg: ScriptConfig,
) -> Optional[tuple[str, str]]:
    """Why one sampled turn cannot continue the dialogue (the validator's rules, on the prefix)."""
    if finish_reason == "length":
        return "script_turn_length", f"cut at {cfg.turn_max_tokens} tokens: {_excerpt(text)!r}"
    if not text:
        return "script_unparseable", "empty turn"
    m = _LABEL_RE.match(text)
    if m and m.group(1).strip().lower() in (set(_LABELS) | _META_LABELS):
        return "script_prompt_echo", f"a label inside the turn: {_excerpt(text)!r}"
    prefix = turns + [ScriptTurn(speaker, text)]
    partial = Script(item_id="", lang=req.lang, topic=req.topic, turns=prefix, seed=0, attempts=1,
                     raw="\n".join(f"{x.speaker}: {x.text}" for x in prefix))
    lo, hi = req.turns
    one = req.model_copy(update={"turns": (1, max(hi, len(prefix)))})  # the count is checked at the end
    return (
        check_echo(partial, req, cfg)
        or check_structure(prefix, one, cfg)
        or check_language(prefix, req.lang, cfg)
        or check_repetition(prefix, cfg)
    )


def generate_scripts(
    client: LlmClient,
    requests: Sequence[DialogueRequest],
    max_attempts: Optional[int] = None,
    cfg: Optional[ScriptConfig] = None,
    seen: Optional[list[str]] = None,
) -> tuple[list[Script], list[Reject]]:
    """Scripts for `requests` (in request order) and rejects for those that failed every try.

    Attempts run in rounds: every pending request is asked concurrently (bounded by the client),
    then validated in request order against the scripts accepted so far, so the outcome is the
    same for the same seeds and server, whatever the timing. `seen`: texts of scripts accepted
    earlier (e.g. by a previous build), extended in place.

    With several servers (`llm.base_urls`), each request in flight has a server of its own
    (while requests in flight <= servers): an attempt's calls go to its worker's server, so a
    llama.cpp server never interleaves two dialogues, which would make it evaluate each
    dialogue's whole prompt again on every call.
    """
    cfg = cfg or ScriptConfig()
    max_attempts = max_attempts or cfg.max_attempts
    slots, slot_numbers = threading.local(), itertools.count()

    def slot() -> int:
        """This worker thread's number: concurrent workers get consecutive ones."""
        if not hasattr(slots, "k"):
            slots.k = next(slot_numbers)
        return slots.k
    seen = seen if seen is not None else []
    accepted: dict[int, Script] = {}
    rejected: dict[int, Reject] = {}
    failures: dict[int, list[tuple[str, str]]] = {i: [] for i in range(len(requests))}
    pending = list(range(len(requests)))

    for attempt in range(max_attempts):
        if not pending:
            break

        def run(i: int, attempt: int = attempt) -> Script | RejectError:
            seed = requests[i].seed + attempt * SEED_STRIDE
            try:
                return attempt_script(client, requests[i], seed, cfg, item_id=f"dialogue-{i}", route=slot())
            except RejectError as e:
                e.seed = seed  # type: ignore[attr-defined]
                return e

        results = client.map_concurrent(run, pending)
        still = []
        for i, res in zip(pending, results):
            req = requests[i]
            if isinstance(res, RejectError):
                reason, detail = res.reason, res.detail
                if reason.startswith("llm_"):
                    # The client already retried; a dead server is not fixed by a new seed.
                    rejected[i] = _reject(i, reason, detail, attempt + 1, getattr(res, "seed", req.seed), failures[i])
                    continue
            else:
                verdict = validate(res, req, seen, cfg)
                if verdict is None:
                    res.attempts, res.failures = attempt + 1, failures[i]
                    accepted[i] = res
                    seen.append(res.text)
                    continue
                reason, detail = verdict
            failures[i].append((reason, detail))
            if attempt + 1 == max_attempts:
                seed = req.seed + attempt * SEED_STRIDE
                rejected[i] = _reject(i, reason, detail, attempt + 1, seed, failures[i][:-1])
            else:
                still.append(i)
        pending = still

    scripts = [accepted[i] for i in sorted(accepted)]
    rejects = [rejected[i] for i in sorted(rejected)]
    return scripts, rejects


def _reject(i: int, reason: str, detail: str, attempts: int, seed: int, earlier: list[tuple[str, str]]) -> Reject:
    msg = f"{detail} (attempt {attempts}, seed {seed}"
    if earlier:
        msg += "; earlier: " + ", ".join(r for r, _ in earlier)
    return Reject(source="synthetic", stage="script", item_id=f"dialogue-{i}", reason=reason, detail=msg + ")")


def reason_counts(scripts: Sequence[Script], rejects: Sequence[Reject]) -> dict[str, int]:
    """How often each reason fired over all attempts (for build summaries and benchmarks)."""
    counts: dict[str, int] = {}
    for s in scripts:
        for r, _ in s.failures:
            counts[r] = counts.get(r, 0) + 1
    for rj in rejects:
        counts[rj.reason] = counts.get(rj.reason, 0) + 1
        tail = rj.detail.rsplit("; earlier: ", 1)
        if len(tail) == 2:
            for r in tail[1].rstrip(")").split(", "):
                counts[r] = counts.get(r, 0) + 1
    return counts
