"""Labelled one-microphone test conversations: synthetic voices mixed into one mono track, with
the references that score a build of them (RTTM, STM and a JSON timeline) and an RSS feed that
lists them as podcast episodes.

Voices are the demo's espeak-ng participants (`demo.Voice`) or any TTS voice id of
stages/synth/tts/base.py (e.g. "kokoro:en:af_bella+af_sky@0.5", "espeak:en+f2:p55:s165"). A conversation
can be degraded the way real recordings are: a telephone channel (300-3400 Hz band, 8 kHz
G.711 mu-law and back), and background noise at a given SNR against the speech.

A conversation is written as `out_dir/audio/<uri>.wav` and `out_dir/refs/<uri>.{rttm,stm,json}`;
the uri is the audio's file stem and, in the feed, the episode GUID: `pipelines.evaluate` pairs a
built recording with its reference by either. References are exact: the STM has one segment per
script line, from the first to the last sample of its trimmed clip; the RTTM splits each line at
the pauses inside it (sentence breaks: 10 ms frames more than 40 dB below the clip's loudest
for at least 0.25 s). Speech comes from stages/sources/demo/fisher_calls.py's `synthesize` (8 kHz clips,
resampled here to the conversation's rate, so the speech band ends at 4 kHz). Timelines are
deterministic given the spec and seed; the seed drives the noise floor and the optional gap
jitter.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import tempfile
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional, Sequence, Union

import numpy as np
import soundfile as sf

import soxr

from stages.sources.demo.fisher_calls import SPEAKERS, Voice, _atomic_write, synthesize
from stages.audio.signal import telephone_band

GENERATOR_VERSION = 1
AUDIO_DIR = "audio"
REFS_DIR = "refs"
FEED_NAME = "feed.xml"
MIN_SELF_PAUSE_S = 0.1  # a speaker's next line starts at least this long after their last ends
SPLIT_PAUSE_S = 0.25  # pauses inside a line at least this long split its RTTM segments
SILENCE_DB = -40.0

_VOICES = {v.name: v for v in SPEAKERS}
_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class SpeakerSpec:
    label: str  # reference speaker name in RTTM/STM, e.g. "host"
    voice: Union[Voice, str]  # an espeak demo voice, or a TTS voice id (stages/synth/tts/base.py)
    gain: float = 0.5  # peak level of a TTS voice's clips (demo voices carry their own)

    @property
    def peak(self) -> float:
        return self.voice.gain if isinstance(self.voice, Voice) else self.gain


@dataclass(frozen=True)
class LineSpec:
    """One reference segment. `gap_s`: for a floor line, its start minus the end of the previous
    floor line (negative = overlap; ignored on the first line); for a backchannel, its offset
    into the floor line it is spoken over (which it must end before)."""

    speaker: str
    text: str  # the reference transcript
    gap_s: float = 0.6
    backchannel: bool = False
    spoken: Optional[str] = None  # what espeak-ng is given, when it differs from `text`


@dataclass(frozen=True)
class ConversationSpec:
    uri: str
    speakers: tuple[SpeakerSpec, ...]
    lines: tuple[LineSpec, ...]
    title: str = ""
    lang: str = "en"
    sample_rate: int = 16000
    lead_in_s: float = 0.6
    tail_s: float = 0.8
    jitter_s: float = 0.0  # uniform jitter of floor gaps; never flips a gap's sign
    noise_dbfs: float = -66.0  # RMS of the noise floor
    channel: str = "wide"  # "wide", or "telephone": 300-3400 Hz, 8 kHz mu-law and back
    snr_db: Optional[float] = None  # pink background noise at this SNR against the speech


@dataclass(frozen=True)
class RefSegment:
    speaker: str
    start_s: float
    end_s: float
    text: str
    backchannel: bool = False
    speech: tuple[tuple[float, float], ...] = ()  # the line's speech regions (RTTM segments)


@dataclass(frozen=True)
class LabelledConversation:
    uri: str
    title: str
    lang: str
    sample_rate: int
    duration_s: float
    audio_path: str
    rttm_path: str
    stm_path: str
    timeline_path: str
    speakers: tuple[str, ...]
    segments: tuple[RefSegment, ...]

    @property
    def floor_segments(self) -> list[RefSegment]:
        return [s for s in self.segments if not s.backchannel]


def voice(name: str) -> Voice:
    """One of demo.py's voices by name (karen, andy, linda, mike, susan, dave, maria, tom)."""
    return _VOICES[name]


def validate_spec(spec: ConversationSpec) -> None:
    """ValueError for a spec that cannot make a well-formed reference."""
    if not _LABEL.fullmatch(spec.uri):
        raise ValueError(f"uri {spec.uri!r}: letters, digits, '_', '.', '-' only (it is a file stem)")
    if not 1 <= len(spec.speakers) <= 4:
        raise ValueError("a conversation has 1-4 speakers")
    labels = [s.label for s in spec.speakers]
    if len(set(labels)) != len(labels) or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"speaker labels must be unique tokens: {labels}")
    for i, a in enumerate(spec.speakers):
        for b in spec.speakers[i + 1:]:
            if a.voice == b.voice:
                raise ValueError(f"{a.label} and {b.label} have the same voice")
            if isinstance(a.voice, Voice) and isinstance(b.voice, Voice) and (
                    a.voice.variant == b.voice.variant or a.voice.pitch == b.voice.pitch):
                raise ValueError(f"{a.label} and {b.label} need different espeak variants and pitches")
    if spec.channel not in CHANNELS:
        raise ValueError(f"channel {spec.channel!r}: one of {sorted(CHANNELS)}")
    if spec.lang not in ESPEAK_LANGS:
        raise ValueError(f"lang {spec.lang!r}: espeak-ng voices here are {sorted(ESPEAK_LANGS)}")
    if spec.sample_rate not in (16000, 24000):
        raise ValueError("sample_rate must be 16000 or 24000")
    if not spec.lines or spec.lines[0].backchannel:
        raise ValueError("the first line must be a floor line")
    for line in spec.lines:
        if line.speaker not in labels:
            raise ValueError(f"line by unknown speaker {line.speaker!r}")
        if not normalize_spaces(line.text):
            raise ValueError("a line needs text")
        if line.backchannel and line.gap_s < 0:
            raise ValueError("a backchannel's gap_s is its offset into the floor line (>= 0)")


def normalize_spaces(text: str) -> str:
    return " ".join(text.split())


def _fingerprint(spec: ConversationSpec, seed: int) -> str:
    return hashlib.sha256(repr((GENERATOR_VERSION, spec, seed)).encode()).hexdigest()[:16]


ESPEAK_LANGS = {"en": "en-us", "hi": "hi", "te": "te"}
CHANNELS = ("wide", "telephone")


class _TtsVoices:
    """TTS backends for voice ids, one instance per backend, created on first use."""

    def __init__(self) -> None:
        self._backends: dict[str, object] = {}
        self._lock = threading.Lock()

    def synthesize(self, voice_id: str, text: str, lang: str, sample_rate: int, peak: float) -> np.ndarray:
        from stages.synth.tts.base import TtsConfig
        from stages.synth.tts import make_tts

        name = voice_id.split(":", 1)[0]
        with self._lock:
            if name not in self._backends:
                self._backends[name] = make_tts(TtsConfig(backend=name, normalize_text=False))
            backend = self._backends[name]
        clip, sr = backend.synthesize(text, backend.voice(voice_id), text_lang=lang)
        clip = soxr.resample(clip.astype(np.float64), sr, sample_rate, quality="HQ")
        top = float(np.max(np.abs(clip))) if len(clip) else 0.0
        if top <= 0:
            raise RuntimeError(f"{voice_id} produced silence for {text!r}")
        return clip * (peak / top)


def _synthesize_clips(spec: ConversationSpec, workers: int) -> dict[tuple[str, str], np.ndarray]:
    """(speaker label, spoken text) → clip at the conversation's rate, peaking at the voice's gain."""
    speakers = {s.label: s for s in spec.speakers}
    keys = sorted({(line.speaker, line.spoken or line.text) for line in spec.lines})
    tts = _TtsVoices()

    def one(key: tuple[str, str]) -> np.ndarray:
        spk = speakers[key[0]]
        if isinstance(spk.voice, Voice):
            return synthesize(key[1], spk.voice, workdir, sample_rate=spec.sample_rate, lang=ESPEAK_LANGS[spec.lang])
        return tts.synthesize(spk.voice, key[1], spec.lang, spec.sample_rate, spk.peak)

    with tempfile.TemporaryDirectory(prefix="synth-tts-") as workdir, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(keys, pool.map(one, keys)))


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711 mu-law companding to 8 bits and back (the quantization noise of a phone line)."""
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    q = np.round((y + 1.0) / 2.0 * 255.0) / 255.0 * 2.0 - 1.0
    return np.sign(q) * ((1.0 + mu) ** np.abs(q) - 1.0) / mu


def telephone_channel(x: np.ndarray, sr: int) -> np.ndarray:
    """300-3400 Hz band, 8 kHz mu-law, back to `sr`."""
    narrow = soxr.resample(telephone_band(x, sr), sr, 8000, quality="HQ")
    return soxr.resample(mu_law(np.clip(narrow, -1.0, 1.0)), 8000, sr, quality="HQ")


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise (white noise shaped in the frequency domain)."""
    spec = np.fft.rfft(rng.normal(0.0, 1.0, n))
    f = np.arange(len(spec), dtype=np.float64)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    x = np.fft.irfft(spec, n=n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-20)


def speech_regions(clip: np.ndarray, sr: int, min_pause_s: float = SPLIT_PAUSE_S,
                   threshold_db: float = SILENCE_DB) -> list[tuple[int, int]]:
    """(first, end) sample ranges of a trimmed clip between its pauses of at least `min_pause_s`."""
    frame = max(1, sr // 100)
    n = len(clip) // frame
    if n == 0:
        return [(0, len(clip))]
    rms = np.sqrt(np.mean(clip[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    quiet = rms < rms.max() * 10 ** (threshold_db / 20)
    min_frames = int(round(min_pause_s * 100))
    regions, start, i = [], 0, 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if j - i >= min_frames and i > 0 and j < n:
            regions.append((start, i * frame))
            start = j * frame
        i = j
    regions.append((start, len(clip)))
    return regions


def layout(spec: ConversationSpec, clips: dict[tuple[str, str], np.ndarray], seed: int) -> list[tuple[RefSegment, int]]:
    """Place every line: (reference segment, first sample) in script order. Starts lie on a
    10 ms grid; ends are exact sample times."""
    sr = spec.sample_rate
    rng = random.Random(f"synth-conversation:{seed}:{spec.uri}")
    placed: list[tuple[RefSegment, int]] = []
    floor: Optional[RefSegment] = None
    busy: dict[str, float] = {}
    for n, line in enumerate(spec.lines):
        clip = clips[(line.speaker, line.spoken or line.text)]
        if line.backchannel:
            assert floor is not None
            if line.speaker == floor.speaker:
                raise ValueError(f"line {n}: a backchannel over the speaker's own line")
            start = floor.start_s + line.gap_s
        elif floor is None:
            start = spec.lead_in_s
        else:
            gap = line.gap_s
            if spec.jitter_s > 0:
                jittered = gap + rng.uniform(-spec.jitter_s, spec.jitter_s)
                gap = jittered if (jittered < 0) == (gap < 0) else gap
            start = floor.end_s + gap
        start = round(start, 2)
        if start < busy.get(line.speaker, -1.0) + MIN_SELF_PAUSE_S:
            raise ValueError(f"line {n}: {line.speaker} would talk over themselves")
        first = int(round(start * sr))
        speech = tuple((round((first + a) / sr, 3), round((first + b) / sr, 3)) for a, b in speech_regions(clip, sr))
        seg = RefSegment(line.speaker, first / sr, round((first + len(clip)) / sr, 3),
                         normalize_spaces(line.text), line.backchannel, speech)
        if line.backchannel and seg.end_s > floor.end_s - 0.1:
            raise ValueError(f"line {n}: the backchannel outlasts the line it is spoken over")
        placed.append((seg, first))
        busy[line.speaker] = seg.end_s
        if not line.backchannel:
            floor = seg
    return placed


def render(spec: ConversationSpec, placed: list[tuple[RefSegment, int]], keys: list[tuple[str, str]],
           clips: dict[tuple[str, str], np.ndarray], seed: int) -> np.ndarray:
    """Mono float mix: every clip added at its place over a faint Gaussian noise floor."""
    sr = spec.sample_rate
    end = max(seg.end_s for seg, _ in placed) + spec.tail_s
    n = int(round(end * sr))
    noise_seed = int.from_bytes(hashlib.sha256(f"synth-noise:{seed}:{spec.uri}".encode()).digest()[:8], "little")
    x = np.random.default_rng(noise_seed).normal(0.0, 10 ** (spec.noise_dbfs / 20), n)
    speech = np.zeros(n)
    for (seg, first), key in zip(placed, keys):
        clip = clips[key]
        speech[first: first + len(clip)] += clip
    if spec.snr_db is not None:
        active = np.concatenate([speech[first: first + len(clips[key])] for (_, first), key in zip(placed, keys)])
        speech_rms = float(np.sqrt(np.mean(active**2)))
        x += pink_noise(n, np.random.default_rng(noise_seed + 1)) * speech_rms * 10 ** (-spec.snr_db / 20)
    x += speech
    if spec.channel == "telephone":
        x = telephone_channel(x, sr)
    peak = float(np.max(np.abs(x)))
    return x * (0.95 / peak) if peak > 0.95 else x  # overlaps can add up past full scale


def rttm_text(uri: str, segments: Sequence[RefSegment]) -> str:
    regions = sorted((a, b, s.speaker) for s in segments for a, b in (s.speech or ((s.start_s, s.end_s),)))
    return "".join(f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {spk} <NA> <NA>\n" for a, b, spk in regions)


def stm_text(uri: str, segments: Sequence[RefSegment]) -> str:
    return "".join(f"{uri} 1 {s.speaker} {s.start_s:.3f} {s.end_s:.3f} {s.text}\n"
                   for s in sorted(segments, key=lambda s: (s.start_s, s.speaker)))


def _paths(out_dir: str, uri: str) -> dict[str, str]:
    refs = os.path.join(out_dir, REFS_DIR)
    return {"audio": os.path.join(out_dir, AUDIO_DIR, f"{uri}.wav"), "rttm": os.path.join(refs, f"{uri}.rttm"),
            "stm": os.path.join(refs, f"{uri}.stm"), "timeline": os.path.join(refs, f"{uri}.json")}


def load_conversation(timeline_path: str) -> LabelledConversation:
    """A conversation back from its JSON timeline (its files are beside it, as written)."""
    with open(timeline_path, encoding="utf-8") as f:
        t = json.load(f)
    out_dir = os.path.dirname(os.path.dirname(os.path.abspath(timeline_path)))
    p = _paths(out_dir, t["uri"])
    return LabelledConversation(
        uri=t["uri"], title=t["title"], lang=t["lang"], sample_rate=t["sample_rate"], duration_s=t["duration_s"],
        audio_path=p["audio"], rttm_path=p["rttm"], stm_path=p["stm"], timeline_path=p["timeline"],
        speakers=tuple(s["label"] for s in t["speakers"]),
        segments=tuple(RefSegment(**{**s, "speech": tuple(tuple(r) for r in s.get("speech", ()))})
                       for s in t["segments"]),
    )


def make_conversation(out_dir: str, spec: ConversationSpec, seed: int, *, workers: int = 2) -> LabelledConversation:
    """Write one conversation's WAV (mono, 16-bit, spec.sample_rate) and its RTTM, STM and JSON
    timeline. Idempotent: files already written for the same spec and seed are reused."""
    validate_spec(spec)
    out_dir = os.path.abspath(out_dir)
    p = _paths(out_dir, spec.uri)
    fingerprint = _fingerprint(spec, seed)
    if all(os.path.exists(x) for x in p.values()):
        with open(p["timeline"], encoding="utf-8") as f:
            if json.load(f).get("fingerprint") == fingerprint:
                return load_conversation(p["timeline"])

    clips = _synthesize_clips(spec, workers)
    keys = [(line.speaker, line.spoken or line.text) for line in spec.lines]
    placed = layout(spec, clips, seed)
    audio = render(spec, placed, keys, clips, seed)
    sr = spec.sample_rate
    segments = [seg for seg, _ in placed]

    os.makedirs(os.path.dirname(p["audio"]), exist_ok=True)
    tmp = f"{p['audio']}.tmp-{os.getpid()}.wav"
    sf.write(tmp, audio, sr, subtype="PCM_16")
    os.replace(tmp, p["audio"])
    _atomic_write(p["rttm"], rttm_text(spec.uri, segments).encode())
    _atomic_write(p["stm"], stm_text(spec.uri, segments).encode())
    timeline = {
        "generator": "stages.sources.synth_conversations", "version": GENERATOR_VERSION,
        "fingerprint": fingerprint, "seed": seed, "uri": spec.uri, "title": spec.title or spec.uri,
        "lang": spec.lang, "sample_rate": sr, "duration_s": round(len(audio) / sr, 3),
        "speakers": [{"label": s.label, "voice": asdict(s.voice) if isinstance(s.voice, Voice) else s.voice}
                     for s in spec.speakers],
        "segments": [asdict(s) for s in segments],
    }
    # The timeline goes last: its fingerprint marks the conversation complete.
    _atomic_write(p["timeline"], json.dumps(timeline, indent=1, ensure_ascii=False).encode())
    return load_conversation(p["timeline"])


# --- the standard test set -------------------------------------------------------------------


def _spk(label: str, name: str) -> SpeakerSpec:
    return SpeakerSpec(label, voice(name))


def L(speaker: str, text: str, gap_s: float = 0.6, *, spoken: Optional[str] = None) -> LineSpec:  # noqa: N802
    return LineSpec(speaker, text, gap_s, False, spoken)


def B(speaker: str, text: str, offset_s: float, *, spoken: Optional[str] = None) -> LineSpec:  # noqa: N802
    return LineSpec(speaker, text, offset_s, True, spoken)


STANDARD_SPECS: tuple[ConversationSpec, ...] = (
    ConversationSpec(
        uri="synth_two_clean",
        title="Two speakers, clean turns: wooden boats",
        speakers=(_spk("host", "karen"), _spk("guest", "mike")),
        lines=(
            L("host", "Welcome back to the show. Today my guest builds wooden boats by hand."),
            L("guest", "Thanks for having me. It is a slow craft, but I love every part of it.", 0.7),
            L("host", "How long does one boat take you?", 0.8),
            L("guest", "A small rowing boat takes about three months of weekends.", 0.6),
            L("host", "That sounds like a lot of patience.", 0.9),
            L("guest", "It is mostly patience, and a very sharp plane.", 0.5),
            L("host", "Which wood do you like the most?", 1.0),
            L("guest", "Cedar for the planks and oak for the frames.", 0.6),
            L("host", "Thank you, this was lovely.", 0.8),
        ),
    ),
    ConversationSpec(
        uri="synth_two_overlap",
        title="Two speakers with overlap and backchannels: leaving the city",
        speakers=(_spk("host", "maria"), _spk("guest", "andy")),
        lines=(
            L("host", "So you moved to the mountains last year. What made you leave the city?"),
            L("guest", "Honestly, the noise. I could not sleep, and the rent kept going up every single month.", 0.6),
            B("host", "mm-hmm", 2.2, spoken="hmm hmm"),
            L("host", "And do you miss anything about it?", 0.5),
            L("guest", "I miss the food. The little noodle places near my old office were the best in town.", 0.7),
            L("host", "Oh, I know exactly the ones you mean!", -0.8),
            L("guest", "Right, and nothing up here comes close, believe me.", 0.5),
            B("host", "yeah", 0.8),
            L("host", "Well, maybe you should open one yourself.", -0.3),
            L("guest", "Maybe I will.", 0.7),
        ),
    ),
    ConversationSpec(
        uri="synth_panel_three",
        title="Three-speaker panel: city gardens",
        speakers=(_spk("host", "susan"), _spk("guest1", "andy"), _spk("guest2", "linda")),
        lines=(
            L("host", "Welcome to the panel. Today we are talking about gardens in the city."),
            L("guest1", "Thanks. I run a small garden on the roof of a parking garage.", 0.6),
            L("guest2", "And I teach children to grow vegetables at their school.", 0.8),
            L("host", "What grows best on a roof?", 0.7),
            L("guest1", "Tomatoes and beans, as long as the wind does not knock them over.", 0.5),
            B("guest2", "right", 1.2),
            L("guest2", "The children love beans too, because they grow so fast.", -0.4),
            L("host", "Do the children eat what they grow?", 0.6),
            L("guest2", "Every last leaf. Even the ones who say they hate salad.", 0.5),
            L("guest1", "That is the best part of it.", 0.9),
        ),
    ),
    ConversationSpec(
        uri="synth_one_speaker",
        title="One speaker: a short talk about tea",
        speakers=(_spk("narrator", "tom"),),
        lines=(
            L("narrator", "Good morning. This short talk is about tea."),
            L("narrator", "Green tea and black tea come from the same plant.", 0.9),
            L("narrator", "The difference is what happens to the leaves after they are picked.", 0.7),
            L("narrator", "Black tea leaves are left in the air until they turn dark.", 1.1),
            L("narrator", "Green tea leaves are heated right away, so they stay green.", 0.8),
            L("narrator", "Thank you for listening.", 1.0),
        ),
    ),
)


def standard_test_set(out_dir: str, *, seed: int = 0, workers: int = 2) -> list[LabelledConversation]:
    """Four small conversations (about 20-40 s each): two speakers with clean turns, two with
    overlaps and backchannels, a three-speaker panel, one speaker alone."""
    return [make_conversation(out_dir, spec, seed, workers=workers) for spec in STANDARD_SPECS]


# --- a podcast feed of them ------------------------------------------------------------------


def write_feed(out_dir: str, conversations: Sequence[LabelledConversation], base_url: str,
               *, title: str = "convcorpus synthetic conversations") -> str:
    """An RSS 2.0 feed at `out_dir/feed.xml` listing the conversations as episodes: enclosure
    URLs under `base_url` (mirroring their paths under out_dir), the uri as GUID, one
    publication day per episode from 2026-01-01 on. Returns the feed's path."""
    out_dir = os.path.abspath(out_dir)
    base = base_url.rstrip("/")
    ET.register_namespace("itunes", "http://www.itunes.com/dtds/podcast-1.0.dtd")
    itunes = "{http://www.itunes.com/dtds/podcast-1.0.dtd}"
    rss = ET.Element("rss", {"version": "2.0"})
    ch = ET.SubElement(rss, "channel")
    ET.SubElement(ch, "title").text = title
    ET.SubElement(ch, "link").text = base + "/"
    ET.SubElement(ch, "description").text = "Synthetic multi-speaker conversations (espeak-ng voices) with reference labels."
    ET.SubElement(ch, "language").text = conversations[0].lang if conversations else "en"
    day0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
    for i, conv in enumerate(conversations):
        rel = os.path.relpath(conv.audio_path, out_dir)
        if rel.startswith(".."):
            raise ValueError(f"{conv.audio_path} is not under {out_dir}")
        item = ET.SubElement(ch, "item")
        ET.SubElement(item, "title").text = conv.title
        ET.SubElement(item, "description").text = f"{len(conv.speakers)} speaker(s): {', '.join(conv.speakers)}"
        ET.SubElement(item, "guid", {"isPermaLink": "false"}).text = conv.uri
        ET.SubElement(item, "pubDate").text = email.utils.format_datetime(day0 + timedelta(days=i))
        url = base + "/" + urllib.parse.quote(rel.replace(os.sep, "/"))
        ET.SubElement(item, "enclosure", {"url": url, "length": str(os.path.getsize(conv.audio_path)),
                                          "type": "audio/wav"})
        ET.SubElement(item, f"{itunes}duration").text = str(int(round(conv.duration_s)))
    path = os.path.join(out_dir, FEED_NAME)
    _atomic_write(path, ET.tostring(rss, encoding="utf-8", xml_declaration=True))
    return path


# --- the hard test set -----------------------------------------------------------------------
# Voices as close as real ones: Kokoro-82M's female styles and blends of them sit 0.25-0.35
# apart in resemblyzer's space (cosine distance), espeak-ng variants of one gender at close
# pitch likewise; telephone band and mu-law, background noise at 10-20 dB SNR, 0.2 s gaps,
# 0.4-1 s turns, overlaps and backchannels, a four-speaker panel, one speaker on a phone line.

def _kokoro(style: str, blend: Optional[str] = None, weight: float = 0.5, speed: Optional[float] = None) -> str:
    vid = f"kokoro:en:{style}" + (f"+{blend}@{weight:g}" if blend else "")
    return vid + (f":s{speed:g}" if speed else "")


def _tts(label: str, voice_id: str, gain: float = 0.5) -> SpeakerSpec:
    return SpeakerSpec(label, voice_id, gain)


HARD_SPECS: tuple[ConversationSpec, ...] = (
    ConversationSpec(
        uri="hard_close_female",
        title="Two close female voices (Kokoro), clean: a new job",
        speakers=(_tts("a", _kokoro("jf_alpha"), 0.55), _tts("b", _kokoro("jf_gongitsune"), 0.5)),
        lines=(
            L("a", "So how was your first week at the new job?"),
            L("b", "Honestly, better than I expected. The people are friendly and nobody yells.", 0.4),
            L("a", "That already sounds like an improvement.", 0.5),
            L("b", "It really is. My old manager used to call me at ten at night.", 0.3),
            L("a", "Wait, every night?", 0.3),
            L("b", "Not every night, but often enough that I stopped answering.", 0.4),
            L("a", "And what do you actually do there all day?", 0.6),
            L("b", "Mostly I check the numbers before the reports go out to the clients.", 0.4),
            L("a", "Do you like it?", 0.3),
            L("b", "I do. It is quiet work, and I get to leave at five.", 0.5),
            L("a", "Then I am a little jealous.", 0.4),
        ),
    ),
    ConversationSpec(
        uri="hard_blend_noise20",
        title="A voice and a blend of it with another (Kokoro), 20 dB noise: weekend plans",
        speakers=(_tts("a", _kokoro("jf_nezumi"), 0.5),
                  _tts("b", _kokoro("jf_nezumi", "jf_tebukuro", 0.6), 0.5)),
        lines=(
            L("a", "Are you doing anything this weekend?"),
            L("b", "I was thinking about going to the lake, if the weather holds.", 0.5),
            L("a", "The forecast said rain on Sunday.", 0.4),
            L("b", "Then Saturday it is. Do you want to come along?", 0.3),
            L("a", "Maybe. Who else is going?", 0.5),
            L("b", "Just my brother and his two kids. They want to try fishing.", 0.4),
            L("a", "I have never caught a single fish in my life.", 0.6),
            L("b", "Neither have they, so you would fit right in.", 0.3),
            L("a", "All right, count me in.", 0.4),
        ),
        snr_db=20.0,
    ),
    ConversationSpec(
        uri="hard_phone_call",
        title="A telephone call, close voices, mu-law and 18 dB noise: a broken heater",
        speakers=(_tts("a", _kokoro("jf_alpha"), 0.55), _tts("b", _kokoro("jf_tebukuro"), 0.5)),
        lines=(
            L("a", "Hello?"),
            L("b", "Hi, it's me. Sorry to call so late.", 0.4),
            L("a", "No, that's fine. What's going on?", 0.3),
            L("b", "The heater in the flat stopped working again, and the landlord is not picking up his "
                   "phone. I have tried him three times since this afternoon.", 0.5),
            L("a", "Oh no.", 0.2),
            L("b", "I know. It is freezing in here.", 0.3),
            L("a", "Do you want to stay at our place tonight? We have the spare room.", 0.4),
            L("b", "Would that be okay?", -0.3),
            L("a", "Of course. Just bring a toothbrush.", 0.3),
            L("b", "Thank you, really. I'll be there in an hour.", 0.4),
        ),
        channel="telephone",
        snr_db=18.0,
    ),
    ConversationSpec(
        uri="hard_noise10",
        title="Two voices under 10 dB SNR noise: the garden",
        speakers=(_tts("a", _kokoro("jf_gongitsune"), 0.5), _tts("b", _kokoro("jm_kumo"), 0.55)),
        lines=(
            L("a", "Your tomatoes look amazing this year."),
            L("b", "Thanks. I finally put up a fence, so the rabbits stay out.", 0.5),
            L("a", "What did you use for the soil?", 0.4),
            L("b", "Compost from the kitchen, and a little sand, because the ground here is heavy clay.", 0.5),
            L("a", "I should try that. Mine never get past the size of a marble.", 0.4),
            L("b", "Give them more sun. That corner of yours is in shade by noon.", 0.3),
            L("a", "That is true. I never thought about that.", 0.5),
        ),
        snr_db=10.0,
    ),
    ConversationSpec(
        uri="hard_fast_short",
        title="Fast exchange: 0.2 s gaps, short turns (Kokoro, close voices)",
        speakers=(_tts("a", _kokoro("jf_alpha", "jf_nezumi", 0.3), 0.5), _tts("b", _kokoro("jf_nezumi"), 0.5)),
        lines=(
            L("a", "Ready?"),
            L("b", "Almost.", 0.2),
            L("a", "Keys?", 0.2),
            L("b", "Got them.", 0.2),
            L("a", "Tickets?", 0.2),
            L("b", "On my phone.", 0.2),
            L("a", "Passport?", 0.2),
            L("b", "Oh no, where is it?", 0.2),
            L("a", "Top drawer, I saw it this morning.", 0.2),
            L("b", "Found it. Thanks.", 0.2),
            L("a", "Then let's go, the taxi is waiting.", 0.2),
            L("b", "Coming!", 0.2),
        ),
    ),
    ConversationSpec(
        uri="hard_overlap_backchannels",
        title="Overlaps and backchannels, close voices, 15 dB noise: a road trip",
        speakers=(_tts("a", _kokoro("jf_tebukuro"), 0.5), _tts("b", _kokoro("jf_gongitsune"), 0.5)),
        lines=(
            L("a", "So we drove all the way up the coast, and on the second day the car started making this "
                   "terrible noise under the hood."),
            B("b", "mm-hm", 2.5, spoken="mm hm"),
            B("b", "oh no", 5.2),
            L("b", "What kind of noise?", -0.4),
            L("a", "A sort of grinding, every time we turned left. We had to stop in a tiny village.", 0.3),
            B("b", "right", 2.0),
            L("b", "And was there a garage?", 0.3),
            L("a", "One garage, one old mechanic, and he fixed it in twenty minutes.", -0.5),
            L("b", "That is lucky.", 0.4),
            L("a", "Very lucky. And he would not even take our money.", -0.3),
            B("b", "wow", 1.0),
        ),
        snr_db=15.0,
    ),
    ConversationSpec(
        uri="hard_panel_four",
        title="Four-speaker panel, three close female voices and one male, 15 dB noise: libraries",
        speakers=(_tts("host", _kokoro("jf_alpha"), 0.55), _tts("g1", _kokoro("jf_gongitsune"), 0.5),
                  _tts("g2", _kokoro("jf_nezumi", "jf_tebukuro", 0.5), 0.5), _tts("g3", _kokoro("jm_kumo"), 0.55)),
        lines=(
            L("host", "Welcome, everyone. Today we ask whether public libraries still matter."),
            L("g1", "They matter more than ever. Where else can you sit for free all day?", 0.5),
            L("g2", "And use the internet, print a form, or ask someone for help with it.", 0.4),
            L("g3", "I agree, but the books themselves are used less every year.", 0.6),
            L("host", "Is that true in your branch?", 0.4),
            L("g3", "Loans are down a little, but events are full every week.", 0.3),
            B("g1", "right", 1.0),
            L("g1", "The children's reading hour has a waiting list now.", 0.3),
            L("g2", "Ours too, and the language classes.", -0.3),
            L("host", "So the building is busy, even if the shelves are quiet.", 0.5),
            L("g3", "Exactly that.", 0.4),
        ),
        snr_db=15.0,
    ),
    ConversationSpec(
        uri="hard_espeak_close",
        title="Two espeak-ng female voices at close pitch, 15 dB noise: the bus",
        speakers=(_tts("a", "espeak:en+f2:p55:s165", 0.5), _tts("b", "espeak:en+f4:p60:s160", 0.5)),
        lines=(
            L("a", "Did you catch the early bus today?"),
            L("b", "No, I missed it by a minute and had to wait for the next one.", 0.4),
            L("a", "How long was that?", 0.3),
            L("b", "Twenty minutes, in the rain, without an umbrella.", 0.4),
            L("a", "That is the worst way to start a Monday.", 0.5),
            L("b", "Tell me about it. My shoes are still wet.", 0.3),
            L("a", "You can borrow my spare pair if you like.", 0.4),
            L("b", "You are a lifesaver.", 0.3),
        ),
        snr_db=15.0,
    ),
    ConversationSpec(
        uri="hard_one_speaker_phone",
        title="One speaker on a phone line, 18 dB noise: a voicemail",
        speakers=(_tts("a", _kokoro("jf_tebukuro"), 0.55),),
        lines=(
            L("a", "Hi, this is a message for the service desk."),
            L("a", "I am calling about the order I placed last Tuesday.", 0.8),
            L("a", "It was supposed to arrive on Friday, but nothing has come yet.", 0.6),
            L("a", "The order number is four five two, seven seven one.", 0.9),
            L("a", "Could someone please call me back this afternoon?", 0.7),
            L("a", "Thank you, bye.", 0.8),
        ),
        channel="telephone",
        snr_db=18.0,
    ),
)


def hard_test_set(out_dir: str, *, seed: int = 0, workers: int = 2,
                  uris: Optional[Sequence[str]] = None) -> list[LabelledConversation]:
    """Nine conversations (about 20-40 s each) that are hard the way real data is: close voices
    (Kokoro styles and blends, espeak-ng at close pitch), telephone channel, noise at 10-20 dB,
    fast short turns, overlaps and backchannels, a four-speaker panel, one speaker on a phone line.
    `uris` picks a subset. Needs the kokoro TTS backend."""
    specs = [s for s in HARD_SPECS if uris is None or s.uri in uris]
    return [make_conversation(out_dir, spec, seed, workers=workers) for spec in specs]


# --- randomized conversations (a wider sample for calibration and benchmarks) ------------------

_KOKORO_STYLES_F = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro")


def _random_kokoro_voice(rng: random.Random) -> str:
    a = rng.choice(_KOKORO_STYLES_F)
    if rng.random() < 0.5:
        return _kokoro(a, speed=round(rng.uniform(0.9, 1.12), 2))
    b = rng.choice([s for s in (*_KOKORO_STYLES_F, "jm_kumo") if s != a])
    return _kokoro(a, b, round(rng.uniform(0.2, 0.5), 2), speed=round(rng.uniform(0.9, 1.12), 2))


def random_spec(index: int, seed: int = 0, *, speakers: int = 2) -> ConversationSpec:
    """A conversation from one of the demo's topic scripts (its first 6-10 turns), spoken by
    `speakers` random Kokoro voices (female styles, half of them blended with another style,
    speeds 0.9-1.12; a single speaker reads every line), with random gaps (0.1-0.9 s, a third of the
    long lines overlapped by 0.2-0.6 s), a random channel (wide or telephone) and noise (none, or
    10-25 dB SNR)."""
    from stages.sources.demo.fisher_calls import TOPICS, parse_script, spoken_text, transcript_text

    rng = random.Random(f"random-conversation:{seed}:{index}:{speakers}")
    topic = TOPICS[index % len(TOPICS)]
    script = parse_script(topic[2], {"x": "alex", "y": "sam"})
    start = rng.randrange(0, max(1, len(script) - 6))
    turns = script[start: start + rng.randint(6, 10)]
    voices: list[str] = []
    while len(voices) < speakers:
        v = _random_kokoro_voice(rng)
        if v.split(":s")[0] not in [x.split(":s")[0] for x in voices]:
            voices.append(v)
    labels = [f"s{i}" for i in range(speakers)]
    lines = []
    for n, turn in enumerate(turns):
        who = labels[0] if speakers == 1 else labels[n % 2] if speakers == 2 else rng.choice(
            [x for x in labels if not lines or x != lines[-1].speaker])
        text = " ".join(turn.utterances)
        # Overlap only a long line that did not itself start in overlap: nobody talks over themselves.
        can_overlap = n and speakers > 1 and len(lines[-1].text.split()) >= 8 and lines[-1].gap_s >= 0
        gap = -rng.uniform(0.2, 0.6) if can_overlap and rng.random() < 0.3 else rng.uniform(0.1, 0.9)
        lines.append(L(who, transcript_text(text), round(gap, 2), spoken=spoken_text(text)))
    channel = rng.choice(("wide", "telephone"))
    snr = rng.choice((None, 10.0, 15.0, 20.0, 25.0))
    return ConversationSpec(
        uri=f"random_{speakers}spk_{index:03d}",
        title=f"Random {speakers}-speaker conversation {index}: {topic[1]} ({channel}, SNR {snr})",
        speakers=tuple(_tts(lbl, v, round(rng.uniform(0.4, 0.6), 2)) for lbl, v in zip(labels, voices)),
        lines=tuple(lines), channel=channel, snr_db=snr,
    )


def random_test_set(out_dir: str, *, count: int = 12, single: int = 4, seed: int = 0,
                    workers: int = 2) -> list[LabelledConversation]:
    """`count` two-speaker and `single` one-speaker random conversations (see `random_spec`)."""
    specs = [random_spec(i, seed, speakers=2) for i in range(count)]
    specs += [random_spec(i, seed, speakers=1) for i in range(single)]
    return [make_conversation(out_dir, spec, seed, workers=workers) for spec in specs]
