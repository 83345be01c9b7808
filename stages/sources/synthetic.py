"""The `synthetic` source: dialogues an LLM writes and TTS speaks, in English, Hindi, Telugu and
code-mixed Hinglish, assembled on a timeline with human-like gaps, overlaps and backchannels.

Two steps. Discovery, in the build's driver, writes the scripts: requests (seeded combinations
of the manifest's topics, personas and styles) → an LLM (stages/synth/scripts.py; validation
rejects become discovery rejects) → `<output_dir>/<dialogue id>.script.json`. Rendering is
`prepare`, a per-recording phase that the engine maps over workers (a Ray actor pool, TTS and
Whisper loaded once per worker): one voice per speaker (stages/synth/tts/base.py) → TTS per turn
→ round trip (Whisper transcribes each turn; its CER against the script is recorded, and a
dialogue with a turn above `roundtrip_cer_max` for its language is rejected `tts_roundtrip_cer`)
→ timeline (stages/synth/timeline.py; gaps measured on the corpus's real conversations when
`gap_stats_from` names a corpus with enough of them) → `<output_dir>/<dialogue id>.wav` (USER on
channel 0, AI on 1), `.mono.wav` and `.json` (script, voices, timeline, CERs, request
fingerprint; written last, so its presence means the dialogue is complete). A dialogue whose
files exist with the same fingerprint is not made again, and a task's identity is its request
and script (`RecordingTask.content_key`), so it is the same before and after rendering. Ingest
then reads those files: `read_audio` decodes the WAV, `read_transcript` turns the placements
into speakers (USER/AI, role user/ai, voice id in metadata_json) and utterances.

Reject reasons: the script stage's (`llm_unavailable`, `llm_timeout`, `llm_bad_response`,
`llm_request_refused`, and its validation codes), the TTS stage's (`tts_*`), and
`tts_roundtrip_cer`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalog.schema import Recording, Reject, Speaker, Utterance
from stages.audio.decode import DecodedAudio, resample
from stages.audio.load import decode_file
from stages.config import AsrConfig, StageConfig
from stages.synth.scripts import DialogueRequest, Script, ScriptConfig, generate_scripts
from stages.synth.llm import LlmConfig
from stages.synth.llm_server import LlamaServerConfig
from stages.metrics import normalize_text, wer_cer
from stages.sources.base import Discovery, RecordingTask, SourceBase, Transcript
from stages.errors import RejectError
from stages.synth.timeline import assemble
from stages.synth.tts.base import TtsConfig
from stages.synth.turn_stats import DEFAULT, GapDistribution

SOURCE = "synthetic"
SYNTH_VERSION = 1  # bump when generation changes what it writes: dialogues are made again
LANGUAGES = ("en", "hi", "te", "hinglish")
ROLES = (("USER", "user"), ("AI", "ai"))  # speaker index = channel
# Whisper's language for the round trip; Hinglish is decoded as Hindi (it may answer in Latin).
WHISPER_LANG = {"en": "en", "hi": "hi", "te": "te", "hinglish": "hi"}
# The TTS language that speaks a dialogue language (a backend without Hinglish voices uses Hindi).
TTS_FALLBACK = {"hinglish": "hi"}
# Short listener reactions, all in the segmenter's backchannel lexicon.
BACKCHANNELS = {
    "en": ("yeah", "okay", "right", "uh huh"),
    "hi": ("हाँ", "अच्छा", "ठीक है", "जी"),
    "te": ("అవును", "సరే", "అలాగా"),
    "hinglish": ("haan", "accha", "okay"),
}
# Measured with espeak-ng and Whisper base on correctly synthesized sentences (see
# tests/sources/test_synthetic.py and the README): English CER 0-0.04 (a check at 0.5 catches
# wrong or broken speech); romanized Hinglish 0.3-0.7; Hindi 0.83-0.98 and Telugu 0.9-1.7 —
# Whisper base cannot read espeak's Hindi and Telugu, so those are recorded, not checked, unless
# a stronger `asr.model` and a threshold are configured.
DEFAULT_CER_MAX: dict[str, Optional[float]] = {"en": 0.5, "hinglish": 0.9, "hi": None, "te": None}


def default_output_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "convcorpus", "synthetic")


class AiPersona(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "Asha"
    character: str = "a friendly voice assistant"
    personality: str = "warm, patient and concise"

    def describe(self) -> str:
        return f"{self.name}, {self.character}; {self.personality}"


class SyntheticConfig(StageConfig):
    languages: list[str] = Field(min_length=1, description=f"any of {', '.join(LANGUAGES)}")
    topics: list[str] = Field(min_length=1)
    ai_personas: list[AiPersona] = Field(default_factory=lambda: [AiPersona()], min_length=1)
    user_profiles: list[str] = Field(default_factory=lambda: ["an ordinary person"], min_length=1)
    styles: list[str] = Field(default_factory=lambda: ["friendly"], min_length=1, description="emotions / speaking styles")
    turns: tuple[int, int] = Field((4, 8), description="(min, max) turns per dialogue")
    dialogues: int = Field(2, ge=1, le=100000, description="dialogues per language")
    seed: int = Field(0, ge=0)
    llm: LlmConfig = LlmConfig()
    script: ScriptConfig = ScriptConfig()
    tts: TtsConfig = TtsConfig()
    asr: AsrConfig = Field(default_factory=AsrConfig, description="Whisper for the round-trip check")
    roundtrip: bool = Field(True, description="transcribe every turn and check its CER")
    roundtrip_unchecked: bool = Field(
        True, description="also transcribe languages whose roundtrip_cer_max is None (to record their CER); "
        "False skips them (Whisper is most of a dialogue's generation time)",
    )
    roundtrip_cer_max: dict[str, Optional[float]] = Field(
        default_factory=lambda: dict(DEFAULT_CER_MAX),
        description="per language; None records the CER without checking it (a number applies to all)",
    )
    backchannels: bool = Field(True, description="listener backchannels during the other's long turns")
    gap_stats_from: Optional[str] = Field(None, description="corpus root whose real conversations give the gaps")
    output_dir: Optional[str] = Field(None, description="generated audio (default ~/.cache/convcorpus/synthetic)")
    license: str = ""
    serve: Optional[LlamaServerConfig] = Field(
        None, description="start llama.cpp's server on loopback for this build's scripts (llm.base_url is then unused)"
    )

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in LANGUAGES]
        if bad:
            raise ValueError(f"unsupported language(s) {bad}; supported: {list(LANGUAGES)}")
        return list(dict.fromkeys(v))

    @field_validator("roundtrip_cer_max", mode="before")
    @classmethod
    def _cer_max(cls, v: Any) -> Any:
        if v is None or isinstance(v, (int, float)):
            return {lang: v for lang in LANGUAGES}
        return {**DEFAULT_CER_MAX, **v} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _check(self) -> "SyntheticConfig":
        lo, hi = self.turns
        if not 2 <= lo <= hi:
            raise ValueError(f"turns must be (min, max) with 2 <= min <= max, got {self.turns}")
        bad = [k for k in self.roundtrip_cer_max if k not in LANGUAGES]
        if bad:
            raise ValueError(f"roundtrip_cer_max for unsupported language(s) {bad}")
        return self

    def out_dir(self) -> str:
        return os.path.abspath(os.path.expanduser(self.output_dir or default_output_dir()))


@dataclass(frozen=True)
class Planned:
    dialogue_id: str
    request: DialogueRequest
    persona: AiPersona
    fingerprint: str  # everything that shapes the dialogue's files
    script_fingerprint: str  # what shapes its script (request and LLM settings)


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:n]


def plan_requests(cfg: SyntheticConfig) -> list[Planned]:
    """The dialogues the config asks for, in a fixed order: per language, `dialogues` seeded
    draws of (topic, persona, user profile, style). The dialogue id hashes the request (seed
    included); the fingerprint adds everything else that shapes the files."""
    out = []
    combos = list(itertools.product(range(len(cfg.topics)), range(len(cfg.ai_personas)),
                                    range(len(cfg.user_profiles)), range(len(cfg.styles))))
    for lang in cfg.languages:
        rng = random.Random(f"synthetic:{cfg.seed}:{lang}")
        order = combos[:]
        rng.shuffle(order)
        for i in range(cfg.dialogues):
            t, p, u, s = order[i % len(order)]
            persona = cfg.ai_personas[p]
            seed = int(_digest([cfg.seed, lang, i], 8), 16) % 1_000_000_000
            req = DialogueRequest(lang=lang, topic=cfg.topics[t], ai_persona=persona.describe(),
                                  user_profile=cfg.user_profiles[u], style=cfg.styles[s], turns=cfg.turns, seed=seed)
            did = f"{lang}-{_digest(req.model_dump(mode='json'), 12)}"
            script_fp = _digest({
                "request": req.model_dump(mode="json"),
                "llm": cfg.llm.model_dump(mode="json", include={"model", "mode", "temperature", "top_p", "max_tokens", "structured"}),
                "script": cfg.script.fingerprint(),
            })
            fp = _digest({
                "request": req.model_dump(mode="json"),
                "llm": cfg.llm.model_dump(mode="json", include={"model", "mode", "temperature", "top_p", "max_tokens", "structured"}),
                "script": cfg.script.fingerprint(), "tts": cfg.tts.fingerprint(),
                "asr": cfg.asr.fingerprint() if cfg.roundtrip else None,
                "backchannels": cfg.backchannels, "version": SYNTH_VERSION,
            })
            out.append(Planned(did, req, persona, fp, script_fp))
    return out


def _cer(reference: str, hypothesis: str) -> float:
    cer = wer_cer([reference], [hypothesis])["cer"]
    return 1.0 if cer is None else round(float(cer), 4)


class SyntheticSource(SourceBase):
    name = SOURCE

    def __init__(self, config: SyntheticConfig):
        self.config = config
        self._tts: Any = None
        self._asr: Any = None
        self._plan: Optional[dict[str, Planned]] = None
        self._gap_distribution: Optional[GapDistribution] = None

    # -- paths
    def _paths(self, did: str) -> dict[str, str]:
        base = os.path.join(self.config.out_dir(), did)
        return {"wav": base + ".wav", "mono": base + ".mono.wav", "json": base + ".json", "script": base + ".script.json"}

    def _license(self) -> str:
        return self.config.license or f"synthetic (LLM {self.config.llm.model} + TTS {self.config.tts.backend})"

    # -- discovery: scripts (LLM requests, in the driver)
    def discover(self) -> Discovery:
        """Plans the dialogues, writes the missing scripts, and returns one task per dialogue
        that has a script. Rendering (TTS, round trip, timeline) is `prepare`, on the workers."""
        cfg = self.config
        os.makedirs(cfg.out_dir(), exist_ok=True)
        planned = plan_requests(cfg)
        scripts: dict[str, dict] = {}
        todo: list[Planned] = []
        for p in planned:
            doc = self._existing(p) or self._existing_script(p)
            (todo.append(p) if doc is None else scripts.__setitem__(p.dialogue_id, doc))
        rejects: list[Reject] = []
        if todo:
            seen = [d["script_text"] for d in scripts.values()]
            generated, script_rejects = self._generate([p.request for p in todo], seen)
            by_item = {f"dialogue-{i}": p for i, p in enumerate(todo)}
            for r in script_rejects:
                p = by_item[r.item_id]
                rejects.append(Reject(self.name, r.stage, f"{self.name}-{p.dialogue_id}", r.reason, r.detail))
            for script in generated:
                p = by_item[script.item_id]
                scripts[p.dialogue_id] = self._write_script(p, script)
        tasks = [self._task(p, scripts[p.dialogue_id]) for p in planned if p.dialogue_id in scripts]
        return Discovery(tasks=tasks, rejects=rejects)

    def _generate(self, requests: list[DialogueRequest], seen: list[str]) -> tuple[list, list[Reject]]:
        """Scripts from the configured server, or from a llama.cpp server started for them
        (`serve`), stopped before any TTS runs. A server that cannot start rejects every request
        `llm_unavailable`, with why."""
        from stages.synth.llm import LlmClient

        cfg = self.config
        if cfg.serve is None:
            return generate_scripts(LlmClient(cfg.llm), requests, cfg=cfg.script, seen=seen)
        from stages.synth.llm_server import LlmServerError, start_configured

        try:
            server = start_configured(cfg.serve, cfg.llm.model)
        except LlmServerError as e:
            detail = f"could not start the local llama.cpp server: {e}"[:2000]
            return [], [Reject(self.name, "script", f"dialogue-{i}", "llm_unavailable", detail) for i in range(len(requests))]
        try:
            client = LlmClient(cfg.llm.model_copy(update={"base_url": server.base_url}))
            return generate_scripts(client, requests, cfg=cfg.script, seen=seen)
        finally:
            server.stop()

    def _write_script(self, p: Planned, script: Script) -> dict:
        doc = {
            "dialogue_id": p.dialogue_id,
            "script_fingerprint": p.script_fingerprint,
            "script": [{"speaker": t.speaker, "text": t.text} for t in script.turns],
            "script_text": script.text,
            "llm": {"model": self.config.llm.model, "mode": self.config.llm.mode, "seed": script.seed,
                    "attempts": script.attempts},
        }
        _atomic_bytes(self._paths(p.dialogue_id)["script"], json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
        return doc

    def _existing_script(self, p: Planned) -> Optional[dict]:
        try:
            with open(self._paths(p.dialogue_id)["script"], encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return None
        return doc if doc.get("script_fingerprint") == p.script_fingerprint else None

    # -- recording workers: rendering
    def prepare_fingerprint(self) -> str:
        """Today's round-trip thresholds: a dialogue made earlier is judged against them."""
        return _digest(self.config.roundtrip_cer_max)

    def prepare(self, task: RecordingTask) -> bool:
        """Render a dialogue whose files are missing (TTS, round trip, timeline, files); check a
        rendered one against today's round-trip thresholds. RejectError rejects the dialogue."""
        p = self._planned(task)
        doc = self._existing(p)
        rendered = doc is None
        if doc is None:
            script_doc = self._existing_script(p)
            if script_doc is None:
                raise RejectError("script_missing", f"no script for {p.dialogue_id} in {self.config.out_dir()}")
            doc = self._render(p, script_doc)
        over = self._over_threshold(p.request.lang, doc["cers"])
        if over is not None:
            raise RejectError("tts_roundtrip_cer", over)
        return rendered

    def _planned(self, task: RecordingTask) -> Planned:
        if self._plan is None:
            self._plan = {p.dialogue_id: p for p in plan_requests(self.config)}
        try:
            return self._plan[task.origin_id]
        except KeyError:
            raise RejectError("dialogue_not_planned", f"{task.origin_id} is not among this config's dialogues") from None

    def _existing(self, p: Planned) -> Optional[dict]:
        paths = self._paths(p.dialogue_id)
        try:
            with open(paths["json"], encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return None
        if doc.get("fingerprint") != p.fingerprint or not os.path.exists(paths["wav"]):
            return None
        return doc

    def _backend(self) -> Any:
        if self._tts is None:
            from stages.synth.tts import make_tts

            self._tts = make_tts(self.config.tts)
        return self._tts

    def _whisper(self) -> Any:
        if self._asr is None:
            from stages.analysis.asr import WhisperASR

            self._asr = WhisperASR(self.config.asr)
        return self._asr

    def _tts_lang(self, lang: str) -> str:
        langs = self._backend().languages()
        return lang if lang in langs or lang not in TTS_FALLBACK else TTS_FALLBACK[lang]

    def _render(self, p: Planned, script: dict) -> dict:
        """TTS, round trip, timeline, files. RejectError (tts_*) rejects the whole dialogue."""
        from stages.synth.tts.base import assign_voices

        cfg, backend, lang = self.config, self._backend(), p.request.lang
        voices = assign_voices(self._tts_lang(lang), len(ROLES), p.request.seed, backend)
        index = {label: i for i, (label, _) in enumerate(ROLES)}
        turns, sr = [], None
        for k, t in enumerate(script["script"]):
            try:
                audio, sr_k = backend.synthesize(t["text"], voices[index[t["speaker"]]])
            except RejectError as e:
                raise RejectError(e.reason, f"turn {k}: {e.detail}") from None
            if sr is None:
                sr = sr_k
            elif sr_k != sr:
                audio = resample(audio, sr_k, sr)[0]
            turns.append((index[t["speaker"]], audio, t["text"]))
        transcribe = cfg.roundtrip and (cfg.roundtrip_unchecked or cfg.roundtrip_cer_max.get(lang) is not None)
        cers = self._roundtrip(turns, sr, lang) if transcribe else [None] * len(turns)
        bcs = self._backchannel_clips(voices, lang, sr) if cfg.backchannels else None
        gaps = self._gaps()
        tl = assemble(turns, sr, gaps, np.random.default_rng(p.request.seed), bcs)
        doc = {
            "dialogue_id": p.dialogue_id,
            "fingerprint": p.fingerprint,
            "request": p.request.model_dump(mode="json"),
            "persona": p.persona.model_dump(mode="json"),
            "lang": lang,
            "llm": script["llm"],
            "script": script["script"],
            "script_text": script["script_text"],
            "tts": {"backend": backend.name, "sample_rate": sr},
            "voices": {label: {"voice_id": v.voice_id, "lang": v.lang} for (label, _), v in zip(ROLES, voices)},
            "cers": cers,
            "asr_model": cfg.asr.model if transcribe else None,
            "gaps": gaps.describe(),
            "timeline": {"sr": sr, "duration_s": round(tl.duration_s, 4), "mix_gain": round(tl.mix_gain, 6),
                         "placements": [pl.to_dict() for pl in tl.placements]},
        }
        paths = self._paths(p.dialogue_id)
        os.makedirs(os.path.dirname(paths["wav"]), exist_ok=True)
        _atomic_wav(paths["wav"], tl.two_channel.T, sr)
        _atomic_wav(paths["mono"], tl.mono, sr)
        _atomic_bytes(paths["json"], json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
        return doc

    def _roundtrip(self, turns: list, sr: int, lang: str) -> list[Optional[float]]:
        from stages.analysis.vad import SpeechSegment

        asr, out = self._whisper(), []
        for _, audio, text in turns:
            a16 = resample(audio, sr, 16000)[0]
            a16 = np.pad(a16, 1600)  # Whisper hears a word's onset better after a little silence
            try:
                res = asr.transcribe(a16, speech=[SpeechSegment(0.0, len(a16) / 16000)], lang_hint=WHISPER_LANG[lang])
                hyp = " ".join(s.text for s in res.segments)
            except RejectError:  # heard as another language: nothing recognized in ours
                hyp = ""
            out.append(_cer(normalize_text(text), normalize_text(hyp)))
        return out

    def _over_threshold(self, lang: str, cers: list[Optional[float]]) -> Optional[str]:
        limit = self.config.roundtrip_cer_max.get(lang)
        if limit is None:
            return None
        bad = [(k, c) for k, c in enumerate(cers) if c is not None and c > limit]
        if not bad:
            return None
        return "; ".join(f"turn {k}: CER {c:.2f} > {limit}" for k, c in bad)

    def _backchannel_clips(self, voices: list, lang: str, sr: int) -> list[list[tuple[np.ndarray, str]]]:
        backend, out = self._backend(), []
        for v in voices:
            clips = []
            for word in BACKCHANNELS[lang]:
                try:
                    audio, sr_k = backend.synthesize(word, v)
                except RejectError:
                    continue  # a reaction the voice cannot say is left out, not the dialogue
                clips.append((resample(audio, sr_k, sr)[0], word))
            out.append(clips)
        return out

    def _gaps(self) -> GapDistribution:
        if self._gap_distribution is None:
            measured = _measured_gaps(self.config.gap_stats_from) if self.config.gap_stats_from else None
            self._gap_distribution = measured or DEFAULT
        return self._gap_distribution

    def _task(self, p: Planned, doc: dict) -> RecordingTask:
        """`doc`: the dialogue's script (or its rendered record, which holds the script)."""
        paths = self._paths(p.dialogue_id)
        return RecordingTask(
            source=self.name,
            origin_id=p.dialogue_id,
            audio_path=paths["wav"],
            transcript_path=paths["json"],
            lang=p.request.lang,
            license=self._license(),
            metadata={
                "topic": p.request.topic,
                "persona": p.persona.name,
                "ai_persona": p.request.ai_persona,
                "user_profile": p.request.user_profile,
                "style": p.request.style,
                "llm_model": doc["llm"]["model"],
                "tts_backend": self.config.tts.backend,
                "fingerprint": p.fingerprint,
            },
            content_key=f"{p.fingerprint}:{_digest(doc['script_text'])}",
            needs_prepare=True,
        )

    # -- recording workers: read what discovery wrote
    def read_audio(self, task: RecordingTask) -> DecodedAudio:
        return decode_file(task.audio_path)

    def read_transcript(self, task: RecordingTask, recording: Recording) -> Transcript:
        try:
            with open(task.transcript_path or "", encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise RejectError("transcript_unreadable", f"{task.transcript_path}: {e}") from e
        rid = recording.recording_id
        speakers = [
            Speaker(
                speaker_id=f"{rid}-{label}", recording_id=rid, source=self.name, label=label, channel=ch, role=role,
                lang=task.lang,
                metadata_json=json.dumps({"voice_id": doc["voices"][label]["voice_id"],
                                          "voice_lang": doc["voices"][label]["lang"], "lang": task.lang},
                                         sort_keys=True, ensure_ascii=False),
            )
            for ch, (label, role) in enumerate(ROLES)
        ]
        cers = doc.get("cers") or []
        utterances = []
        for i, pl in enumerate(doc["timeline"]["placements"]):
            start, end = round(pl["start_s"], 3), min(round(pl["end_s"], 3), recording.duration_s)
            k = pl.get("turn_index")
            cer = cers[k] if k is not None and k < len(cers) else None
            utterances.append(Utterance(
                utterance_id=f"{rid}-{i:05d}", recording_id=rid, source=self.name,
                speaker_id=speakers[pl["speaker"]].speaker_id, channel=pl["speaker"],
                start_s=start, end_s=end, text_raw=pl["text"], text=normalize_text(pl["text"]), lang=task.lang,
                confidence=None if cer is None else round(max(0.0, 1.0 - cer), 4),
            ))
        if not utterances:
            raise RejectError("empty_conversation", "the dialogue has no turns")
        return Transcript(speakers, utterances, [])


def _measured_gaps(out: str) -> Optional[GapDistribution]:
    from stages.synth.turn_stats import from_catalog

    try:
        return from_catalog(out)
    except Exception:  # an unreadable corpus only costs the measured statistics
        return None


def _atomic_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_wav(path: str, audio: np.ndarray, sr: int) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.wav"
    sf.write(tmp, audio, sr, subtype="PCM_16")
    os.replace(tmp, path)
